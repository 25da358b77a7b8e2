"""Mixup, CutMix and the weights' moving average, against formulas and timm."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import smoke
from tiny_flax import errors
from tiny_flax import mixing
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import steps


def _draw(lam, cutmix, center_y, center_x, batch):
  full = lambda v, dtype: jnp.full((batch,), v, dtype)
  return mixing.Draw(full(lam, jnp.float32), full(cutmix, bool),
                     full(center_y, jnp.int32), full(center_x, jnp.int32))


@pytest.mark.parametrize('lam,center', [(0.7, (10, 20)), (0.3, (0, 31)),
                                        (0.05, (16, 16)), (0.999, (5, 5))])
def test_cutmix_box_and_share_follow_the_formula(lam, center):
  height, width = 32, 40
  images = jnp.zeros((2, height, width, 3)).at[1].set(1.0)
  mixed, share = mixing.mix_images(_draw(lam, True, *center, 2), images)
  cut_h, cut_w = int(height * np.sqrt(1 - lam)), int(width * np.sqrt(1 - lam))
  top, bottom = np.clip([center[0] - cut_h // 2, center[0] + cut_h // 2], 0,
                        height)
  left, right = np.clip([center[1] - cut_w // 2, center[1] + cut_w // 2], 0,
                        width)
  expected = np.zeros((height, width))
  expected[top:bottom, left:right] = 1.0
  np.testing.assert_array_equal(np.asarray(mixed[0, ..., 0]), expected)
  area = (bottom - top) * (right - left)
  np.testing.assert_allclose(share, 1 - area / (height * width), rtol=1e-6)


def test_mixup_blends_images_and_targets_by_lambda():
  rng = np.random.default_rng(0)
  images = jnp.asarray(rng.normal(size=(4, 8, 8, 3)), jnp.float32)
  labels = jnp.array([0, 1, 2, 3])
  mixed, share = mixing.mix_images(_draw(0.8, False, 0, 0, 4), images)
  np.testing.assert_allclose(mixed, 0.8 * images + 0.2 * images[::-1],
                             rtol=1e-6, atol=1e-6)
  targets = mixing.mix_targets(share, labels, labels[::-1], 5, smoothing=0.1)
  off = 0.1 / 5
  expected = np.full((4, 5), off)
  for i, label in enumerate([0, 1, 2, 3]):
    expected[i, label] += 0.8 * 0.9
    expected[i, 3 - label] += 0.2 * 0.9
  np.testing.assert_allclose(targets, expected, rtol=1e-6)
  np.testing.assert_allclose(targets.sum(axis=1), 1.0, rtol=1e-6)


def test_sampling_follows_prob_switch_prob_and_mode():
  settings = mixing.Mixing(mixup_alpha=0.2, cutmix_alpha=1.0, prob=0.6,
                           switch_prob=0.25, mode='elem')
  draw = mixing.sample(settings, jax.random.key(0), 20_000, 64, 64)
  mixed = np.asarray(draw.lam < 1)
  assert abs(mixed.mean() - 0.6) < 0.02
  assert abs(np.asarray(draw.cutmix)[mixed].mean() - 0.25) < 0.02
  assert not np.asarray(draw.cutmix)[~mixed].any()
  # Beta(0.2, 0.2) (mixup) has mean 0.5 as Beta(1, 1) does, but variance 0.18
  cutmix_lams = np.asarray(draw.lam)[np.asarray(draw.cutmix)]
  assert abs(cutmix_lams.var() - 1 / 12) < 0.01
  batch = mixing.sample(settings._replace(mode='batch'), jax.random.key(1),
                        8, 64, 64)
  assert len(set(np.asarray(batch.lam).tolist())) == 1


@pytest.mark.parametrize('field,value', [('mixup_alpha', -1.0), ('prob', 1.5),
                                         ('mode', 'pair')])
def test_bad_values_are_named(field, value):
  config = smoke.get_config().mixing
  config[field] = value
  with pytest.raises(errors.UserError, match=f'config.mixing.{field}'):
    mixing.from_config(config)


class _NumpyWithFixedRandom:
  """numpy for timm's module, its np.random calls answered with chosen values."""

  def __init__(self, random):
    self.random = random

  def __getattr__(self, name):
    return getattr(np, name)


