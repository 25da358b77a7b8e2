"""Writes small archives in the exact layout of the official tiny-imagenet-200.zip.

Tests and the smoke config train on these: every class gets its own colour
layout, so a small network learns them in a few hundred steps, and about 2% of
the JPEGs are grayscale, as in the real archive. No TensorFlow is needed.
"""

import io
import os
import tempfile
import zipfile

import numpy as np
from PIL import Image

ROOT = 'tiny-imagenet-200'
NUM_CLASSES = 200
IMAGE_SIZE = 64
GRAYSCALE_EVERY = 50


def fake_wnids(num_classes=NUM_CLASSES):
  """WordNet-style ids, listed in a shuffled order as the real wnids.txt is."""
  wnids = [f'n{1_000_000 + 7_919 * i:08d}' for i in range(num_classes)]
  return list(np.random.default_rng(0).permutation(wnids))


def _class_palette(num_classes, seed):
  """Two colours per class (top and bottom half): flip-invariant and learnable."""
  return np.random.default_rng(seed).integers(0, 256, size=(num_classes, 2, 3))


def _jpeg(rng, colours, grayscale):
  half = IMAGE_SIZE // 2
  pixels = np.empty((IMAGE_SIZE, IMAGE_SIZE, 3), np.float32)
  pixels[:half] = colours[0]
  pixels[half:] = colours[1]
  pixels += rng.normal(0, 12, size=pixels.shape) + rng.uniform(-10, 10)
  image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  if grayscale:
    image = image.convert('L')
  buffer = io.BytesIO()
  image.save(buffer, format='JPEG', quality=90)
  return buffer.getvalue()


def _box(rng):
  x0, y0 = rng.integers(0, 32, size=2)
  x1, y1 = rng.integers(32, 64, size=2)
  return f'{x0}\t{y0}\t{x1}\t{y1}'


def write_archive(path, *, train_per_class=10, val_per_class=2,
                  num_test=200, seed=0):
  """Writes a fake tiny-imagenet-200.zip at `path` (atomically) and returns it."""
  rng = np.random.default_rng(seed)
  wnids = fake_wnids()
  palette = _class_palette(len(wnids), seed)
  counter = iter(range(1 << 62))

  def image_for(label):
    return _jpeg(rng, palette[label], next(counter) % GRAYSCALE_EVERY == 0)

  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fd, tmp_path = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)),
                                  suffix='.partial')
  os.close(fd)
  try:
    with zipfile.ZipFile(tmp_path, 'w') as archive:
      archive.writestr(f'{ROOT}/wnids.txt', ''.join(w + '\n' for w in wnids))
      words = [f'{w}\tfake class {i}, synthetic {i}' for i, w in enumerate(wnids)]
      words.append('n00001740\tentity')
      archive.writestr(f'{ROOT}/words.txt', '\n'.join(sorted(words)) + '\n')
      for label, wnid in enumerate(wnids):
        boxes = []
        for k in range(train_per_class):
          name = f'{wnid}_{k}.JPEG'
          archive.writestr(f'{ROOT}/train/{wnid}/images/{name}', image_for(label))
          boxes.append(f'{name}\t{_box(rng)}\n')
        archive.writestr(f'{ROOT}/train/{wnid}/{wnid}_boxes.txt', ''.join(boxes))
      val_labels = rng.permutation(
          np.repeat(np.arange(len(wnids)), val_per_class))
      annotations = []
      for k, label in enumerate(val_labels):
        name = f'val_{k}.JPEG'
        archive.writestr(f'{ROOT}/val/images/{name}', image_for(label))
        annotations.append(f'{name}\t{wnids[label]}\t{_box(rng)}\n')
      archive.writestr(f'{ROOT}/val/val_annotations.txt', ''.join(annotations))
      for k in range(num_test):
        archive.writestr(f'{ROOT}/test/images/test_{k}.JPEG',
                         image_for(int(rng.integers(len(wnids)))))
    os.replace(tmp_path, path)
  finally:
    if os.path.exists(tmp_path):
      os.remove(tmp_path)
  return path
