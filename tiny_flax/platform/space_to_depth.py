"""Strided convolutions of few-channel inputs (the stems) as space-to-depth.

A stem reads the 3-channel image: AlexNet's 11x11 stride-4 convolution,
ResNet's 7x7 stride 2, ShuffleNet's 3x3 stride 2. Three channels fill a
GPU's tensor cores poorly (XLA pads them to 8 for cuDNN). The same
convolution on the image cut into stride x stride blocks, each block's
pixels as channels, is a stride-1 convolution over stride^2 x 3 channels
with a kernel of ceil(k / stride) taps a side (the kernel zero-padded to
whole blocks), as MLPerf's ResNet-50 does on TPUs. The arithmetic is the
same products summed in another order; tests/test_space_to_depth.py
compares values and gradients with lax.conv_general_dilated.

`wrap(conv)` applies it where it fits and leaves every other convolution to
`conv`; config.kernels='space_to_depth' (backend.kernels) wraps the forms
'auto' would choose. No backend takes it by default: on XLA:CPU the 7x7
and 11x11 stems run 3x slower this way (docs/performance.md), and on GPUs
it is a candidate still to be measured.
"""

from jax import lax
import jax.numpy as jnp

from tiny_flax.platform import cpu_kernels

# Inputs with at most this many channels and a stride above 1 are rearranged:
# the images (3); every later layer has 24 or more.
MAX_IN_CHANNELS = 4


def _to_blocks(x, stride):
  """(N, H, W, C), H and W multiples of `stride` -> (N, H/s, W/s, s*s*C)."""
  n, h, w, c = x.shape
  x = x.reshape(n, h // stride, stride, w // stride, stride, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(
      n, h // stride, w // stride, stride * stride * c)


def _kernel_to_blocks(kernel, stride):
  """(KH, KW, C, O), KH and KW multiples of `stride` -> (KH/s, KW/s, s*s*C, O),
  its channels in _to_blocks' order."""
  kh, kw, c, o = kernel.shape
  kernel = kernel.reshape(kh // stride, stride, kw // stride, stride, c, o)
  return kernel.transpose(0, 2, 1, 3, 4, 5).reshape(
      kh // stride, kw // stride, stride * stride * c, o)


def conv(lhs, rhs, stride, padding, precision=None,
         inner=lax.conv_general_dilated):
  """NHWC x HWIO convolution with equal strides `stride` and explicit
  `padding` ((low, high) per spatial dimension), by `inner` at stride 1 on
  the space-to-depth input."""
  blocks = []
  for size, k, (low, high) in zip(lhs.shape[1:3], rhs.shape[:2], padding):
    out = (size + low + high - k) // stride + 1
    taps = -(-k // stride)  # kernel blocks a side
    # Padded input reaching exactly the last output's last kernel block
    # (cropping rows no output reads, or adding zeros read by zero taps).
    blocks.append((out, taps, low, (out - 1 + taps) * stride - size - low))
  (out_h, taps_h, low_h, high_h), (out_w, taps_w, low_w, high_w) = blocks
  x = lax.pad(lhs, jnp.zeros((), lhs.dtype),
              [(0, 0, 0), (low_h, high_h, 0), (low_w, high_w, 0), (0, 0, 0)])
  kernel = jnp.pad(rhs, [(0, taps_h * stride - rhs.shape[0]),
                         (0, taps_w * stride - rhs.shape[1]), (0, 0), (0, 0)])
  x, kernel = _to_blocks(x, stride), _kernel_to_blocks(kernel, stride)
  result = inner(x, kernel, (1, 1), ((0, 0), (0, 0)),
                 dimension_numbers=lax.conv_dimension_numbers(
                     x.shape, kernel.shape, cpu_kernels.NHWC),
                 precision=precision)
  assert result.shape[1:3] == (out_h, out_w), (result.shape, out_h, out_w)
  return result


def wrap(inner=lax.conv_general_dilated):
  """`lax.conv_general_dilated`'s signature: stems through `conv`, every
  other convolution (and the stems' stride-1 form) through `inner`."""

  def conv_general_dilated(lhs, rhs, window_strides, padding,
                           lhs_dilation=None, rhs_dilation=None,
                           dimension_numbers=None, feature_group_count=1,
                           precision=None):
    strides = set(window_strides)
    if (cpu_kernels.explicit_nhwc(lhs, rhs, padding, lhs_dilation,
                                  rhs_dilation, dimension_numbers)
        and feature_group_count == 1 and len(strides) == 1
        and strides != {1} and lhs.shape[-1] <= MAX_IN_CHANNELS):
      return conv(lhs, rhs, strides.pop(), [tuple(p) for p in padding],
                  precision, inner)
    return inner(lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
                 rhs_dilation=rhs_dilation,
                 dimension_numbers=dimension_numbers,
                 feature_group_count=feature_group_count, precision=precision)

  return conv_general_dilated
