"""torchvision's transforms as named TensorFlow ops, composed from config strings.

A transforms string mirrors a `transforms.Compose` list, one op per element, written as
a string with `|` between ops or as a list:

    'random_horizontal_flip|random_resized_crop(224)|to_tensor|normalize(0.5, 0.5)'

Each op maps `(image, seed) -> image`. Images stay uint8 until `to_tensor`, as
PIL images do in torchvision; resizing rounds back to uint8 like PIL. Random ops
draw from stateless seeds, so a seed fixes the output.
"""

import math

import tensorflow as tf

from tiny_flax.data import transforms
from tiny_flax.data.transforms import PreprocessError

_OPS = {}
# Ops that act on each pixel alone: the pipeline runs them on whole batches.
_POINTWISE = set()


def register(name, pointwise=False):
  def wrap(factory):
    _OPS[name] = factory
    if pointwise:
      _POINTWISE.add(name)
    return factory
  return wrap


def _round_to_uint8(image):
  return tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)


def _resize(image, size):
  """PIL's bilinear resize, back to uint8.

  Antialiasing changes nothing when enlarging but costs 5x, so it is only
  applied when an axis shrinks.
  """
  shrinks = tf.reduce_any(tf.shape(image)[:2] > tf.convert_to_tensor(size))
  return _round_to_uint8(tf.cond(
      shrinks,
      lambda: tf.image.resize(image, size, method='bilinear', antialias=True),
      lambda: tf.image.resize(image, size, method='bilinear')))


@register('random_horizontal_flip')
def random_horizontal_flip(p=0.5):
  def op(image, seed):
    flip = tf.random.stateless_uniform([], seed) < p
    return tf.cond(flip, lambda: tf.reverse(image, axis=[1]), lambda: image)
  return op


@register('resize')
def resize(size):
  """An int resizes the shorter side, keeping the aspect ratio (truncated)."""
  if isinstance(size, int):
    transforms.positive_size('resize', size)

    def op(image, seed):
      del seed
      h, w = tf.shape(image)[0], tf.shape(image)[1]
      short, long = tf.minimum(h, w), tf.maximum(h, w)
      new_long = tf.cast(size * long / short, tf.int32)
      new_size = tf.where(h <= w, tf.stack([size, new_long]),
                          tf.stack([new_long, size]))
      return _resize(image, new_size)
    return op
  new_size = transforms.positive_size('resize', size)
  return lambda image, seed: _resize(image, new_size)


