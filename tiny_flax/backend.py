"""What differs between XLA backends, decided once at the start of a run.

The models, step bodies and parallel wrappers are the same on every backend;
this module is the one place that asks which backend runs them. On TPU every
choice here is XLA's default; docs/performance.md has the measurements behind
the CPU and GPU ones.
"""

import functools

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


def on_cpu():
  return jax.default_backend() == 'cpu'


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
