"""What differs between XLA backends, decided once at the start of a run.

The models, step bodies and parallel wrappers are the same on every backend;
this module is the one place that asks which backend runs them. `resolve`
makes every choice once, and the trainer, `evaluate` and the benchmark pass
the resulting `Platform` down. On TPU every choice is XLA's default.
"""

import dataclasses
import functools
import importlib.util
import os
from typing import Optional

from absl import logging
import jax
import jax.numpy as jnp

from tiny_flax import errors
from tiny_flax.models import layers
from tiny_flax.platform import cpu_kernels
from tiny_flax.platform import space_to_depth

KERNEL_CHOICES = ('auto', 'xla', 'cpu', 'space_to_depth')
ON_DEVICE_CHOICES = ('auto', 'true', 'false')
HALF_DTYPE_CHOICES = ('auto', 'bfloat16', 'float16')

# NVIDIA's tensor cores take bfloat16 from Ampere (compute capability 8.0) on.
# On older GPUs (the T4 of Colab and Kaggle, the V100, the P100) cuDNN and
# cuBLAS have no bfloat16 kernels and XLA computes it in float32, so half
# precision there is float16, with dynamic loss scaling.
FIRST_BFLOAT16_GPU = (8, 0)

# XLA:CPU's own (Eigen) convolutions, with YNNPACK kept for dots and
# reductions: jaxlib 0.10 hands convolutions to YNNPACK by default, which
# trains the models slower.
CPU_COMPILER_OPTIONS = {
    'xla_cpu_experimental_ynn_fusion_type':
        'LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE'}

# On GPUs, XLA's convolutions with the written-out max pool of cpu_kernels
# (a first-maximum index and a phase-wise backward instead of
# select-and-scatter), which trains AlexNet faster.
GPU_KERNELS = layers.Kernels(max_pool=cpu_kernels.max_pool)

# Train steps per dispatch where config.steps_per_dispatch is 0: on an
# accelerator a small batch's step is shorter than Python's dispatch of it.
# XLA:CPU runs a scanned step slower.
ACCELERATOR_STEPS_PER_DISPATCH = 16

# config.input.on_device = 'auto' keeps the splits in device memory where
# they take at most this share of the free memory, leaving the rest to the
# model's activations.
RESIDENT_SHARE_OF_FREE_MEMORY = 0.25

# Where compiled programs are kept for later runs on GPUs and TPUs: there a
# model's step takes 10-50 s to compile (docs/performance.md), again at every
# resume and evaluation. Not on the CPU, where a run lasts hours and XLA:CPU's
# code is built for the host's processor, which the cache's key does not name
# (a home folder shared by different machines would hand it to another).
COMPILATION_CACHE_DIR = os.path.join('~', '.cache', 'tiny_flax', 'jax')


@dataclasses.dataclass(frozen=True)
class Platform:
  """The platform's choices for one run (`resolve`)."""
  backend: str  # jax.default_backend(): 'cpu', 'gpu' or 'tpu'
  kernels: layers.Kernels  # the models' convolution and max pool
  compute_dtype: jnp.dtype  # the models' activations and matmuls
  compiler_options: Optional[dict]  # for every compiled step
  steps_per_dispatch: int  # train steps per host dispatch
  input_on_device: bool  # the splits resident in device memory
  tensorflow: bool  # TensorFlow and TFDS importable (tf.data's path)

  @property
  def loss_scaling(self):
    """float16 gradients need a scaled loss (steps.ScaledTrainState)."""
    return self.compute_dtype == jnp.float16


def resolve(config, resident_bytes):
  """The `Platform` of `config` on this process's backend.

  `resident_bytes`: device memory the splits take when resident. Bad values
  of config.kernels, config.steps_per_dispatch and config.input.on_device
  end here, as UserErrors.
  """
  tensorflow = tensorflow_installed()
  platform = Platform(
      backend=jax.default_backend(),
      kernels=kernels(config.kernels),
      compute_dtype=compute_dtype(config.half_precision, config.half_dtype),
      compiler_options=compiler_options(),
      steps_per_dispatch=steps_per_dispatch(config.steps_per_dispatch),
      input_on_device=input_on_device(config.input.on_device, resident_bytes,
                                      tensorflow),
      tensorflow=tensorflow)
  unused = unused_gpu(platform.backend)
  if unused:
    logging.warning('%s', unused)
  logging.info('Input: %s (config.input.on_device=%s).',
               'resident in device memory' if platform.input_on_device
               else 'tf.data', config.input.on_device)
  logging.info('Platform: %s; %d steps per dispatch '
               '(config.steps_per_dispatch=%s), config.kernels=%s, computing '
               'in %s, %s.', platform.backend, platform.steps_per_dispatch,
               config.steps_per_dispatch, config.kernels,
               jnp.dtype(platform.compute_dtype).name,
               'TensorFlow installed' if tensorflow else 'no TensorFlow')
  return platform


