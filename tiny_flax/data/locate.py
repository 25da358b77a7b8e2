"""Where a config's archive and prepared data live, made ready on first use.

The fake archive is generated; the official one is found in
`config.dataset.manual_dir` or downloaded. Shared by both input paths, so
neither needs the other's libraries.
"""

import contextlib
import fcntl
import os
import urllib.request

from absl import logging

from tiny_flax import errors
from tiny_flax.data import archive
from tiny_flax.data import fake

DEFAULT_DATA_DIR = '~/tensorflow_datasets'


def check_source(source):
  errors.require(source in ('official', 'fake'), 'config.dataset.source',
                 '"official" or "fake"', source)


def dirs(config):
  """(manual_dir, data_dir) of the config's source; a fake archive written once.

  Fake archives live apart from real data, one folder per size.
  """
  source = config.dataset.source
  check_source(source)
  if source == 'fake':
    size = (f'{config.dataset.fake_train_per_class}-'
            f'{config.dataset.fake_val_per_class}')
    root = os.path.join(os.path.expanduser('~/.cache/tiny_flax'),
                        f'fake-{size}')
    manual_dir = config.dataset.manual_dir or root
    data_dir = config.dataset.data_dir or os.path.join(root, 'tfds')
    path = os.path.join(manual_dir, archive.ARCHIVE_NAME)
    if not os.path.exists(path):
      fake.write_archive(path,
                         train_per_class=config.dataset.fake_train_per_class,
                         val_per_class=config.dataset.fake_val_per_class)
  else:
    manual_dir = config.dataset.manual_dir
    data_dir = config.dataset.data_dir or DEFAULT_DATA_DIR
  return (os.path.expanduser(manual_dir) if manual_dir else '',
          os.path.expanduser(data_dir))


@contextlib.contextmanager
def preparing(data_dir):
  """Held while this process prepares data in `data_dir` (the download, the
  TFDS records, the arrays): a second run on the same data waits, then uses
  what the first prepared, instead of preparing it beside it (two TFDS
  preparations end with the slower one's FileExistsError).

  flock: a killed holder holds nothing. A data_dir this process cannot
  write to (it can only be read) or that cannot be locked is used without
  the lock.
  """
  try:
    os.makedirs(data_dir, exist_ok=True)
    lock = open(os.path.join(data_dir, '.tiny_flax_prepare.lock'), 'a')  # pylint: disable=consider-using-with
  except OSError:
    yield
    return
  with lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.warning('Another process is preparing Tiny ImageNet in %s; '
                      'waiting for it to finish, to use what it prepares.',
                      data_dir)
      fcntl.flock(lock, fcntl.LOCK_EX)
    except OSError:  # a file system without locks: prepared unlocked
      pass
    yield


def official_archive(manual_dir, data_dir):
  """The archive in `manual_dir`, else downloaded once under `data_dir`."""
  if manual_dir:
    found = archive.find(manual_dir)
    if found is not None:
      return found
  path = os.path.join(data_dir, 'downloads', archive.ARCHIVE_NAME)
  if not os.path.exists(path):
    _download(path, manual_dir)
  return archive.Archive(path)


def _download(path, manual_dir):
  """Downloads the archive to `path`, which appears only when complete and whole."""
  partial = f'{path}.partial'
  try:
    archive.check_reachable(archive.URL)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    urllib.request.urlretrieve(archive.URL, partial)
  except OSError as e:
    if os.path.exists(partial):
      os.remove(partial)
    looked = (f'{manual_dir!r} has no {archive.ARCHIVE_NAME} or '
              f'{archive.ROOT}/, and ' if manual_dir
              else 'no manual_dir was given, and ')
    raise archive.DatasetError(
        f'Tiny ImageNet not found: {looked}downloading {archive.URL} failed '
        f'({type(e).__name__}: {str(e)[:200]}). Download the zip on a machine '
        'with network access and pass --config.dataset.manual_dir=FOLDER '
        'holding it.') from e
  if archive.md5(partial) != archive.ARCHIVE_MD5:
    os.remove(partial)
    raise archive.DatasetError(
        f'The download of {archive.URL} is corrupt (md5 mismatch). Run again, '
        'or download it elsewhere and pass --config.dataset.manual_dir=FOLDER '
        'holding it.')
  os.replace(partial, path)
