"""The on-device JAX ops against the tf.data ops, and resident training data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
import tensorflow as tf

import conftest
from tiny_flax import data
from tiny_flax.data import jax_transforms
from tiny_flax.data import pipeline
from tiny_flax.data import resident
from tiny_flax.data import transforms
from tiny_flax.data import tf_transforms


@pytest.fixture(scope='module')
def images():
  rng = np.random.default_rng(0)
  smooth = np.kron(rng.integers(0, 256, (8, 8, 3)), np.ones((8, 8, 1)))
  return np.stack([rng.integers(0, 256, (64, 64, 3)),
                   smooth]).astype(np.uint8)


@pytest.mark.parametrize('box', [(0, 0, 64, 64), (5, 9, 30, 41),
                                 (40, 0, 24, 17), (10, 20, 7, 9)])
def test_resized_crop_matches_tf_on_a_fixed_box(images, box):
  boxes = tuple(jnp.full((len(images),), v) for v in box)
  ours = np.asarray(jax_transforms.resized_crop(images, boxes, (224, 96)))
  for image, resized in zip(images, ours):
    theirs = tf_transforms.resized_crop(tf.constant(image), box, (224, 96)).numpy()
    assert np.abs(resized - theirs.astype(np.float32)).max() <= 1


@pytest.mark.parametrize('ops', [
    'resize(256)|center_crop(224)|to_tensor|normalize(0.5, 0.5)',
    'resize((80, 50))|center_crop(47)|to_tensor', 'resize(40)|to_tensor',
    'center_crop(70)|to_tensor'])
def test_eval_transforms_match_tf(images, ops):
  ours = np.asarray(jax_transforms.build(ops)(images, jax.random.key(0)))
  theirs = np.stack([tf_transforms.build(ops)(tf.constant(i), tf.zeros([2], tf.int32))
                     for i in images])
  np.testing.assert_allclose(ours, theirs, atol=1.01 / 255)


def test_sampled_boxes_follow_the_tf_sampler():
  top, left, box_h, box_w = (np.asarray(v) for v in jax_transforms.sample_crop_boxes(
      jax.random.key(1), 3000, 64, 64, (0.08, 1.0), (3 / 4, 4 / 3)))
  assert (top + box_h <= 64).all() and (left + box_w <= 64).all()
  reference = tf.data.Dataset.range(3000).map(lambda i: tf.stack(
      tf_transforms.sample_crop_box(64, 64, tf.stack([5, tf.cast(i, tf.int32)]),
                                 (0.08, 1.0), (3 / 4, 4 / 3))))
  ref_top, ref_left, ref_h, ref_w = np.stack(
      list(reference.as_numpy_iterator())).T
  for ours, theirs in ((box_h * box_w, ref_h * ref_w), (box_w / box_h, ref_w / ref_h),
                       (top, ref_top), (left, ref_left)):
    assert stats.ks_2samp(ours, theirs).pvalue > 1e-3


def test_fallback_box_matches_tf():
  boxes = jax_transforms.sample_crop_boxes(jax.random.key(0), 4, 48, 80,
                                              (0.9, 1.0), (10.0, 12.0))
  expected = tf_transforms.sample_crop_box(48, 80, tf.constant([0, 0]),
                                        (0.9, 1.0), (10.0, 12.0))
  for ours, theirs in zip(boxes, expected):
    assert set(np.asarray(ours).tolist()) == {int(theirs)}


@pytest.mark.parametrize('size, padding', [
    (64, 4), (60, (1, 2, 3, 4)), ((48, 66), 1)])
def test_random_crop_crops_the_tf_ops_padding_at_uniform_offsets(
    images, size, padding):
  """Each image of the batch at its own offset, uniform over the positions,
  in the padded image of the tf op (torchvision's, tested there)."""
  image = images[0]  # noise: each crop lies at one offset only
  left, top, right, bottom = transforms.padding_sides('random_crop', padding)
  whole = (64 + top + bottom, 64 + left + right)
  padded = tf_transforms.random_crop(whole, padding)(
      tf.constant(image), tf.constant([0, 0])).numpy()
  batch = jnp.asarray(np.repeat(image[None], 600, axis=0))
  crops = np.asarray(jax_transforms.random_crop(size, padding)(
      batch, jax.random.key(7)))
  height, width = (size, size) if isinstance(size, int) else size
  assert crops.shape == (600, height, width, 3)
  offsets = conftest.crop_offsets(padded, crops)
  for axis, positions in enumerate((whole[0] - height + 1,
                                    whole[1] - width + 1)):
    counts = np.bincount(offsets[:, axis], minlength=positions)
    assert len(counts) == positions and counts.all(), counts
    if positions > 1:
      assert stats.chisquare(counts).pvalue > 1e-3, counts


@pytest.mark.parametrize('on_device', [True, False])
def test_a_crop_larger_than_its_padded_image_is_refused_before_the_data(
    fake_config, monkeypatch, on_device):
  """Refused before either input path prepares anything."""
  def prepared(config):
    raise AssertionError('the data was prepared first')
  monkeypatch.setattr(data, '_resident', prepared)
  monkeypatch.setattr(pipeline, 'dataset', prepared)
  config = fake_config.copy_and_resolve_references()
  config.input.train = 'random_crop(72)|to_tensor'
  with pytest.raises(transforms.PreprocessError, match='larger than the '
                     'padded image, 64x64'):
    data.prepare(config, on_device)
  config.input.train = 'random_crop(72, padding=4)|to_tensor'
  assert data.image_shape(config) == (64, 64, 3)


def test_flip_rate_and_determinism(images):
  flip = jax_transforms.random_horizontal_flip()
  batch = jnp.asarray(np.repeat(images[:1], 2000, axis=0))
  flipped = np.asarray(flip(batch, jax.random.key(3)))
  rate = np.mean([not np.array_equal(f, images[0]) for f in flipped])
  assert abs(rate - 0.5) < 0.04
  augment = jax_transforms.build('random_resized_crop(32)|to_tensor')
  np.testing.assert_array_equal(augment(images, jax.random.key(4)),
                                augment(images, jax.random.key(4)))


def test_bad_transforms_fail_like_the_tf_ones():
  with pytest.raises(transforms.PreprocessError, match='Known ops'):
    jax_transforms.build('random_rotation(3)|to_tensor')


def test_index_batches_are_a_function_of_seed_and_epoch():
  full = [b['index'] for b, _ in zip(resident.train_batches(100, 10, 10, 0), range(25))]
  assert sorted(np.concatenate(full[:10]).tolist()) == list(range(100))
  assert not np.array_equal(full[0], full[10])
  resumed = [b['index'] for b, _ in zip(
      resident.train_batches(100, 10, 10, 0, start_step=13), range(5))]
  for a, b in zip(full[13:18], resumed):
    np.testing.assert_array_equal(a, b)


def test_training_with_data_on_device(tmp_path, fake_config, fake_builder):
  del fake_builder  # prepared once for the session
  workdir = tmp_path / 'run'
  result = conftest.run_python(
      ['-m', 'tiny_flax.main', '--config=configs/smoke.py',
       f'--workdir={workdir}', '--config.input.on_device=true',
       '--config.parallelism=shard_map', '--config.num_epochs=1',
       '--config.batch_size=80', '--config.steps_per_dispatch=3',
       '--config.input.train=random_horizontal_flip|random_resized_crop(48)|to_tensor',
       '--config.input.eval=resize(48)|to_tensor']
      + [f'--config.dataset.{key}={fake_config.dataset[key]}'
         for key in ('manual_dir', 'data_dir', 'fake_train_per_class',
                     'fake_val_per_class')])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'Training and validation splits resident on the devices' in result.stderr
  assert '3 steps per dispatch' in result.stderr
  assert "'val_top1'" in result.stderr
  assert (workdir / 'checkpoints' / '10').exists()