def unused_gpu(backend, environ=os.environ,
               nvidia_driver='/proc/driver/nvidia/version'):
  """A warning where an NVIDIA GPU is present but JAX computes on the CPU
  (JAX's CPU build alone installed, as requirements.txt installs it), else
  None. Silent where the CPU was chosen (JAX_PLATFORMS, CUDA_VISIBLE_DEVICES
  empty or -1)."""
  if (backend != 'cpu' or environ.get('JAX_PLATFORMS')
      or environ.get('CUDA_VISIBLE_DEVICES') in ('', '-1')
      or not os.path.exists(nvidia_driver)):
    return None
  return ('This machine has an NVIDIA GPU, but JAX computes on the CPU: its '
          'CUDA build is not installed. To train on the GPU: pip install -r '
          'requirements-cuda.txt (README, GPUs and TPUs).')


def use_compilation_cache():
  """Keeps compiled programs between runs: COMPILATION_CACHE_DIR off the CPU.

  JAX's own settings decide where they are set: JAX_COMPILATION_CACHE_DIR
  names another folder (on the CPU too), JAX_ENABLE_COMPILATION_CACHE=false
  turns the cache off. Call before anything compiles. Returns the folder, or
  None without a cache.
  """
  path = jax.config.jax_compilation_cache_dir
  if not path and not on_cpu():
    path = os.path.expanduser(COMPILATION_CACHE_DIR)
    jax.config.update('jax_compilation_cache_dir', path)
  if not path or not jax.config.jax_enable_compilation_cache:
    return None
  logging.info('Compiled programs are kept in %s for later runs '
               '(JAX_COMPILATION_CACHE_DIR; JAX_ENABLE_COMPILATION_CACHE=false '
               'turns this off).', path)
  return path


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


def input_on_device(choice, nbytes, tensorflow):
  """Whether the splits (`nbytes` on every device) live in device memory.

  config.input.on_device: 'true', 'false', or 'auto': on for a GPU or TPU
  with room for them, and wherever TensorFlow (tf.data's path) is missing;
  off on the CPU, where tf.data overlaps decoding with the step.
  """
  choice = str(choice).lower()
  errors.require(choice in ON_DEVICE_CHOICES, 'config.input.on_device',
                 f'one of {", ".join(ON_DEVICE_CHOICES)}', choice)
  if choice == 'false':
    return False
  free = free_device_memory()
  if choice == 'auto':
    if not tensorflow:
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

  'xla': XLA's ops; 'cpu': the forms of cpu_kernels.py; 'auto': 'cpu' on the
  CPU backend, GPU_KERNELS on GPUs, else 'xla'; 'space_to_depth': 'auto's
  forms with the stems' strided convolutions as space-to-depth
  (space_to_depth.py).
  """
  errors.require(choice in KERNEL_CHOICES, 'config.kernels',
                 f'one of {", ".join(KERNEL_CHOICES)}', choice)
  if choice == 'space_to_depth':
    forms = kernels('auto')
    return dataclasses.replace(forms, conv_general_dilated=space_to_depth.wrap(
        forms.conv_general_dilated))
  if choice == 'cpu' or (choice == 'auto' and on_cpu()):
    return cpu_kernels.KERNELS
  if choice == 'auto' and jax.default_backend() == 'gpu':
    return GPU_KERNELS
  return layers.Kernels()


def compute_dtype(half_precision, half_dtype='auto'):
  """The models' compute dtype: float32, or with `half_precision` the
  config.half_dtype; 'auto' is float16 on NVIDIA GPUs without bfloat16
  tensor cores (FIRST_BFLOAT16_GPU) and bfloat16 elsewhere."""
  errors.require(half_dtype in HALF_DTYPE_CHOICES, 'config.half_dtype',
                 f'one of {", ".join(HALF_DTYPE_CHOICES)}', half_dtype)
  if not half_precision:
    return jnp.float32
  if half_dtype == 'auto':
    return jnp.float16 if _gpu_without_bfloat16() else jnp.bfloat16
  return jnp.dtype(half_dtype).type


def _gpu_without_bfloat16():
  device = jax.local_devices()[0]
  capability = getattr(device, 'compute_capability', None)
  if device.platform != 'gpu' or not capability:
    return False
  return tuple(int(part) for part in capability.split('.')) < FIRST_BFLOAT16_GPU


def steps_per_dispatch(value):
  """config.steps_per_dispatch, with 0 resolved: 1 on the CPU, else
  ACCELERATOR_STEPS_PER_DISPATCH."""
  errors.require(
      isinstance(value, int) and not isinstance(value, bool) and value >= 0,
      'config.steps_per_dispatch',
      'a whole number >= 1, or 0 to let the platform choose', value)
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
    check_compiler_options(CPU_COMPILER_OPTIONS)
  except jax.errors.JaxRuntimeError as error:
    if not any(option in str(error) for option in CPU_COMPILER_OPTIONS):
      raise
    logging.warning('This jaxlib lacks %s; compiling with its defaults.',
                    ', '.join(CPU_COMPILER_OPTIONS))
    return None
  return CPU_COMPILER_OPTIONS


def check_compiler_options(options):
  """Compiles a trivial program with `options`: a JaxRuntimeError names any
  that this jaxlib does not know or cannot take."""
  jax.jit(lambda x: x, compiler_options=options).lower(0.0).compile()
