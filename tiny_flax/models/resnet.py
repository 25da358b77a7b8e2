"""torchvision's ResNet (v1.5: the stride sits on the bottleneck's 3x3).

Submodules are named after torchvision's state-dict keys (`layer1_0.conv1`
for `layer1.0.conv1`), so weights convert by name.
"""

import functools
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax.numpy as jnp

from tiny_flax.models import layers


class BasicBlock(nn.Module):
  planes: int
  stride: int
  conv: Any
  norm: Any
  expansion = 1

  @nn.compact
  def __call__(self, x):
    in_planes = x.shape[-1]
    out = self.conv(in_planes, self.planes, 3, self.stride, 1,
                    name='conv1')(x)
    out = nn.relu(self.norm(name='bn1')(out))
    out = self.conv(self.planes, self.planes, 3, 1, 1, name='conv2')(out)
    out = self.norm(name='bn2')(out)
    return nn.relu(out + _shortcut(x, self.planes, self.stride, self.conv,
                                   self.norm))


class Bottleneck(nn.Module):
  planes: int
  stride: int
  conv: Any
  norm: Any
  expansion = 4

  @nn.compact
  def __call__(self, x):
    in_planes, out_planes = x.shape[-1], self.planes * self.expansion
    out = self.conv(in_planes, self.planes, 1, name='conv1')(x)
    out = nn.relu(self.norm(name='bn1')(out))
    out = self.conv(self.planes, self.planes, 3, self.stride, 1,
                    name='conv2')(out)
    out = nn.relu(self.norm(name='bn2')(out))
    out = self.conv(self.planes, out_planes, 1, name='conv3')(out)
    out = self.norm(name='bn3')(out)
    return nn.relu(out + _shortcut(x, out_planes, self.stride, self.conv,
                                   self.norm))


def _shortcut(x, out_planes, stride, conv, norm):
  if stride == 1 and x.shape[-1] == out_planes:
    return x
  x = conv(x.shape[-1], out_planes, 1, stride, name='downsample_0')(x)
  return norm(name='downsample_1')(x)


class ResNet(nn.Module):
  """ResNet with torchvision's stem, stages and initialisation."""
  block: Any
  stage_sizes: Sequence[int]
  num_classes: int
  width: int = 64
  dtype: Any = jnp.float32
  axis_name: Optional[str] = None  # BatchNorm statistics across devices
  kernels: layers.Kernels = layers.Kernels()

  @nn.compact
  def __call__(self, x, train: bool = False):
    norm = layers.batch_norm(train, self.axis_name, self.dtype)
    conv = functools.partial(self.kernels.conv2d, bias=False, dtype=self.dtype,
                             kernel_init=layers.conv_kernel_init)
    x = x.astype(self.dtype)
    x = conv(x.shape[-1], self.width, 7, 2, 3, name='conv1')(x)
    x = nn.relu(norm(name='bn1')(x))
    x = self.kernels.max_pool(x, 3, 2, 1)
    for stage, num_blocks in enumerate(self.stage_sizes):
      for index in range(num_blocks):
        x = self.block(
            planes=self.width * 2**stage,
            stride=2 if stage > 0 and index == 0 else 1,
            conv=conv, norm=norm,
            name=f'layer{stage + 1}_{index}')(x)
    x = x.mean(axis=(1, 2))
    logits = layers.linear(x.shape[-1], self.num_classes, dtype=self.dtype,
                           name='fc')(x)
    return logits.astype(jnp.float32)


ResNet18 = functools.partial(ResNet, block=BasicBlock, stage_sizes=(2, 2, 2, 2))
ResNet50 = functools.partial(ResNet, block=Bottleneck, stage_sizes=(3, 4, 6, 3))
# Not in torchvision: a narrow ResNet for smoke runs and tests on a laptop CPU.
ResNetTiny = functools.partial(ResNet, block=BasicBlock, stage_sizes=(1, 1, 1, 1),
                               width=16)
