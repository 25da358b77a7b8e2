"""Mixup and CutMix inside the jitted train step, with timm's semantics.

The parameters and their meaning are those of `timm.data.Mixup`: Beta(alpha,
alpha) lambdas per method, `prob` of mixing at all, `switch_prob` of CutMix
when both methods are on, one draw per batch ('batch') or per example
('elem'), the box of `timm.data.mixup.rand_bbox` with lambda corrected to
the box's area, each image mixed with the batch reversed, and soft targets
with label smoothing. Under data parallelism each device mixes its own
shard, as timm does per GPU under DistributedDataParallel.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp

from tiny_flax import errors

MODES = ('batch', 'elem')


class Mixing(NamedTuple):
  """config.mixing, checked; `enabled` is False when both alphas are 0."""
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  prob: float = 1.0
  switch_prob: float = 0.5
  mode: str = 'batch'

  @property
  def enabled(self):
    return self.mixup_alpha > 0 or self.cutmix_alpha > 0


def from_config(mixing):
  """`Mixing` of a config's `mixing` block, or a UserError naming the value."""
  values = Mixing(float(mixing.mixup_alpha), float(mixing.cutmix_alpha),
                  float(mixing.prob), float(mixing.switch_prob), mixing.mode)
  for name in ('mixup_alpha', 'cutmix_alpha'):
    errors.require(getattr(values, name) >= 0, f'config.mixing.{name}',
                   '>= 0 (0: off)', getattr(values, name))
  for name in ('prob', 'switch_prob'):
    errors.require(0 <= getattr(values, name) <= 1, f'config.mixing.{name}',
                   'in [0, 1]', getattr(values, name))
  errors.require(values.mode in MODES, 'config.mixing.mode',
                 f'one of {", ".join(MODES)}', values.mode)
  return values


class Draw(NamedTuple):
  """One step's random choices, per example ([B] each)."""
  lam: jax.Array  # the Beta draw; 1 where the example is not mixed
  cutmix: jax.Array  # bool: CutMix rather than Mixup
  center_y: jax.Array  # the box centre (used where `cutmix`)
  center_x: jax.Array


def sample(mixing, key, batch, height, width):
  """The `Draw` of timm's _params_per_batch or _params_per_elem."""
  count = 1 if mixing.mode == 'batch' else batch
  keys = jax.random.split(key, 6)
  both = mixing.mixup_alpha > 0 and mixing.cutmix_alpha > 0
  if both:
    cutmix = jax.random.uniform(keys[0], (count,)) < mixing.switch_prob
  else:
    cutmix = jnp.full((count,), mixing.cutmix_alpha > 0)
  beta = lambda k, alpha: jax.random.beta(k, alpha, alpha, (count,)) if (
      alpha > 0) else jnp.ones((count,))
  lam = jnp.where(cutmix, beta(keys[1], mixing.cutmix_alpha),
                  beta(keys[2], mixing.mixup_alpha))
  mixed = jax.random.uniform(keys[3], (count,)) < mixing.prob
  lam = jnp.where(mixed, lam, 1.0)
  cutmix = cutmix & mixed
  draw = Draw(lam, cutmix, jax.random.randint(keys[4], (count,), 0, height),
              jax.random.randint(keys[5], (count,), 0, width))
  return jax.tree.map(lambda x: jnp.broadcast_to(x, (batch,)), draw)


def cutmix_box(lam, center, size):
  """timm's rand_bbox along one axis: [low, high) of the cut, clipped."""
  cut = jnp.floor(size * jnp.sqrt(1.0 - lam)).astype(jnp.int32)
  return (jnp.clip(center - cut // 2, 0, size),
          jnp.clip(center + cut // 2, 0, size))


def soft_targets(labels, num_classes, smoothing):
  """timm's one_hot with smoothing: off = s / n, on = 1 - s + off."""
  off = smoothing / num_classes
  return jax.nn.one_hot(labels, num_classes) * (1.0 - smoothing) + off


def mix_images(draw, images):
  """(mixed images [B, H, W, C], each example's share of itself [B]).

  Each example is mixed with the example at the mirrored position; CutMix's
  share is the area outside its clipped box, as timm's correct_lam.
  """
  _, height, width, _ = images.shape
  partner = images[::-1]
  top, bottom = cutmix_box(draw.lam, draw.center_y, height)
  left, right = cutmix_box(draw.lam, draw.center_x, width)
  rows = jnp.arange(height)[None, :, None]
  columns = jnp.arange(width)[None, None, :]
  inside = ((rows >= top[:, None, None]) & (rows < bottom[:, None, None])
            & (columns >= left[:, None, None])
            & (columns < right[:, None, None]))
  area = ((bottom - top) * (right - left)).astype(jnp.float32)
  share = jnp.where(draw.cutmix, 1.0 - area / (height * width), draw.lam)
  per_image = lambda x: x[:, None, None, None]
  blend = images * per_image(draw.lam) + partner * per_image(1.0 - draw.lam)
  cut = jnp.where(inside[..., None], partner, images)
  mixed = jnp.where(per_image(draw.cutmix), cut,
                    jnp.where(per_image(draw.lam < 1.0), blend, images))
  return mixed.astype(images.dtype), share


def mix_targets(share, labels, partners, num_classes, smoothing=0.0):
  """timm's mixup_target: smoothed one-hots, mixed with the partners' (the
  labels mirrored, `labels[::-1]`, as `mix_images` mixes the images)."""
  return (soft_targets(labels, num_classes, smoothing) * share[:, None]
          + soft_targets(partners, num_classes, smoothing)
          * (1.0 - share[:, None]))
