"""The CPU convolution and pooling forms equal XLA's, values and gradients."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from tiny_flax.models import layers

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _reference(x, w, stride, padding, groups):
  return lax.conv_general_dilated(
      x, w, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=NHWC, feature_group_count=groups)


def _ours(x, w, stride, padding, groups):
  return layers.conv_general_dilated(
      x, w, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, NHWC),
      feature_group_count=groups)


@pytest.mark.parametrize('size, kernel, cin, cout, stride, padding, groups', [
    (8, 1, 16, 32, 1, 0, 1),     # 1x1: matmul
    (8, 1, 16, 32, 2, 0, 1),     # strided 1x1 (ResNet downsample)
    (8, 3, 12, 12, 1, 1, 12),    # depthwise: shifted slices
    (9, 3, 12, 12, 2, 1, 12),    # strided depthwise, odd size
    (2, 3, 16, 24, 1, 1, 1),     # 2x2 output: im2col
    (4, 3, 16, 24, 2, 1, 1),     # strided 3x3 to 2x2: im2col
    (5, 3, 16, 24, 2, 1, 1),     # strided 3x3 to 3x3: XLA's convolution
    (8, 3, 8, 8, 1, 1, 1),       # 8x8 output: XLA's convolution
    (16, 7, 3, 8, 2, 3, 1),      # stem: XLA's convolution
])
def test_conv_forms_match_lax(size, kernel, cin, cout, stride, padding, groups):
  rng = np.random.default_rng(size + kernel)
  x = jnp.asarray(rng.normal(size=(2, size, size, cin)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, cin // groups, cout)),
                  jnp.float32)
  args = (stride, padding, groups)
  np.testing.assert_allclose(_ours(x, w, *args), _reference(x, w, *args),
                             rtol=1e-4, atol=1e-4)
  grads = [jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w, *args))),
                    argnums=(0, 1))(x, w) for f in (_ours, _reference)]
  for ours, reference in zip(*grads):
    np.testing.assert_allclose(ours, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize('size, window, stride, padding', [
    (32, 3, 2, 1), (55, 3, 2, 0), (7, 3, 2, 0), (8, 2, 2, 0), (9, 3, 1, 1)])
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_matches_reduce_window(size, window, stride, padding, ties):
  """Values and gradients; with ties the gradient goes to the first maximum."""
  x = np.random.default_rng(size).normal(size=(2, size, size, 4))
  x = jnp.asarray(np.maximum(np.round(x), 0) if ties else x, jnp.float32)
  reference = lambda x: nn.max_pool(x, (window, window), (stride, stride),
                                    ((padding, padding),) * 2)
  ours = lambda x: layers.max_pool(x, window, stride, padding)
  np.testing.assert_array_equal(ours(x), reference(x))
  np.testing.assert_array_equal(
      jax.grad(lambda x: jnp.sum(ours(x) ** 2))(x),
      jax.grad(lambda x: jnp.sum(reference(x) ** 2))(x))
