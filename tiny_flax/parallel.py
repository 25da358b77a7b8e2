"""Parallel wrappers for the step bodies: `jax.pmap`, or `jit` over `shard_map`.

Both bind the step bodies' collective axis to all devices, so one body serves
both. pmap keeps a copy of the state per local device (leading axis); the
shard_map form keeps one global array replicated over a 1-D mesh, the layout
JAX recommends since pmap moved onto jit + shard_map in 0.8.
"""

import collections
import functools
import itertools

import flax.jax_utils
import jax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P
import numpy as np

from tiny_flax import errors
from tiny_flax import steps

KINDS = ('pmap', 'shard_map')


class Parallel:
  """Places state and batches on devices and compiles steps for `kind`."""

  def __init__(self, kind, devices=None, compiler_options=None):
    """`compiler_options`: the platform's, for every shard_map step."""
    errors.require(kind in KINDS, 'config.parallelism',
                   f'one of {", ".join(KINDS)}', kind)
    self.kind = kind
    self._compiler_options = compiler_options
    if kind == 'pmap':
      self.devices = list(devices or jax.local_devices())
    else:
      self.devices = list(devices or jax.devices())
    self.mesh = jax.sharding.Mesh(np.array(self.devices), (steps.AXIS,))
    self._batch_sharding = NamedSharding(self.mesh, P(steps.AXIS))
    self._stacked_sharding = NamedSharding(self.mesh, P(None, steps.AXIS))
    self._merge_metrics = jax.jit(self._merge)

  @property
  def num_devices(self):
    """Devices over which one global batch is split."""
    if self.kind == 'pmap':
      return len(self.devices) * jax.process_count()
    return len(self.devices)

  def check_batch_size(self, batch_size):
    errors.require(batch_size >= 1, 'config.batch_size', '>= 1', batch_size)
    if batch_size % self.num_devices:
      raise errors.UserError(
          f'batch_size {batch_size} is not divisible by the {self.num_devices} '
          f'devices; use a multiple of {self.num_devices}.')

  def replicate(self, tree):
    if self.kind == 'pmap':
      return flax.jax_utils.replicate(tree, self.devices)
    if jax.process_count() > 1:
      # Each process places its own devices' copies from host memory; from a
      # restored (committed) array JAX would ask for a cross-host transfer.
      tree = jax.device_get(tree)
    return jax.device_put(tree, NamedSharding(self.mesh, P()))

  def replicate_host_data(self, tree):
    """`replicate` for numpy data that every process holds the same.

    Each device's copy comes from its own process's memory, without the
    cross-process comparison that `replicate` makes (costly for gigabytes).
    """
    if self.kind == 'pmap' or jax.process_count() == 1:
      return self.replicate(tree)
    sharding = NamedSharding(self.mesh, P())
    return jax.tree.map(lambda x: jax.make_array_from_callback(
        x.shape, sharding, lambda index: x[index]), tree)

  def unreplicate(self, tree):
    """One copy, still on device: for logging, checkpoints and evaluation."""
    if self.kind == 'pmap':
      return jax.tree.map(lambda x: x[0], tree)
    return tree

  def merge_metrics(self, collected, start=None):
    """One clu collection from a list of steps' replicated metrics.

    One compiled call per list: merging each step's metrics as it comes cost
    an H200 a quarter to a half of ResNet18's training steps waiting on the
    host (docs/performance.md). `start`: a merged (unreplicated) collection
    of earlier steps, merged first; the merge is a left fold, so merging in
    two parts gives the sums of one merge, bit for bit.
    """
    return self._merge_metrics(list(collected), start)

  def _merge(self, collected, start):
    metrics = map(self.unreplicate, collected)
    if start is not None:
      metrics = itertools.chain([start], metrics)
    return functools.reduce(lambda total, step: total.merge(step), metrics)

  def shard_batch(self, batch, stacked=False):
    """This process's numpy batch -> device arrays split over the batch axis.

    `stacked`: the batch axis is the second; the first stacks the batches of
    successive steps (steps.in_sequence).
    """
    if self.kind == 'pmap':
      def split(x):
        if stacked:  # (steps, batch, ...) -> (devices, steps, batch / devices, ...)
          x = x.reshape(x.shape[:1] + (len(self.devices), -1) + x.shape[2:])
          return x.swapaxes(0, 1)
        return x.reshape((len(self.devices), -1) + x.shape[1:])
      return jax.tree.map(
          lambda x: jax.device_put(split(x), self._batch_sharding), batch)
    sharding = self._stacked_sharding if stacked else self._batch_sharding
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, x), batch)

  def compile(self, body, donate_state=False, replicated_inputs=0,
              stacked=False):
    """Wraps `body(state, batch, *replicated) -> outputs` (outputs replicated).

    `replicated` inputs (placed with `replicate`) are the same on every device.
    `stacked`: the batch comes from `shard_batch(..., stacked=True)`.
    pmap takes no compiler options, so on CPU its step lacks
    backend.CPU_COMPILER_OPTIONS and runs slower than the default shard_map
    form (docs/performance.md).
    """
    donate = (0,) if donate_state else ()
    if self.kind == 'pmap':
      return jax.pmap(body, axis_name=steps.AXIS, donate_argnums=donate,
                      devices=self.devices)
    # The bodies replicate their outputs with pmean/psum/all_gather, but clu's
    # all_gather-based metrics are not typed as invariant: skip that check.
    mapped = jax.shard_map(
        body, mesh=self.mesh,
        in_specs=((P(), P(None, steps.AXIS) if stacked else P(steps.AXIS))
                  + (P(),) * replicated_inputs),
        out_specs=P(), check_vma=False)
    return jax.jit(mapped, donate_argnums=donate,
                   compiler_options=self._compiler_options)

  def compile_train(self, body, replicated_inputs=0):
    """(one step, several steps in one call) of a train `body`.

    Both donate the state; the second scans `body` over stacked batches
    (steps.in_sequence) for config.steps_per_dispatch.
    """
    return (self.compile(body, donate_state=True,
                         replicated_inputs=replicated_inputs),
            self.compile(steps.in_sequence(body), donate_state=True,
                         replicated_inputs=replicated_inputs, stacked=True))

  def prefetch(self, batches, size=2, place=None):
    """Keeps `size` batches on the devices ahead of the step that needs them.

    `place` puts one item on the devices (default `shard_batch`).
    """
    place = place or self.shard_batch
    queue = collections.deque()
    for batch in batches:
      queue.append(place(batch))
      if len(queue) > size:
        yield queue.popleft()
    yield from queue
