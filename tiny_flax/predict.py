"""Classifies image files with a trained run.

    python -m tiny_flax.predict --workdir=runs/resnet18 cat.jpg dog.png
    python -m tiny_flax.predict --workdir=runs/resnet18 tiny-imagenet-200/test/images

Images of any size and mode are converted to RGB and resized to Tiny
ImageNet's 64x64 (as the dataset's images were), then given the run's
evaluation preprocessing. A folder stands for the image files in it, by
name. Prints each file's top-5 classes.
"""

import itertools
import os
import sys

from absl import app
from absl import flags
import jax
import numpy as np
from PIL import Image
from PIL import UnidentifiedImageError

from tiny_flax import errors
from tiny_flax import inference
from tiny_flax import workdir as workdir_lib
from tiny_flax.data import archive
from tiny_flax.data import jax_transforms
from tiny_flax.platform import backend

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of a trained run.',
                               required=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'best', 'best (by validation top-1), latest, or a step.')
_TTA = flags.DEFINE_enum(
    'tta', 'none', list(inference.TTA), 'Test-time augmentation: flip '
    'averages the probabilities of each image and its mirror image.')
_TOP = 5
# Images per call: a folder of thousands (the test split) is classified in
# batches, not one compiled call per image.
BATCH = 64
# What a folder's files must end with (any case) to be read as images.
IMAGE_SUFFIXES = ('.jpeg', '.jpg', '.png', '.bmp', '.gif', '.webp')


def image_files(paths):
  """`paths` with each folder replaced by the image files in it, sorted by
  name (an empty folder stays, to be reported)."""
  for path in paths:
    if not os.path.isdir(path):
      yield path
      continue
    names = sorted(name for name in os.listdir(path)
                   if name.lower().endswith(IMAGE_SUFFIXES))
    yield from [os.path.join(path, name) for name in names] or [path]


def load_image(path):
  """uint8 64x64x3 RGB pixels of an image file of any size and mode."""
  with Image.open(path) as image:
    image = image.convert('RGB')
    size = archive.IMAGE_SHAPE[:2]
    if image.size != size:
      image = image.resize(size, Image.BILINEAR)
    return np.asarray(image)


def _read(path):
  """(pixels, None), or (None, why the file cannot be classified)."""
  if os.path.isdir(path):
    return None, f'a folder without image files ({", ".join(IMAGE_SUFFIXES)})'
  try:
    return load_image(path), None
  except (OSError, UnidentifiedImageError, ValueError) as e:
    return None, f'cannot read image ({e})'


def predict(workdir, paths, which='best', tta='none'):
  """Yields (path, [(wnid, name, probability)] or an error message), in the
  order of `paths`, classifying BATCH images per call."""
  config = workdir_lib.load_config(workdir)
  class_names = workdir_lib.load_class_names(workdir)
  platform = backend.resolve(config, resident_bytes=0)  # no splits here
  state, _ = inference.restore(config, workdir, platform, which)
  logits_fn = inference.compile_logits(platform, tta)
  preprocess = jax.jit(jax_transforms.build(config.input.eval))
  files = image_files(paths)
  while group := list(itertools.islice(files, BATCH)):
    read = [_read(path) for path in group]
    images = [pixels for pixels, _ in read if pixels is not None]
    if images:
      # Always BATCH images (zeros after the last): one program serves all.
      batch = np.zeros((BATCH,) + archive.IMAGE_SHAPE, np.uint8)
      batch[:len(images)] = images
      probabilities = iter(np.asarray(jax.nn.softmax(logits_fn(
          state, preprocess(batch, jax.random.key(0))))))
    for path, (pixels, why) in zip(group, read):
      if pixels is None:
        yield path, why
        continue
      row = next(probabilities)
      best = np.argsort(-row)[:_TOP]
      yield path, [(*class_names[i], float(row[i])) for i in best]


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('Name at least one image file or folder.')
  backend.use_compilation_cache()
  failures = 0
  with errors.exit_on_user_error():
    for path, result in predict(_WORKDIR.value, paths, _CHECKPOINT.value,
                                _TTA.value):
      if isinstance(result, str):
        failures += 1
        print(f'{path}: error: {result}', file=sys.stderr)
        continue
      print(path)
      for wnid, name, probability in result:
        print(f'  {probability:6.1%}  {wnid}  {name}')
  sys.exit(1 if failures else 0)


if __name__ == '__main__':
  app.run(main)
