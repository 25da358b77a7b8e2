"""Preprocessing ops against torchvision's transforms on the same images."""

import io
import zipfile

import numpy as np
from PIL import Image
import pytest
from scipy import stats
import tensorflow as tf

import conftest
from tiny_flax.data import tf_transforms

torch = pytest.importorskip('torch')
transforms = pytest.importorskip('torchvision.transforms')
functional = pytest.importorskip('torchvision.transforms.functional')

ONE_LEVEL = 1 / 255 + 1e-6


@pytest.fixture(scope='module')
def images(fake_manual_dir):
  """A few decoded JPEGs of the fake archive, plus a noisy image."""
  with zipfile.ZipFile(f'{fake_manual_dir}/tiny-imagenet-200.zip') as archive:
    names = sorted(n for n in archive.namelist() if n.endswith('.JPEG'))[:6]
    decoded = [np.asarray(Image.open(io.BytesIO(archive.read(n))).convert('RGB'))
               for n in names]
  noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), np.uint8)
  return decoded + [noise]


def _ours(ops, image, seed=(0, 0)):
  return tf_transforms.build(ops)(tf.constant(image),
                                  tf.constant(seed, tf.int32)).numpy()


def _theirs(torch_ops, image):
  tensor = transforms.Compose(torch_ops)(Image.fromarray(image))
  return tensor.numpy().transpose(1, 2, 0)


@pytest.mark.parametrize('ops, torch_ops', [
    ('resize(256)|center_crop(224)|to_tensor',
     [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor()]),
    ('to_tensor', [transforms.ToTensor()]),
    ('resize((80, 50))|center_crop(47)|to_tensor',
     [transforms.Resize((80, 50)), transforms.CenterCrop(47), transforms.ToTensor()]),
    ('resize(40)|to_tensor', [transforms.Resize(40), transforms.ToTensor()]),
    ('center_crop(70)|to_tensor', [transforms.CenterCrop(70), transforms.ToTensor()]),
])
def test_eval_transforms_match_torchvision(images, ops, torch_ops):
  for image in images:
    ours, theirs = _ours(ops, image), _theirs(torch_ops, image)
    assert ours.shape == theirs.shape
    assert np.abs(ours - theirs).max() <= ONE_LEVEL


def test_normalize_matches_torchvision(images):
  mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
  ours = _ours(f'to_tensor|normalize({mean}, {std})', images[0])
  theirs = _theirs([transforms.ToTensor(), transforms.Normalize(mean, std)],
                   images[0])
  np.testing.assert_allclose(ours, theirs, atol=1e-5)


@pytest.mark.parametrize('box', [(0, 0, 64, 64), (5, 9, 30, 41), (40, 0, 24, 17),
                                 (10, 20, 7, 9)])
def test_resized_crop_matches_torchvision_on_a_fixed_box(images, box):
  for image in images:
    ours = tf_transforms.resized_crop(tf.constant(image), box, (224, 224)).numpy()
    theirs = np.asarray(functional.resized_crop(Image.fromarray(image), *box,
                                                [224, 224]))
    assert np.abs(ours.astype(int) - theirs.astype(int)).max() <= 1


