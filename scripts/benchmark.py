"""Train/eval throughput of tiny_flax against PyTorch, measured in one run.

    python -m scripts.benchmark --json=benchmark.json
    python -m scripts.benchmark --models=resnet18 --quick

For each seed config (at its input size) on whatever JAX sees: images/s of
one training step of tiny_flax and of the same torchvision model with the same
batch, input size and optimizer (eager, and torch.compile with
--torch_compile), evaluation images/s, compile time, model FLOPs per image,
the model FLOP utilisation against a matmul peak measured in this run (MFU),
and peak memory. Data is synthetic and already on the device: this measures
the step, not the input pipeline (see scripts/benchmark_input.py). Runs
without TensorFlow, and without torch (then only tiny_flax is measured).
"""

import functools
import json
import resource
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tiny_flax import models
from tiny_flax import parallel
from tiny_flax import steps

# model -> (input size, optimizer, learning rate) of the seed configs.
SEED_SETTINGS = {
    'alexnet': (224, 'adam', 1e-3),
    'resnet18': (64, 'sgd', 1e-3),
    'resnet50': (64, 'sgd', 1e-3),
    'shufflenet_v2_x1_0': (64, 'sgd', 1e-3),
}

_MODELS = flags.DEFINE_list('models', list(SEED_SETTINGS), 'Models to measure.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', None,
                                   'Global batch (default 64 on CPU, else 256).')
_IMAGE_SIZE = flags.DEFINE_integer('image_size', None,
                                   'Override every model\'s input size.')
_QUICK = flags.DEFINE_bool('quick', False, 'Few steps: checks that it runs.')
_STEPS = flags.DEFINE_integer('steps', 20, 'Timed steps per measurement.')
_HALF = flags.DEFINE_bool('half_precision', None,
                          'bf16 compute (default: on accelerators).')
_PARALLELISM = flags.DEFINE_enum('parallelism', 'pmap', parallel.KINDS,
                                 'Parallel wrapper of the train step.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also measure PyTorch if installed.')
_TORCH_COMPILE = flags.DEFINE_bool('torch_compile', False,
                                   'Also measure torch.compile (slow to build).')
_JSON = flags.DEFINE_string('json', None, 'Write the results here.')


def _timed(run, steps):
  """Seconds per call of `run` (which blocks until done), after one warm-up."""
  run()
  start = time.perf_counter()
  for _ in range(steps):
    run()
  return (time.perf_counter() - start) / steps


def matmul_peak_flops(dtype, steps):
  """FLOP/s of a large square matmul: the denominator of MFU."""
  n = 2048 if jax.default_backend() == 'cpu' else 8192
  a = jnp.ones((n, n), dtype)
  matmul = jax.jit(lambda x: x @ x)
  seconds = _timed(lambda: matmul(a).block_until_ready(), steps)
  return 2 * n**3 / seconds


def forward_flops(module, variables, image_shape):
  """XLA's FLOP count of one image's forward pass."""
  apply = jax.jit(functools.partial(module.apply, train=False))
  compiled = apply.lower(variables, jnp.zeros((1,) + image_shape)).compile()
  analysis = compiled.cost_analysis()
  if isinstance(analysis, list):
    analysis = analysis[0]
  return float(analysis.get('flops', float('nan')))


def peak_memory_gb():
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'] / 1e9
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # host RSS


def measure_tiny_flax(name, batch_size, size, optimizer, learning_rate, half,
                      num_steps):
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer=optimizer, learning_rate=learning_rate, momentum=0.9,
      nesterov=False, weight_decay=0.0))
  dtype = jnp.bfloat16 if half else jnp.float32
  module = models.create(name, 200, axis_name=steps.AXIS, dtype=dtype)
  image_shape = (size, size, 3)
  state = steps.create_train_state(config, module, image_shape, learning_rate)
  flops = forward_flops(module, {'params': state.params,
                                 'batch_stats': state.batch_stats}, image_shape)
  par = parallel.Parallel(_PARALLELISM.value)
  par.check_batch_size(batch_size)
  rng = np.random.default_rng(0)
  batch = par.shard_batch({
      'image': rng.normal(size=(batch_size,) + image_shape).astype(np.float32),
      'label': rng.integers(0, 200, batch_size).astype(np.int32),
      'mask': np.ones(batch_size, bool)})
  state = par.replicate(state)
  train_step = par.compile(functools.partial(
      steps.train_step, dropout_key=jax.random.key(0)), donate_state=True)
  start = time.perf_counter()
  train_step = train_step.compile(state, batch)
  compile_s = time.perf_counter() - start
  holder = [state]

  def run_train():
    holder[0], metrics = train_step(holder[0], batch)
    jax.block_until_ready(metrics)
  train_s = _timed(run_train, num_steps)
  eval_step = par.compile(steps.eval_step)
  eval_s = _timed(lambda: jax.block_until_ready(eval_step(holder[0], batch)),
                  num_steps)
  return {'tiny_flax_img_s': batch_size / train_s,
          'eval_img_s': batch_size / eval_s,
          'compile_s': compile_s,
          'gflops_per_img': flops / 1e9,
          'train_tflop_s': 3 * flops * batch_size / train_s / 1e12,
          'peak_memory_gb': peak_memory_gb()}


