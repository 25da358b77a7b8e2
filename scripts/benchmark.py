"""Train/eval throughput of tiny_flax against PyTorch, measured in one run.

    python -m scripts.benchmark --json=benchmark.json
    python -m scripts.benchmark --models=resnet18 --quick

For each seed config (configs/*.py: its training input size and optimizer)
on whatever JAX sees: images/s of one training step of tiny_flax and of the
same torchvision model with the same batch, input size and optimizer (eager,
and torch.compile with --torch_compile), evaluation images/s, compile time,
model FLOPs per image, the model FLOP utilisation against a matmul peak
measured in this run (MFU), and peak memory. Data is synthetic and already on
the device: this measures the step, not the input pipeline (for that see
--resident and scripts/benchmark_input.py). Steps are dispatched back to back
and synchronised once per measurement, as in training; the train step is
measured in --rounds that alternate tiny_flax and torch, and the ratio is
the median of the rounds' ratios. Each model is measured
in a new process, as a training run has it: after AlexNet in the same
process, ResNet18's step was 12% slower and torch's 6% faster. Runs without
TensorFlow, and without torch (then only tiny_flax is measured).
"""

import functools
import importlib
import itertools
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from tiny_flax import launch

if __name__ == '__main__':  # as tiny_flax.main, before the heavy imports
  launch.restart_with_malloc_tunables()

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np

from tiny_flax import backend
from tiny_flax import data
from tiny_flax import flops
from tiny_flax import models
from tiny_flax import parallel
from tiny_flax import step_runner
from tiny_flax import steps
from tiny_flax import train
from tiny_flax.data import archive
from tiny_flax.data import jax_transforms
from tiny_flax.data import resident as resident_lib

# model -> the module in configs/ holding its seed recipe.
SEED_CONFIGS = {
    'alexnet': 'alexnet',
    'resnet18': 'resnet18',
    'resnet50': 'resnet50',
    'shufflenet_v2_x1_0': 'shufflenet_v2',
}

_MODELS = flags.DEFINE_list('models', list(SEED_CONFIGS), 'Models to measure.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None,
                                   'Global batch (default 64 on CPU, else 256).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None,
                                   'Override every model\'s input size.')
_QUICK = flags.DEFINE_bool('quick', False, 'Few steps: checks that it runs.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per measurement.')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 3, 'Train-step measurements of each side, tiny_flax and torch '
    'alternating; the table reports medians (the ratio: of the rounds\' '
    'ratios).')
_HALF = flags.DEFINE_bool('half_precision', None,
                          'bf16 compute (default: on accelerators).')
_PARALLELISM = flags.DEFINE_enum('parallelism', 'shard_map', parallel.KINDS,
                                 'Parallel wrapper of the train step.')
_KERNELS = flags.DEFINE_enum(
    'kernels', 'auto', backend.KERNEL_CHOICES, 'The models\' convolution and '
    'max-pool forms, as config.kernels.')
_STEP = flags.DEFINE_bool('step', True, 'Measure train/eval steps on a synthetic '
                          'batch (--nostep: only what --resident measures).')
_TORCH = flags.DEFINE_bool('torch', True, 'Also measure PyTorch if installed.')
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', False,
                                   'Also measure torch.compile (slow to build).')
_RESIDENT = flags.DEFINE_bool(
    'resident', False,
    'Also measure training from a uint8 split resident on the device, '
    'augmented in the step by the seed recipe (config.input.on_device), fed '
    'index batches by the host, and the share of time the device waits on it.')
_STEPS_PER_DISPATCH = flags.DEFINE_integer(
    'steps_per_dispatch', 1, 'Train steps per call in the --resident '
    'measurement, as config.steps_per_dispatch.')
_RESIDENT_EXAMPLES = flags.DEFINE_integer(
    'resident_examples', None,
    f'Images in the resident split (default {archive.NUM_TRAIN:,}, '
    'Tiny ImageNet\'s; 1024 with --quick).')
_PROFILE_DIR = flags.DEFINE_string(
    'profile_dir', None, 'Also write a jax.profiler trace of one more '
    'train-step measurement here (open it with xprof or TensorBoard).')
_JSON = flags.DEFINE_string('json', None,
                            'Write the results here (after each measurement).')


def seed_config(name):
  return importlib.import_module(f'configs.{SEED_CONFIGS[name]}').get_config()


def train_image_shape(recipe):
  """Shape of one image after the training recipe, traced without data."""
  images = jax.ShapeDtypeStruct((1,) + archive.IMAGE_SHAPE, jnp.uint8)
  return jax.eval_shape(jax_transforms.build(recipe), images,
                        jax.random.key(0)).shape[1:]


def peak_memory_gb():
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 1e9
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # host RSS


def _compiled_train_step(body, state, batch):
  """(executable, compile seconds) of `body` for these inputs."""
  start = time.perf_counter()
  executable = body.lower(state, batch).compile()
  return executable, time.perf_counter() - start


