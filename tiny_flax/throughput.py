"""Images per second of the train and eval steps, as scripts/benchmark.py
measures them: steps dispatched back to back and synchronised once per
measurement, as in training, and FLOPs against a measured matmul peak.
"""

import functools
import itertools
import resource
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from tiny_flax import data
from tiny_flax import flops
from tiny_flax import optim
from tiny_flax import step_runner
from tiny_flax import steps
from tiny_flax.data import archive
from tiny_flax.data import jax_transforms
from tiny_flax.data import resident as resident_lib


def timed(step, sync, num_steps, warm_up=True):
  """Seconds per `step()`: one warm-up (unless done), then steps queued back
  to back."""
  if warm_up:
    step()
  sync()
  start = time.perf_counter()
  for _ in range(num_steps):
    step()
  sync()
  return (time.perf_counter() - start) / num_steps


def matmul_peak(dtype, num_steps, size, repeats=3):
  """FLOP/s of a `size`-square matmul on random data: the denominator of MFU.

  The best of `repeats` measurements: the first can include the kernel
  handing out the outputs' memory (huge pages are compacted on first use).
  """
  a = jax.random.normal(jax.random.key(0), (size, size), dtype)
  matmul = jax.jit(lambda x: x @ x)

  def measure():
    out = []
    return timed(lambda: out.append(matmul(a)),
                 lambda: jax.block_until_ready(out), num_steps)
  return 2 * size**3 / min(measure() for _ in range(repeats))


def peak_memory_gb():
  """The first device's peak memory, or the host's peak RSS on the CPU."""
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 1e9
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def train_image_shape(transforms):
  """Shape of one image after the training transforms, traced without data."""
  images = jax.ShapeDtypeStruct((1,) + archive.IMAGE_SHAPE, jnp.uint8)
  return jax.eval_shape(jax_transforms.build(transforms), images,
                        jax.random.key(0)).shape[1:]


def alternate(timers, rounds, batch_size):
  """Images/s of each timer, in rounds that alternate between them.

  The machine's speed drifts within minutes; alternating makes the drift
  hit tiny_flax and torch alike.
  """
  rates = [[] for _ in timers]
  for _ in range(rounds):
    for rate, timer in zip(rates, timers):
      rate.append(batch_size / timer())
  return rates


def train_rates(rates, gflops_per_img, peak):
  """Medians over the rounds; the ratio is the median of each round's."""
  ours = statistics.median(rates[0])
  mfu = flops.utilisation(gflops_per_img * 1e9, ours, peak)
  result = {'tiny_flax_img_s': ours,
            'train_tflop_s': mfu * peak / 1e12,
            'mfu': mfu,
            'matmul_peak_tflop_s': peak / 1e12}
  if len(rates) > 1:
    per_round = [a / b for a, b in zip(*rates)]
    result.update(torch_img_s=statistics.median(rates[1]),
                  ratio=statistics.median(per_round),
                  ratio_per_round=per_round)
  return result


def _initial_state(config, platform, image_shape):
  module = steps.create_model(config, archive.NUM_CLASSES, platform.kernels,
                              platform.compute_dtype, steps.AXIS)
  return module, steps.create_train_state(
      config, module, image_shape,
      optim.create(config, config.learning_rate), platform.loss_scaling)


def _train_step_body(config):
  return functools.partial(steps.train_step, dropout_key=jax.random.key(0),
                           label_smoothing=config.label_smoothing,
                           microbatches=config.microbatches)


def measure_step(config, platform, par, batch_size, image_shape, num_steps):
  """Eval images/s, compile time, FLOPs, memory; and a train-step timer.

  The timer returns seconds per train step at each call, so that the caller
  can alternate it with PyTorch's. Data is synthetic and already on the
  devices: this measures the step, not the input.
  """
  module, state = _initial_state(config, platform, image_shape)
  forward_flops = flops.forward_flops(
      module, {'params': state.params, 'batch_stats': state.batch_stats},
      image_shape)
  state = par.replicate(state)
  rng = np.random.default_rng(0)
  batch = par.shard_batch({
      'image': rng.normal(size=(batch_size,) + image_shape).astype(np.float32),
      'label': rng.integers(0, archive.NUM_CLASSES,
                            batch_size).astype(np.int32),
      'mask': np.ones(batch_size, bool)})
  start = time.perf_counter()
  train_step = par.compile(_train_step_body(config), donate_state=True).lower(
      state, batch).compile()
  compile_s = time.perf_counter() - start
  holder = [state, None]

  def step():
    holder[0], holder[1] = train_step(holder[0], batch)

  def sync():
    jax.block_until_ready(holder)
  step()
  sync()
  eval_step = par.compile(steps.eval_step)
  outputs = []
  eval_s = timed(lambda: outputs.append(eval_step(holder[0], batch)),
                 lambda: jax.block_until_ready(outputs), num_steps)
  # Before torch shares the process (on CPU this is the process's RSS).
  memory_gb = peak_memory_gb()
  buffers = train_step.memory_analysis()  # None where a backend has none
  return ({'eval_img_s': batch_size / eval_s, 'compile_s': compile_s,
           'gflops_per_img': forward_flops / 1e9, 'peak_memory_gb': memory_gb,
           'train_temp_gb': (buffers.temp_size_in_bytes / 1e9 if buffers
                             else float('nan')),
           'microbatches': config.microbatches},
          lambda: timed(step, sync, num_steps))


