"""TFDS builder for Tiny ImageNet (cs231n), prepared once from the official zip.

Class indices follow the sorted wnids, the order torchvision's ImageFolder
gives, so logits line up with PyTorch models trained the usual way. Validation
labels come from `val/val_annotations.txt`: reading `val/images` as an image
folder (as the PyTorch original did) gives every image one label and chance
accuracy. The JPEG bytes are stored untouched, so decoding them here and in PIL
gives the same pixels.
"""

import hashlib
import io
import os
import socket
import urllib.parse
import zipfile

from PIL import Image
import tensorflow_datasets as tfds
import tqdm

from tiny_flax import errors

URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'
ARCHIVE_NAME = 'tiny-imagenet-200.zip'
ARCHIVE_MD5 = '90528d7ca1a48142e341f4ef8d21d0de'
ROOT = 'tiny-imagenet-200'
NUM_CLASSES = 200
IMAGE_SHAPE = (64, 64, 3)


class DatasetError(errors.UserError):
  """A problem with the Tiny ImageNet source that the user can fix."""


class _Source:
  """Members of the archive, read from the zip or from its extracted folder."""

  def __init__(self, path):
    self.path = path
    self._zip = None
    if os.path.isfile(path):
      try:
        self._zip = zipfile.ZipFile(path)
      except (zipfile.BadZipFile, OSError) as e:
        raise DatasetError(
            f'{path} is not a readable zip archive ({e}); it is corrupt or '
            f'truncated. Delete it and download {URL} again.') from e
      self._names = set(self._zip.namelist())

  def _describe(self, member):
    return f'{member} in {self.path}'

  def exists(self, member):
    if self._zip is not None:
      return member in self._names
    return os.path.isfile(os.path.join(self.path, member))

  def images(self, folder):
    """The JPEG members directly inside `folder`, sorted."""
    if self._zip is not None:
      prefix = folder + '/'
      names = [n for n in self._names if n.startswith(prefix)
               and '/' not in n[len(prefix):]]
    else:
      full = os.path.join(self.path, folder)
      names = [f'{folder}/{n}' for n in os.listdir(full)] if os.path.isdir(
          full) else []
    return sorted(n for n in names if n.endswith('.JPEG'))

  def read(self, member):
    if not self.exists(member):
      raise DatasetError(
          f'Tiny ImageNet archive is incomplete: {self._describe(member)} is '
          f'missing. Use the official {ARCHIVE_NAME} ({URL}).')
    try:
      if self._zip is not None:
        return self._zip.read(member)
      with open(os.path.join(self.path, member), 'rb') as f:
        return f.read()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
      raise DatasetError(
          f'Cannot read {self._describe(member)} ({e}): the archive is '
          f'corrupt. Delete it and download {URL} again.') from e

  def lines(self, member):
    return [l for l in self.read(member).decode('utf-8').splitlines() if l]

  def jpeg(self, member):
    """Returns the member's bytes after checking that they decode."""
    data = self.read(member)
    try:
      with Image.open(io.BytesIO(data)) as image:
        image.load()
    except (OSError, SyntaxError, ValueError) as e:
      raise DatasetError(
          f'{self._describe(member)} is not a readable image ({e}). Replace '
          f'the archive with a fresh copy of {URL}.') from e
    return data


def _md5(path):
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def _check_reachable(url, timeout=10):
  """Fails in seconds when offline, where TFDS would retry for minutes."""
  parts = urllib.parse.urlsplit(url)
  with socket.create_connection((parts.hostname, parts.port or 80), timeout):
    pass


def _local_source(manual_dir):
  """The archive or extracted folder in `manual_dir`, or None."""
  candidates = [os.path.join(manual_dir, ARCHIVE_NAME),
                os.path.join(manual_dir, ROOT)]
  for candidate in candidates:
    if os.path.exists(candidate):
      return _Source(candidate if candidate.endswith('.zip')
                     else os.path.dirname(candidate))
  return None


