"""Train/eval throughput of tiny_flax against PyTorch, measured in one run.

    python -m scripts.benchmark --json=benchmark.json
    python -m scripts.benchmark --models=resnet18 --quick
    python -m scripts.benchmark --models=resnet50 --image_size=224 --notorch \
        --compiler_options= --compiler_options=--xla_gpu_force_conv_nhwc=true

For each model's config (configs/*.py: the PyTorch original's input size and
optimizer), on whatever JAX sees: train images/s of tiny_flax and of the same
torchvision model (eager, and torch.compile with --torch_compile), eval
images/s, compile time, FLOPs per image, MFU against a matmul peak measured
in this run, peak memory and the train step's temporary buffers (XLA's
buffer assignment; --microbatches shrinks them); with --resident, training from a split in device
memory. Data is synthetic (scripts/benchmark_input.py measures the input).
The train step is measured in --rounds alternating tiny_flax and torch; the
ratio is the median of the rounds' ratios. Each model runs in a new process,
as a training run has it (docs/performance.md says why). Runs without
TensorFlow, and without torch (then only tiny_flax is measured).
`--compiler_options`, given more than once, measures a model under each set
of XLA options in turn: the search for the settings that
`platform/backend.py` then makes the platform's.
The measuring is tiny_flax/throughput.py's.
"""

import dataclasses
import importlib
import json
import os
import subprocess
import sys
import tempfile

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from tiny_flax.platform import launch

if __name__ == '__main__':  # as tiny_flax.main, before the heavy imports
  launch.restart_with_malloc_tunables()

from absl import app
from absl import flags
import jax
import jax.numpy as jnp

from tiny_flax import parallel
from tiny_flax import steps
from tiny_flax import throughput
from tiny_flax.data import archive
from tiny_flax.platform import backend

# model -> the config in configs/ of the PyTorch original's recipe for it.
CONFIGS = {'alexnet': 'alexnet', 'resnet18': 'resnet18',
           'resnet50': 'resnet50', 'shufflenet_v2_x1_0': 'shufflenet_v2'}

_MODELS = flags.DEFINE_list('models', list(CONFIGS), 'Models to measure.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None,
                                   'Global batch (default 64 on CPU, else 256).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None,
                                   'Override every model\'s input size.')
_MICROBATCHES = flags.DEFINE_integer(
    'microbatches', 1, 'Each device\'s batch in this many parts, their '
    'gradients summed (config.microbatches); PyTorch\'s step stays whole.')
_QUICK = flags.DEFINE_bool('quick', False, 'Few steps: checks that it runs.')
_STEPS = flags.DEFINE_integer(
    'steps', 20, 'Timed steps per measurement (--resident: whole log '
    'intervals of at least this many steps).')
_LOG_EVERY_STEPS = flags.DEFINE_integer(
    'log_every_steps', None, 'The --resident loop\'s log interval, as '
    'config.log_every_steps (default: the config\'s).')
_ROUNDS = flags.DEFINE_integer(
    'rounds', 3, 'Train-step measurements of each side, tiny_flax and torch '
    'alternating (with --resident also the trainer\'s loop and its calls '
    'alone); the table reports medians (the ratio: of the rounds\' ratios).')
_HALF = flags.DEFINE_bool(
    'half_precision', None, 'Half-precision compute, bfloat16 or float16 as '
    'config.half_dtype \'auto\' picks (default: on accelerators).')
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
    'resident', False, 'Also measure training from a split resident on the '
    'device (config.input.on_device) and the share of time the device waits.')
_STEPS_PER_DISPATCH = flags.DEFINE_integer(
    'steps_per_dispatch', 1, 'Train steps per call in the --resident '
    'measurement, as config.steps_per_dispatch.')
_RESIDENT_EXAMPLES = flags.DEFINE_integer(
    'resident_examples', None,
    f'Images in the resident split (default {archive.NUM_TRAIN:,}, '
    'Tiny ImageNet\'s; 1024 with --quick).')
_PROFILE_DIR = flags.DEFINE_string(
    'profile_dir', None, 'Also write jax.profiler traces here of one more '
    'train-step measurement and, with --resident, of one more log interval '
    'of the trainer\'s loop (open them with xprof or TensorBoard).')
