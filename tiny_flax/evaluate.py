"""Evaluates a trained run on the whole validation split and writes its report.

    python -m tiny_flax.evaluate --workdir=runs/resnet18

The run's config comes from the workdir's record; `--config` (with overrides,
e.g. another batch size) is still accepted and checked against it.

Writes WORKDIR/report/: metrics.json (top-1, top-5, loss, per-class miss
rates), curves.png, miss_rates.png, confusions.png and report.md; the same
figures and the per-class table also go to TensorBoard.
"""

import os

from absl import app
from absl import flags
import jax
import numpy as np
from ml_collections import config_flags
import tqdm

from tiny_flax import data
from tiny_flax import errors
from tiny_flax import hparams
from tiny_flax import inference
from tiny_flax import report
from tiny_flax import steps
from tiny_flax import summaries
from tiny_flax import workdir as workdir_lib
from tiny_flax.platform import backend

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'The config the run was trained with; default: the '
    'workdir\'s record of it.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Folder of the run.',
                               required=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', 'best', 'best (by validation top-1), latest, or a step.')
_TTA = flags.DEFINE_enum(
    'tta', 'none', list(inference.TTA), 'Test-time augmentation: flip '
    'averages the class probabilities of each image and its mirror image '
    '(twice the compute; published figures are mostly without it).')


def _image_batches(dataset):
  """The validation batches with their images, from either input path."""
  resident = dataset.resident
  if resident is None:
    yield from dataset.eval_batches
    return
  arrays = {'validation': jax.device_put(resident.arrays['validation'])}
  gather = jax.jit(resident.eval_batch)
  for batch in dataset.eval_batches:
    yield jax.device_get(gather(arrays, batch))


def predict_validation(state, dataset, logits_fn):
  """Labels, top-5 predictions and losses of every validation image."""
  labels, top5, losses = [], [], []
  # disable=None: drawn on a terminal, kept out of logs written to files.
  for batch in tqdm.tqdm(_image_batches(dataset), total=len(
      dataset.eval_batches), desc='Evaluating', unit='batch', disable=None):
    logits = logits_fn(state, batch['image'])
    keep = batch['mask']
    labels.append(batch['label'][keep])
    top5.append(np.asarray(jax.lax.top_k(logits, 5)[1])[keep])
    losses.append(np.asarray(steps.cross_entropy(logits, batch['label']))[keep])
  return np.concatenate(labels), np.concatenate(top5), np.concatenate(losses)


def evaluate(config, workdir, which='best', tta='none'):
  """Writes WORKDIR/report/ for `config` (None: the recorded one); its metrics.

  `tta`: a test-time augmentation of inference.TTA, named in the metrics.
  """
  recorded = workdir_lib.load_config(workdir)
  if config is None:
    config = recorded
  workdir_lib.check_same_run(workdir, recorded, config)
  platform = backend.resolve(config, data.resident_bytes(config))
  state, step = inference.restore(config, workdir, platform, which)
  dataset = data.prepare(config, platform.input_on_device)
  class_names = dataset.class_names
  labels, top5, losses = predict_validation(
      state, dataset, inference.compile_logits(platform, tta))
  metrics = {'model': config.model, 'step': step, 'images': int(len(labels)),
             'weights': 'ema' if config.ema.decay > 0 else 'trained',
             'tta': tta,
             'top1': float(np.mean(top5[:, 0] == labels)),
             'top5': float(np.mean((top5 == labels[:, None]).any(axis=1))),
             'loss': float(np.mean(losses)),
             'config': hparams.flat(config)}
  curves = report.load_curves(workdir)
  rows = report.per_class(labels, top5[:, 0], class_names, losses)
  pairs = report.confusions(labels, top5[:, 0])
  figures = {
      'curves': report.plot_curves({'': curves}),
      'miss_rates': report.plot_miss_rates(rows),
      'confusions': report.plot_confusions(pairs, class_names),
  }
  report.write(os.path.join(workdir, 'report'), metrics, curves, rows, pairs,
               class_names, figures)
  writer = summaries.create_writer(os.path.join(workdir, 'report'),
                                   tensorflow=platform.tensorflow,
                                   just_logging=jax.process_index() > 0)
  writer.write_images(step, {f'report/{name}': report.figure_to_array(fig)[None]
                             for name, fig in figures.items()})
  writer.write_texts(step, {'report/per_class': report.markdown(
      metrics, curves, rows, pairs, class_names, {})})
  writer.flush()
  return metrics


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  backend.use_compilation_cache()
  with errors.exit_on_user_error():
    metrics = evaluate(_CONFIG.value, _WORKDIR.value, _CHECKPOINT.value,
                       _TTA.value)
  flipped = ', flip-averaged' if metrics['tta'] == 'flip' else ''
  print(f"top-1 {metrics['top1']:.4f}  top-5 {metrics['top5']:.4f}  "
        f"loss {metrics['loss']:.4f}  ({metrics['images']} images, step "
        f"{metrics['step']}{flipped}); report in {_WORKDIR.value}/report")


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