def _initial_state(config, name, image_shape, half):
  module = models.create(name, archive.NUM_CLASSES, axis_name=steps.AXIS,
                         dtype=jnp.bfloat16 if half else jnp.float32,
                         kernels=backend.kernels(_KERNELS.value))
  return module, steps.create_train_state(config, module, image_shape,
                                          config.learning_rate)


def _train_step_body(config):
  return functools.partial(steps.train_step, dropout_key=jax.random.key(0),
                           label_smoothing=config.label_smoothing)


def measure_tiny_flax(config, name, batch_size, image_shape, half, num_steps,
                      par):
  """Eval images/s, compile time, FLOPs; and a timer of the train step.

  The timer returns seconds per train step at each call, so that the caller
  can alternate it with PyTorch's.
  """
  module, state = _initial_state(config, name, image_shape, half)
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
  train_step, compile_s = _compiled_train_step(
      par.compile(_train_step_body(config), donate_state=True), state, batch)
  holder = [state, None]

  def step():
    holder[0], holder[1] = train_step(holder[0], batch)

  def sync():
    jax.block_until_ready(holder)
  step()
  sync()
  eval_step = par.compile(steps.eval_step)
  outputs = []
  eval_s = flops.timed(lambda: outputs.append(eval_step(holder[0], batch)),
                  lambda: jax.block_until_ready(outputs), num_steps)
  # Before torch shares the process (on CPU this is the process's RSS).
  memory_gb = peak_memory_gb()
  return ({'eval_img_s': batch_size / eval_s, 'compile_s': compile_s,
           'gflops_per_img': forward_flops / 1e9, 'peak_memory_gb': memory_gb},
          lambda: flops.timed(step, sync, num_steps))


def measure_resident(config, name, batch_size, half, num_steps, par,
                     num_examples, steps_per_dispatch):
  """Training as with config.input.on_device: images/s and device idle share.

  Both the input and the loop are the trainer's (train.compile_input,
  step_runner.StepRunner): index batches from the host, prefetched, the step
  gathering and augmenting its images, `steps_per_dispatch` steps per call,
  metrics merged on the device every config.log_every_steps. The idle share
  compares it with the same call re-run on index batches already on the
  device, which no host work beyond launching the call can slow down.
  """
  if num_examples < batch_size:
    raise app.UsageError(f'--resident_examples={num_examples} is less than one '
                         f'batch ({batch_size}).')
  image_shape = train_image_shape(config.input.train)
  _, state = _initial_state(config, name, image_shape, half)
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
  compiled = train.compile_input(config, dataset, par,
                                 _train_step_body(config), 0)
  per_call = steps_per_dispatch  # steps in each timed call
  _, fixed = next(step_runner.grouped(compiled.batches, [per_call]))
  fixed = par.shard_batch(fixed, stacked=per_call > 1)
  run = compiled.train_step if per_call == 1 else compiled.train_steps
  start = time.perf_counter()
  state, _ = jax.block_until_ready(run(par.replicate(state), fixed))
  first_call_s = time.perf_counter() - start  # compilation included
  runner = step_runner.StepRunner(par, compiled.train_step, state,
                                  compiled.batches, itertools.repeat(per_call),
                                  compiled.train_steps)

  def device_call():
    runner.state, _ = run(runner.state, fixed)

  since_log = [0]

  def trainer_call():
    since_log[0] += runner.step()
    if since_log[0] >= config.log_every_steps:
      runner.pop_metrics()
      since_log[0] = 0

  sync = lambda: jax.block_until_ready(runner.state)
  device_s = flops.timed(device_call, sync, num_steps) / per_call
  trainer_s = flops.timed(trainer_call, sync, num_steps) / per_call
  return {'resident_img_s': batch_size / trainer_s,
          'resident_device_img_s': batch_size / device_s,
          'device_idle_share': max(0.0, 1 - device_s / trainer_s),
          'resident_first_call_s': first_call_s,
          'resident_examples': num_examples,
          'resident_batch_size': batch_size,
          'steps_per_dispatch': per_call,
          'peak_memory_gb': peak_memory_gb()}


def _torch_timing():
  """scripts/torch_timing.py, or None without torch."""
  try:
    from scripts import torch_timing  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  return torch_timing


