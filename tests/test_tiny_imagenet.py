"""The TFDS builder on fake archives in the official layout, and its bad inputs."""

import io
import os
import shutil
import subprocess
import sys
import time
import zipfile

import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

import conftest
from tiny_flax.data import archive
from tiny_flax.data import fake
from tiny_flax.data import locate
from tiny_flax.data import tiny_imagenet  # pylint: disable=unused-import

ROOT = archive.ROOT


def _archive_members(manual_dir):
  return zipfile.ZipFile(os.path.join(manual_dir, archive.ARCHIVE_NAME))


def test_split_sizes(fake_builder):
  splits = fake_builder.info.splits
  assert splits['train'].num_examples == 200 * conftest.TRAIN_PER_CLASS
  assert splits['validation'].num_examples == 200 * conftest.VAL_PER_CLASS
  assert splits['test'].num_examples == 50


def test_labels_follow_sorted_wnids(fake_builder, fake_manual_dir):
  names = fake_builder.info.features['label'].names
  listed = _archive_members(fake_manual_dir).read(
      f'{ROOT}/wnids.txt').decode().split()
  assert listed != sorted(listed), 'the fake wnids.txt should not be sorted'
  assert names == sorted(listed)
  for example in tfds.as_numpy(fake_builder.as_dataset('train').take(50)):
    wnid = example['file_name'].decode().split('_')[0]
    assert names[example['label']] == wnid


def test_validation_labels_come_from_annotations(fake_builder, fake_manual_dir):
  lines = _archive_members(fake_manual_dir).read(
      f'{ROOT}/val/val_annotations.txt').decode().splitlines()
  expected = dict(line.split('\t')[:2] for line in lines)
  names = fake_builder.info.features['label'].names
  seen = {}
  for example in tfds.as_numpy(fake_builder.as_dataset('validation')):
    seen[example['file_name'].decode()] = names[example['label']]
  assert seen == expected
  assert len(set(seen.values())) == 200


def test_test_split_is_unlabelled(fake_builder):
  labels = {int(e['label']) for e in tfds.as_numpy(
      fake_builder.as_dataset('test'))}
  assert labels == {-1}


def test_grayscale_jpegs_come_out_rgb(fake_builder, fake_manual_dir):
  members = _archive_members(fake_manual_dir)
  gray = set()
  for name in members.namelist():
    if name.startswith(f'{ROOT}/val/images/'):
      with Image.open(io.BytesIO(members.read(name))) as image:
        if image.mode == 'L':
          gray.add(os.path.basename(name))
  assert gray, 'the fake archive should hold grayscale JPEGs'
  found = 0
  for example in tfds.as_numpy(fake_builder.as_dataset('validation')):
    assert example['image'].shape == (64, 64, 3)
    if example['file_name'].decode() in gray:
      found += 1
      np.testing.assert_array_equal(example['image'][..., 0],
                                    example['image'][..., 2])
  assert found == len(gray)


def test_class_names_kept_from_words_txt(fake_builder):
  names = fake_builder.info.metadata['class_names']
  assert len(names) == 200
  assert all(name.startswith('fake class') for name in names.values())


def _prepare(manual_dir, data_dir):
  builder = tfds.builder('tiny_imagenet', data_dir=str(data_dir))
  builder.download_and_prepare(download_config=tfds.download.DownloadConfig(
      manual_dir=str(manual_dir)))
  return builder


def _rewrite(source_dir, target_dir, edit):
  """Copies the fake archive, passing each (name, bytes) through `edit`."""
  os.makedirs(target_dir, exist_ok=True)
  with zipfile.ZipFile(os.path.join(source_dir, archive.ARCHIVE_NAME)) as src, \
      zipfile.ZipFile(os.path.join(target_dir, archive.ARCHIVE_NAME), 'w') as dst:
    for name in src.namelist():
      data = edit(name, src.read(name))
      if data is not None:
        dst.writestr(name, data)


def test_extracted_folder_works_like_the_zip(fake_manual_dir, tmp_path):
  _archive_members(fake_manual_dir).extractall(tmp_path / 'manual')
  builder = _prepare(tmp_path / 'manual', tmp_path / 'data')
  assert builder.info.splits['validation'].num_examples == 400


def test_missing_archive_without_network(tmp_path):
  with pytest.raises(archive.DatasetError, match='manual_dir'):
    _prepare(tmp_path / 'empty', tmp_path / 'data')