_COMPILER_OPTIONS = flags.DEFINE_multi_string(
    'compiler_options', [''],
    'XLA options for every compiled step, on top of the platform\'s, as '
    'XLA_FLAGS writes them: "--xla_gpu_force_conv_nhwc=true '
    '--xla_gpu_autotune_level=2" ("" adds none). Given more than once, each '
    'set is measured in a process of its own and named in the table beside '
    'the model: one measurement per XLA setting tried.')
_JSON = flags.DEFINE_string('json', None,
                            'Write the results here (after each measurement).')


def parse_compiler_options(text):
  """`--compiler_options` text as jax.jit's `compiler_options`: a dict of
  booleans, numbers and strings ('--a=true --b=2 --c=X,Y')."""
  options = {}
  for item in text.split():
    name, sep, value = item.removeprefix('--').partition('=')
    if not sep or not name:
      raise app.UsageError('--compiler_options takes name=value pairs '
                           f'separated by spaces; got {item!r} in {text!r}.')
    options[name] = _option_value(value)
  return options


def _option_value(text):
  if text.lower() in ('true', 'false'):
    return text.lower() == 'true'
  for kind in (int, float):
    try:
      return kind(text)
    except ValueError:
      pass
  return text


def _check_compiler_options(options, text):
  """A UsageError for options this jaxlib does not know or cannot take."""
  try:
    backend.check_compiler_options(options)
  except jax.errors.JaxRuntimeError as error:
    raise app.UsageError(f'--compiler_options={text!r}: {error}') from None


def original_config(name, half, kernels):
  """The model's config, with this benchmark's precision and kernels."""
  config = importlib.import_module(f'configs.{CONFIGS[name]}').get_config()
  config.half_precision = half
  config.kernels = kernels
  return config


_COLUMNS = (  # (heading, result key, format)
    ('input', 'image_size', '{}'), ('tiny_flax img/s', 'tiny_flax_img_s', '{:.1f}'),
    ('torch img/s', 'torch_img_s', '{:.1f}'), ('ratio', 'ratio', '{:.2f}x'),
    ('torch.compile img/s', 'torch_compile_img_s', '{:.1f}'),
    ('ratio', 'compile_ratio', '{:.2f}x'), ('eval img/s', 'eval_img_s', '{:.1f}'),
    ('compile s', 'compile_s', '{:.1f}'), ('GFLOPs/img', 'gflops_per_img', '{:.3f}'),
    ('MFU', 'mfu', '{:.1%}'), ('resident img/s', 'resident_img_s', '{:.1f}'),
    ('device idle', 'device_idle_share', '{:.1%}'),
    ('peak GB', 'peak_memory_gb', '{:.2f}'),
    ('train step temp GB', 'train_temp_gb', '{:.2f}'))


def print_table(results):
  print('\n| model | ' + ' | '.join(c[0] for c in _COLUMNS) + ' |\n'
        + '|---' * (len(_COLUMNS) + 1) + '|')
  for name, r in results.items():
    print(f'| {name} | ' + ' | '.join(
        fmt.format(r[key]) if key in r else '-' for _, key, fmt in _COLUMNS)
          + ' |')


def _write_json(results):
  """All results so far to --json: a later failure keeps the earlier ones."""
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=2)


def _measure_each_in_a_new_process(names, option_sets):
  """Runs this script once per model and set of compiler options and merges
  what each wrote; with several sets a result is named 'MODEL [OPTIONS]'."""
  own = ('models', 'json', 'compiler_options')
  passed_on = [flags.FLAGS[name].serialize() for name in flags.FLAGS
               if flags.FLAGS[name].present and name not in own]
  results, failed = {}, []
  with tempfile.TemporaryDirectory() as scratch:
    for i, (name, options) in enumerate(
        (name, options) for name in names for options in option_sets):
      label = (f'{name} [{options or "platform defaults"}]'
               if len(option_sets) > 1 else name)
      path = os.path.join(scratch, f'{i}.json')
      command = [sys.executable, '-m', __spec__.name, f'--models={name}',
                 f'--compiler_options={options}', f'--json={path}',
                 *passed_on]
      if subprocess.run(command, check=False).returncode != 0:
        failed.append(label)
      if os.path.exists(path):
        with open(path) as f:
          results[label] = json.load(f)[name]
      _write_json(results)
  print_table(results)
  if failed:
    raise SystemExit(f'The benchmark failed for {", ".join(failed)}.')


