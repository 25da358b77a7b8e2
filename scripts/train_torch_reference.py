"""The PyTorch reference: a config's recipe trained with torchvision, for fidelity checks.

    python -m scripts.train_torch_reference --config=configs/shufflenet_v2.py \
        --manual_dir=DIR --out_dir=runs/torch_shufflenet

Trains `torchvision.models.<config.model>(num_classes=200)` with the same
config file as tiny_flax (recipe strings mapped to `torchvision.transforms`,
optimizer, per-step schedule, batch size, epochs, label smoothing) on the same
archive, with validation labels from `val/val_annotations.txt`. Writes
OUT_DIR/metrics.json in the form of tiny_flax's report (per-epoch `curves`, the
last epoch's top-1/top-5/loss and `per_class` miss rates), so the two compare
line by line, and TensorBoard events with the trainer's tags at the same
steps (train_loss and train_accuracy as means over each log interval,
learning_rate, val_loss, val_top1, val_top5): with OUT_DIR under the runs'
folder, `tensorboard --logdir=runs` draws both side by side. A config value
it cannot reproduce is refused by name. Running the same command again
resumes from OUT_DIR/checkpoint.pt.

A verification tool: torch is a test-only dependency of tiny_flax.
"""

import os
import sys
import time

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # pylint: disable=g-bad-import-order  (before TensorFlow, see tests/conftest.py)

from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from scripts import torch_reference as reference
from torch.utils import tensorboard  # pylint: disable=g-bad-import-order  (after torchvision: it imports TensorFlow)
from tiny_flax import errors
from tiny_flax import hparams
from tiny_flax import report

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


def _save_atomically(obj, path):
  torch.save(obj, path + '.tmp')
  os.replace(path + '.tmp', path)


def train(config, manual_dir, out, workers):
  reference.check_config(config)
  os.makedirs(out, exist_ok=True)
  torch.manual_seed(config.seed)
  started = time.time()
  (train_x, train_y), (val_x, val_y), class_names = reference.load_splits(
      manual_dir, config.dataset.data_dir)
  logging.info('Decoded %d training and %d validation images in %.0f s.',
               len(train_y), len(val_y), time.time() - started)
  steps_per_epoch = len(train_y) // config.batch_size
  num_steps = (config.num_train_steps if config.num_train_steps > 0
               else config.num_epochs * steps_per_epoch)
  eval_transform = reference.compose(config.input.eval)
  val_set = reference.Images(val_x, val_y, eval_transform)
  if config.steps_per_eval > 0:
    keep = config.steps_per_eval * config.batch_size
    val_set = reference.Images(val_x[:keep], val_y[:keep], eval_transform)
  val_loader = torch.utils.data.DataLoader(
      val_set, batch_size=config.batch_size, num_workers=workers)
  train_set = reference.Images(train_x, train_y,
                               reference.compose(config.input.train))

  model = reference.new_model(config)
  opt = reference.optimizer(config, model.parameters())
  scheduler = torch.optim.lr_scheduler.LambdaLR(
      opt, reference.learning_rate_factor(config, steps_per_epoch))
  loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
  curves = {key: [] for key in report.CURVE_KEYS + (report.ELAPSED_KEY,)}
  checkpoint_path = os.path.join(out, 'checkpoint.pt')
  step = 0
  if os.path.exists(checkpoint_path):
    saved = torch.load(checkpoint_path, weights_only=False)
    model.load_state_dict(saved['model'])
    opt.load_state_dict(saved['optimizer'])
    scheduler.load_state_dict(saved['scheduler'])
    step, curves = saved['step'], saved['curves']
    logging.info('Resuming from the checkpoint of step %d.', step)
  # Events a killed run wrote after its checkpoint are hidden from TensorBoard.
  writer = tensorboard.SummaryWriter(out, purge_step=step + 1 if step else None)

  metrics = {}
  while step < num_steps:
    epoch, done = divmod(step, steps_per_epoch)
    order = reference.epoch_order(config.seed, epoch, len(train_set))
    loader = torch.utils.data.DataLoader(
        train_set, batch_size=config.batch_size, drop_last=True,
        sampler=order[done * config.batch_size:].tolist(), num_workers=workers)
    model.train()
    loss_sum, correct, seen, epoch_started = 0.0, 0, 0, time.time()
    logged = (0.0, 0, 0)  # the sums at the last log step of this epoch
    for images, labels in loader:
      logits = model(images)
      loss = loss_fn(logits, labels)
      learning_rate = opt.param_groups[0]['lr']
      opt.zero_grad(set_to_none=True)
      loss.backward()
      opt.step()
      scheduler.step()
      step += 1
      loss_sum += loss.item() * len(labels)
      correct += int((logits.argmax(1) == labels).sum())
      seen += len(labels)
      # The trainer's log steps: every log_every_steps and each epoch's end.
      if (step % config.log_every_steps == 0 or step % steps_per_epoch == 0
          or step == num_steps):
        n = seen - logged[2]
        interval = {'train_loss': (loss_sum - logged[0]) / n,
                    'train_accuracy': (correct - logged[1]) / n,
                    'learning_rate': learning_rate}
        logged = (loss_sum, correct, seen)
        logging.info('Step %d: %s', step, interval)
        for tag, value in interval.items():
          writer.add_scalar(tag, value, step)
      if step == num_steps:
        break
    val_loss, top1, top5, predictions, losses = reference.validate(
        model, val_loader)
    elapsed = curves[report.ELAPSED_KEY]
    for key, value in (('epoch', step / steps_per_epoch),
                       ('train_loss', loss_sum / seen),
                       ('train_accuracy', correct / seen), ('val_loss', val_loss),
                       ('val_top1', top1), ('val_top5', top5),
                       (report.ELAPSED_KEY, (elapsed[-1] if elapsed else 0.0)
                        + time.time() - epoch_started)):
      curves[key].append(value)
    for tag, value in (('val_loss', val_loss), ('val_top1', top1),
                       ('val_top5', top5), ('epoch', step / steps_per_epoch)):
      writer.add_scalar(tag, value, step)
    writer.flush()
    logging.info('Step %d (epoch %.2f, %.0f s): val top-1 %.4f, top-5 %.4f, '
                 'loss %.4f.', step, step / steps_per_epoch,
                 time.time() - epoch_started, top1, top5, val_loss)
    labels = val_set.labels
    metrics = {'model': config.model, 'framework': f'torch {torch.__version__}',
               'step': step, 'images': int(len(labels)), 'top1': top1,
               'top5': top5, 'loss': val_loss,
               'config': hparams.flat(config)}
    with open(os.path.join(out, 'metrics.json.tmp'), 'w') as f:
      f.write(report.metrics_json(
          metrics, curves, report.per_class(labels, predictions, class_names, losses)))
    os.replace(os.path.join(out, 'metrics.json.tmp'),
               os.path.join(out, 'metrics.json'))
    _save_atomically({'model': model.state_dict(), 'optimizer': opt.state_dict(),
                      'scheduler': scheduler.state_dict(), 'step': step,
                      'curves': curves}, checkpoint_path)
  writer.close()
  return metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  with errors.exit_on_user_error():
    manual_dir = reference.manual_dir_of(_MANUAL_DIR.value, _CONFIG.value)
    metrics = train(_CONFIG.value, manual_dir, _OUT_DIR.value, _WORKERS.value)
  print(f"top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  loss "
        f"{metrics['loss']:.4f}; {_OUT_DIR.value}/metrics.json")


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
