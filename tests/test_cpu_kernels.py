"""The CPU convolution and pooling forms equal XLA's, values and gradients;
models use them only when asked."""

import collections

import jax
from jax import lax
import jax.numpy as jnp
import numpy as np
import pytest
import flax.linen as nn

from configs import default as configs_default
from tiny_flax import errors
from tiny_flax import models
from tiny_flax.platform import backend
from tiny_flax.platform import cpu_kernels

NHWC = ('NHWC', 'HWIO', 'NHWC')


def _reference(x, w, stride, padding, groups):
  return lax.conv_general_dilated(
      x, w, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=NHWC, feature_group_count=groups)


def _ours(x, w, stride, padding, groups):
  return cpu_kernels.conv_general_dilated(
      x, w, (stride, stride), [(padding, padding)] * 2,
      dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, NHWC),
      feature_group_count=groups)


@pytest.mark.parametrize('size, kernel, cin, cout, stride, padding, groups', [
    (8, 1, 16, 32, 1, 0, 1),     # 1x1: matmul
    (8, 1, 16, 32, 2, 0, 1),     # strided 1x1 (ResNet downsample)
    (8, 3, 12, 12, 1, 1, 12),    # depthwise: shifted slices
    (9, 3, 12, 12, 2, 1, 12),    # strided depthwise, odd size
    (2, 3, 16, 24, 1, 1, 1),     # 2x2 output: a matmul per kernel tap
    (4, 3, 16, 24, 2, 1, 1),     # strided 3x3 to 2x2: tap matmuls
    (4, 3, 16, 24, 1, 1, 1),     # 4x4 output: tap matmuls
    (5, 3, 16, 24, 2, 1, 1),     # strided 3x3 to 3x3: tap matmuls
    (1, 3, 8, 8, 1, 1, 1),       # 1x1 map: only the centre tap reads input
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


def test_tap_matmuls_with_uneven_padding_and_rectangular_maps():
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2, 4, 3, 5)),
                  jnp.float32)
  w = jnp.asarray(np.random.default_rng(1).normal(size=(3, 2, 5, 6)),
                  jnp.float32)
  strides, padding = (2, 1), ((0, 2), (1, 0))
  conv = lambda f: lambda x, w: f(
      x, w, strides, padding,
      dimension_numbers=lax.conv_dimension_numbers(x.shape, w.shape, NHWC))
  ours, reference = conv(cpu_kernels.conv_general_dilated), conv(
      lax.conv_general_dilated)
  assert ours(x, w).shape == (2, 2, 3, 6)
  np.testing.assert_allclose(ours(x, w), reference(x, w), rtol=1e-5,
                             atol=1e-5)
  grads = [jax.grad(lambda x, w, f=f: jnp.sum(jnp.sin(f(x, w))),
                    argnums=(0, 1))(x, w) for f in (ours, reference)]
  for ours_grad, reference_grad in zip(*grads):
    np.testing.assert_allclose(ours_grad, reference_grad, rtol=1e-5,
                               atol=1e-5)


@pytest.mark.parametrize('size, window, stride, padding', [
    (32, 3, 2, 1), (55, 3, 2, 0), (7, 3, 2, 0), (8, 2, 2, 0), (9, 3, 1, 1)])
@pytest.mark.parametrize('ties', [False, True])
def test_max_pool_matches_reduce_window(size, window, stride, padding, ties):
  """Values and gradients; with ties the gradient goes to the first maximum."""
  x = np.random.default_rng(size).normal(size=(2, size, size, 4))
  x = jnp.asarray(np.maximum(np.round(x), 0) if ties else x, jnp.float32)
  reference = lambda x: nn.max_pool(x, (window, window), (stride, stride),
                                    ((padding, padding),) * 2)
  ours = lambda x: cpu_kernels.max_pool(x, window, stride, padding)
  np.testing.assert_array_equal(ours(x), reference(x))
  np.testing.assert_array_equal(
      jax.grad(lambda x: jnp.sum(ours(x) ** 2))(x),
      jax.grad(lambda x: jnp.sum(reference(x) ** 2))(x))