def main(argv):
  del argv
  if len(_MODELS.value) > 1 or len(_COMPILER_OPTIONS.value) > 1:
    return _measure_each_in_a_new_process(_MODELS.value,
                                          _COMPILER_OPTIONS.value)
  on_cpu = backend.on_cpu()
  batch_size = _BATCH_SIZE.value or (64 if on_cpu else 256)
  half = (not on_cpu) if _HALF.value is None else _HALF.value
  num_steps = 2 if _QUICK.value else _STEPS.value
  rounds = 1 if _QUICK.value else _ROUNDS.value
  try:  # scripts/torch_timing.py needs torch
    from scripts import torch_timing  # pylint: disable=g-import-not-at-top
  except ImportError:
    torch_timing = None
  torch_timing = torch_timing if _TORCH.value else None
  name = _MODELS.value[0]
  config = original_config(name, half, _KERNELS.value)
  config.microbatches = _MICROBATCHES.value
  config.log_every_steps = _LOG_EVERY_STEPS.value or config.log_every_steps
  platform = backend.resolve(config, resident_bytes=0)
  options_text = _COMPILER_OPTIONS.value[0]
  if options_text:
    options = parse_compiler_options(options_text)
    _check_compiler_options(options, options_text)
    platform = dataclasses.replace(platform, compiler_options={
        **(platform.compiler_options or {}), **options})
  par = parallel.Parallel(_PARALLELISM.value,
                          compiler_options=platform.compiler_options)
  par.check_batch_size(batch_size)
  steps.check_microbatches(config.microbatches, batch_size // par.num_devices)
  dtype = jnp.dtype(platform.compute_dtype).name
  peak = throughput.matmul_peak(platform.compute_dtype,
                                2 if _QUICK.value else 10,
                                size=2048 if on_cpu else 8192)
  print(f'{jax.devices()}, jax {jax.__version__}, batch {batch_size}, '
        f'{dtype}, matmul peak {peak / 1e12:.2f} TFLOP/s', flush=True)
  results = {}

  def record(result):
    results.setdefault(name, {}).update(result)
    print(json.dumps({name: result}), flush=True)
    _write_json(results)

  image_shape = throughput.train_image_shape(config.input.train)
  if _IMAGE_SIZE.value:
    image_shape = (_IMAGE_SIZE.value, _IMAGE_SIZE.value, image_shape[-1])
  record({'image_size': image_shape[0]})
  if options_text:
    record({'compiler_options': options_text})
  if _STEP.value:
    result, time_ours = throughput.measure_step(
        config, platform, par, batch_size, image_shape, num_steps)
    timers = [time_ours]
    if torch_timing:
      timers.append(torch_timing.train_step_timer(
          config, name, archive.NUM_CLASSES, batch_size, image_shape[0],
          dtype, num_steps, compiled=False))
    result.update(throughput.train_rates(
        throughput.alternate(timers, rounds, batch_size),
        result['gflops_per_img'], peak))
    record(result)
    if _PROFILE_DIR.value:
      with jax.profiler.trace(os.path.join(_PROFILE_DIR.value, name)):
        time_ours()
  if _RESIDENT.value:
    examples = _RESIDENT_EXAMPLES.value or (
        1024 if _QUICK.value else archive.NUM_TRAIN)
    if examples < batch_size:
      raise app.UsageError(f'--resident_examples={examples} is less than one '
                           f'batch ({batch_size}).')
    record(throughput.measure_resident(
        config, platform, par, batch_size, num_steps, examples,
        _STEPS_PER_DISPATCH.value, rounds,
        _PROFILE_DIR.value and os.path.join(_PROFILE_DIR.value,
                                            f'{name}_resident')))
  if _STEP.value and torch_timing and _TORCH_COMPILE.value:
    compiled_img_s = batch_size / torch_timing.train_step_timer(
        config, name, archive.NUM_CLASSES, batch_size, image_shape[0], dtype,
        num_steps, compiled=True)()
    record({'torch_compile_img_s': compiled_img_s,
            'compile_ratio': results[name]['tiny_flax_img_s'] / compiled_img_s})
  print_table(results)


if __name__ == '__main__':
  app.run(main)
