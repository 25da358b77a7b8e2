"""Writes a trained run as a torchvision state dict, for PyTorch's tools.

    python -m tiny_flax.export --workdir=runs/resnet18 --out=resnet18.pth

`torchvision.models.resnet18(num_classes=200).load_state_dict(torch.load(
'resnet18.pth'))` then loads it strictly, running statistics included, and
gives tiny_flax's logits (inputs NCHW instead of NHWC). The file is checked
that way before it is put at --out, so a failed export leaves nothing there.
Needs torch and torchvision.
"""

import os

# Before anything that might load TensorFlow: torchvision 0.29 segfaults
# when imported after TensorFlow 2.21.
try:
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = torchvision = None

from absl import app  # pylint: disable=g-import-not-at-top,g-bad-import-order
from absl import flags
import numpy as np

from tiny_flax import errors
from tiny_flax import inference
from tiny_flax import models
from tiny_flax import data
from tiny_flax import workdir as workdir_lib
from tiny_flax.platform import backend

_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of a trained run.',
                               required=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'best', 'best (by validation top-1), latest, or a step.')
_OUT = flags.DEFINE_string('out', None, 'The .pth file to write.',
                           required=True)


def export(workdir, out, which='best'):
  """Writes checkpoint `which` of `workdir` to `out`; returns (model, step)."""
  config = workdir_lib.load_config(workdir)
  if config.model not in models.TORCHVISION_NAMES:
    raise errors.UserError(
        f'{workdir} holds a {config.model}, which torchvision does not have '
        f'(it has {", ".join(models.TORCHVISION_NAMES)}).')
  if torchvision is None:
    raise errors.UserError(
        'Exporting needs PyTorch: pip install -r requirements-test.txt '
        '(or torch and torchvision).')
  platform = backend.resolve(config, resident_bytes=0)  # no splits here
  state, step = inference.restore(config, workdir, platform, which)
  state_dict = {
      key: torch.from_numpy(np.array(value)) for key, value in models.to_torchvision(
          config.model, {'params': state.params,
                         'batch_stats': state.batch_stats},
          num_batches_tracked=step).items()}
  getattr(torchvision.models, config.model)(
      num_classes=data.NUM_CLASSES).load_state_dict(state_dict)
  partial = f'{out}.partial'
  try:
    torch.save(state_dict, partial)
    os.replace(partial, out)
  except (OSError, RuntimeError) as e:  # torch.save raises either
    if os.path.exists(partial):
      os.remove(partial)
    raise errors.UserError(
        f'Cannot write {out} ({str(e).splitlines()[0][:200]}). Pass an --out '
        'in a folder you can write to.') from e
  return config.model, step


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with errors.exit_on_user_error():
    model, step = export(_WORKDIR.value, _OUT.value, _CHECKPOINT.value)
  print(f'Wrote {_OUT.value}: torchvision.models.{model}, checkpoint of step '
        f'{step}.')


if __name__ == '__main__':
  app.run(main)
