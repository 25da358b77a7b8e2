"""Writes a fake tiny-imagenet-200.zip in the official layout, for offline runs.

    python -m scripts.make_fake_tiny_imagenet --out=/tmp/fake/tiny-imagenet-200.zip
    python -m tiny_flax.main --config=configs/resnet18.py --workdir=runs/fake \
        --config.dataset.manual_dir=/tmp/fake --config.dataset.data_dir=/tmp/fake/tfds
"""

import os
import sys

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags

from tiny_flax.data import fake

_OUT = flags.DEFINE_string('out', None, 'Path of the zip to write.', required=True)
_TRAIN = flags.DEFINE_integer('train_per_class', 10, 'Training images per class.')
_VAL = flags.DEFINE_integer('val_per_class', 2, 'Validation images per class.')
_TEST = flags.DEFINE_integer('num_test', 200, 'Unlabelled test images.')
_SEED = flags.DEFINE_integer('seed', 0, 'Seed of the images and colours.')


def main(argv):
  del argv
  path = fake.write_archive(_OUT.value, train_per_class=_TRAIN.value,
                            val_per_class=_VAL.value, num_test=_TEST.value,
                            seed=_SEED.value)
  print(f'Wrote {path}')


if __name__ == '__main__':
  app.run(main)
