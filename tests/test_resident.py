"""The resident input path: its Dataset, its evaluation, and the on-device choice."""

import math

import jax
import numpy as np
import pytest
import tensorflow as tf

from configs import default
from tiny_flax.platform import backend
from tiny_flax import data
from tiny_flax import errors
from tiny_flax.data import archive
from tiny_flax.data import resident
from tiny_flax.data import tf_transforms

ALEXNET_EVAL = f'resize(256)|center_crop(224)|to_tensor|{default.IMAGENET_NORMALIZE}'
STD = np.array([0.229, 0.224, 0.225], np.float32)


@pytest.fixture(scope='module')
def resident_dataset(fake_config):
  config = fake_config.copy_and_resolve_references()
  config.input.eval = ALEXNET_EVAL
  return data.prepare(config, on_device=True)


def test_dataset_describes_the_splits(resident_dataset, fake_config):
  dataset = resident_dataset
  train = dataset.resident.arrays['train']
  assert train['image'].shape == (200 * 4,) + archive.IMAGE_SHAPE
  assert dataset.steps_per_epoch == len(train['label']) // fake_config.batch_size
  assert dataset.image_shape == (224, 224, 3)
  assert len(dataset.class_names) == data.NUM_CLASSES
  batch = next(dataset.train_batches(0))
  assert batch['index'].shape == (fake_config.batch_size,)


def test_eval_transforms_on_device_equal_tf_data_within_one_level(
    resident_dataset):
  """AlexNet's Resize(256) + CenterCrop(224) + Normalize, on the archive's images."""
  res = resident_dataset.resident
  batch = next(iter(resident_dataset.eval_batches))
  ours = jax.device_get(jax.jit(res.eval_batch)(res.arrays, batch))
  tf_eval = tf_transforms.build(ALEXNET_EVAL)
  images = res.arrays['validation']['image'][batch['index']]
  theirs = np.stack([tf_eval(tf.constant(image), tf.zeros([2], tf.int32))
                     for image in images])
  levels = np.abs(ours['image'] - theirs) * STD * 255
  assert levels.max() <= 1.01
  assert (levels > 0.5).mean() < 0.01  # off by one level only where rounding ties
  np.testing.assert_array_equal(ours['label'],
                                res.arrays['validation']['label'][batch['index']])


@pytest.mark.parametrize('batch_size', [64, 400, 48])
def test_validation_counts_every_example_once(resident_dataset, batch_size):
  count = len(resident_dataset.resident.arrays['validation']['label'])
  batches = resident.EvalBatches(count, batch_size, -(-count // batch_size))
  seen = np.concatenate([b['index'][b['mask']] for b in batches])
  assert sorted(seen.tolist()) == list(range(count))
  assert all(len(b['index']) == batch_size for b in batches)


@pytest.mark.parametrize('processes', [1, 3, 7])
def test_process_shares_cover_each_row_once(processes):
  rows = []
  for index in range(processes):
    offset, count = resident.process_share(50, index, processes, even=False)
    batches = resident.EvalBatches(count, 4, math.ceil(-(-50 // processes) / 4),
                                   offset)
    rows += np.concatenate([b['index'][b['mask']] for b in batches]).tolist()
  assert sorted(rows) == list(range(50))
  offset, count = resident.process_share(50, processes - 1, processes,
                                         even=True)
  assert count == 50 // processes and offset == (processes - 1) * count
  batch = next(resident.train_batches(count, count, 1, 0, offset=offset))
  assert sorted(batch['index']) == list(range(offset, offset + count))


@pytest.mark.parametrize('choice,installed,expected', [
    ('false', True, False), ('true', True, True), ('auto', True, False),
    ('auto', False, True), ('AUTO', True, False)])
def test_on_device_choice_on_the_cpu(choice, installed, expected):
  assert backend.input_on_device(choice, 10**9, installed) is expected


def test_on_device_auto_on_an_accelerator_needs_room(monkeypatch):
  monkeypatch.setattr(backend, 'on_cpu', lambda: False)
  monkeypatch.setattr(backend, 'free_device_memory', lambda: 100 * 10**9)
  assert backend.input_on_device('auto', 2 * 10**9, True)
  assert not backend.input_on_device('auto', 30 * 10**9, True)


def test_on_device_true_without_room_says_what_is_needed(monkeypatch):
  monkeypatch.setattr(backend, 'free_device_memory', lambda: 10**9)
  with pytest.raises(errors.UserError, match=r'needs 1\.35 GB.*only 1\.00 GB'
                     r'.*on_device=false'):
    backend.input_on_device('true', 1.35e9, True)


def test_a_bad_on_device_value_is_named():
  with pytest.raises(errors.UserError, match="'yes'"):
    backend.input_on_device('yes', 1, True)


def test_a_truncated_archive_gets_the_usual_message(fake_config,
                                                    fake_manual_dir, tmp_path):
  (tmp_path / 'manual').mkdir()
  with open(f'{fake_manual_dir}/{archive.ARCHIVE_NAME}', 'rb') as f:
    whole = f.read()
  (tmp_path / 'manual' / archive.ARCHIVE_NAME).write_bytes(
      whole[:len(whole) // 2])
  config = fake_config.copy_and_resolve_references()
  config.dataset.manual_dir = str(tmp_path / 'manual')
  config.dataset.data_dir = str(tmp_path / 'data')
  with pytest.raises(archive.DatasetError, match='corrupt or truncated'):
    data.prepare(config, on_device=True)
