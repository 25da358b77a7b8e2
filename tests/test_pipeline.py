"""The tf.data pipeline: shapes, exact validation coverage, reproducible order."""

import itertools

import numpy as np
import pytest

from tiny_flax import data
from tiny_flax.data import archive
from tiny_flax.data import pipeline


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def _dataset(config, **overrides):
  """pipeline.dataset of `config` with `overrides` (dotted keys as 'a__b')."""
  config = config.copy_and_resolve_references()
  for key, value in overrides.items():
    *parents, last = key.split('__')
    node = config
    for parent in parents:
      node = node[parent]
    node[last] = value
  return pipeline.dataset(config)


def test_train_batches_shapes_and_dtypes(fake_builder, fake_config):
  del fake_builder  # prepared once for the session
  batch = next(_dataset(fake_config).train_batches(0))
  assert batch['image'].shape == (fake_config.batch_size, 64, 64, 3)
  assert batch['image'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['label'].dtype == np.int32


@pytest.mark.parametrize('batch_size', [64, 400, 48])
def test_validation_covers_every_example_once(fake_builder, fake_config,
                                              batch_size):
  images, labels = [], []
  for batch in _dataset(fake_config, batch_size=batch_size).eval_batches:
    assert batch['image'].shape[0] == batch_size
    images.append(batch['image'][batch['mask']])
    labels.append(batch['label'][batch['mask']])
  images = np.concatenate(images)
  assert len(images) == fake_builder.info.splits['validation'].num_examples
  assert len({image.tobytes() for image in images}) == len(images)
  assert np.bincount(np.concatenate(labels)).tolist() == [2] * 200


def test_steps_per_eval_limits_the_pass(fake_builder, fake_config):
  del fake_builder  # prepared once for the session
  batches = _dataset(fake_config, steps_per_eval=2).eval_batches
  assert len(list(batches)) == 2
  # The cache holds only what a pass reads: one read in part is discarded.
  assert int(batches._dataset.cardinality()) == 2  # pylint: disable=protected-access


def test_train_order_is_a_function_of_seed_and_epoch(fake_builder, fake_config):
  del fake_builder  # prepared once for the session
  dataset = _dataset(fake_config)
  per_epoch = dataset.steps_per_epoch
  first = _take(dataset.train_batches(0), 2 * per_epoch)
  again = _take(dataset.train_batches(0), 2 * per_epoch)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  epoch0 = np.concatenate([b['label'] for b in first[:per_epoch]])
  epoch1 = np.concatenate([b['label'] for b in first[per_epoch:]])
  assert not np.array_equal(epoch0, epoch1), 'epochs must be reshuffled'

  shuffled = _take(_dataset(fake_config, seed=1).train_batches(0), 1)[0]
  assert not np.array_equal(shuffled['label'], first[0]['label'])


def test_resuming_replays_the_same_batches(fake_builder, fake_config):
  del fake_builder  # prepared once for the session
  dataset = _dataset(fake_config)
  start = dataset.steps_per_epoch + 3
  full = _take(dataset.train_batches(0), start + 2)
  resumed = _take(dataset.train_batches(start), 2)
  for a, b in zip(full[start:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_image_shape_follows_the_eval_transforms(fake_config):
  config = fake_config.copy_and_resolve_references()
  config.input.eval = 'resize(256)|center_crop(224)|to_tensor'
  assert data.image_shape(config) == (224, 224, 3)


def test_oversized_batch_is_refused(fake_builder, fake_config):
  del fake_builder  # prepared once for the session
  with pytest.raises(archive.DatasetError, match='larger'):
    _dataset(fake_config, batch_size=10_000)