@register('center_crop')
def center_crop(size):
  """Pads with zeros when the crop is larger than the image, as torchvision."""
  crop_h, crop_w = transforms.positive_size('center_crop', size)

  def op(image, seed):
    del seed
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    pad_h, pad_w = tf.maximum(crop_h - h, 0), tf.maximum(crop_w - w, 0)
    image = tf.pad(image, [[pad_h // 2, (pad_h + 1) // 2],
                           [pad_w // 2, (pad_w + 1) // 2], [0, 0]])
    h, w = h + pad_h, w + pad_w
    top = tf.cast(tf.round((h - crop_h) / 2), tf.int32)  # half to even, like round()
    left = tf.cast(tf.round((w - crop_w) / 2), tf.int32)
    return image[top:top + crop_h, left:left + crop_w]
  return op


@register('random_crop')
def random_crop(size, padding=0):
  """torchvision's RandomCrop(size, padding): zero padding (fill 0,
  padding_mode 'constant'), then a crop at a uniform offset. A crop larger
  than the padded image is refused before training (data.image_shape)."""
  crop_h, crop_w = transforms.positive_size('random_crop', size)
  left, top, right, bottom = transforms.padding_sides('random_crop', padding)

  def op(image, seed):
    image = tf.pad(image, [[top, bottom], [left, right], [0, 0]])
    h, w = tf.shape(image)[0], tf.shape(image)[1]
    top_seed, left_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    y = tf.random.stateless_uniform([], top_seed, 0, h - crop_h + 1,
                                    dtype=tf.int32)
    x = tf.random.stateless_uniform([], left_seed, 0, w - crop_w + 1,
                                    dtype=tf.int32)
    return image[y:y + crop_h, x:x + crop_w]
  return op


def sample_crop_box(height, width, seed, scale, ratio, attempts=10):
  """torchvision's RandomResizedCrop.get_params, all attempts drawn at once.

  Returns (top, left, crop_height, crop_width) as int32 scalars.
  """
  area_seed, ratio_seed, offset_seed = tf.unstack(
      tf.random.experimental.stateless_split(seed, 3))
  area = tf.cast(height * width, tf.float32)
  target_area = area * tf.random.stateless_uniform(
      [attempts], area_seed, scale[0], scale[1])
  log_ratio = tf.random.stateless_uniform(
      [attempts], ratio_seed, math.log(ratio[0]), math.log(ratio[1]))
  aspect = tf.exp(log_ratio)
  crop_w = tf.cast(tf.round(tf.sqrt(target_area * aspect)), tf.int32)
  crop_h = tf.cast(tf.round(tf.sqrt(target_area / aspect)), tf.int32)
  fits = (crop_w > 0) & (crop_w <= width) & (crop_h > 0) & (crop_h <= height)

  in_ratio = tf.cast(width, tf.float32) / tf.cast(height, tf.float32)
  fallback_w = tf.where(
      in_ratio < min(ratio), width,
      tf.where(in_ratio > max(ratio),
               tf.cast(tf.round(tf.cast(height, tf.float32) * max(ratio)),
                       tf.int32), width))
  fallback_h = tf.where(
      in_ratio < min(ratio),
      tf.cast(tf.round(tf.cast(width, tf.float32) / min(ratio)), tf.int32),
      height)
  first = tf.argmax(tf.cast(fits, tf.int32), output_type=tf.int32)
  found = tf.reduce_any(fits)
  box_h = tf.where(found, crop_h[first], fallback_h)
  box_w = tf.where(found, crop_w[first], fallback_w)
  top_seed, left_seed = tf.unstack(
      tf.random.experimental.stateless_split(offset_seed, 2))
  random_top = tf.random.stateless_uniform(
      [], top_seed, 0, height - box_h + 1, dtype=tf.int32)
  random_left = tf.random.stateless_uniform(
      [], left_seed, 0, width - box_w + 1, dtype=tf.int32)
  top = tf.where(found, random_top, (height - box_h) // 2)
  left = tf.where(found, random_left, (width - box_w) // 2)
  return top, left, box_h, box_w


def resized_crop(image, box, size):
  top, left, box_h, box_w = box
  return _resize(image[top:top + box_h, left:left + box_w], size)


@register('random_resized_crop')
def random_resized_crop(size, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  size = transforms.positive_size('random_resized_crop', size)
  transforms.check_crop_ranges(scale, ratio)

  def op(image, seed):
    box = sample_crop_box(tf.shape(image)[0], tf.shape(image)[1], seed,
                          scale, ratio)
    return resized_crop(image, box, size)
  return op


@register('to_tensor', pointwise=True)
def to_tensor():
  """uint8 [0, 255] to float32 [0, 1] (the layout stays HWC)."""
  return lambda image, seed: tf.cast(image, tf.float32) / 255.0


@register('normalize', pointwise=True)
def normalize(mean, std):
  """(x - mean) / std per channel, as one multiply-add.

  The per-channel vectors are tiled along the width: TensorFlow broadcasts a
  3-element innermost axis several times slower than a W*3-element one.
  """
  mean = tf.broadcast_to(tf.constant(mean, tf.float32), [3])
  std = tf.broadcast_to(tf.constant(std, tf.float32), [3])
  if tf.reduce_any(std <= 0):
    raise PreprocessError(f'normalize: std must be positive, got {std!r}.')

  def op(image, seed):
    del seed
    shape = tf.shape(image)
    rows = tf.reshape(image, tf.concat([shape[:-2], [shape[-2] * 3]], 0))
    scale = tf.tile(1.0 / std, shape[-2:-1])
    offset = tf.tile(-mean / std, shape[-2:-1])
    return tf.reshape(rows * scale + offset, shape)
  return op


def _compose(ops):
  def fn(image, seed):
    seeds = tf.random.experimental.stateless_split(seed, max(len(ops), 1))
    for index, op in enumerate(ops):
      image = op(image, seeds[index])
    return image
  return fn


def build_split(spec):
  """(per_image_fn, pointwise_fn): the transforms cut before its pointwise tail.

  The pipeline maps the first over single uint8 images and the second over
  whole batches, where conversion and normalisation cost far less.
  """
  named_ops = transforms.instantiate(spec, _OPS)
  names = [name for name, _ in named_ops]
  ops = [op for _, op in named_ops]
  cut = len(names)
  while cut and names[cut - 1] in _POINTWISE:
    cut -= 1
  return _compose(ops[:cut]), _compose(ops[cut:])


def build(spec):
  """Composes transforms (string with '|' or list of strings) into one fn."""
  per_image, pointwise = build_split(spec)
  return lambda image, seed: pointwise(per_image(image, seed), seed)
