"""The official archive decoded once into uint8 arrays: input without TensorFlow.

The same examples, class indices and validation labels as the TFDS builder
(both read `archive.listing`), decoded by PIL, which gives the pixels of
tf.data's INTEGER_ACCURATE decode bit for bit, in threads over all the
host's cores (PIL decodes without holding the GIL).
The arrays are cached as .npy files under one folder that later runs
memory-map. The folder is written under a temporary name and renamed into
place when complete, so a preparation killed half-way leaves nothing that is
read; a cache whose files do not match its manifest, or that was made from
an archive listing other examples, is named and rebuilt.
"""

import concurrent.futures
import hashlib
import json
import os
import shutil
import tempfile
from typing import NamedTuple

from absl import logging
import numpy as np

from tiny_flax.data import archive

VERSION = 1
SPLITS = ('train', 'validation')
_MANIFEST = 'manifest.json'
_PARTIAL = '.partial-'
_CHUNK = 500  # images per task of the decoding pool


class Split(NamedTuple):
  image: np.ndarray  # uint8 [N, 64, 64, 3], memory-mapped
  label: np.ndarray  # int32 [N]: index into class_names
  file_name: list


class Arrays(NamedTuple):
  train: Split
  validation: Split
  class_names: list  # (wnid, words) per class index


def cache_dir(data_dir):
  """The folder under `data_dir` that holds the decoded arrays."""
  return os.path.join(data_dir, 'tiny_imagenet_arrays', f'v{VERSION}')


def load(source, directory, threads=None):
  """The arrays of `source` (an archive.Archive), decoded into `directory` once."""
  found = archive.listing(source)
  try:
    return _read(directory, _digest(found))
  except (OSError, ValueError) as e:
    if os.path.exists(directory):
      logging.warning('The array cache %s is damaged (%s); rebuilding it.',
                      directory, e)
      shutil.rmtree(directory)
  _write(source, found, directory, threads)
  return _read(directory, _digest(found))


def _digest(found):
  """What identifies an archive's examples: classes, members and labels."""
  return hashlib.sha256(json.dumps(found).encode()).hexdigest()


def _read(directory, digest):
  """The cache in `directory`; ValueError naming what does not match."""
  with open(os.path.join(directory, _MANIFEST)) as f:
    try:
      manifest = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'unreadable {_MANIFEST}: {e}') from e
  if manifest.get('version') != VERSION:
    raise ValueError(f'version {manifest.get("version")}, expected {VERSION}')
  if manifest.get('listing_sha256') != digest:
    raise ValueError('made from an archive with other examples')
  splits = {}
  for split in SPLITS:
    try:
      files = manifest['splits'][split]
    except (KeyError, TypeError) as e:
      raise ValueError(f'{_MANIFEST} lists no {split} split') from e
    count = len(files)
    arrays = {}
    for key, shape in (('image', (count,) + archive.IMAGE_SHAPE),
                       ('label', (count,))):
      path = os.path.join(directory, f'{split}_{key}.npy')
      try:
        arrays[key] = np.load(path, mmap_mode='r')
      except (OSError, ValueError) as e:
        raise ValueError(f'{os.path.basename(path)}: {e}') from e
      if arrays[key].shape != shape:
        raise ValueError(f'{os.path.basename(path)} holds '
                         f'{arrays[key].shape}, the manifest {shape}')
    splits[split] = Split(arrays['image'], arrays['label'], files)
  return Arrays(splits['train'], splits['validation'],
                [tuple(pair) for pair in manifest['class_names']])


def _write(source, found, directory, threads):
  parent = os.path.dirname(directory)
  os.makedirs(parent, exist_ok=True)
  _remove_abandoned(parent)
  partial = tempfile.mkdtemp(prefix=f'{_PARTIAL}{os.getpid()}-', dir=parent)
  try:
    index = {wnid: i for i, wnid in enumerate(found.wnids)}
    splits = {}
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
      for split, examples in (('train', found.train),
                              ('validation', found.validation)):
        _decode_split(pool, source, split, [m for m, _ in examples], partial)
        np.save(os.path.join(partial, f'{split}_label.npy'),
                np.array([index[w] for _, w in examples], np.int32))
        splits[split] = [os.path.basename(m) for m, _ in examples]
    with open(os.path.join(partial, _MANIFEST), 'w') as f:
      json.dump({'version': VERSION, 'listing_sha256': _digest(found),
                 'splits': splits,
                 'class_names': [(w, found.names[w]) for w in found.wnids]}, f)
    try:
      os.replace(partial, directory)
    except OSError:  # another process finished first: theirs is read
      if not os.path.exists(os.path.join(directory, _MANIFEST)):
        raise
  finally:
    shutil.rmtree(partial, ignore_errors=True)


def _remove_abandoned(parent):
  """Deletes partial caches whose writing process (on this host) is gone."""
  for name in os.listdir(parent):
    if not name.startswith(_PARTIAL):
      continue
    try:
      os.kill(int(name[len(_PARTIAL):].split('-')[0]), 0)
    except ProcessLookupError:
      shutil.rmtree(os.path.join(parent, name), ignore_errors=True)
    except (ValueError, PermissionError):
      pass  # not ours to judge: another user's, or another naming


def _decode_split(pool, source, split, members, directory):
  images = np.lib.format.open_memmap(
      os.path.join(directory, f'{split}_image.npy'), mode='w+', dtype=np.uint8,
      shape=(len(members),) + archive.IMAGE_SHAPE)
  chunks = [members[i:i + _CHUNK] for i in range(0, len(members), _CHUNK)]
  decode = lambda chunk: _decode_chunk(source, chunk)
  for start, decoded in zip(range(0, len(members), _CHUNK),
                            pool.map(decode, chunks)):
    images[start:start + len(decoded)] = decoded
  images.flush()
  logging.info('Decoded %d %s images.', len(members), split)


def _decode_chunk(source, members):
  """uint8 [len(members), 64, 64, 3]; grayscale JPEGs come out as RGB."""
  images = []
  for member in members:
    image = np.asarray(source.image(member).convert('RGB'))
    if image.shape != archive.IMAGE_SHAPE:
      raise archive.DatasetError(
          f'{member} in {source.path} is {image.shape[1]}x{image.shape[0]} '
          f'pixels, not 64x64. Use the official {archive.ARCHIVE_NAME}.')
    images.append(image)
  return np.stack(images)
