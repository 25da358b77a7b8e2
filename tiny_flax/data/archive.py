"""The official Tiny ImageNet archive (zip or extracted folder), read without TensorFlow.

Shared by the TFDS builder and by the PyTorch reference trainer, which must not
load TensorFlow (torchvision crashes when imported after it).
"""

import hashlib
import io
import os
import socket
from typing import NamedTuple
import urllib.parse
import zipfile

from PIL import Image

from tiny_flax import errors

URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'
ARCHIVE_NAME = 'tiny-imagenet-200.zip'
ROOT = 'tiny-imagenet-200'
NUM_CLASSES = 200
IMAGE_SHAPE = (64, 64, 3)
NUM_TRAIN = 100_000
NUM_VALIDATION = 10_000
ARCHIVE_MD5 = '90528d7ca1a48142e341f4ef8d21d0de'


class DatasetError(errors.UserError):
  """A problem with the Tiny ImageNet source that the user can fix."""


class Archive:
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
      self._folders = {}
      for name in self._names:
        self._folders.setdefault(name.rpartition('/')[0], []).append(name)

  def _describe(self, member):
    return f'{member} in {self.path}'

  def exists(self, member):
    if self._zip is not None:
      return member in self._names
    return os.path.isfile(os.path.join(self.path, member))

  def images(self, folder):
    """The JPEG members directly inside `folder`, sorted."""
    if self._zip is not None:
      names = self._folders.get(folder, [])
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
    self._decode(member, data)
    return data

  def image(self, member):
    """The member decoded by PIL, as torchvision's ImageFolder would."""
    return self._decode(member, self.read(member))

  def _decode(self, member, data):
    try:
      image = Image.open(io.BytesIO(data))
      image.load()
    except (OSError, SyntaxError, ValueError) as e:
      raise DatasetError(
          f'{self._describe(member)} is not a readable image ({e}). Replace '
          f'the archive with a fresh copy of {URL}.') from e
    return image


def find(manual_dir):
  """The archive or extracted folder in `manual_dir`, or None."""
  candidates = [os.path.join(manual_dir, ARCHIVE_NAME),
                os.path.join(manual_dir, ROOT)]
  for candidate in candidates:
    if os.path.exists(candidate):
      return Archive(candidate if candidate.endswith('.zip')
                     else os.path.dirname(candidate))
  return None


class Listing(NamedTuple):
  """The archive's classes and examples, as the TFDS builder and arrays.py read them.

  `wnids` sorted (ImageFolder's class order); `names` maps each to its words;
  `train`, `validation` and `test` are (member, wnid) pairs, '' for test.
  """
  wnids: list
  names: dict
  train: list
  validation: list
  test: list


def listing(source):
  """Reads wnids.txt, words.txt, the train folders and val_annotations.txt.

  Validation labels come from `val/val_annotations.txt`: reading `val/images`
  as an image folder (as the PyTorch original did) gives every image one label.
  """
  wnids = source.lines(f'{ROOT}/wnids.txt')
  if len(set(wnids)) != NUM_CLASSES:
    raise DatasetError(
        f'{ROOT}/wnids.txt in {source.path} lists {len(set(wnids))} distinct '
        f'wnids, expected {NUM_CLASSES}. Use the official {ARCHIVE_NAME}.')
  wnids = sorted(wnids)
  words = dict(line.split('\t', 1) for line in source.lines(f'{ROOT}/words.txt'))
  train = []
  for wnid in wnids:
    images = source.images(f'{ROOT}/train/{wnid}/images')
    if not images:
      raise DatasetError(f'No training images for {wnid} in {source.path}.')
    train += [(member, wnid) for member in images]
  return Listing(wnids, {w: words.get(w, w) for w in wnids}, train,
                 _validation_examples(source, set(wnids)),
                 [(member, '') for member in source.images(f'{ROOT}/test/images')])


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


def md5(path):
  digest = hashlib.md5()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def check_reachable(url, timeout=10):
  """Fails in seconds when offline, where a download would retry for minutes."""
  parts = urllib.parse.urlsplit(url)
  with socket.create_connection((parts.hostname, parts.port or 80), timeout):
    pass