def measure_resident(config, platform, par, batch_size, num_steps,
                     num_examples, steps_per_dispatch, rounds=1,
                     profile_dir=None):
  """Training as with config.input.on_device: images/s and device idle share.

  Both the input and the loop are the trainer's (step_runner.compile_input
  and StepRunner): index batches from the host, prefetched, the step
  gathering and augmenting its images, the calls the trainer makes
  (`steps_per_dispatch` steps, one near a log step), and at each log step
  (config.log_every_steps) the merge of the interval's metrics and the fetch
  of the result, which waits for the device. A measurement is whole log
  intervals, at least `num_steps` steps. The idle share compares it with the
  same calls re-run on index batches already on the device and nothing
  fetched, which no host work beyond launching the calls can slow down. The
  two alternate over `rounds` (medians), so that a drift of the device's
  speed hits both. `profile_dir`: a jax.profiler trace of one more trainer
  interval.
  """
  image_shape = train_image_shape(config.input.train)
  _, state = _initial_state(config, platform, image_shape)
  rng = np.random.default_rng(0)
  split = {'image': rng.integers(0, 256, (num_examples,) + archive.IMAGE_SHAPE,
                                 dtype=np.uint8),
           'label': rng.integers(0, archive.NUM_CLASSES,
                                 num_examples).astype(np.int32)}
  per_epoch = num_examples // batch_size
  dataset = data.Dataset(
      class_names=[], steps_per_epoch=per_epoch, image_shape=image_shape,
      local_batch_size=batch_size,
      train_batches=lambda start: resident_lib.train_batches(
          num_examples, batch_size, per_epoch, config.seed, start),
      eval_batches=[],
      resident=resident_lib.build(
          split, {k: v[:batch_size] for k, v in split.items()},
          config.input.train, config.input.eval))
  compiled = step_runner.compile_input(dataset, par, _train_step_body(config),
                                       0, config.seed)
  log_every = config.log_every_steps
  sizes = list(step_runner.dispatch_sizes(0, log_every, steps_per_dispatch,
                                          (log_every,)))
  intervals = -(-num_steps // log_every)
  # Calls of one step take the one-step form, also when that is the setting.
  run = {steps_per_dispatch: compiled.train_steps, 1: compiled.train_step}
  fixed = {size: par.shard_batch(batch, stacked=size > 1)
           for size, batch in step_runner.grouped(compiled.batches,
                                                  sorted(set(sizes)))}
  start = time.perf_counter()
  state, _ = jax.block_until_ready(
      run[sizes[0]](par.replicate(state), fixed[sizes[0]]))
  first_call_s = time.perf_counter() - start  # compilation included
  runner = step_runner.StepRunner(par, compiled.train_step, state,
                                  compiled.batches, itertools.cycle(sizes),
                                  compiled.train_steps)

  def device_interval():
    for size in sizes:
      runner.state, _ = run[size](runner.state, fixed[size])

  def trainer_interval():
    for _ in sizes:
      runner.step()
    jax.device_get(runner.pop_metrics())

  sync = lambda: jax.block_until_ready(runner.state)
  device_interval()  # both warmed up once, the merge compiled
  trainer_interval()
  device_s, trainer_s = [], []
  for _ in range(rounds):
    device_s.append(timed(device_interval, sync, intervals, warm_up=False))
    trainer_s.append(timed(trainer_interval, sync, intervals, warm_up=False))
  if profile_dir:
    with jax.profiler.trace(profile_dir):
      trainer_interval()
      sync()
  images = batch_size * log_every
  idle = [max(0.0, 1 - d / t) for d, t in zip(device_s, trainer_s)]
  return {'resident_img_s': images / statistics.median(trainer_s),
          'resident_device_img_s': images / statistics.median(device_s),
          'device_idle_share': statistics.median(idle),
          'device_idle_share_per_round': idle,
          'resident_first_call_s': first_call_s,
          'resident_examples': num_examples,
          'resident_batch_size': batch_size,
          'resident_steps_timed': intervals * log_every,
          'steps_per_dispatch': steps_per_dispatch,
          'calls_per_log_interval': len(sizes),
          'peak_memory_gb': peak_memory_gb()}