class _FixedRandom:

  def __init__(self, rand, beta, centers):
    self._rand, self._beta, self._centers = rand, beta, list(centers)

  def rand(self, size=None):
    return self._rand if size is None else np.full(size, self._rand)

  def beta(self, a, b, size=None):
    del a, b
    return self._beta if size is None else np.full(size, self._beta)

  def randint(self, low, high, size=None):
    del low, high, size
    return self._centers.pop(0)


@pytest.mark.parametrize('mode', ['batch', 'elem'])
@pytest.mark.parametrize('use_cutmix', [False, True])
def test_equal_to_timm_for_the_same_lambda_and_box(monkeypatch, mode,
                                                   use_cutmix):
  torch = pytest.importorskip('torch')
  timm_mixup = pytest.importorskip('timm.data.mixup')
  lam, center = 0.65, (23, 9)
  # rand: below prob (mix) and below switch_prob (CutMix) or not.
  rand = 0.0 if use_cutmix else 0.9
  batch = 4
  # rand_bbox draws y then x, once per batch or once per example.
  centers = list(center) * (batch if mode == 'elem' else 1)
  monkeypatch.setattr(timm_mixup, 'np', _NumpyWithFixedRandom(
      _FixedRandom(rand, lam, centers)))
  theirs_fn = timm_mixup.Mixup(mixup_alpha=0.8, cutmix_alpha=1.0, prob=1.0,
                               switch_prob=0.5, mode=mode,
                               label_smoothing=0.1, num_classes=10)
  rng = np.random.default_rng(0)
  images = rng.normal(size=(batch, 64, 48, 3)).astype(np.float32)
  labels = np.array([1, 4, 7, 9])
  x, y = theirs_fn(torch.from_numpy(images.transpose(0, 3, 1, 2).copy()),
                   torch.from_numpy(labels))
  ours, share = mixing.mix_images(_draw(lam, use_cutmix, *center, batch),
                                  jnp.asarray(images))
  targets = mixing.mix_targets(share, jnp.asarray(labels),
                               jnp.asarray(labels)[::-1], 10, 0.1)
  np.testing.assert_allclose(ours, x.numpy().transpose(0, 2, 3, 1), atol=1e-6)
  np.testing.assert_allclose(targets, y.numpy(), atol=1e-6)


def test_the_moving_average_follows_its_formula():
  config = smoke.get_config()
  config.ema.decay = 0.9
  model = models.create('resnet_tiny', 10, axis_name=steps.AXIS)
  state = steps.create_train_state(config, model, (16, 16, 3),
                                   optim.create(config, 0.1))
  batch = {'image': np.random.default_rng(0).normal(size=(8, 16, 16, 3)).astype(
      np.float32), 'label': np.arange(8, dtype=np.int32)}
  par = parallel.Parallel('shard_map', jax.devices()[:1])
  step, _ = par.compile_train(functools.partial(  # donating, as training does
      steps.train_step, dropout_key=jax.random.key(0),
      ema=steps.ema_settings(config.ema)))
  initial_ema = jax.device_get(state.ema)
  after, _ = step(par.replicate(state), par.shard_batch(batch))
  decay = min(0.9, 1 / 10)  # warmup at step 0
  expected = jax.tree.map(lambda e, p: decay * e + (1 - decay) * p,
                          initial_ema, {'params': after.params,
                                      'batch_stats': after.batch_stats})
  for got, want in zip(jax.tree.leaves(after.ema), jax.tree.leaves(expected)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  assert len(jax.tree.leaves(after.ema)) == len(
      jax.tree.leaves((after.params, after.batch_stats)))
  assert float(steps.ema_decay(10_000, 0.9999, True)) == pytest.approx(
      10_001 / 10_010)


@pytest.mark.parametrize('decay', [-0.1, 1.0])
def test_a_bad_ema_decay_is_named(decay):
  config = smoke.get_config()
  config.ema.decay = decay
  with pytest.raises(errors.UserError, match='config.ema.decay'):
    steps.ema_settings(config.ema)
