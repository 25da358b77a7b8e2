"""The train and eval steps compiled for the input, and run as training runs them.

Shared by the trainer and the benchmark (throughput.py), so that the
benchmark's "resident" figure measures the trainer's own input and dispatch:
calls queued back to back, at most `StepsAhead` ahead of the device, their
metrics kept on the devices until a log step merges them in one call. A call
runs one step, or `config.steps_per_dispatch` of them scanned together, so
that a device whose step is shorter than the host's dispatch still never
waits.
"""

import collections
import itertools
from typing import Callable, Iterator, NamedTuple

from absl import logging
from flax import serialization
import jax
import numpy as np

from tiny_flax import steps


class CompiledInput(NamedTuple):
  """The steps compiled for a `data.Dataset`, and its batches from the host."""
  train_step: Callable  # (state, batch) -> (state, metrics)
  train_steps: Callable  # the same over stacked batches (steps.in_sequence)
  eval_step: Callable  # (state, batch) -> metrics
  batches: Iterator  # this process's training batches from the start step
  first_images: np.ndarray  # the first batch's augmented images, for display


def compile_input(dataset, par, train_step, start_step, seed):
  """`CompiledInput` of `train_step` and steps.eval_step fed by `dataset`.

  From tf.data's batches; or, with resident data, from index batches, the
  steps gathering and transforming their images on the devices, their
  random draws from `seed`. The trainer and the benchmark (throughput.py)
  both train this way.
  """
  batches = dataset.train_batches(start_step)
  first = next(batches)
  batches = itertools.chain([first], batches)
  resident = dataset.resident
  if resident is None:
    return CompiledInput(*par.compile_train(train_step),
                         par.compile(steps.eval_step), batches, first['image'])

  key = jax.random.key(seed + 2)

  def body(state, batch, arrays):
    step_key = jax.random.fold_in(jax.random.fold_in(key, state.step),
                                  jax.lax.axis_index(steps.AXIS))
    return train_step(state, resident.train_batch(arrays, batch, step_key))

  def eval_body(state, batch, arrays):
    return steps.eval_step(state, resident.eval_batch(arrays, batch))

  train_images = resident.arrays['train']['image']
  logging.info('Training and validation splits resident on the devices: '
               '%d + %d images, %.2f GB.', len(train_images),
               len(resident.arrays['validation']['image']),
               sum(x.nbytes for x in jax.tree.leaves(resident.arrays)) / 1e9)
  arrays = par.replicate_host_data(resident.arrays)
  with_arrays = lambda fn: lambda state, batch: fn(state, batch, arrays)
  compiled, compiled_steps = par.compile_train(body, replicated_inputs=1)
  first_images = jax.jit(resident.augment)(train_images[first['index']], key)
  return CompiledInput(
      with_arrays(compiled), with_arrays(compiled_steps),
      with_arrays(par.compile(eval_body, replicated_inputs=1)), batches,
      np.asarray(first_images))