def _primitives(**kwargs):
  """Primitives of ResNet18's training gradient."""
  module = models.create('resnet18', 10, **kwargs)
  images = jnp.zeros((1, 64, 64, 3))
  variables = jax.eval_shape(module.init, jax.random.key(0), images)
  jaxpr = jax.make_jaxpr(jax.grad(lambda v: module.apply(
      v, images, train=True, mutable=['batch_stats'])[0].sum()))(variables)
  return collections.Counter(str(e.primitive) for e in jaxpr.jaxpr.eqns)


def test_models_use_xla_ops_unless_given_the_cpu_forms():
  """A model built directly is plain Flax on every backend (CPU included)."""
  plain = _primitives()
  assert plain['select_and_scatter_add'] == 1  # max pool's gradient
  with_cpu_forms = _primitives(kernels=cpu_kernels.KERNELS)
  assert with_cpu_forms['select_and_scatter_add'] == 0
  # 1x1 and late-stage convolutions become matmuls.
  assert with_cpu_forms['conv_general_dilated'] < plain['conv_general_dilated']


@pytest.mark.parametrize('platform', ['cpu', 'gpu', 'tpu'])
def test_the_resolved_platform_builds_the_models_on_its_forms(platform,
                                                              monkeypatch):
  """A model on backend.resolve's kernels, as the trainer builds it: on the
  CPU every written-out form, on GPUs the max pool alone, on TPUs XLA's ops;
  an explicit config.kernels wins on every backend."""
  monkeypatch.setattr(jax, 'default_backend', lambda: platform)
  config = configs_default.get_config()
  config.model = 'resnet18'
  plain = _primitives()

  def primitives_of(kernels):
    config.kernels = kernels
    return _primitives(kernels=backend.resolve(config, 0).kernels)

  auto = primitives_of('auto')
  assert (auto['select_and_scatter_add'] == 0) == (platform != 'tpu')
  assert (auto['conv_general_dilated'] < plain['conv_general_dilated']) == (
      platform == 'cpu')
  assert primitives_of('xla') == plain
  assert primitives_of('cpu')['select_and_scatter_add'] == 0
  steps_per_dispatch = backend.resolve(config, 0).steps_per_dispatch
  assert steps_per_dispatch == (1 if platform == 'cpu' else
                                backend.ACCELERATOR_STEPS_PER_DISPATCH)
  config.steps_per_dispatch = 3
  assert backend.resolve(config, 0).steps_per_dispatch == 3


def test_bad_platform_choices_are_refused():
  with pytest.raises(errors.UserError, match='config.kernels must be one of'):
    backend.kernels('fast')
  for value in (-1, 2.5, True, '4'):
    with pytest.raises(errors.UserError, match='steps_per_dispatch'):
      backend.steps_per_dispatch(value)


def test_bf16_at_224_px_agrees_with_float32_under_the_platform_options():
  """The compiled bf16 forward pass stays finite at the :tuned input sizes.

  jaxlib 0.11.2's XLA:CPU returns NaN here: its YNNPACK reduce fusion of a
  residual block's output into the global average pool (bf16, 160 px and
  up). This catches a pin moved onto such a jaxlib.
  """
  from tiny_flax.models import resnet  # pylint: disable=g-import-not-at-top
  images = jax.random.normal(jax.random.key(0), (2, 224, 224, 3))
  outputs = {}
  for dtype in (jnp.float32, jnp.bfloat16):
    model = resnet.ResNet(block=resnet.BasicBlock, stage_sizes=(1,),
                          num_classes=10, width=32, dtype=dtype,
                          kernels=backend.kernels())
    variables = model.init(jax.random.key(1), images)
    apply = jax.jit(model.apply, compiler_options=backend.compiler_options())
    outputs[dtype] = np.asarray(apply(variables, images))
  assert np.isfinite(outputs[jnp.bfloat16]).all()
  np.testing.assert_allclose(outputs[jnp.bfloat16], outputs[jnp.float32],
                             atol=0.05 * np.abs(outputs[jnp.float32]).max())
