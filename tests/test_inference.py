"""Test-time augmentation of a trained model's logits."""

import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tiny_flax import inference
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import steps


@pytest.fixture(scope='module')
def state():
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer='sgd', momentum=0.9, nesterov=False, weight_decay=0.0,
      ema=dict(decay=0.0)))
  model = models.create('resnet_tiny', 200)
  return steps.create_train_state(config, model, (32, 32, 3),
                                  optim.create(config, 0.1))


def _images(count=6):
  return jax.random.normal(jax.random.key(1), (count, 32, 32, 3))


def test_flip_averages_the_probabilities_of_both_mirror_images(state):
  images = _images()
  mirrored = images[:, :, ::-1]  # NHWC: left to right
  np.testing.assert_array_equal(np.asarray(mirrored[0, 3, 0]),
                                np.asarray(images[0, 3, 31]))
  plain = jax.jit(inference.TTA['none'])
  expected = (jax.nn.softmax(plain(state, images))
              + jax.nn.softmax(plain(state, mirrored))) / 2
  platform = types.SimpleNamespace(compiler_options=None)
  flip = inference.compile_logits(platform, 'flip')
  averaged = flip(state, images)
  np.testing.assert_allclose(jax.nn.softmax(averaged), expected, atol=1e-6)
  # The logits are log-probabilities: the loss is that of the average.
  np.testing.assert_allclose(jax.nn.logsumexp(averaged, axis=-1), 0, atol=1e-5)
  # A mirror image gets the same answer; an untransformed view does not.
  np.testing.assert_allclose(flip(state, mirrored), averaged, atol=1e-5)
  assert not np.allclose(jax.nn.softmax(plain(state, images)), expected,
                         atol=1e-6)


def test_flip_keeps_the_loss_of_a_confident_mistake_finite():
  """A probability that underflows to 0 in float32 in both views still has
  its logarithm, so the loss of a confident mistake is large, not infinite."""
  certain = jnp.array([[0.0, 200.0], [0.0, 200.0]])  # the image, its mirror
  fake_state = types.SimpleNamespace(
      apply_fn=lambda variables, images, train: certain,
      params={}, batch_stats={})
  averaged = inference.flip_averaged_logits(fake_state, jnp.zeros((1, 2, 2, 3)))
  np.testing.assert_allclose(averaged, [[-200.0, 0.0]], rtol=1e-6)
  np.testing.assert_allclose(
      steps.cross_entropy(averaged, jnp.array([0])), [200.0], rtol=1e-6)
