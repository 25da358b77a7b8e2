"""Validation with each model's stored BatchNorm statistics, then recomputed.

    python -m scripts.recompute_bn --config=configs/resnet18.py --manual_dir=DIR \
        --weights=runs/torch_resnet18/checkpoint.pt --weights=resnet18.pth

Stored running statistics average the last few dozen batches, so while the
weights still move fast one epoch's validation can dip as training improves.
Recomputed over training images with the weights fixed, the statistics belong
to those weights, and two runs' weights compare without that noise. A weights
file is a `tiny_flax.export` state dict or a `scripts.train_torch_reference`
checkpoint.pt. Needs torch, like the reference trainer.
"""

import os
import sys

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # pylint: disable=g-bad-import-order  (before TensorFlow, see tests/conftest.py)

from absl import app
from absl import flags
from ml_collections import config_flags
import numpy as np

from scripts import torch_reference as reference
from tiny_flax import errors

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'The config both runs were trained with.', lock_config=True)
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder holding tiny-imagenet-200.zip; default: the '
    'config\'s dataset.manual_dir.')
_WEIGHTS = flags.DEFINE_multi_string(
    'weights', None, 'A tiny_flax.export .pth or a reference checkpoint.pt; '
    'repeat for each model.')
_IMAGES = flags.DEFINE_integer(
    'images', 12800, 'Training images the statistics are recomputed over.')
flags.mark_flags_as_required(['config', 'weights'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  with errors.exit_on_user_error():
    if _IMAGES.value < 1:
      raise errors.UserError(f'--images={_IMAGES.value}: pass a positive count.')
    models = [(path, reference.load_model(config, path))
              for path in _WEIGHTS.value]
    train_transform = reference.compose(config.input.train)
    eval_transform = reference.compose(config.input.eval)
    (train_x, train_y), (val_x, val_y), _ = reference.load_splits(
        reference.manual_dir_of(_MANUAL_DIR.value, config),
        config.dataset.data_dir)
  subset = np.random.RandomState(config.seed).permutation(
      len(train_y))[:_IMAGES.value]
  train_loader = torch.utils.data.DataLoader(
      reference.Images(train_x[subset], train_y[subset], train_transform),
      batch_size=config.batch_size)
  val_loader = torch.utils.data.DataLoader(
      reference.Images(val_x, val_y, eval_transform),
      batch_size=config.batch_size)
  print(f'| weights | stored statistics: top-1 / top-5 / loss | recomputed over '
        f'{len(subset):,} training images: top-1 / top-5 / loss |\n|---|---|---|')
  for path, model in models:
    cells = []
    for recompute in (False, True):
      if recompute:
        reference.recompute_batch_norm(model, train_loader)
      loss, top1, top5, _, _ = reference.validate(model, val_loader)
      cells.append(f'{top1:.2%} / {top5:.2%} / {loss:.3f}')
    print(f'| {path} | {cells[0]} | {cells[1]} |', flush=True)


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
