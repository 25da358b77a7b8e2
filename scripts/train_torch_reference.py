"""The PyTorch reference: a config's recipe trained with torchvision, for fidelity checks.

    python -m scripts.train_torch_reference --config=configs/shufflenet_v2.py \
        --manual_dir=DIR --out_dir=/tmp/torch_shufflenet

Trains `torchvision.models.<config.model>(num_classes=200)` with the same
config file as tiny_flax (recipe strings mapped to `torchvision.transforms`,
optimizer, per-step schedule, batch size, epochs, label smoothing) on the same
archive, with validation labels from `val/val_annotations.txt`. Writes
OUT_DIR/metrics.json in the form of tiny_flax's report (per-epoch `curves`, the
last epoch's top-1/top-5/loss and `per_class` miss rates), so the two compare
line by line. A config value it cannot reproduce is refused by name. Running
the same command again resumes from OUT_DIR/checkpoint.pt.

A verification tool: torch is a test-only dependency of tiny_flax.
"""

import math
import os
import sys
import time

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # pylint: disable=g-bad-import-order  (before TensorFlow, see tests/conftest.py)
import torchvision
from torchvision import transforms

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags
import numpy as np
from PIL import Image

from tiny_flax import errors
from tiny_flax import recipes
from tiny_flax import report
from tiny_flax.data import archive

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'A tiny_flax config file (configs/*.py[:variant]).',
    lock_config=True)
_MANUAL_DIR = flags.DEFINE_string(
    'manual_dir', None, 'Folder holding tiny-imagenet-200.zip (or the extracted '
    'tiny-imagenet-200/); default: the config\'s dataset.manual_dir.')
_OUT_DIR = flags.DEFINE_string('out_dir', None, 'Folder for metrics.json and the '
                               'resumable checkpoint.pt.')
_WORKERS = flags.DEFINE_integer('workers', 2, 'DataLoader worker processes.')
flags.mark_flags_as_required(['config', 'out_dir'])

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


