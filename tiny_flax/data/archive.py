"""The official Tiny ImageNet archive (zip or extracted folder), read without TensorFlow.

Shared by the TFDS builder and by the PyTorch reference trainer, which must not
load TensorFlow (torchvision crashes when imported after it).
"""

import io
import os
import zipfile

from PIL import Image

from tiny_flax import errors

URL = 'http://cs231n.stanford.edu/tiny-imagenet-200.zip'
ARCHIVE_NAME = 'tiny-imagenet-200.zip'
ROOT = 'tiny-imagenet-200'
NUM_CLASSES = 200
IMAGE_SHAPE = (64, 64, 3)
NUM_TRAIN = 100_000


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
