"""FLOP counts match torchvision's published ones on every backend."""

import functools

import jax
import jax.numpy as jnp
import pytest

from tiny_flax import flops
from tiny_flax import models
from tiny_flax.platform import cpu_kernels


def test_matmul_flops_counts_dots_and_convolutions_in_subprograms():
  @jax.jit  # a sub-program: its equations must be counted too
  def grouped_conv(x, w):
    return jax.lax.conv_general_dilated(
        x, w, (1, 1), 'VALID', dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
        feature_group_count=2)

  def program(a, b, x, w):
    return a @ b, grouped_conv(x, w)

  jaxpr = jax.make_jaxpr(program)(
      jnp.ones((3, 4)), jnp.ones((4, 5)), jnp.ones((2, 6, 6, 4)),
      jnp.ones((3, 3, 2, 8)))
  dot = 2 * 3 * 5 * 4
  conv = 2 * (2 * 4 * 4 * 8) * (3 * 3 * 2)  # outputs x (window x in/group)
  assert flops.matmul_flops(jaxpr.jaxpr) == dot + conv


@pytest.mark.parametrize('name,gmacs', [('resnet50', 4.09), ('alexnet', 0.71)])
def test_forward_flops_match_torchvision_at_224(name, gmacs):
  """torchvision documents GFLOPS (multiply-adds) per 224x224 image."""
  module = models.create(name, 1000)
  shape = (224, 224, 3)
  variables = jax.eval_shape(functools.partial(module.init, train=False),
                             jax.random.key(0), jnp.zeros((1,) + shape))
  count = flops.forward_flops(module, variables, shape)
  assert count / 2e9 == pytest.approx(gmacs, rel=0.01)


def test_forward_flops_do_not_depend_on_the_cpu_forms():
  """ResNet18's maps at 64x64 are those at 224x224 scaled by 2/7, so its
  convolution FLOPs scale by 4/49, although with the CPU forms its 4x4 and
  2x2 maps skip the multiplies by padding (7x7 and 14x14 do not)."""
  module = models.create('resnet18', 1000, kernels=cpu_kernels.KERNELS)
  counts = {}
  for size in (64, 224):
    shape = (size, size, 3)
    variables = jax.eval_shape(functools.partial(module.init, train=False),
                               jax.random.key(0), jnp.zeros((1,) + shape))
    counts[size] = flops.forward_flops(module, variables, shape)
  classifier = 2 * 512 * 1000
  assert counts[64] - classifier == (counts[224] - classifier) * 4 // 49


def test_utilisation_counts_three_forward_passes_per_training_image():
  assert flops.utilisation(2e9, 75, 1e12) == pytest.approx(0.45)
