"""torchvision's AlexNet, with AdaptiveAvgPool2d((6, 6)) at any input size.

Submodules carry torchvision's state-dict names (`features_3` for
`features.3`). torchvision flattens NCHW features before the classifier and
this module flattens NHWC ones: weight conversion reorders `classifier_1`.
"""

import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp
import numpy as np

from tiny_flax import errors
from tiny_flax.models import layers

POOLED = 6
# Smaller inputs leave no pixel for the third max pool (torch fails there too).
MIN_INPUT_SIZE = 63


def adaptive_pool_matrix(size, bins):
  """(bins, size) averaging weights of torch's adaptive pooling along one axis."""
  matrix = np.zeros((bins, size), np.float32)
  for i in range(bins):
    start = (i * size) // bins
    end = -((-(i + 1) * size) // bins)  # ceil
    matrix[i, start:end] = 1.0 / (end - start)
  return matrix


def adaptive_avg_pool(x, output_size):
  """torch.nn.AdaptiveAvgPool2d on NHWC, as two small matmuls."""
  pool_h = adaptive_pool_matrix(x.shape[1], output_size)
  pool_w = adaptive_pool_matrix(x.shape[2], output_size)
  return jnp.einsum('ih,bhwc,jw->bijc', pool_h.astype(x.dtype), x,
                    pool_w.astype(x.dtype))


class AlexNet(nn.Module):
  num_classes: int
  dropout: float = 0.5
  dtype: Any = jnp.float32
  axis_name: Any = None  # no BatchNorm; accepted like the other families
  kernels: layers.Kernels = layers.Kernels()

  @nn.compact
  def __call__(self, x, train: bool = False):
    conv = functools.partial(self.kernels.conv2d, dtype=self.dtype)
    pool = functools.partial(self.kernels.max_pool, window=3, stride=2)
    if min(x.shape[1:3]) < MIN_INPUT_SIZE:
      raise errors.UserError(
          f'AlexNet needs inputs of at least {MIN_INPUT_SIZE}x{MIN_INPUT_SIZE} '
          f'pixels, got {x.shape[1]}x{x.shape[2]}: raise the crop or resize '
          'size in config.input.')
    x = x.astype(self.dtype)
    x = pool(nn.relu(conv(3, 64, 11, 4, 2, name='features_0')(x)))
    x = pool(nn.relu(conv(64, 192, 5, 1, 2, name='features_3')(x)))
    x = nn.relu(conv(192, 384, 3, 1, 1, name='features_6')(x))
    x = nn.relu(conv(384, 256, 3, 1, 1, name='features_8')(x))
    x = pool(nn.relu(conv(256, 256, 3, 1, 1, name='features_10')(x)))
    x = adaptive_avg_pool(x, POOLED).reshape((x.shape[0], -1))
    linear = functools.partial(layers.linear, dtype=self.dtype)
    dropout = functools.partial(nn.Dropout, self.dropout, deterministic=not train)
    x = nn.relu(linear(256 * POOLED**2, 4096, name='classifier_1')(dropout()(x)))
    x = nn.relu(linear(4096, 4096, name='classifier_4')(dropout()(x)))
    x = linear(4096, self.num_classes, name='classifier_6')(x)
    return x.astype(jnp.float32)