def test_truncated_zip(fake_manual_dir, tmp_path):
  os.makedirs(tmp_path / 'manual')
  with open(os.path.join(fake_manual_dir, archive.ARCHIVE_NAME), 'rb') as f:
    data = f.read()
  with open(tmp_path / 'manual' / archive.ARCHIVE_NAME, 'wb') as f:
    f.write(data[:len(data) // 2])
  with pytest.raises(archive.DatasetError, match='corrupt or truncated'):
    _prepare(tmp_path / 'manual', tmp_path / 'data')


def test_corrupt_member_is_named(fake_manual_dir, tmp_path):
  broken = f'{ROOT}/val/images/val_7.JPEG'
  _rewrite(fake_manual_dir, tmp_path / 'manual',
           lambda name, data: b'not a jpeg' if name == broken else data)
  with pytest.raises(archive.DatasetError, match='val_7.JPEG'):
    _prepare(tmp_path / 'manual', tmp_path / 'data')
  assert not os.path.exists(tmp_path / 'data' / 'tiny_imagenet' / '1.0.0'), (
      'a failed preparation must not leave a dataset behind')


def test_missing_val_annotations(fake_manual_dir, tmp_path):
  _rewrite(fake_manual_dir, tmp_path / 'manual',
           lambda name, data: None if name.endswith('val_annotations.txt') else data)
  with pytest.raises(archive.DatasetError, match='val_annotations.txt'):
    _prepare(tmp_path / 'manual', tmp_path / 'data')


def test_annotation_with_unknown_wnid(fake_manual_dir, tmp_path):
  def edit(name, data):
    if name.endswith('val_annotations.txt'):
      first, rest = data.decode().split('\n', 1)
      fields = first.split('\t')
      fields[1] = 'n99999999'
      return ('\t'.join(fields) + '\n' + rest).encode()
    return data
  _rewrite(fake_manual_dir, tmp_path / 'manual', edit)
  with pytest.raises(archive.DatasetError, match='n99999999'):
    _prepare(tmp_path / 'manual', tmp_path / 'data')


def test_preparation_succeeds_after_a_failed_one(fake_manual_dir, tmp_path):
  _rewrite(fake_manual_dir, tmp_path / 'manual',
           lambda name, data: None if name.endswith('val_annotations.txt') else data)
  with pytest.raises(archive.DatasetError):
    _prepare(tmp_path / 'manual', tmp_path / 'data')
  shutil.copy(os.path.join(fake_manual_dir, archive.ARCHIVE_NAME),
              tmp_path / 'manual' / archive.ARCHIVE_NAME)
  builder = _prepare(tmp_path / 'manual', tmp_path / 'data')
  assert builder.info.splits['train'].num_examples == 800


def test_fake_archive_is_deterministic(tmp_path):
  a = fake.write_archive(str(tmp_path / 'a.zip'), train_per_class=1,
                         val_per_class=1, num_test=1)
  b = fake.write_archive(str(tmp_path / 'b.zip'), train_per_class=1,
                         val_per_class=1, num_test=1)
  with zipfile.ZipFile(a) as za, zipfile.ZipFile(b) as zb:
    assert za.namelist() == zb.namelist()
    assert all(za.read(n) == zb.read(n) for n in za.namelist())


def test_a_preparation_killed_half_way_is_redone(fake_manual_dir, tmp_path):
  """TFDS writes into an `incomplete.*` folder renamed when done: never read."""
  data_dir = tmp_path / 'data'
  preparing = subprocess.Popen(
      [sys.executable, '-c', 'import sys, tensorflow_datasets as tfds\n'
       'from tiny_flax.data import tiny_imagenet\n'
       'tfds.builder("tiny_imagenet", data_dir=sys.argv[2]).download_and_prepare('
       'download_config=tfds.download.DownloadConfig(manual_dir=sys.argv[1]))',
       fake_manual_dir, str(data_dir)],
      cwd=conftest.REPO, env=dict(os.environ, PYTHONPATH=conftest.REPO))
  incomplete = data_dir / 'tiny_imagenet'
  while preparing.poll() is None and not (
      incomplete.is_dir() and any(name.startswith('incomplete')
                                  for name in os.listdir(incomplete))):
    time.sleep(0.02)
  preparing.kill()
  assert preparing.wait() == -9, 'the preparation ended before its kill'
  builder = _prepare(fake_manual_dir, data_dir)
  assert builder.info.splits['train'].num_examples == 800
  for split, count in (('train', 800), ('validation', 400)):
    assert builder.as_dataset(split=split).reduce(0, lambda n, _: n + 1) == count


def test_a_second_run_waits_for_a_preparation_in_progress_and_reads_it(
    fake_manual_dir, tmp_path):
  """Two runs started on unprepared data: the second waits for the first's
  lock, then reads its records (without the lock both prepared, and the
  slower failed with a FileExistsError)."""
  data_dir = tmp_path / 'data'
  log = tmp_path / 'second.log'
  with locate.preparing(str(data_dir)), open(log, 'w') as stderr:
    second = subprocess.Popen(
        [sys.executable, '-c', 'import sys\nfrom configs import smoke\n'
         'from tiny_flax.data import pipeline\n'
         'config = smoke.get_config()\n'
         'config.dataset.manual_dir, config.dataset.data_dir = sys.argv[1:]\n'
         'splits = pipeline.prepare(config).info.splits\n'
         'print(splits["train"].num_examples, '
         'splits["validation"].num_examples)',
         fake_manual_dir, str(data_dir)],
        cwd=conftest.REPO, env=dict(os.environ, PYTHONPATH=conftest.REPO),
        stdout=subprocess.PIPE, stderr=stderr, text=True)
    deadline = time.monotonic() + 120
    while 'waiting for it to finish' not in log.read_text():
      assert second.poll() is None, log.read_text()[-2000:]
      assert time.monotonic() < deadline, log.read_text()[-2000:]
      time.sleep(0.1)
    _prepare(fake_manual_dir, data_dir)  # the first run's preparation
    assert second.poll() is None  # still waiting
  out, _ = second.communicate(timeout=120)
  assert second.returncode == 0, log.read_text()[-2000:]
  assert out.split() == ['800', '400']