def compose(recipe):
  """The torchvision.transforms.Compose of a tiny_flax recipe string."""
  ops = []
  for name, args, kwargs in recipes.parse(recipe):
    if name not in _TRANSFORMS:
      raise errors.UserError(
          f'Preprocessing op {name!r} in {recipe!r} has no torchvision '
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


def _decoded(source, members):
  """Every image as RGB uint8, decoded once (PIL, as ImageFolder would)."""
  return np.stack([np.asarray(source.image(member).convert('RGB'))
                   for member in members])


def load_splits(manual_dir):
  """(train, validation, class_names): image arrays with labels, (wnid, name)."""
  source = archive.find(manual_dir)
  if source is None:
    raise archive.DatasetError(
        f'Tiny ImageNet not found: {manual_dir!r} has no {archive.ARCHIVE_NAME} '
        f'or {ROOT}/. Pass --manual_dir=FOLDER holding it.')
  wnids = sorted(source.lines(f'{ROOT}/wnids.txt'))
  words = dict(l.split('\t', 1) for l in source.lines(f'{ROOT}/words.txt'))
  index = {wnid: i for i, wnid in enumerate(wnids)}
  train = [(m, index[w]) for w in wnids
           for m in source.images(f'{ROOT}/train/{w}/images')]
  val = [(f'{ROOT}/val/images/{l.split(chr(9))[0]}', index[l.split(chr(9))[1]])
         for l in source.lines(f'{ROOT}/val/val_annotations.txt')]
  splits = []
  for examples in (train, val):
    members, labels = zip(*examples)
    splits.append((_decoded(source, members), np.array(labels, np.int64)))
  return splits[0], splits[1], [(w, words.get(w, w)) for w in wnids]


class _Images(torch.utils.data.Dataset):

  def __init__(self, images, labels, transform):
    self.images, self.labels, self.transform = images, labels, transform

  def __len__(self):
    return len(self.labels)

  def __getitem__(self, i):
    return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def evaluate(model, loader):
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


def _save_atomically(obj, path):
  torch.save(obj, path + '.tmp')
  os.replace(path + '.tmp', path)


def train(config, manual_dir, out, workers):
  check_config(config)
  os.makedirs(out, exist_ok=True)
  torch.manual_seed(config.seed)
  started = time.time()
  (train_x, train_y), (val_x, val_y), class_names = load_splits(manual_dir)
  logging.info('Decoded %d training and %d validation images in %.0f s.',
               len(train_y), len(val_y), time.time() - started)
  steps_per_epoch = len(train_y) // config.batch_size
  num_steps = (config.num_train_steps if config.num_train_steps > 0
               else config.num_epochs * steps_per_epoch)
  val_set = _Images(val_x, val_y, compose(config.input.eval))
  if config.steps_per_eval > 0:
    keep = config.steps_per_eval * config.batch_size
    val_set = _Images(val_x[:keep], val_y[:keep], compose(config.input.eval))
  val_loader = torch.utils.data.DataLoader(
      val_set, batch_size=config.batch_size, num_workers=workers)
  train_set = _Images(train_x, train_y, compose(config.input.train))

  model = getattr(torchvision.models, config.model)(num_classes=archive.NUM_CLASSES)
  opt = optimizer(config, model.parameters())
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      opt, learning_rate_factor(config, steps_per_epoch))
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
  curves = {key: [] for key in report.CURVE_KEYS}
  checkpoint_path = os.path.join(out, 'checkpoint.pt')
  step = 0
  if os.path.exists(checkpoint_path):
    saved = torch.load(checkpoint_path, weights_only=False)
    model.load_state_dict(saved['model'])
    opt.load_state_dict(saved['optimizer'])
    scheduler.load_state_dict(saved['scheduler'])
    step, curves = saved['step'], saved['curves']
    logging.info('Resuming from the checkpoint of step %d.', step)

  metrics = {}
  while step < num_steps:
    epoch = step // steps_per_epoch
    # Each epoch's order depends only on (seed, epoch): resuming replays it.
    order = torch.Generator().manual_seed(config.seed * 100_003 + epoch)
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch_size, shuffle=True, drop_last=True,
        generator=order, num_workers=workers)
    model.train()
    loss_sum, correct, seen, epoch_started = 0.0, 0, 0, time.time()
    for images, labels in loader:
      logits = model(images)
      loss = loss_fn(logits, labels)
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      scheduler.step()
      step += 1
      loss_sum += loss.item() * len(labels)
      correct += int((logits.argmax(1) == labels).sum())
      seen += len(labels)
      if step % config.log_every_steps == 0:
        logging.info('Step %d: train loss %.4f, accuracy %.4f.', step,
                     loss_sum / seen, correct / seen)
      if step == num_steps:
        break
    val_loss, top1, top5, predictions, losses = evaluate(model, val_loader)
    for key, value in (('epoch', step / steps_per_epoch),
                       ('train_loss', loss_sum / seen),
                       ('train_accuracy', correct / seen), ('val_loss', val_loss),
                       ('val_top1', top1), ('val_top5', top5)):
      curves[key].append(value)
    logging.info('Step %d (epoch %.2f, %.0f s): val top-1 %.4f, top-5 %.4f, '
                 'loss %.4f.', step, step / steps_per_epoch,
                 time.time() - epoch_started, top1, top5, val_loss)
    labels = val_set.labels
    metrics = {'model': config.model, 'framework': f'torch {torch.__version__}',
               'step': step, 'images': int(len(labels)), 'top1': top1,
               'top5': top5, 'loss': val_loss,
               'config': report.flat_config(config)}
    with open(os.path.join(out, 'metrics.json.tmp'), 'w') as f:
      f.write(report.metrics_json(
          metrics, curves, report.per_class(labels, predictions, class_names, losses)))
    os.replace(os.path.join(out, 'metrics.json.tmp'),
               os.path.join(out, 'metrics.json'))
    _save_atomically({'model': model.state_dict(), 'optimizer': opt.state_dict(),
                      'scheduler': scheduler.state_dict(), 'step': step,
                      'curves': curves}, checkpoint_path)
  return metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  manual_dir = _MANUAL_DIR.value or _CONFIG.value.dataset.manual_dir
  with errors.exit_on_user_error():
    if not manual_dir:
      raise errors.UserError(
          'No archive given: pass --manual_dir=FOLDER holding '
          'tiny-imagenet-200.zip.')
    metrics = train(_CONFIG.value, os.path.expanduser(manual_dir), _OUT_DIR.value,
                    _WORKERS.value)
  print(f"top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  loss "
        f"{metrics['loss']:.4f}; {_OUT_DIR.value}/metrics.json")


if __name__ == '__main__':
  app.run(main)
