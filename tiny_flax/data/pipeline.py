"""tf.data input pipelines: prepared TFDS records to host batches of numpy arrays.

Training order is a pure function of (seed, epoch): resuming at any step
replays the same batches. Evaluation sees every example exactly once; the last
batch is padded and its padding masked out, and every process yields the same
number of batches so that collective steps stay in lockstep.
"""

import math
import os

import jax
from jax.experimental import multihost_utils
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tiny_flax.data import archive
from tiny_flax.data import fake
from tiny_flax.data import preprocess
# Registers the TFDS builder that tfds.builder('tiny_imagenet') finds.
from tiny_flax.data import tiny_imagenet  # pylint: disable=unused-import

NUM_CLASSES = archive.NUM_CLASSES

# JAX owns the accelerators; tf.data runs on the host CPU.
tf.config.set_visible_devices([], 'GPU')


def _fake_dirs(config):
  """Fake archives live apart from real data, one folder per size."""
  size = f'{config.dataset.fake_train_per_class}-{config.dataset.fake_val_per_class}'
  root = os.path.join(os.path.expanduser('~/.cache/tiny_flax'), f'fake-{size}')
  return (config.dataset.manual_dir or root,
          config.dataset.data_dir or os.path.join(root, 'tfds'))


def prepare(config):
  """Returns the TFDS builder of the config's dataset, prepared on first use."""
  if config.dataset.source == 'fake':
    manual_dir, data_dir = _fake_dirs(config)
    archive_path = os.path.join(manual_dir, archive.ARCHIVE_NAME)
    if not os.path.exists(archive_path):
      fake.write_archive(archive_path,
                         train_per_class=config.dataset.fake_train_per_class,
                         val_per_class=config.dataset.fake_val_per_class)
  elif config.dataset.source == 'official':
    manual_dir, data_dir = config.dataset.manual_dir, config.dataset.data_dir
  else:
    raise archive.DatasetError(
        f'config.dataset.source must be "official" or "fake", got '
        f'{config.dataset.source!r}.')
  builder = tfds.builder('tiny_imagenet', data_dir=data_dir or None)
  download_config = tfds.download.DownloadConfig(
      manual_dir=os.path.expanduser(manual_dir) if manual_dir else None)
  # One process prepares (on a shared data_dir); the others wait, then reuse.
  if jax.process_index() == 0:
    builder.download_and_prepare(download_config=download_config)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('tiny_imagenet prepared')
    builder.download_and_prepare(download_config=download_config)
  return builder


def class_names(builder):
  """(wnid, human-readable name) for each class index."""
  names = builder.info.metadata['class_names']
  return [(wnid, names[wnid]) for wnid in builder.info.features['label'].names]


def image_shape(config):
  """Shape of one evaluation image; checks both of the config's recipes."""
  preprocess.for_config(config, train=True)
  process_fn = preprocess.for_config(config, train=False)
  return tuple(process_fn(tf.zeros(archive.IMAGE_SHAPE, tf.uint8),
                          tf.zeros([2], tf.int32)).shape)


def _decode(example):
  # INTEGER_ACCURATE matches PIL's decoder bit for bit on these JPEGs.
  image = tf.io.decode_jpeg(example['image'], channels=3,
                            dct_method='INTEGER_ACCURATE')
  return {'image': image, 'label': tf.cast(example['label'], tf.int32)}


def _decoded(builder, split, cache, count=-1):
  """The first `count` (-1: all) examples of this process's share, decoded.

  Cut before caching: a cache read only in part is discarded at every pass.
  """
  split = tfds.split_for_jax_process(split, drop_remainder=split == 'train')
  ds = builder.as_dataset(split=split, shuffle_files=False,
                          decoders={'image': tfds.decode.SkipDecoding()})
  ds = ds.take(count).map(_decode, num_parallel_calls=tf.data.AUTOTUNE)
  return ds.cache() if cache else ds


def steps_per_epoch(builder, global_batch_size):
  examples = builder.info.splits['train'].num_examples // jax.process_count()
  return examples // (global_batch_size // jax.process_count())


