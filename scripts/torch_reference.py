"""A tiny_flax config in torchvision terms, and the archive for torch.

Shared by the PyTorch reference trainer (scripts/train_torch_reference.py) and
scripts/recompute_bn.py; no flags, so both can be imported in one process.
"""

import math
import os
import pickle

import torch  # pylint: disable=g-bad-import-order  (before TensorFlow, see tests/conftest.py)
import torchvision
from torchvision import transforms

import numpy as np
from PIL import Image

from tiny_flax import errors
from tiny_flax.data import transforms as tiny_flax_transforms
from tiny_flax.data import archive
from tiny_flax.data import arrays

ROOT = archive.ROOT

_TRANSFORMS = {
    'random_horizontal_flip': transforms.RandomHorizontalFlip,
    'random_resized_crop': transforms.RandomResizedCrop,
    'resize': transforms.Resize,
    'center_crop': transforms.CenterCrop,
    'to_tensor': transforms.ToTensor,
    'normalize': transforms.Normalize,
}
# Values of keys the reference cannot reproduce, and why; other keys either
# map to torch or only change how tiny_flax executes (parallelism, caching).
_SUPPORTED = {
    'half_precision': (False, 'the reference trains in float32'),
    'init_from': ('', 'the reference trains from scratch'),
}


def _refuse(key, value, why):
  raise errors.UserError(
      f'config.{key}={value!r} is not supported by the PyTorch reference ({why}).')


def compose(ops_string):
  """The torchvision.transforms.Compose of a tiny_flax transforms string."""
  ops = []
  for name, args, kwargs in tiny_flax_transforms.parse(ops_string):
    if name not in _TRANSFORMS:
      raise errors.UserError(
          f'Preprocessing op {name!r} in {ops_string!r} has no torchvision '
          f'counterpart in the reference trainer (known: '
          f'{", ".join(sorted(_TRANSFORMS))}).')
    ops.append(_TRANSFORMS[name](*args, **kwargs))
  return transforms.Compose(ops)


def check_config(config):
  for key, (supported, why) in _SUPPORTED.items():
    if config[key] != supported:
      _refuse(key, config[key], why)
  if not hasattr(torchvision.models, config.model):
    _refuse('model', config.model, 'torchvision has no such model')
  if config.optimizer not in ('sgd', 'adam', 'adamw'):
    _refuse('optimizer', config.optimizer, 'use sgd, adam or adamw')
  if config.schedule.name not in ('constant', 'step', 'warmup_cosine'):
    _refuse('schedule.name', config.schedule.name,
            'use constant, step or warmup_cosine')
  compose(config.input.train)
  compose(config.input.eval)


def learning_rate_factor(config, steps_per_epoch):
  """The multiplier of config.learning_rate after `step` updates, as optim.py's."""
  schedule = config.schedule
  total = config.num_epochs * steps_per_epoch
  warmup = int(schedule.warmup_epochs * steps_per_epoch)

  def factor(step):
    if schedule.name == 'step':
      return schedule.gamma ** (step // (schedule.step_epochs * steps_per_epoch))
    if schedule.name == 'warmup_cosine':
      if step < warmup:
        return step / warmup
      decay = max(total, warmup + 1) - warmup
      return 0.5 * (1 + math.cos(math.pi * min(step - warmup, decay) / decay))
    return 1.0
  return factor


def optimizer(config, params):
  if config.optimizer == 'sgd':
    return torch.optim.SGD(params, lr=config.learning_rate,
                           momentum=config.momentum, nesterov=config.nesterov,
                           weight_decay=config.weight_decay)
  if config.optimizer == 'adam':  # coupled L2, as torch's Adam and optim.py
    return torch.optim.Adam(params, lr=config.learning_rate,
                            weight_decay=config.weight_decay)
  return torch.optim.AdamW(params, lr=config.learning_rate,
                           weight_decay=config.weight_decay)


def manual_dir_of(flag_value, config):
  """The archive's folder: the flag, else the config's dataset.manual_dir."""
  manual_dir = flag_value or config.dataset.manual_dir
  if not manual_dir:
    raise errors.UserError(
        'No archive given: pass --manual_dir=FOLDER holding '
        'tiny-imagenet-200.zip.')
  return os.path.expanduser(manual_dir)


def load_splits(manual_dir, data_dir=''):
  """(train, validation, class_names): image arrays with labels, (wnid, name).

  Decoded once (tiny_flax/data/arrays.py) into `data_dir`, or beside the
  archive without one.
  """
  source = archive.find(manual_dir)
  if source is None:
    raise archive.DatasetError(
        f'Tiny ImageNet not found: {manual_dir!r} has no {archive.ARCHIVE_NAME} '
        f'or {ROOT}/. Pass --manual_dir=FOLDER holding it.')
  loaded = arrays.load(source, arrays.cache_dir(
      os.path.expanduser(data_dir) if data_dir else manual_dir))
  return ((loaded.train.image, loaded.train.label),
          (loaded.validation.image, loaded.validation.label),
          loaded.class_names)


class Images(torch.utils.data.Dataset):

  def __init__(self, images, labels, transform):
    self.images, self.labels, self.transform = images, labels, transform

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def epoch_order(seed, epoch, size):
  """The training order of `epoch`: a function of (seed, epoch) alone, the
  permutation that DataLoader(shuffle=True) draws from a generator seeded so
  (which takes one int64 for its workers' base seed first). As a sampler it
  lets a run resumed mid-epoch go on with its next batch."""
  generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
  torch.empty((), dtype=torch.int64).random_(generator=generator)
  return torch.randperm(size, generator=generator)


def validate(model, loader):
  """(mean loss, top1, top5, predictions, losses) over the whole loader."""
  model.eval()
  losses, top5 = [], []
  with torch.no_grad():
    for images, labels in loader:
      logits = model(images)
      losses.append(torch.nn.functional.cross_entropy(
          logits, labels, reduction='none'))
      top5.append(logits.topk(5, dim=1).indices)
  losses, top5 = torch.cat(losses).numpy(), torch.cat(top5).numpy()
  labels = loader.dataset.labels
  return (float(losses.mean()), float(np.mean(top5[:, 0] == labels)),
          float(np.mean((top5 == labels[:, None]).any(axis=1))), top5[:, 0],
          losses)


def new_model(config):
  return getattr(torchvision.models, config.model)(
      num_classes=archive.NUM_CLASSES)


def load_model(config, path):
  """The torchvision model of `config` with the weights saved at `path`."""
  if not os.path.isfile(path):
    raise errors.UserError(f'No weights file at {path!r}: pass a '
                           'tiny_flax.export .pth or a reference checkpoint.pt.')
  try:
    saved = torch.load(path, weights_only=False)
    model = new_model(config)
    model.load_state_dict(saved.get('model', saved))
  except (RuntimeError, AttributeError, EOFError, pickle.UnpicklingError) as e:
    raise errors.UserError(
        f'{path!r} holds no {config.model} weights ({str(e)[:200]}). Pass the '
        'config the run was trained with.') from e
  return model


def recompute_batch_norm(model, loader):
  """Every running statistic replaced by its plain average over `loader`."""
  for module in model.modules():
    if isinstance(module, torch.nn.BatchNorm2d):
      module.reset_running_stats()
      module.momentum = None  # a cumulative average instead of an EMA
  model.train()
  with torch.no_grad():
    for images, _ in loader:
      model(images)
  model.eval()