class TinyImagenet(tfds.core.GeneratorBasedBuilder):
  """Tiny ImageNet: 200 classes, 64x64 JPEGs, 100k train / 10k val / 10k test."""

  VERSION = tfds.core.Version('1.0.0')
  RELEASE_NOTES = {'1.0.0': 'First release.'}
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f'Without network access, download {URL} elsewhere and put '
      f'{ARCHIVE_NAME} (or its extracted {ROOT}/ folder) in the manual_dir.')

  def _info(self):
    return self.dataset_info_from_configs(
        description=__doc__,
        features=tfds.features.FeaturesDict({
            'image': tfds.features.Image(shape=IMAGE_SHAPE,
                                         encoding_format='jpeg'),
            'label': tfds.features.ClassLabel(),
            'file_name': tfds.features.Text(),
        }),
        supervised_keys=('image', 'label'),
        homepage='https://www.kaggle.com/c/tiny-imagenet',
        metadata=tfds.core.MetadataDict(),
    )

  def _source(self, dl_manager):
    manual_dir = os.fspath(dl_manager._manual_dir or '')  # pylint: disable=protected-access
    if manual_dir:
      source = _local_source(manual_dir)
      if source is not None:
        return source
    try:
      _check_reachable(URL)
      path = os.fspath(dl_manager.download(URL))
    except Exception as e:  # pylint: disable=broad-except
      looked = f'{manual_dir!r} has no {ARCHIVE_NAME} or {ROOT}/, and ' if (
          manual_dir) else 'no manual_dir was given, and '
      where = f'put it in {manual_dir}' if manual_dir else 'put it in a folder'
      raise DatasetError(
          f'Tiny ImageNet not found: {looked}downloading {URL} failed '
          f'({type(e).__name__}: {str(e)[:200]}). Download the zip on a '
          f'machine with network access and {where}, or pass '
          '--config.dataset.manual_dir=FOLDER holding it.') from e
    if _md5(path) != ARCHIVE_MD5:
      raise DatasetError(
          f'The download of {URL} at {path} is corrupt (md5 mismatch). '
          'Delete it and run again.')
    return _Source(path)

  def _split_generators(self, dl_manager):
    source = self._source(dl_manager)
    wnids = source.lines(f'{ROOT}/wnids.txt')
    if len(set(wnids)) != NUM_CLASSES:
      raise DatasetError(
          f'{ROOT}/wnids.txt in {source.path} lists {len(set(wnids))} distinct '
          f'wnids, expected {NUM_CLASSES}. Use the official {ARCHIVE_NAME}.')
    wnids = sorted(wnids)
    self.info.features['label'].names = wnids
    words = dict(line.split('\t', 1) for line in source.lines(f'{ROOT}/words.txt'))
    self.info.metadata['class_names'] = {w: words.get(w, w) for w in wnids}

    train = []
    for wnid in wnids:
      images = source.images(f'{ROOT}/train/{wnid}/images')
      if not images:
        raise DatasetError(f'No training images for {wnid} in {source.path}.')
      train += [(member, wnid) for member in images]
    validation = _validation_examples(source, set(wnids))
    test = [(member, -1) for member in source.images(f'{ROOT}/test/images')]
    return {
        'train': self._generate_examples(source, train, 'train'),
        'validation': self._generate_examples(source, validation, 'validation'),
        'test': self._generate_examples(source, test, 'test'),
    }

  def _generate_examples(self, source, examples, split):
    # TFDS's own bar counts examples; this one knows the total, hence an ETA.
    for member, label in tqdm.tqdm(examples, desc=f'Reading {split} images',
                                   unit='image', leave=False):
      file_name = os.path.basename(member)
      yield file_name, {'image': source.jpeg(member), 'label': label,
                        'file_name': file_name}


def _validation_examples(source, wnids):
  annotations = f'{ROOT}/val/val_annotations.txt'
  if not source.exists(annotations):
    raise DatasetError(
        f'{source.path} has no {annotations}: validation labels come from '
        f'it. Use the official {ARCHIVE_NAME} ({URL}).')
  examples = []
  for line in source.lines(annotations):
    file_name, wnid = line.split('\t')[:2]
    if wnid not in wnids:
      raise DatasetError(
          f'{annotations} in {source.path} labels {file_name} with {wnid}, '
          f'which is not one of the 200 wnids in wnids.txt. Use the official '
          f'{ARCHIVE_NAME}.')
    examples.append((f'{ROOT}/val/images/{file_name}', wnid))
  return examples