def _our_boxes(count, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  ds = tf.data.Dataset.range(count).map(lambda i: tf.stack(
      tf_transforms.sample_crop_box(height, width,
                                 tf.stack([7, tf.cast(i, tf.int32)]),
                                 scale, ratio)))
  return np.stack(list(ds.as_numpy_iterator()))


def _torch_boxes(count, height, width, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
  torch.manual_seed(0)
  image = torch.zeros(3, height, width)
  return np.array([transforms.RandomResizedCrop.get_params(image, scale, ratio)
                   for _ in range(count)])


@pytest.mark.parametrize('height, width', [(64, 64), (48, 80)])
def test_sampled_boxes_follow_torchvision_distribution(height, width):
  ours, theirs = _our_boxes(3000, height, width), _torch_boxes(3000, height, width)
  for boxes in (ours, theirs):
    top, left, box_h, box_w = boxes.T
    assert (top >= 0).all() and (top + box_h <= height).all()
    assert (left >= 0).all() and (left + box_w <= width).all()

  def features(boxes):
    top, left, box_h, box_w = boxes.T.astype(float)
    return {'area': box_h * box_w / (height * width), 'ratio': box_w / box_h,
            'top': top / height, 'left': left / width}
  ours_f, theirs_f = features(ours), features(theirs)
  for name in ours_f:
    result = stats.ks_2samp(ours_f[name], theirs_f[name])
    assert result.pvalue > 1e-3, (name, result)


def test_box_sampler_falls_back_to_the_central_crop():
  # No crop can have a 10:1 aspect ratio inside a square image.
  boxes = _our_boxes(20, 64, 64, scale=(0.9, 1.0), ratio=(10.0, 12.0))
  expected = _torch_boxes(20, 64, 64, scale=(0.9, 1.0), ratio=(10.0, 12.0))
  np.testing.assert_array_equal(boxes, expected)


@pytest.mark.parametrize('size, padding', [
    (64, 4), (56, 0), (64, (4, 2)), (60, (1, 2, 3, 4)), ((48, 66), 1)])
def test_random_crop_is_torchvisions_crop_of_its_padded_image(
    images, size, padding):
  """Each output is torchvision's F.crop of its F.pad (fill 0) at one
  offset, and the offsets are uniform over every position, as
  RandomCrop.get_params draws them."""
  image = images[-1]  # noise: each crop lies at one offset only
  padded = np.asarray(functional.pad(Image.fromarray(image), padding))
  op = tf_transforms.random_crop(size, padding)
  crops = [op(tf.constant(image), tf.constant([5, i])).numpy()
           for i in range(600)]
  height, width = (size, size) if isinstance(size, int) else size
  assert crops[0].shape == (height, width, 3)
  offsets = conftest.crop_offsets(padded, crops)
  for axis, positions in enumerate((padded.shape[0] - height + 1,
                                    padded.shape[1] - width + 1)):
    counts = np.bincount(offsets[:, axis], minlength=positions)
    assert len(counts) == positions and counts.all(), counts
    if positions > 1:
      assert stats.chisquare(counts).pvalue > 1e-3, counts


def test_flip_rate_is_one_half(images):
  flip = tf_transforms.random_horizontal_flip()
  image = tf.constant(images[-1])
  flipped = [not np.array_equal(flip(image, tf.constant([3, i])).numpy(),
                                images[-1]) for i in range(2000)]
  assert abs(np.mean(flipped) - 0.5) < 0.04


def test_same_seed_same_output(images):
  ops = 'random_horizontal_flip|random_resized_crop(96)|to_tensor'
  first = _ours(ops, images[0], (1, 2))
  np.testing.assert_array_equal(first, _ours(ops, images[0], (1, 2)))
  others = [_ours(ops, images[0], (1, s)) for s in range(3, 8)]
  assert not all(np.array_equal(first, o) for o in others)


@pytest.mark.parametrize('ops, message', [
    ('random_rotation(10)|to_tensor', 'Known ops'),
    ('random_crop(32, padding=-1)|to_tensor', 'padding must be'),
    ('random_crop(32, padding=(1, 2, 3))|to_tensor', 'padding must be'),
    ('random_crop(0)|to_tensor', 'positive'),
    ('resize(0)|to_tensor', 'positive'),
    ('center_crop((3, -1))|to_tensor', 'positive'),
    ('random_resized_crop(-224)|to_tensor', 'positive'),
    ('random_resized_crop(224, scale=(1.0, 0.5))|to_tensor', 'increasing'),
    ('to_tensor|normalize(0.5, 0.0)', 'std must be positive'),
    ('resize(64)', 'to_tensor'),
    ('resize(64', 'Cannot parse'),
])
def test_bad_transforms_fail_at_build_time(ops, message):
  with pytest.raises(tf_transforms.PreprocessError, match=message):
    tf_transforms.build(ops)


def test_pipeline_halves_compose_to_the_per_image_function(images):
  ops = 'random_horizontal_flip|to_tensor|normalize(0.5, 0.25)'
  per_image, pointwise = tf_transforms.build_split(ops)
  seed = tf.constant([4, 2])
  halves = pointwise(per_image(tf.constant(images[0]), seed), seed).numpy()
  np.testing.assert_array_equal(halves, _ours(ops, images[0], (4, 2)))