def measure_torch(name, batch_size, size, optimizer, learning_rate, half,
                  num_steps, compiled):
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  device = 'cuda' if torch.cuda.is_available() else 'cpu'
  model = getattr(torchvision.models, name)(num_classes=200).to(device)
  images = torch.randn(batch_size, 3, size, size, device=device)
  if device == 'cuda':  # the fast PyTorch setting the goals compare against
    model = model.to(memory_format=torch.channels_last)
    images = images.to(memory_format=torch.channels_last)
  labels = torch.randint(0, 200, (batch_size,), device=device)
  opt = (torch.optim.SGD(model.parameters(), lr=learning_rate, momentum=0.9)
         if optimizer == 'sgd' else
         torch.optim.Adam(model.parameters(), lr=learning_rate))
  loss_fn = torch.nn.CrossEntropyLoss()
  forward = torch.compile(model) if compiled else model
  autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=half)

  def run():
    opt.zero_grad(set_to_none=True)
    with autocast:
      loss = loss_fn(forward(images), labels)
    loss.backward()
    opt.step()
    if device == 'cuda':
      torch.cuda.synchronize()
  model.train()
  return batch_size / _timed(run, num_steps)


def _torch_available():
  try:
    import torch  # pylint: disable=g-import-not-at-top,unused-import
    import torchvision  # pylint: disable=g-import-not-at-top,unused-import
    return True
  except ImportError:
    return False


def main(argv):
  del argv
  on_cpu = jax.default_backend() == 'cpu'
  batch_size = _BATCH_SIZE.value or (64 if on_cpu else 256)
  half = (not on_cpu) if _HALF.value is None else _HALF.value
  num_steps = 2 if _QUICK.value else _STEPS.value
  use_torch = _TORCH.value and _torch_available()
  peak = matmul_peak_flops(jnp.bfloat16 if half else jnp.float32,
                           2 if _QUICK.value else 10)
  print(f'{jax.devices()}, batch {batch_size}, '
        f'{"bf16" if half else "float32"}, matmul peak {peak / 1e12:.2f} TFLOP/s',
        flush=True)
  results = {}
  for name in _MODELS.value:
    size, optimizer, learning_rate = SEED_SETTINGS[name]
    size = _IMAGE_SIZE.value or size
    result = measure_tiny_flax(name, batch_size, size, optimizer,
                               learning_rate, half, num_steps)
    result['image_size'] = size
    result['mfu'] = result['train_tflop_s'] * 1e12 / peak
    if use_torch:
      result['torch_img_s'] = measure_torch(name, batch_size, size, optimizer,
                                            learning_rate, half, num_steps,
                                            compiled=False)
      result['ratio'] = result['tiny_flax_img_s'] / result['torch_img_s']
      if _TORCH_COMPILE.value:
        result['torch_compile_img_s'] = measure_torch(
            name, batch_size, size, optimizer, learning_rate, half, num_steps,
            compiled=True)
    results[name] = result
    print(json.dumps({name: result}), flush=True)

  print('\n| model | input | tiny_flax img/s | torch img/s | ratio | '
        'torch.compile img/s | eval img/s | compile s | GFLOPs/img | MFU | '
        'peak GB |\n|---|---|---|---|---|---|---|---|---|---|---|')
  for name, r in results.items():
    def cell(key, fmt='{:.1f}'):
      return fmt.format(r[key]) if key in r else '-'
    print(f"| {name} | {r['image_size']} | {cell('tiny_flax_img_s')} | "
          f"{cell('torch_img_s')} | {cell('ratio', '{:.2f}x')} | "
          f"{cell('torch_compile_img_s')} | {cell('eval_img_s')} | "
          f"{cell('compile_s')} | {cell('gflops_per_img', '{:.3f}')} | "
          f"{cell('mfu', '{:.1%}')} | {cell('peak_memory_gb', '{:.2f}')} |")
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
