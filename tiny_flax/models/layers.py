"""Layers shared by the model families, with PyTorch's defaults.

torchvision's networks are defined by torch.nn's defaults as much as by their
code: symmetric padding, Kaiming initialisation, Linear's uniform init and
BatchNorm's momentum and unbiased running variance. These layers carry them.
"""

import dataclasses
import functools
from typing import Callable, Optional

import flax.linen as nn
import jax
from jax import lax
import jax.numpy as jnp

# torchvision initialises convolutions with kaiming_normal_(mode='fan_out').
conv_kernel_init = nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')


def torch_default_kernel_init():
  """torch.nn's default for Linear and Conv: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
  return nn.initializers.variance_scaling(1 / 3, 'fan_in', 'uniform')


def torch_default_bias_init(fan_in):
  bound = 1 / fan_in**0.5
  return lambda key, shape, dtype=jnp.float32: jax.random.uniform(
      key, shape, dtype, -bound, bound)


def max_pool(x, window, stride, padding=0):
  """torch.nn.MaxPool2d (floor mode) on NHWC."""
  return nn.max_pool(x, (window, window), (stride, stride),
                     ((padding, padding), (padding, padding)))


@dataclasses.dataclass(frozen=True)
class Kernels:
  """The convolution and max pool a model is built from.

  XLA's own ops by default; `backend.kernels` swaps in other forms of the
  same functions (cpu_kernels.KERNELS) without the models knowing the
  backend, as flax's examples pass their `conv` module.
  """
  conv_general_dilated: Callable = lax.conv_general_dilated
  max_pool: Callable = max_pool

  def conv2d(self, *args, **kwargs):
    """`conv2d` on this convolution."""
    return conv2d(*args, conv_general_dilated=self.conv_general_dilated,
                  **kwargs)


def conv2d(in_channels, out_channels, kernel_size, stride=1, padding=0,
           groups=1, bias=True, *, dtype, name=None, kernel_init=None,
           conv_general_dilated=lax.conv_general_dilated):
  """torch.nn.Conv2d's signature and defaults, on NHWC inputs."""
  fan_in = in_channels // groups * kernel_size**2
  return nn.Conv(
      out_channels, (kernel_size, kernel_size), strides=stride,
      padding=[(padding, padding)] * 2, feature_group_count=groups,
      use_bias=bias, kernel_init=kernel_init or torch_default_kernel_init(),
      bias_init=torch_default_bias_init(fan_in), dtype=dtype,
      conv_general_dilated=conv_general_dilated, name=name)


def linear(in_features, out_features, *, dtype, name=None):
  """torch.nn.Linear with its default initialisation."""
  return nn.Dense(out_features, kernel_init=torch_default_kernel_init(),
                  bias_init=torch_default_bias_init(in_features), dtype=dtype,
                  name=name)


class BatchNorm(nn.Module):
  """torch.nn.BatchNorm2d, statistics optionally shared across `axis_name`.

  Unlike flax.linen.BatchNorm, the running variance is updated with the
  unbiased batch variance, as torch does, so converted checkpoints evolve the
  same way under both frameworks.
  """
  use_running_average: bool
  axis_name: Optional[str] = None
  momentum: float = 0.1  # torch's convention: weight of the new statistics
  epsilon: float = 1e-5
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    features = x.shape[-1]
    scale = self.param('scale', nn.initializers.ones, (features,))
    bias = self.param('bias', nn.initializers.zeros, (features,))
    running_mean = self.variable('batch_stats', 'mean', jnp.zeros, (features,))
    running_var = self.variable('batch_stats', 'var', jnp.ones, (features,))
    if self.use_running_average:
      mean, var = running_mean.value, running_var.value
    else:
      axes = tuple(range(x.ndim - 1))
      x32 = x.astype(jnp.float32)
      count = x[..., 0].size
      mean = x32.mean(axes)
      if self.axis_name is not None:
        mean = jax.lax.pmean(mean, self.axis_name)
        count *= jax.lax.axis_size(self.axis_name)
      var = jnp.square(x32 - mean).mean(axes)
      if self.axis_name is not None:
        var = jax.lax.pmean(var, self.axis_name)
      if not self.is_initializing():
        unbiased = var * count / max(count - 1, 1)
        running_mean.value += self.momentum * (mean - running_mean.value)
        running_var.value += self.momentum * (unbiased - running_var.value)
    multiplier = scale * jax.lax.rsqrt(var + self.epsilon)
    return (x * multiplier.astype(self.dtype)
            + (bias - mean * multiplier).astype(self.dtype)).astype(self.dtype)


def batch_norm(train, axis_name, dtype):
  return functools.partial(BatchNorm, use_running_average=not train,
                           axis_name=axis_name, dtype=dtype)
