"""tf.data input pipelines: prepared TFDS records to host batches of numpy arrays.

Training order is a pure function of (seed, epoch): resuming at any step
replays the same batches. Evaluation sees every example exactly once; the last
batch is padded and its padding masked out, and every process yields the same
number of batches so that collective steps stay in lockstep.
"""

import math

import jax
from jax.experimental import multihost_utils
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tiny_flax import data
from tiny_flax.data import locate
from tiny_flax.data import tf_transforms
# Registers the TFDS builder that tfds.builder('tiny_imagenet') finds.
from tiny_flax.data import tiny_imagenet  # pylint: disable=unused-import

# JAX owns the accelerators; tf.data runs on the host CPU.
tf.config.set_visible_devices([], 'GPU')


def dataset(config):
  """The config's `data.Dataset` from TFDS records, prepared on first use."""
  builder = prepare(config)
  batch_size = data.local_batch_size(config.batch_size)
  num_train = builder.info.splits['train'].num_examples
  steps_per_epoch = (num_train // jax.process_count()) // batch_size
  data.check_steps_per_epoch(steps_per_epoch, config.batch_size, num_train)
  return data.Dataset(
      class_names=class_names(builder),
      steps_per_epoch=steps_per_epoch,
      image_shape=data.image_shape(config),
      local_batch_size=batch_size,
      train_batches=lambda start_step: train_batches(
          builder, config.input.train, batch_size, steps_per_epoch,
          seed=config.seed, shuffle_buffer=config.input.shuffle_buffer,
          cache=config.input.cache, start_step=start_step),
      eval_batches=EvalBatches(builder, config.input.eval, batch_size,
                               config.steps_per_eval, config.input.cache))


def prepare(config):
  """Returns the TFDS builder of the config's dataset, prepared on first use."""
  manual_dir, data_dir = locate.dirs(config)
  download_config = tfds.download.DownloadConfig(manual_dir=manual_dir or None)

  def prepared():
    # Made once the records may be there: a builder made before another
    # process wrote them reads none of them.
    builder = tfds.builder('tiny_imagenet', data_dir=data_dir)
    builder.download_and_prepare(download_config=download_config)
    return builder

  # One process prepares (on a shared data_dir); the others wait, then reuse.
  if jax.process_index() == 0:
    with locate.preparing(data_dir):
      builder = prepared()
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('tiny_imagenet prepared')
    if jax.process_index() > 0:
      builder = prepared()
  return builder


def class_names(builder):
  """(wnid, human-readable name) for each class index."""
  names = builder.info.metadata['class_names']
  return [(wnid, names[wnid]) for wnid in builder.info.features['label'].names]


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


def train_batches(builder, transforms, batch_size, batches_per_epoch, *,
                  seed, shuffle_buffer, cache, start_step=0):
  """Endless iterator of this process's training batches from `start_step` on.

  `batch_size` is this process's share; `transforms` the training string.
  """
  decoded = _decoded(builder, 'train', cache)
  per_image_fn, pointwise_fn = tf_transforms.build_split(transforms)

  def epoch(index, skip_examples):
    shuffled = decoded.shuffle(shuffle_buffer, seed=seed * 100_003 + index)
    examples = shuffled.take(batches_per_epoch * batch_size).enumerate()

    def augment(position, example):
      example_seed = tf.random.experimental.stateless_fold_in(
          tf.cast(tf.stack([seed, index]), tf.int32),
          tf.cast(position, tf.int32))
      return {'image': per_image_fn(example['image'], example_seed),
              'label': example['label']}
    return examples.skip(skip_examples).map(
        augment, num_parallel_calls=tf.data.AUTOTUNE)

  first_epoch, steps_done = divmod(start_step, batches_per_epoch)
  later_epochs = tf.data.Dataset.range(first_epoch + 1, 1 << 40).flat_map(
      lambda index: epoch(index, 0))
  ds = epoch(first_epoch, steps_done * batch_size).concatenate(
      later_epochs)
  ds = ds.batch(batch_size, drop_remainder=True)
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

  def __init__(self, builder, transforms, batch_size, max_batches=-1,
               cache=True, split='validation'):
    self._batch_size = batch_size
    total = builder.info.splits[split].num_examples
    self._num_batches = math.ceil(
        math.ceil(total / jax.process_count()) / self._batch_size)
    if max_batches > 0:
      self._num_batches = min(self._num_batches, max_batches)
    per_image_fn, pointwise_fn = tf_transforms.build_split(transforms)
    no_seed = tf.zeros([2], tf.int32)
    ds = _decoded(builder, split, cache,
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
