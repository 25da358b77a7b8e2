"""The decoded-array source: the TFDS builder's examples, decoded without TensorFlow."""

import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

import conftest
from tiny_flax.data import archive
from tiny_flax.data import arrays


class _Stopped(Exception):
  """A preparation stopped half-way."""


def _a_dead_pid():
  process = subprocess.Popen([sys.executable, '-c', ''])
  process.wait()
  return process.pid


@pytest.fixture(scope='module')
def source(fake_manual_dir):
  return archive.find(fake_manual_dir)


@pytest.fixture(scope='module')
def prepared(source, tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('arrays') / 'cache')
  return directory, arrays.load(source, directory, threads=2)


def test_arrays_equal_the_tfds_records_example_by_example(prepared, fake_builder):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from tiny_flax.data import pipeline  # pylint: disable=g-import-not-at-top
  _, loaded = prepared
  assert loaded.class_names == pipeline.class_names(fake_builder)
  for split in arrays.SPLITS:
    ours = getattr(loaded, split)
    position = {name: i for i, name in enumerate(ours.file_name)}
    records = fake_builder.as_dataset(
        split=split, decoders={'image': tfds.decode.SkipDecoding()})
    seen = 0
    for record in records.as_numpy_iterator():
      i = position[record['file_name'].decode()]
      image = tf.io.decode_jpeg(record['image'], channels=3,
                                dct_method='INTEGER_ACCURATE').numpy()
      np.testing.assert_array_equal(ours.image[i], image)
      assert ours.label[i] == record['label']
      seen += 1
    assert seen == len(ours.file_name) == len(ours.label) == len(ours.image)


def test_a_second_load_reads_the_cache(prepared, source, monkeypatch):
  directory, first = prepared
  monkeypatch.setattr(arrays, '_write', lambda *_: pytest.fail('rewritten'))
  again = arrays.load(source, directory)
  assert isinstance(again.train.image, np.memmap)
  np.testing.assert_array_equal(again.validation.label, first.validation.label)


def test_a_damaged_cache_is_named_and_rebuilt(source, tmp_path, caplog):
  directory = str(tmp_path / 'cache')
  expected = np.array(arrays.load(source, directory, threads=1)
                      .validation.image)  # read before the file shrinks
  path = os.path.join(directory, 'validation_image.npy')
  with open(path, 'r+b') as f:
    f.truncate(os.path.getsize(path) // 2)
  again = arrays.load(source, directory, threads=1)
  assert 'validation_image.npy' in caplog.text and 'damaged' in caplog.text
  np.testing.assert_array_equal(again.validation.image, expected)


def test_a_killed_preparation_is_redone_cleanly(source, tmp_path, monkeypatch):
  directory = str(tmp_path / 'cache')
  decode = arrays._decode_split

  def decode_then_fail(pool, source, split, members, partial):
    decode(pool, source, split, members, partial)
    raise _Stopped  # stopped after the first split
  monkeypatch.setattr(arrays, '_decode_split', decode_then_fail)
  with pytest.raises(_Stopped):
    arrays.load(source, directory, threads=1)
  assert not os.path.exists(directory)
  dead = _a_dead_pid()
  os.makedirs(tmp_path / f'.partial-{dead}-x')  # as a SIGKILL would leave it
  os.makedirs(tmp_path / f'.partial-{os.getpid()}-y')  # still being written
  monkeypatch.setattr(arrays, '_decode_split', decode)
  loaded = arrays.load(source, directory, threads=1)
  assert len(loaded.validation.label) == len(loaded.validation.image) > 0
  assert sorted(os.listdir(tmp_path)) == [f'.partial-{os.getpid()}-y', 'cache']


def test_an_unreadable_image_is_named(source, tmp_path):
  broken = str(tmp_path / archive.ARCHIVE_NAME)
  with zipfile.ZipFile(source.path) as original, zipfile.ZipFile(
      broken, 'w') as copy:
    names = sorted(n for n in original.namelist() if '/val/images/' in n)
    for info in original.infolist():
      data = original.read(info)
      copy.writestr(info, b'not a jpeg' if info.filename == names[0] else data)
  with pytest.raises(archive.DatasetError, match=os.path.basename(names[0])):
    arrays.load(archive.Archive(broken), str(tmp_path / 'cache'), threads=1)
  assert not os.path.exists(tmp_path / 'cache')


def test_a_cache_of_another_archive_is_rebuilt(source, tmp_path, caplog):
  directory = str(tmp_path / 'cache')
  arrays.load(source, directory, threads=1)
  other = str(tmp_path / archive.ARCHIVE_NAME)
  with zipfile.ZipFile(source.path) as original, zipfile.ZipFile(
      other, 'w') as copy:
    for info in original.infolist():
      if not info.filename.endswith('val_annotations.txt'):
        copy.writestr(info, original.read(info))
        continue
      lines = original.read(info).decode().splitlines()
      copy.writestr(info, '\n'.join(lines[:-1]) + '\n')  # one label fewer
  loaded = arrays.load(archive.Archive(other), directory, threads=1)
  assert 'other examples' in caplog.text
  assert len(loaded.validation.label) == len(lines) - 1


def test_the_prepare_command_decodes_once_and_names_bad_settings(
    tmp_path, fake_manual_dir):
  """`python -m tiny_flax.data`: the cache a run then loads, or one line why not."""
  command = [sys.executable, '-m', 'tiny_flax.data',
             '--config=configs/resnet18.py', '--config.dataset.source=fake',
             f'--config.dataset.manual_dir={fake_manual_dir}',
             f'--config.dataset.data_dir={tmp_path}',
             f'--config.dataset.fake_train_per_class={conftest.TRAIN_PER_CLASS}',
             f'--config.dataset.fake_val_per_class={conftest.VAL_PER_CLASS}']
  run = lambda *extra: subprocess.run(command + list(extra), cwd=conftest.REPO,
                                      capture_output=True, text=True,
                                      timeout=300)
  first, second = run(), run()
  assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:]
  assert 'Decoded' in first.stderr and 'Decoded' not in second.stderr
  assert (f'{archive.NUM_CLASSES * conftest.TRAIN_PER_CLASS} training and '
          f'{archive.NUM_CLASSES * conftest.VAL_PER_CLASS} validation images '
          f'ready in {arrays.cache_dir(str(tmp_path))}') in second.stdout
  bad = run('--config.dataset.source=imagenet')
  assert bad.returncode == 1
  assert bad.stderr.strip().splitlines()[-1].startswith(
      "error: config.dataset.source must be")