def print_table(results):
  print('\n| model | input | tiny_flax img/s | torch img/s | ratio | '
        'torch.compile img/s | ratio | eval img/s | compile s | GFLOPs/img | '
        'MFU | resident img/s | device idle | peak GB |\n'
        '|---|---|---|---|---|---|---|---|---|---|---|---|---|---|')
  for name, r in results.items():
    def cell(key, fmt='{:.1f}'):
      return fmt.format(r[key]) if key in r else '-'
    print(f"| {name} | {r['image_size']} | {cell('tiny_flax_img_s')} | "
          f"{cell('torch_img_s')} | {cell('ratio', '{:.2f}x')} | "
          f"{cell('torch_compile_img_s')} | "
          f"{cell('compile_ratio', '{:.2f}x')} | {cell('eval_img_s')} | "
          f"{cell('compile_s')} | {cell('gflops_per_img', '{:.3f}')} | "
          f"{cell('mfu', '{:.1%}')} | {cell('resident_img_s')} | "
          f"{cell('device_idle_share', '{:.1%}')} | "
          f"{cell('peak_memory_gb', '{:.2f}')} |")


def _alternate(timers, rounds, batch_size):
  """Images/s of each timer, in rounds that alternate between them.

  The machine's speed drifts within minutes; alternating makes the drift
  hit tiny_flax and torch alike.
  """
  rates = [[] for _ in timers]
  for _ in range(rounds):
    for rate, timer in zip(rates, timers):
      rate.append(batch_size / timer())
  return rates


def _train_rates(rates, gflops_per_img, peak):
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


def _write_json(results):
  """All results so far to --json: a later failure keeps the earlier ones."""
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=2)


def _measure_each_model_in_a_new_process(names):
  """Runs this script once per model and merges what each wrote."""
  passed_on = [flags.FLAGS[name].serialize() for name in flags.FLAGS
               if flags.FLAGS[name].present and name not in ('models', 'json')]
  results, failed = {}, []
  with tempfile.TemporaryDirectory() as scratch:
    for name in names:
      path = os.path.join(scratch, f'{name}.json')
      command = [sys.executable, '-m', __spec__.name, f'--models={name}',
                 f'--json={path}', *passed_on]
      if subprocess.run(command, check=False).returncode != 0:
        failed.append(name)
      if os.path.exists(path):
        with open(path) as f:
          results.update(json.load(f))
      _write_json(results)
  print_table(results)
  if failed:
    raise SystemExit(f'The benchmark failed for {", ".join(failed)}.')


def main(argv):
  del argv
  if len(_MODELS.value) > 1:
    return _measure_each_model_in_a_new_process(_MODELS.value)
  on_cpu = backend.on_cpu()
  batch_size = _BATCH_SIZE.value or (64 if on_cpu else 256)
  half = (not on_cpu) if _HALF.value is None else _HALF.value
  num_steps = 2 if _QUICK.value else _STEPS.value
  rounds = 1 if _QUICK.value else _ROUNDS.value
  torch_timing = _torch_timing() if _TORCH.value else None
  par = parallel.Parallel(_PARALLELISM.value)
  par.check_batch_size(batch_size)
  peak = flops.matmul_peak(jnp.bfloat16 if half else jnp.float32,
                           2 if _QUICK.value else 10)
  print(f'{jax.devices()}, jax {jax.__version__}, batch {batch_size}, '
        f'{"bf16" if half else "float32"}, matmul peak {peak / 1e12:.2f} TFLOP/s',
        flush=True)
  results = {}

  def record(name, result):
    results.setdefault(name, {}).update(result)
    print(json.dumps({name: result}), flush=True)
    _write_json(results)

  for name in _MODELS.value:
    config = seed_config(name)
    image_shape = train_image_shape(config.input.train)
    if _IMAGE_SIZE.value:
      image_shape = (_IMAGE_SIZE.value, _IMAGE_SIZE.value, image_shape[-1])
    record(name, {'image_size': image_shape[0]})
    if _STEP.value:
      result, time_ours = measure_tiny_flax(config, name, batch_size,
                                            image_shape, half, num_steps, par)
      timers = [time_ours]
      if torch_timing:
        timers.append(torch_timing.train_step_timer(
            config, name, archive.NUM_CLASSES, batch_size, image_shape[0],
            half, num_steps, compiled=False))
      result.update(_train_rates(_alternate(timers, rounds, batch_size),
                                 result['gflops_per_img'], peak))
      record(name, result)
      if _PROFILE_DIR.value:
        with jax.profiler.trace(os.path.join(_PROFILE_DIR.value, name)):
          time_ours()
    if _RESIDENT.value:
      examples = _RESIDENT_EXAMPLES.value or (
          1024 if _QUICK.value else archive.NUM_TRAIN)
      record(name, measure_resident(config, name, batch_size, half, num_steps,
                                    par, examples, _STEPS_PER_DISPATCH.value))
    if _STEP.value and torch_timing and _TORCH_COMPILE.value:
      compiled_img_s = batch_size / torch_timing.train_step_timer(
          config, name, archive.NUM_CLASSES, batch_size, image_shape[0], half,
          num_steps, compiled=True)()
      record(name, {'torch_compile_img_s': compiled_img_s,
                    'compile_ratio':
                        results[name]['tiny_flax_img_s'] / compiled_img_s})
  print_table(results)


if __name__ == '__main__':
  app.run(main)
