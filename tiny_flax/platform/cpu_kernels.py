"""Convolution and max-pool forms that XLA:CPU runs faster than its own ops.

The same functions as `lax.conv_general_dilated` and `layers.max_pool`
(tests/test_cpu_kernels.py compares values and gradients), chosen per shape
while the model is traced. `backend.kernels` injects them into a model on
the CPU backend (config.kernels), and the max pool alone on GPUs: elsewhere,
and for anyone who builds a model directly, the models use XLA's ops. The
speed-ups are measured in docs/performance.md. Under `jit` their gradients
agree with float64 to rounding, but run op by op (no jit) the tap matmuls
round differently, so they are not meant for eager use.
"""

import functools

import jax
from jax import lax
import jax.numpy as jnp

from tiny_flax.models import layers

# `conv_general_dilated` picks the form per shape at trace time:
# - 1x1 kernels: a matmul, forward and backward;
# - depthwise kernels (ShuffleNet): a sum of shifted slices;
# - outputs of at most TAP_MATMULS_MAX_OUTPUT_PIXELS pixels (ResNet's last
#   two stages at 64x64 input): one matmul per kernel tap over the input
#   pixels it reads. XLA's convolution also multiplies the zero padding,
#   most of the work on a 2x2 map; on larger maps it is the faster form.
TAP_MATMULS_MAX_OUTPUT_PIXELS = 16
NHWC = ('NHWC', 'HWIO', 'NHWC')


def explicit_nhwc(lhs, rhs, padding, lhs_dilation, rhs_dilation,
                  dimension_numbers):
  """Whether a convolution is NHWC x HWIO with explicit padding and no
  dilation: the calls that the written-out forms may take."""
  def undilated(dilation):
    return dilation is None or set(dilation) == {1}
  return (not isinstance(padding, str)
          and undilated(lhs_dilation) and undilated(rhs_dilation)
          and dimension_numbers == lax.conv_dimension_numbers(
              lhs.shape, rhs.shape, NHWC))


def _output_size(padded_size, window, stride):
  """Outputs of a window sliding over `padded_size` positions (floor mode)."""
  return (padded_size - window) // stride + 1


def _strided_windows(x, kernel_h, kernel_w, strides, padding):
  """Yields ((row, column), slice) of every kernel tap over padded `x`."""
  x = jnp.pad(x, ((0, 0), *padding, (0, 0)))
  out_h = _output_size(x.shape[1], kernel_h, strides[0])
  out_w = _output_size(x.shape[2], kernel_w, strides[1])
  for i in range(kernel_h):
    for j in range(kernel_w):
      yield (i, j), x[:, i:i + strides[0] * (out_h - 1) + 1:strides[0],
                      j:j + strides[1] * (out_w - 1) + 1:strides[1]]


def _pixels_times_matrix(x, matrix, precision):
  """x (..., k) @ matrix (k, n), as one 2-D matmul.

  On 4-D operands XLA:CPU transposes the whole activation gradient to form
  the kernel gradient (a slow copy);
  on 2-D ones it contracts in place.
  """
  flat = jnp.matmul(x.reshape(-1, x.shape[-1]), matrix, precision=precision)
  return flat.reshape(x.shape[:-1] + matrix.shape[-1:])