def decoded_train_arrays(builder):
  """This process's training split as numpy: uint8 images [N, 64, 64, 3], labels."""
  ds = _decoded(builder, 'train', cache=False).batch(4096)
  parts = list(ds.as_numpy_iterator())
  return {key: np.concatenate([part[key] for part in parts])
          for key in ('image', 'label')}


def train_batches(builder, config, *, start_step=0):
  """Endless iterator of this process's training batches from `start_step` on."""
  local_batch_size = config.batch_size // jax.process_count()
  batches_per_epoch = steps_per_epoch(builder, config.batch_size)
  if batches_per_epoch == 0:
    raise archive.DatasetError(
        f'batch_size {config.batch_size} is larger than the training split '
        f'({builder.info.splits["train"].num_examples} examples).')
  decoded = _decoded(builder, 'train', config.input.cache)
  per_image_fn, pointwise_fn = preprocess.split_for_config(config, train=True)

  def epoch(index, skip_examples):
    shuffled = decoded.shuffle(config.input.shuffle_buffer,
                               seed=config.seed * 100_003 + index)
    examples = shuffled.take(batches_per_epoch * local_batch_size).enumerate()

    def augment(position, example):
      seed = tf.random.experimental.stateless_fold_in(
          tf.cast(tf.stack([config.seed, index]), tf.int32),
          tf.cast(position, tf.int32))
      return {'image': per_image_fn(example['image'], seed),
              'label': example['label']}
    return examples.skip(skip_examples).map(
        augment, num_parallel_calls=tf.data.AUTOTUNE)

  first_epoch, steps_done = divmod(start_step, batches_per_epoch)
  later_epochs = tf.data.Dataset.range(first_epoch + 1, 1 << 40).flat_map(
      lambda index: epoch(index, 0))
  ds = epoch(first_epoch, steps_done * local_batch_size).concatenate(
      later_epochs)
  ds = ds.batch(local_batch_size, drop_remainder=True)
  ds = ds.map(_batch_map(pointwise_fn), num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator()


def _batch_map(pointwise_fn):
  no_seed = tf.zeros([2], tf.int32)
  return lambda batch: {**batch, 'image': pointwise_fn(batch['image'], no_seed)}


class EvalBatches:
  """This process's batches over a whole split, each with a `mask`; iterable again.

  The dataset (and its cache of decoded images) is built once, so a
  validation pass per epoch decodes the split only the first time.
  """

  def __init__(self, builder, config, split='validation'):
    self._batch_size = config.batch_size // jax.process_count()
    total = builder.info.splits[split].num_examples
    self._num_batches = math.ceil(
        math.ceil(total / jax.process_count()) / self._batch_size)
    if config.steps_per_eval > 0:
      self._num_batches = min(self._num_batches, config.steps_per_eval)
    per_image_fn, pointwise_fn = preprocess.split_for_config(config, train=False)
    no_seed = tf.zeros([2], tf.int32)
    ds = _decoded(builder, split, config.input.cache,
                  self._num_batches * self._batch_size).map(
        lambda ex: {'image': per_image_fn(ex['image'], no_seed),
                    'label': ex['label']},
        num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.batch(self._batch_size).map(_batch_map(pointwise_fn),
                                        num_parallel_calls=tf.data.AUTOTUNE)
    self._dataset = ds.prefetch(tf.data.AUTOTUNE)

  def __len__(self):
    """The same on every process, so collective steps stay in lockstep."""
    return self._num_batches

  def __iter__(self):
    template = None
    batches = self._dataset.as_numpy_iterator()
    for _ in range(self._num_batches):
      batch = next(batches, None)
      if batch is None:  # This process ran out before the others.
        batch = {k: v[:0] for k, v in template.items()}
      template = batch
      yield _pad(batch, self._batch_size)


def _pad(batch, size):
  count = len(batch['label'])
  if count < size:
    batch = {k: np.concatenate([v, np.zeros((size - count,) + v.shape[1:],
                                            v.dtype)])
             for k, v in batch.items()}
  return {**batch, 'mask': np.arange(size) < count}
