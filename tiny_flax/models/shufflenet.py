"""torchvision's ShuffleNetV2: channel split, two branches, channel shuffle.

Submodules carry torchvision's state-dict names (`stage2_0.branch2_3` for
`stage2.0.branch2.3`), so weights convert by name.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from tiny_flax.models import layers


def channel_shuffle(x, groups):
  """torch's view(b, g, c/g, h, w).transpose(1, 2), in NHWC."""
  *spatial, channels = x.shape
  x = x.reshape(*spatial, groups, channels // groups)
  return x.swapaxes(-1, -2).reshape(*spatial, channels)


class InvertedResidual(nn.Module):
  out_channels: int
  stride: int
  conv: Any
  norm: Any

  @nn.compact
  def __call__(self, x):
    features = self.out_channels // 2
    in_channels = x.shape[-1]
    if self.stride == 1:
      kept, x = jnp.split(x, 2, axis=-1)
    else:
      kept = self.conv(in_channels, in_channels, 3, self.stride, 1,
                       groups=in_channels, name='branch1_0')(x)
      kept = self.norm(name='branch1_1')(kept)
      kept = self.conv(in_channels, features, 1, name='branch1_2')(kept)
      kept = nn.relu(self.norm(name='branch1_3')(kept))
    branch_in = x.shape[-1]
    x = self.conv(branch_in, features, 1, name='branch2_0')(x)
    x = nn.relu(self.norm(name='branch2_1')(x))
    x = self.conv(features, features, 3, self.stride, 1, groups=features,
                  name='branch2_3')(x)
    x = self.norm(name='branch2_4')(x)
    x = self.conv(features, features, 1, name='branch2_5')(x)
    x = nn.relu(self.norm(name='branch2_6')(x))
    return channel_shuffle(jnp.concatenate([kept, x], axis=-1), 2)


class ShuffleNetV2(nn.Module):
  stages_repeats: Sequence[int]
  stages_out_channels: Sequence[int]
  num_classes: int
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None  # BatchNorm statistics across devices
  kernels: layers.Kernels = layers.Kernels()

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = layers.batch_norm(train, self.axis_name, self.dtype)
    conv = functools.partial(self.kernels.conv2d, bias=False, dtype=self.dtype)
    stem, *stages, last = self.stages_out_channels
    x = x.astype(self.dtype)
    x = conv(x.shape[-1], stem, 3, 2, 1, name='conv1_0')(x)
    x = nn.relu(norm(name='conv1_1')(x))
    x = self.kernels.max_pool(x, 3, 2, 1)
    for stage, (repeats, channels) in enumerate(
        zip(self.stages_repeats, stages), start=2):
      for index in range(repeats):
        x = InvertedResidual(channels, 2 if index == 0 else 1, conv, norm,
                             name=f'stage{stage}_{index}')(x)
    x = conv(x.shape[-1], last, 1, name='conv5_0')(x)
    x = nn.relu(norm(name='conv5_1')(x))
    x = x.mean(axis=(1, 2))
    x = layers.linear(last, self.num_classes, dtype=self.dtype, name='fc')(x)
    return x.astype(jnp.float32)


ShuffleNetV2X1_0 = functools.partial(
    ShuffleNetV2, stages_repeats=(4, 8, 4),
    stages_out_channels=(24, 116, 232, 464, 1024))