def _tap_outputs(size, out_size, stride, low_padding, tap):
  """Outputs [first, end) along one axis whose window puts `tap` on input."""
  first = max(0, -((tap - low_padding) // stride))
  end = min(out_size, (size - 1 + low_padding - tap) // stride + 1)
  return first, end


def _conv_as_tap_matmuls(lhs, rhs, strides, padding, precision):
  """Sum over kernel taps of (the input pixels the tap reads) @ its matrix.

  Padding is never multiplied: each tap's matmul covers only the outputs
  whose window puts that tap inside the input.
  """
  _, height, width, _ = lhs.shape
  kernel_h, kernel_w, in_channels, out_channels = rhs.shape
  out_h = _output_size(height + sum(padding[0]), kernel_h, strides[0])
  out_w = _output_size(width + sum(padding[1]), kernel_w, strides[1])
  # One split rather than an index per tap: its gradient is a single
  # concatenation, not nine kernel-sized pads added together.
  tap_matrices = lax.split(
      rhs.reshape(kernel_h * kernel_w, in_channels, out_channels),
      [1] * (kernel_h * kernel_w))
  partial_outputs = []
  for i in range(kernel_h):
    for j in range(kernel_w):
      (top, bottom), (left, right) = (
          _tap_outputs(height, out_h, strides[0], padding[0][0], i),
          _tap_outputs(width, out_w, strides[1], padding[1][0], j))
      if top >= bottom or left >= right:
        continue
      row = strides[0] * top + i - padding[0][0]
      column = strides[1] * left + j - padding[1][0]
      x = lhs[:, row:row + strides[0] * (bottom - top - 1) + 1:strides[0],
              column:column + strides[1] * (right - left - 1) + 1:strides[1]]
      y = _pixels_times_matrix(x, tap_matrices[i * kernel_w + j][0], precision)
      partial_outputs.append(jnp.pad(y, (
          (0, 0), (top, out_h - bottom), (left, out_w - right), (0, 0))))
  return functools.reduce(jnp.add, partial_outputs)


def _output_pixels(lhs, rhs, strides, padding):
  pixels = 1
  for size, kernel, stride, (low, high) in zip(lhs.shape[1:3], rhs.shape[:2],
                                               strides, padding):
    pixels *= _output_size(size + low + high, kernel, stride)
  return pixels


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None,
                         rhs_dilation=None, dimension_numbers=None,
                         feature_group_count=1, precision=None):
  """lax.conv_general_dilated, in the fastest form for its shape on XLA:CPU."""
  kernel_h, kernel_w, group_in, out_channels = rhs.shape
  if explicit_nhwc(lhs, rhs, padding, lhs_dilation, rhs_dilation,
                   dimension_numbers):
    padding = tuple(tuple(p) for p in padding)
    if kernel_h == kernel_w == 1 and feature_group_count == 1:
      (_, x), = _strided_windows(lhs, 1, 1, window_strides, padding)
      return _pixels_times_matrix(x, rhs[0, 0], precision)
    if group_in == 1 and feature_group_count == lhs.shape[-1] == out_channels:
      taps = (x * rhs[i, j, 0] for (i, j), x in _strided_windows(
          lhs, kernel_h, kernel_w, window_strides, padding))
      return functools.reduce(jnp.add, taps)
    if feature_group_count == 1 and _output_pixels(
        lhs, rhs, window_strides, padding) <= TAP_MATMULS_MAX_OUTPUT_PIXELS:
      return _conv_as_tap_matmuls(lhs, rhs, window_strides, padding,
                                  precision)
  return lax.conv_general_dilated(
      lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation,
      rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
      feature_group_count=feature_group_count, precision=precision)


def max_pool(x, window, stride, padding=0):
  """layers.max_pool written out: XLA:CPU's gradient of reduce_window
  (select-and-scatter) is several times slower, and on GPUs slower too
  (platform.GPU_KERNELS)."""
  return _max_pool(x, window, stride, padding)


def _pool_phases(shape, window, stride, padding):
  """Output size, phase-grid size and the padding that makes the grid.

  The padded input is viewed as (n, rows, stride, cols, stride, c), so that
  tap (i, j) of every window is one contiguous block: phase (i % stride,
  j % stride), offset (i // stride, j // stride). Strided slices would make
  XLA:CPU's gradient a slow loop full of index arithmetic. The padding's high
  side is negative where the grid drops input rows no window reads.
  """
  def axis(size):
    out = _output_size(size + 2 * padding, window, stride)
    rows = out + (window - 1) // stride
    return out, rows, (padding, stride * rows - size - padding, 0)
  (out_h, rows, pad_h), (out_w, cols, pad_w) = axis(shape[1]), axis(shape[2])
  return (out_h, out_w), (rows, cols), ((0, 0, 0), pad_h, pad_w, (0, 0, 0))


def _pool_taps(x, window, stride, padding):
  """Each window position's values, as unit-stride slices of phase arrays."""
  n, _, _, c = x.shape
  (out_h, out_w), (rows, cols), pads = _pool_phases(
      x.shape, window, stride, padding)
  x = lax.pad(x, jnp.array(-jnp.inf, x.dtype), pads)
  x = x.reshape(n, rows, stride, cols, stride, c)
  for i in range(window):
    for j in range(window):
      yield x[:, i // stride:i // stride + out_h, i % stride,
              j // stride:j // stride + out_w, j % stride]


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def _max_pool(x, window, stride, padding):
  return _max_pool_forward(x, window, stride, padding)[0]


def _first_of_larger(a, b):
  """The (value, index) pair with the larger value; on ties the lower index."""
  (value_a, index_a), (value_b, index_b) = a, b
  take_a = (value_a > value_b) | ((value_a == value_b) & (index_a < index_b))
  return (jnp.where(take_a, value_a, value_b),
          jnp.where(take_a, index_a, index_b))


def _first_maximum(taps, window):
  """(maximum, index of its first occurrence) over a window's taps.

  Each window row is reduced by a chain of compares, and the rows' results
  are stacked on a new leading axis and reduced by one variadic `lax.reduce`,
  which XLA:CPU fuses with the stack into a single loop that writes the
  maximum and the index. The reduction makes XLA materialise the index
  (computed by a chain alone, it was fused into the backward pass and
  recomputed there once per tap). A stack of all nine taps is not fused:
  XLA copies it whole, and the pool's forward takes several times longer.
  """
  rows = []
  for i in range(window):
    rows.append(functools.reduce(_first_of_larger, (
        (tap, jnp.full(tap.shape, i * window + j, jnp.int8))
        for j, tap in enumerate(taps[i * window:(i + 1) * window]))))
  values, indices = (jnp.stack(parts) for parts in zip(*rows))
  return lax.reduce(
      (values, indices),
      (jnp.array(-jnp.inf, values.dtype), jnp.int8(len(taps))),
      _first_of_larger, (0,))


def _max_pool_forward(x, window, stride, padding):
  # As torch: the gradient goes to the first maximum in the window.
  pooled, first = _first_maximum(
      list(_pool_taps(x, window, stride, padding)), window)
  return pooled, (first, x.shape)


def _max_pool_backward(window, stride, padding, residuals, grad):
  """Routes each window's gradient to its first maximum, phase by phase."""
  first, shape = residuals
  n, _, _, c = shape
  (out_h, out_w), (rows, cols), pads = _pool_phases(
      shape, window, stride, padding)
  zero = jnp.zeros((), grad.dtype)
  phases = {}
  for index in range(window * window):
    i, j = divmod(index, window)
    offset_i, offset_j = i // stride, j // stride
    routed = lax.pad(jnp.where(first == index, grad, zero), zero, (
        (0, 0, 0), (offset_i, rows - out_h - offset_i, 0),
        (offset_j, cols - out_w - offset_j, 0), (0, 0, 0)))
    key = i % stride, j % stride
    phases[key] = phases[key] + routed if key in phases else routed
  empty = jnp.zeros((n, rows, cols, c), grad.dtype)
  grid = jnp.stack([
      jnp.stack([phases.get((a, b), empty) for b in range(stride)], axis=3)
      for a in range(stride)], axis=2).reshape(n, rows * stride, cols * stride, c)
  # The forward's padding, undone: pad's transpose is the opposite pad.
  return (lax.pad(grid, zero, [(-low, -high, 0) for low, high, _ in pads]),)


_max_pool.defvjp(_max_pool_forward, _max_pool_backward)


KERNELS = layers.Kernels(conv_general_dilated=conv_general_dilated,
                         max_pool=max_pool)
