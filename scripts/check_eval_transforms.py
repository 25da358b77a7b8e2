"""Evaluation transforms in JAX against tf.data's, over a whole validation split.

    python -m scripts.check_eval_transforms --manual_dir=DIR

Decodes the archive in DIR into the array cache (under --data_dir, default
beside the archive) once, then applies --transforms (default AlexNet's
Resize(256) + CenterCrop(224) + Normalize) to every validation image both
ways and prints the largest difference in levels of 1/255 and the share of
values that differ by half a level or more.
"""

import os
import sys

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
import jax
import numpy as np
import tensorflow as tf

from configs import default
from tiny_flax.data import archive
from tiny_flax.data import arrays
from tiny_flax.data import jax_transforms
from tiny_flax.data import tf_transforms

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder of '
                                  'tiny-imagenet-200.zip.', required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'Folder of the array cache; '
                                'default: --manual_dir.')
_TRANSFORMS = flags.DEFINE_string(
    'transforms', 'resize(256)|center_crop(224)|to_tensor|'
    + default.IMAGENET_NORMALIZE, 'Evaluation transforms; a trailing normalize '
    'must be the ImageNet one, whose std converts back to levels.')
_BATCH = 250
_STD = np.array([0.229, 0.224, 0.225], np.float32)


def main(argv):
  del argv
  source = archive.find(_MANUAL_DIR.value)
  if source is None:
    raise app.UsageError(f'No {archive.ARCHIVE_NAME} in {_MANUAL_DIR.value}.')
  images = arrays.load(source, arrays.cache_dir(
      _DATA_DIR.value or _MANUAL_DIR.value)).validation.image
  std = _STD if 'normalize' in _TRANSFORMS.value else 1.0
  ours = jax.jit(jax_transforms.build(_TRANSFORMS.value))
  theirs_fn = tf_transforms.build(_TRANSFORMS.value)
  theirs = tf.data.Dataset.from_tensor_slices(np.asarray(images)).map(
      lambda image: theirs_fn(image, tf.zeros([2], tf.int32)),
      num_parallel_calls=tf.data.AUTOTUNE).batch(_BATCH)
  worst, differing, total = 0.0, 0, 0
  for start, expected in zip(range(0, len(images), _BATCH),
                             theirs.as_numpy_iterator()):
    got = np.asarray(ours(images[start:start + _BATCH], jax.random.key(0)))
    levels = np.abs(got - expected) * std * 255
    worst = max(worst, float(levels.max()))
    differing += int((levels >= 0.5).sum())
    total += levels.size
  print(f'{len(images)} validation images, {_TRANSFORMS.value}: largest '
        f'difference {worst:.3f} of a level; {differing / total:.4%} of the '
        'values differ by half a level or more.')


if __name__ == '__main__':
  app.run(main)
