"""The stems as space-to-depth equal XLA's convolutions, values and gradients;
every other convolution passes through untouched."""

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_flax import models
from tiny_flax.platform import backend
from tiny_flax.platform import cpu_kernels
from tiny_flax.platform import space_to_depth

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _conv(conv, x, w, stride, padding):
  return conv(x, w, (stride, stride), padding,
              dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape,
                                                           NHWC),
              precision=lax.Precision.HIGHEST)


@pytest.mark.parametrize('height, width, kernel, stride, padding', [
    (224, 224, 11, 4, ((2, 2), (2, 2))),  # AlexNet
    (64, 64, 7, 2, ((3, 3), (3, 3))),     # ResNet
    (64, 64, 3, 2, ((1, 1), (1, 1))),     # ShuffleNetV2
    (63, 65, 7, 2, ((3, 3), (3, 3))),     # odd sizes: a row of zeros added
    (10, 11, 3, 4, ((0, 0), (0, 0))),     # rows no output reads: cropped
    (31, 30, 4, 2, ((0, 1), (2, 0))),     # uneven padding, kernel of blocks
])
def test_stems_match_lax_values_and_gradients(height, width, kernel, stride,
                                              padding):
  rng = np.random.default_rng(kernel * stride)
  x = jnp.asarray(rng.normal(size=(2, height, width, 3)), jnp.float32)
  w = jnp.asarray(rng.normal(size=(kernel, kernel, 3, 8)), jnp.float32)
  ours = jax.jit(lambda x, w: _conv(space_to_depth.wrap(), x, w, stride,
                                    padding))
  reference = jax.jit(lambda x, w: _conv(lax.conv_general_dilated, x, w,
                                         stride, padding))
  scale = float(jnp.abs(reference(x, w)).max())
  np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=0,
                             atol=1e-6 * scale)
  grads = [jax.jit(jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))),
                            argnums=(0, 1)))(x, w) for f in (ours, reference)]
  for ours_grad, reference_grad in zip(*grads):
    np.testing.assert_allclose(
        ours_grad, reference_grad, rtol=0,
        atol=1e-5 * float(jnp.abs(reference_grad).max()))


def test_only_stems_are_rearranged():
  """Stems reach the inner convolution at stride 1 on stride^2 x 3 channels;
  every other call reaches it with its own arguments."""
  calls = []

  def inner(lhs, rhs, window_strides, padding, **kwargs):
    calls.append((lhs.shape, rhs.shape, tuple(window_strides)))
    return lax.conv_general_dilated(lhs, rhs, window_strides, padding,
                                    **kwargs)

  conv = space_to_depth.wrap(inner)
  image = jnp.zeros((1, 224, 224, 3))
  _conv(conv, image, jnp.zeros((11, 11, 3, 64)), 4, [(2, 2)] * 2)
  assert calls.pop() == ((1, 57, 57, 48), (3, 3, 48, 64), (1, 1))
  features = jnp.zeros((1, 16, 16, 24))
  for x, w, stride in [(features, jnp.zeros((3, 3, 24, 24)), 2),
                       (image, jnp.zeros((3, 3, 3, 8)), 1)]:
    _conv(conv, x, w, stride, [(1, 1)] * 2)
    assert calls.pop() == (x.shape, w.shape, (stride, stride))
  depthwise = conv(features, jnp.zeros((3, 3, 1, 24)), (2, 2), [(1, 1)] * 2,
                   dimension_numbers=lax.conv_dimension_numbers(
                       features.shape, (3, 3, 1, 24), NHWC),
                   feature_group_count=24)
  assert calls.pop() == (features.shape, (3, 3, 1, 24), (2, 2))
  assert depthwise.shape == (1, 8, 8, 24)


def test_a_model_on_space_to_depth_gives_xlas_logits():
  """config.kernels='space_to_depth': the same network, its stem rearranged
  (on the CPU over cpu_kernels' forms, as 'auto' chooses there)."""
  images = jax.random.normal(jax.random.key(0), (2, 224, 224, 3))
  plain = models.create('alexnet', 200, kernels=backend.kernels('xla'))
  variables = jax.jit(plain.init)(jax.random.key(1), images)
  rearranged = models.create('alexnet', 200,
                             kernels=backend.kernels('space_to_depth'))
  assert rearranged.kernels.max_pool is cpu_kernels.max_pool
  kernel_shapes = [eqn.invars[1].aval.shape for eqn in jax.make_jaxpr(
      rearranged.apply)(variables, images).jaxpr.eqns
                   if eqn.primitive is lax.conv_general_dilated_p]
  assert kernel_shapes[0] == (3, 3, 48, 64)  # 11x11 stride 4 as 3x3 stride 1
  expected = jax.jit(plain.apply)(variables, images)
  logits = jax.jit(rearranged.apply)(variables, images)
  np.testing.assert_allclose(logits, expected, rtol=0,
                             atol=1e-4 * float(jnp.abs(expected).max()))