def dispatch_sizes(start_step, num_steps, steps_per_dispatch, every):
  """Steps per call from `start_step`: `steps_per_dispatch`, or 1 near an event.

  No call runs past a multiple of an `every` value (log, epoch and checkpoint
  intervals; 0 for none) or past `num_steps`, so the loop stops at each of
  those steps as it would with one step per call. Remainders go one step at
  a time: two compiled forms, not one per remainder. The sizes are a function
  of the step alone, so a resumed run dispatches as an uninterrupted one.
  """
  every = [e for e in every if e > 0]
  step = start_step
  while step < num_steps:
    last = step + steps_per_dispatch
    crosses = any(step // e != (last - 1) // e for e in every)
    size = 1 if crosses or last > num_steps else steps_per_dispatch
    yield size
    step += size


def alignment_hint(intervals, steps_per_dispatch):
  """A line for the log when some calls must run one step, else None.

  The calls before a step that `steps_per_dispatch` does not divide (an
  epoch, log or checkpoint step, or the last) run one step each, in a second
  compiled form: more dispatches, and a second compilation. The hint names a
  setting that avoids both, where the epoch has a divisor to offer.
  """
  if steps_per_dispatch == 1:
    return None
  named = {'the epoch': intervals.steps_per_epoch,
           'config.log_every_steps': intervals.log_every,
           'config.checkpoint_every_steps': intervals.checkpoint_every}
  if intervals.num_steps % intervals.steps_per_epoch:  # else the epoch's
    named['the run'] = intervals.num_steps
  misaligned = [f'{name} ({steps} steps)' for name, steps in named.items()
                if steps % steps_per_dispatch]
  if not misaligned:
    return None
  listed = ', '.join(misaligned[:-1]) + ' or ' if len(misaligned) > 1 else ''
  line = (f'{steps_per_dispatch} steps per dispatch do not divide '
          f'{listed}{misaligned[-1]}: the calls before those steps run one '
          'step each, in a second compiled form.')
  other = [n for n in (intervals.checkpoint_every, intervals.num_steps) if n]
  divisors = [d for d in range(steps_per_dispatch, 1, -1)
              if all(n % d == 0 for n in [intervals.steps_per_epoch, *other])]
  if divisors:
    d = divisors[0]
    line += (f' With --config.steps_per_dispatch={d} --config.log_every_steps='
             f'{d * max(1, round(intervals.log_every / d))} every call runs '
             f'{d} steps.')
  return line


def grouped(batches, sizes):
  """(size, batch) per call: `size` host batches, stacked when more than one."""
  for size in sizes:
    group = [next(batches) for _ in range(size)]
    if size == 1:
      yield 1, group[0]
    else:
      yield size, {key: np.stack([batch[key] for batch in group])
                   for key in group[0]}


class StepsAhead:
  """Holds the host at most `limit` steps ahead of the device.

  JAX dispatches steps asynchronously, and a stop waits for every dispatched
  step before it saves. Unbounded, the loop ran tens of steps ahead of a CPU
  between log steps, longer than SLURM's default 30 s between SIGTERM and
  SIGKILL (docs/reliability.md). Three steps keep an accelerator's queue
  full.
  """

  def __init__(self, limit=3):
    self._limit = limit
    self._pending = collections.deque()

  def dispatched(self, step_outputs):
    """Records a dispatched step's outputs; waits for the one `limit` back."""
    self._pending.append(step_outputs)
    if len(self._pending) > self._limit:
      jax.block_until_ready(self._pending.popleft())


class StepRunner:
  """Holds the replicated state and the metrics of the steps since the last log."""

  def __init__(self, par, train_step, state, batches, sizes, train_steps=None,
               unlogged=None):
    """`train_step(state, batch)` runs one step, `train_steps(state, batches)`
    (steps.in_sequence, compiled with stacked=True) several; `batches` are
    host batches, `sizes` the steps of each call (dispatch_sizes).

    `unlogged`: the metrics of the steps before the start that no log wrote
    (a run stopped between log steps; checkpointing.unlogged_metrics), as
    a state dict of numbers: the first log merges them with its own steps',
    so that it covers the same steps as an uninterrupted run's.
    """
    self.state = state
    self._par = par
    self._train_step = train_step
    self._train_steps = train_steps
    self._calls = par.prefetch(grouped(batches, sizes), place=self._place)
    self._metrics = []
    self._unlogged = unlogged
    self._steps_ahead = StepsAhead()

  def _place(self, group):
    size, batch = group
    return size, self._par.shard_batch(batch, stacked=size > 1)

  def step(self):
    """Dispatches the next call; returns how many steps it runs."""
    size, batch = next(self._calls)
    run = self._train_step if size == 1 else self._train_steps
    self.state, metrics = run(self.state, batch)
    self._metrics.append(metrics)
    self._steps_ahead.dispatched(metrics)
    return size

  def pop_metrics(self):
    """The merged metrics of the steps since the last call (device arrays)."""
    merged = self.unlogged_metrics().compute()
    self._metrics.clear()
    self._unlogged = None
    return merged

  def unlogged_metrics(self):
    """The clu collection of the steps since the last log, merged on device."""
    start = None
    if self._unlogged is not None:  # numbers, cast as this run's metrics
      template = self._par.unreplicate(self._metrics[0])
      start = jax.tree.map(lambda like, value: np.asarray(value, like.dtype),
                           template, serialization.from_state_dict(
                               template, self._unlogged))
    return self._par.merge_metrics(self._metrics, start)
