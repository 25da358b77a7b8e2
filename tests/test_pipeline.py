"""The tf.data pipeline: shapes, exact validation coverage, reproducible order."""

import itertools

import numpy as np
import pytest

from tiny_flax.data import archive
from tiny_flax.data import pipeline


def _take(iterator, n):
  return list(itertools.islice(iterator, n))


def test_train_batches_shapes_and_dtypes(fake_builder, fake_config):
  batch = next(pipeline.train_batches(fake_builder, fake_config))
  assert batch['image'].shape == (fake_config.batch_size, 64, 64, 3)
  assert batch['image'].dtype == np.float32
  assert 0.0 <= batch['image'].min() and batch['image'].max() <= 1.0
  assert batch['label'].dtype == np.int32


@pytest.mark.parametrize('batch_size', [64, 400, 48])
def test_validation_covers_every_example_once(fake_builder, fake_config,
                                              batch_size):
  config = fake_config.copy_and_resolve_references()
  config.batch_size = batch_size
  images, labels = [], []
  for batch in pipeline.EvalBatches(fake_builder, config):
    assert batch['image'].shape[0] == batch_size
    images.append(batch['image'][batch['mask']])
    labels.append(batch['label'][batch['mask']])
  images = np.concatenate(images)
  assert len(images) == fake_builder.info.splits['validation'].num_examples
  assert len({image.tobytes() for image in images}) == len(images)
  assert np.bincount(np.concatenate(labels)).tolist() == [2] * 200


def test_steps_per_eval_limits_the_pass(fake_builder, fake_config):
  config = fake_config.copy_and_resolve_references()
  config.steps_per_eval = 2
  batches = pipeline.EvalBatches(fake_builder, config)
  assert len(list(batches)) == 2
  # The cache holds only what a pass reads: one read in part is discarded.
  assert int(batches._dataset.cardinality()) == 2  # pylint: disable=protected-access


def test_train_order_is_a_function_of_seed_and_epoch(fake_builder, fake_config):
  per_epoch = pipeline.steps_per_epoch(fake_builder, fake_config.batch_size)
  first = _take(pipeline.train_batches(fake_builder, fake_config), 2 * per_epoch)
  again = _take(pipeline.train_batches(fake_builder, fake_config), 2 * per_epoch)
  for a, b in zip(first, again):
    np.testing.assert_array_equal(a['image'], b['image'])
  epoch0 = np.concatenate([b['label'] for b in first[:per_epoch]])
  epoch1 = np.concatenate([b['label'] for b in first[per_epoch:]])
  assert not np.array_equal(epoch0, epoch1), 'epochs must be reshuffled'

  other = fake_config.copy_and_resolve_references()
  other.seed = 1
  shuffled = _take(pipeline.train_batches(fake_builder, other), 1)[0]
  assert not np.array_equal(shuffled['label'], first[0]['label'])


def test_resuming_replays_the_same_batches(fake_builder, fake_config):
  per_epoch = pipeline.steps_per_epoch(fake_builder, fake_config.batch_size)
  start = per_epoch + 3
  full = _take(pipeline.train_batches(fake_builder, fake_config), start + 2)
  resumed = _take(pipeline.train_batches(fake_builder, fake_config,
                                         start_step=start), 2)
  for a, b in zip(full[start:], resumed):
    np.testing.assert_array_equal(a['image'], b['image'])
    np.testing.assert_array_equal(a['label'], b['label'])


def test_image_shape_follows_the_eval_recipe(fake_config):
  config = fake_config.copy_and_resolve_references()
  config.input.eval = 'resize(256)|center_crop(224)|to_tensor'
  assert pipeline.image_shape(config) == (224, 224, 3)


def test_oversized_batch_is_refused(fake_builder, fake_config):
  config = fake_config.copy_and_resolve_references()
  config.batch_size = 10_000
  with pytest.raises(archive.DatasetError, match='larger'):
    next(pipeline.train_batches(fake_builder, config))
