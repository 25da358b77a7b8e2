"""One markdown row per run: the figures of docs/results.md's top table.

    python -m scripts.results_table runs/resnet18 runs/shufflenet_v2_budget
    python -m scripts.results_table --reach=0.5 OUT_DIR/pack/*/

A run is a folder holding report/metrics.json: a workdir after
`tiny_flax.evaluate`, or a model's folder in the archive of
`scripts/accelerator_results.sh` (which writes this table as summary.md).
Its train.log, where it has one, gives the training images/s. A folder
without a report gets a row that says so.
"""

import json
import os
import re
import sys

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags

from tiny_flax import report

_REACH = flags.DEFINE_float(
    'reach', 0.5, 'The validation top-1 whose first epoch, and the seconds '
    'trained by its end, are shown.')

HEADER = ('run', 'model', 'epochs', 'top-1 / top-5', 'checkpoint',
          'seconds trained', 'training images/s')
# The last of train.py's run-time lines: images/s of the steps after the first.
_IMAGES_PER_S = re.compile(r'later steps [\d.]+ s at (\d+) images/s')


def row(label, metrics, log_text, reach):
  """The cells of one run: its evaluated checkpoint, and its curves."""
  curves, config = metrics['curves'], metrics['config']
  ema = metrics.get('weights') == 'ema'
  top1 = curves.get('val_ema_top1' if ema else 'val_top1', [])
  elapsed = curves.get(report.ELAPSED_KEY) or [None] * len(curves['epoch'])
  epochs = f"{curves['epoch'][-1]:g}" if curves['epoch'] else '0'
  if config.get('num_train_steps', 0) <= 0:
    epochs += f" of {config['num_epochs']}"
    if config.get('time_budget_minutes', 0) > 0:  # the rest did not fit
      epochs += f" ({config['time_budget_minutes']:g}-minute budget)"
  reached = next((index for index, value in enumerate(top1)
                  if value is not None and value >= reach), None)
  if reached is None:
    best = max((value for value in top1 if value is not None), default=0.0)
    first = f'not reached (best {best:.2%})'
  else:
    first = f"epoch {curves['epoch'][reached]:g}"
    if elapsed[reached] is not None:
      first += f', {elapsed[reached]:.0f} s'
  speeds = _IMAGES_PER_S.findall(log_text)
  return [label, metrics['model'], epochs,
          f"{metrics['top1']:.2%} / {metrics['top5']:.2%}",
          f"step {metrics['step']}" + (', moving average' if ema else '')
          + (', flip-averaged' if metrics.get('tta') == 'flip' else ''),
          '' if not elapsed or elapsed[-1] is None else f'{elapsed[-1]:.0f}',
          speeds[-1] if speeds else '', first]


def table(folders, reach):
  header = list(HEADER) + [f'first epoch at {reach:.0%} top-1']
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  for folder in folders:
    label = os.path.basename(os.path.normpath(folder))
    path = os.path.join(folder, 'report', 'metrics.json')
    if not os.path.exists(path):
      lines.append(f'| {label} | not evaluated: no report/metrics.json |'
                   + ' |' * (len(header) - 2))
      continue
    with open(path) as f:
      metrics = json.load(f)
    log_text = ''
    if os.path.exists(os.path.join(folder, 'train.log')):
      with open(os.path.join(folder, 'train.log')) as f:
        log_text = f.read()
    lines.append('| ' + ' | '.join(row(label, metrics, log_text, reach)) + ' |')
  return '\n'.join(lines)


def main(argv):
  folders = argv[1:]
  if not folders:
    raise app.UsageError('Name one or more run folders (each holding '
                         'report/metrics.json).')
  print(table(folders, _REACH.value))


if __name__ == '__main__':
  app.run(main)
