"""The preprocessing ops in JAX, for training data resident on the accelerator.

With `config.input.on_device`, the decoded uint8 training split lives in
device memory and the jitted train step gathers its batch and augments it
with these ops, so the host only feeds indices. They have the semantics of
the tf.data ops (tiny_flax/data/tf_transforms.py), that is torchvision's: the
same crop-box sampler and PIL's bilinear resampling, written as two small
matrices per image so that every image of a batch can have its own box.

Each op maps (images [B, H, W, C], key) -> images; images hold uint8 values
(as float32 after resizing) until `to_tensor`.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np

from tiny_flax.data import transforms

_OPS = {}


def _register(name):
  def wrap(factory):
    _OPS[name] = factory
    return factory
  return wrap


def resampling_weights(starts, lengths, in_size, out_size):
  """(B, out_size, in_size) PIL bilinear weights of the window [start, start+length).

  PIL's triangle filter, widened by the scale when shrinking (antialiasing),
  over the window alone: the same as cropping first, then resizing.
  """
  starts = jnp.asarray(starts, jnp.float32)
  lengths = jnp.asarray(lengths, jnp.float32)
  scale = lengths / out_size
  support = jnp.maximum(scale, 1.0)
  centers = (jnp.arange(out_size) + 0.5)[None, :] * scale[:, None]
  positions = jnp.arange(in_size)[None, :] - starts[:, None] + 0.5
  distance = positions[:, None, :] - centers[:, :, None]
  weights = jnp.maximum(0.0, 1.0 - jnp.abs(distance) / support[:, None, None])
  inside = (positions >= 0.5) & (positions < lengths[:, None] + 0.5)
  weights = weights * inside[:, None, :]
  return weights / weights.sum(axis=-1, keepdims=True)


def resized_crop(images, boxes, size):
  """Crops boxes (top, left, height, width), each [B], resized to `size`."""
  _, height, width, _ = images.shape
  top, left, box_h, box_w = boxes
  rows = resampling_weights(top, box_h, height, size[0])
  columns = resampling_weights(left, box_w, width, size[1])
  resized = jnp.einsum('bsh,bhwc,btw->bstc', rows, images.astype(jnp.float32),
                       columns, precision=jax.lax.Precision.HIGHEST)
  return jnp.clip(jnp.round(resized), 0, 255)


def sample_crop_boxes(key, batch, height, width, scale, ratio, attempts=10):
  """torchvision's RandomResizedCrop.get_params for B images at once."""
  area_key, ratio_key, top_key, left_key = jax.random.split(key, 4)
  target_area = height * width * jax.random.uniform(
      area_key, (batch, attempts), minval=scale[0], maxval=scale[1])
  aspect = jnp.exp(jax.random.uniform(
      ratio_key, (batch, attempts), minval=math.log(ratio[0]),
      maxval=math.log(ratio[1])))
  crop_w = jnp.round(jnp.sqrt(target_area * aspect)).astype(jnp.int32)
  crop_h = jnp.round(jnp.sqrt(target_area / aspect)).astype(jnp.int32)
  fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)
  first = jnp.argmax(fits, axis=1)
  found = fits.any(axis=1)

  in_ratio = width / height
  if in_ratio < min(ratio):
    fallback = (round(width / min(ratio)), width)
  elif in_ratio > max(ratio):
    fallback = (height, round(height * max(ratio)))
  else:
    fallback = (height, width)
  pick = lambda values: jnp.take_along_axis(values, first[:, None], 1)[:, 0]
  box_h = jnp.where(found, pick(crop_h), fallback[0])
  box_w = jnp.where(found, pick(crop_w), fallback[1])
  top = jnp.where(found, jax.random.randint(top_key, (batch,), 0,
                                            height - box_h + 1),
                  (height - box_h) // 2)
  left = jnp.where(found, jax.random.randint(left_key, (batch,), 0,
                                             width - box_w + 1),
                   (width - box_w) // 2)
  return top, left, box_h, box_w


@_register('random_horizontal_flip')
def random_horizontal_flip(p=0.5):
  def op(images, key):
    flip = jax.random.uniform(key, (images.shape[0],)) < p
    return jnp.where(flip[:, None, None, None], images[:, :, ::-1], images)
  return op


@_register('random_resized_crop')
def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  size = transforms.positive_size('random_resized_crop', size)
  transforms.check_crop_ranges(scale, ratio)

  def op(images, key):
    batch, height, width, _ = images.shape
    boxes = sample_crop_boxes(key, batch, height, width, scale, ratio)
    return resized_crop(images, boxes, size)
  return op


@_register('random_crop')
def random_crop(size, padding=0):
  """torchvision's RandomCrop(size, padding), an offset per image."""
  crop_h, crop_w = transforms.positive_size('random_crop', size)
  left, top, right, bottom = transforms.padding_sides('random_crop', padding)

  def op(images, key):
    images = jnp.pad(images, ((0, 0), (top, bottom), (left, right), (0, 0)))
    batch, height, width, channels = images.shape
    if height < crop_h or width < crop_w:  # torchvision's ValueError
      raise transforms.PreprocessError(
          f'random_crop: the crop {crop_h}x{crop_w} is larger than the padded '
          f'image, {height}x{width}: lower its size or raise its padding.')
    top_key, left_key = jax.random.split(key)
    ys = jax.random.randint(top_key, (batch,), 0, height - crop_h + 1)
    xs = jax.random.randint(left_key, (batch,), 0, width - crop_w + 1)
    crop = lambda image, y, x: jax.lax.dynamic_slice(
        image, (y, x, 0), (crop_h, crop_w, channels))
    return jax.vmap(crop)(images, ys, xs)
  return op


@_register('resize')
def resize(size):
  if isinstance(size, int):
    transforms.positive_size('resize', size)
  else:
    size = transforms.positive_size('resize', size)

  def op(images, key):
    del key
    batch, height, width, _ = images.shape
    new_size = (transforms.resized_shorter_side(height, width, size)
                if isinstance(size, int) else size)
    whole = (jnp.zeros(batch), jnp.zeros(batch), jnp.full(batch, height),
             jnp.full(batch, width))
    return resized_crop(images, whole, new_size)
  return op


@_register('center_crop')
def center_crop(size):
  crop_h, crop_w = transforms.positive_size('center_crop', size)

  def op(images, key):
    del key
    _, height, width, _ = images.shape
    pad_h, pad_w = max(crop_h - height, 0), max(crop_w - width, 0)
    images = jnp.pad(images, ((0, 0), (pad_h // 2, (pad_h + 1) // 2),
                              (pad_w // 2, (pad_w + 1) // 2), (0, 0)))
    top = round((height + pad_h - crop_h) / 2)
    left = round((width + pad_w - crop_w) / 2)
    return images[:, top:top + crop_h, left:left + crop_w]
  return op


@_register('to_tensor')
def to_tensor():
  return lambda images, key: images.astype(jnp.float32) / 255.0


@_register('normalize')
def normalize(mean, std):
  mean = np.broadcast_to(np.asarray(mean, np.float32), (3,))
  std = np.broadcast_to(np.asarray(std, np.float32), (3,))
  if (std <= 0).any():
    raise transforms.PreprocessError(
        f'normalize: std must be positive, got {std!r}.')
  return lambda images, key: (images - mean) / std


def build(spec):
  """fn(uint8 images [B, H, W, C], key) -> float32 images, jit-compatible."""
  ops = [op for _, op in transforms.instantiate(spec, _OPS)]

  def fn(images, key):
    for op, op_key in zip(ops, jax.random.split(key, len(ops))):
      images = op(images, op_key)
    return images
  return fn
