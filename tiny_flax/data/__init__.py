"""All of input: a config in, a `Dataset` out.

Two paths give the same examples, class indices and transforms:
- tf.data (tiny_flax/data/pipeline.py): the TFDS builder's records, decoded
  and augmented on the host. The only modules that import TensorFlow, and
  only when this path is taken.
- resident (tiny_flax/data/resident.py): the archive decoded once into
  arrays (arrays.py) that live in device memory; batches are indices, and
  the step gathers and transforms their images in JAX.
"""

import dataclasses
import math
import os
from typing import Callable, Iterable, Optional

import jax
from jax.experimental import multihost_utils

from tiny_flax import errors
from tiny_flax.data import archive
from tiny_flax.data import arrays
from tiny_flax.data import jax_transforms
from tiny_flax.data import locate
from tiny_flax.data import resident as resident_lib

# Before TensorFlow loads (if it does): its C++ INFO lines drown the log.
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')

NUM_CLASSES = archive.NUM_CLASSES
IMAGE_SHAPE = archive.IMAGE_SHAPE


@dataclasses.dataclass(frozen=True)
class Dataset:
  """What training and evaluation need from the input, computed once.

  `train_batches(start_step)` yields this process's batches from that step
  on: images and labels on the tf.data path, `{'index'}` when `resident` is
  set. `eval_batches` is iterable once per validation pass; every batch has
  a `mask` (padding does not count) and the same count on every process.
  """
  class_names: list  # (wnid, words) per class index
  steps_per_epoch: int
  image_shape: tuple  # of one evaluation image
  local_batch_size: int  # this process's share of config.batch_size
  train_batches: Callable
  eval_batches: Iterable
  resident: Optional[resident_lib.Resident] = None
  num_classes: int = NUM_CLASSES


def image_shape(config):
  """Shape of one evaluation image; checks both of the config's transforms
  on the dataset's images (a crop larger than its image is refused here)."""
  shape = jax.ShapeDtypeStruct((1,) + IMAGE_SHAPE, jax.numpy.uint8)
  key = jax.ShapeDtypeStruct((), jax.random.key(0).dtype)
  jax.eval_shape(jax_transforms.build(config.input.train), shape, key)
  out = jax.eval_shape(jax_transforms.build(config.input.eval), shape, key)
  return tuple(out.shape[1:])


def check(config):
  """Refuses the config's input values before anything is prepared or written."""
  locate.check_source(config.dataset.source)
  image_shape(config)
  errors.require(config.input.shuffle_buffer >= 1,
                 'config.input.shuffle_buffer', '>= 1 (1: no shuffling)',
                 config.input.shuffle_buffer)


def local_batch_size(batch_size):
  return batch_size // jax.process_count()


def resident_bytes(config):
  """Bytes of both decoded splits, as every device holds them."""
  if config.dataset.source == 'fake':
    per_class = (config.dataset.fake_train_per_class
                 + config.dataset.fake_val_per_class)
    count = per_class * NUM_CLASSES
  else:
    count = archive.NUM_TRAIN + archive.NUM_VALIDATION
  return count * (IMAGE_SHAPE[0] * IMAGE_SHAPE[1] * IMAGE_SHAPE[2] + 4)


def prepare(config, on_device):
  """The config's `Dataset`, prepared on first use (by process 0 first).

  `on_device`: the resident path, without TensorFlow; otherwise tf.data.
  """
  check(config)  # before minutes of preparation
  if on_device:
    return _resident(config)
  from tiny_flax.data import pipeline  # pylint: disable=g-import-not-at-top
  return pipeline.dataset(config)


def load_arrays(config):
  """The config's archive decoded into cached arrays (tiny_flax/data/arrays.py)."""
  manual_dir, data_dir = locate.dirs(config)

  def load():
    source = locate.official_archive(manual_dir, data_dir)
    return arrays.load(source, arrays.cache_dir(data_dir))
  if jax.process_index() == 0:
    with locate.preparing(data_dir):
      decoded = load()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('tiny_imagenet arrays prepared')
    if jax.process_index() > 0:
      decoded = load()
  return decoded


def _resident(config):
  decoded = load_arrays(config)
  batch_size = local_batch_size(config.batch_size)
  process = jax.process_index(), jax.process_count()
  train_offset, train_count = resident_lib.process_share(
      len(decoded.train.label), *process, even=True)
  eval_offset, eval_count = resident_lib.process_share(
      len(decoded.validation.label), *process, even=False)
  steps_per_epoch = train_count // batch_size
  check_steps_per_epoch(steps_per_epoch, config.batch_size,
                        len(decoded.train.label))
  per_process = math.ceil(len(decoded.validation.label) / process[1])
  num_eval_batches = math.ceil(per_process / batch_size)
  if config.steps_per_eval > 0:
    num_eval_batches = min(num_eval_batches, config.steps_per_eval)
  splits = [{'image': split.image, 'label': split.label}
            for split in (decoded.train, decoded.validation)]
  return Dataset(
      class_names=decoded.class_names,
      steps_per_epoch=steps_per_epoch,
      image_shape=image_shape(config),
      local_batch_size=batch_size,
      train_batches=lambda start_step: resident_lib.train_batches(
          train_count, batch_size, steps_per_epoch, config.seed, start_step,
          offset=train_offset),
      eval_batches=resident_lib.EvalBatches(eval_count, batch_size,
                                            num_eval_batches, eval_offset),
      resident=resident_lib.build(*splits, config.input.train,
                                  config.input.eval))


def check_steps_per_epoch(steps_per_epoch, batch_size, num_examples):
  if steps_per_epoch == 0:
    raise archive.DatasetError(
        f'batch_size {batch_size} is larger than the training split '
        f'({num_examples} examples).')
