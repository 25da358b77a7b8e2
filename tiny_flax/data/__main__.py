"""Decodes a config's archive into the array cache ahead of training.

    python -m tiny_flax.data --config=configs/resnet18.py

The cache is what config.input.on_device=true reads (tiny_flax/data/arrays.py).
A run prepares it on first use anyway; preparing it first times it apart from
training and lets several runs start together without each decoding it.
"""

import time

from absl import app
from absl import flags
from ml_collections import config_flags

from tiny_flax import data
from tiny_flax import errors
from tiny_flax.data import arrays
from tiny_flax.data import locate

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path of a config file (configs/*.py): its dataset '
    'settings name the archive and the cache folder.', lock_config=True)
flags.mark_flags_as_required(['config'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  start = time.perf_counter()
  with errors.exit_on_user_error():
    decoded = data.load_arrays(_CONFIG.value)
  _, data_dir = locate.dirs(_CONFIG.value)
  print(f'{len(decoded.train.label)} training and '
        f'{len(decoded.validation.label)} validation images ready in '
        f'{arrays.cache_dir(data_dir)} after '
        f'{time.perf_counter() - start:.1f} s.')


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
