"""What differs between XLA backends, decided once at the start of a run.

The models, step bodies and parallel wrappers are the same on every backend;
this module is the one place that asks which backend runs them. On TPU every
choice here is XLA's default; docs/performance.md has the measurements behind
the CPU and GPU ones.
"""

import functools
import importlib.util

from absl import logging
import jax

from tiny_flax import errors
from tiny_flax.models import cpu_kernels
from tiny_flax.models import layers

KERNEL_CHOICES = ('auto', 'xla', 'cpu')

# jaxlib 0.10's XLA:CPU hands convolutions to YNNPACK by default; its own
# (Eigen) convolutions, with YNNPACK kept for dots and reductions, train
# AlexNet ~35% and ResNet18 ~20% faster (docs/performance.md).
CPU_COMPILER_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}


# XLA's convolutions with the written-out max pool of cpu_kernels (a first-
# maximum index and a phase-wise backward instead of select-and-scatter):
# AlexNet, whose three pools are its only difference, trains 11% faster on
# an H200.
GPU_KERNELS = layers.Kernels(max_pool=cpu_kernels.max_pool)

# Train steps per dispatch where config.steps_per_dispatch is 0. On an H200
# ResNet18's step at batch 128 is shorter than Python's dispatch of it: 16
# steps per call train 31% faster. XLA:CPU runs a scanned step slower.
ACCELERATOR_STEPS_PER_DISPATCH = 16


# config.input.on_device = 'auto' keeps the splits in device memory where
# they take at most this share of the free memory, leaving the rest to the
# model's activations.
RESIDENT_SHARE_OF_FREE_MEMORY = 0.25
ON_DEVICE_CHOICES = ('auto', 'true', 'false')


def on_cpu():
  return jax.default_backend() == 'cpu'


def tensorflow_installed():
  """Whether tf.data's path can run: TensorFlow and TFDS both importable."""
  try:
    return all(importlib.util.find_spec(name) is not None
               for name in ('tensorflow', 'tensorflow_datasets'))
  except ImportError:
    return False


def free_device_memory():
  """The smallest free memory of this process's devices in bytes; None if unknown."""
  free = []
  for device in jax.local_devices():
    stats = device.memory_stats() if hasattr(device, 'memory_stats') else None
    if not stats or 'bytes_limit' not in stats:
      return None
    free.append(stats['bytes_limit'] - stats.get('bytes_in_use', 0))
  return min(free)


def input_on_device(choice, nbytes, tensorflow_installed):
  """Whether the splits (`nbytes` on every device) live in device memory.

  config.input.on_device: 'true', 'false', or 'auto': on for a GPU or TPU
  with room for them, and wherever TensorFlow (tf.data's path) is missing;
  off on the CPU, where tf.data overlaps decoding with the step.
  """
  choice = str(choice).lower()
  if choice not in ON_DEVICE_CHOICES:
    raise errors.UserError(
        'config.input.on_device must be one of '
        f'{", ".join(ON_DEVICE_CHOICES)}; got {choice!r}.')
  if choice == 'false':
    return False
  free = free_device_memory()
  if choice == 'auto':
    if not tensorflow_installed:
      return True
    return not on_cpu() and (
        free is None or nbytes <= RESIDENT_SHARE_OF_FREE_MEMORY * free)
  if free is not None and nbytes > free:
    raise errors.UserError(
        f'config.input.on_device=true needs {nbytes / 1e9:.2f} GB on every '
        f'device for the decoded splits, but only {free / 1e9:.2f} GB is '
        'free. Pass --config.input.on_device=false (tf.data on the host).')
  return True


def kernels(choice='auto'):
  """The models' convolution and max pool for `config.kernels`.

  'xla': XLA's ops; 'cpu': the forms of models/cpu_kernels.py, which XLA:CPU
  trains 1.1-6x faster; 'auto': 'cpu' on the CPU backend, GPU_KERNELS on
  GPUs, else 'xla'.
  """
  if choice not in KERNEL_CHOICES:
    raise errors.UserError(
        f'config.kernels must be one of {", ".join(KERNEL_CHOICES)}, '
        f'got {choice!r}.')
  if choice == 'cpu' or (choice == 'auto' and on_cpu()):
    return cpu_kernels.KERNELS
  if choice == 'auto' and jax.default_backend() == 'gpu':
    return GPU_KERNELS
  return layers.Kernels()


def steps_per_dispatch(value):
  """config.steps_per_dispatch, with 0 resolved: 1 on the CPU, else
  ACCELERATOR_STEPS_PER_DISPATCH."""
  if isinstance(value, bool) or not isinstance(value, int) or value < 0:
    raise errors.UserError(
        'config.steps_per_dispatch must be a whole number >= 1, or 0 to let '
        f'the platform choose; got {value!r}.')
  if value:
    return value
  return 1 if on_cpu() else ACCELERATOR_STEPS_PER_DISPATCH


@functools.cache
def compiler_options():
  """Options for every compiled step: CPU_COMPILER_OPTIONS on CPU, else none.

  None also where this jaxlib does not know the options (they name an
  experimental flag), with a warning.
  """
  if not on_cpu():
    return None
  try:
    jax.jit(lambda x: x, compiler_options=CPU_COMPILER_OPTIONS).lower(
        0.0).compile()
  except jax.errors.JaxRuntimeError as error:
    if not any(option in str(error) for option in CPU_COMPILER_OPTIONS):
      raise
    logging.warning('This jaxlib lacks %s; compiling with its defaults.',
                    ', '.join(CPU_COMPILER_OPTIONS))
    return None
  return CPU_COMPILER_OPTIONS
