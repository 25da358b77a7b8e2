"""The evaluation report: the PyTorch original's plots, per-class miss rates, tables.

Curves are read back from the run's TensorBoard events, so a report can be
drawn for any workdir; per-class numbers come from one pass over validation.
"""

import collections
import glob
import json
import os

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
from matplotlib import ticker  # pylint: disable=g-import-not-at-top
import numpy as np
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.backend.event_processing import event_file_loader
from tensorboard.util import tensor_util

NUM_EXTREMES = 5
NUM_CONFUSIONS = 10
# Per-epoch curves, as metrics.json stores them for tiny_flax and for the
# PyTorch reference (scripts/train_torch_reference.py).
CURVE_KEYS = ('epoch', 'train_loss', 'train_accuracy', 'val_loss', 'val_top1',
              'val_top5')
# Those of the weights' moving average (config.ema), where a run keeps one.
EMA_CURVE_KEYS = ('val_ema_loss', 'val_ema_top1', 'val_ema_top5')
# Seconds of training up to each epoch's end, its validation included.
ELAPSED_KEY = 'elapsed_s'


# The training recipe, shown beside the result in report.md.
RECIPE_KEYS = ('input.train', 'input.eval', 'batch_size', 'microbatches',
               'num_epochs', 'time_budget_minutes', 'optimizer',
               'learning_rate', 'momentum', 'nesterov', 'weight_decay',
               'schedule.name',
               'schedule.warmup_epochs', 'label_smoothing',
               'mixing.mixup_alpha', 'mixing.cutmix_alpha', 'mixing.prob',
               'mixing.switch_prob', 'mixing.mode', 'ema.decay',
               'half_precision', 'half_dtype', 'seed')


def read_scalars(workdir):
  """{tag: {step: value}} of every scalar in the workdir's event files."""
  accumulator = event_accumulator.EventAccumulator(
      workdir, size_guidance={event_accumulator.TENSORS: 0})
  accumulator.Reload()
  scalars = collections.defaultdict(dict)
  for tag in accumulator.Tags()['tensors']:
    for event in accumulator.Tensors(tag):
      value = tensor_util.make_ndarray(event.tensor_proto)
      if value.ndim == 0 and value.dtype.kind == 'f':
        scalars[tag][event.step] = float(value)
  return scalars


def epoch_seconds(workdir):
  """{step: seconds the run had trained when that step's epoch was validated}.

  Each training process writes its own event file, from just after its input
  is prepared to its last value: a resumed run adds up the seconds of its
  processes (compilation, validation and steps redone after a stop
  included), not the time between them.
  """
  processes = []
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    events = [(event.wall_time, event.step,
               any(value.tag == 'epoch' for value in event.summary.value))
              for event in event_file_loader.EventFileLoader(path).Load()]
    if events:
      processes.append(events)
  seconds, before = {}, 0.0
  for events in sorted(processes):
    start = events[0][0]
    for wall_time, step, is_epoch in events:
      if is_epoch:
        seconds[step] = before + wall_time - start
    before += events[-1][0] - start
  return seconds


def epoch_curves(scalars, seconds=None):
  """Per-epoch training (mean of its logged values) and validation curves,
  and the seconds trained by each epoch's end where `seconds` (by step) is
  given."""
  epochs = scalars.get('epoch', {})
  curves = {key: [] for key in CURVE_KEYS + tuple(
      key for key in EMA_CURVE_KEYS if key in scalars)}
  validation = [key for key in curves if key.startswith('val_')]
  if seconds is not None:
    curves[ELAPSED_KEY] = [seconds.get(step, np.nan) for step in sorted(epochs)]
  previous_step = 0
  for step in sorted(epochs):
    curves['epoch'].append(epochs[step])
    for key in ('train_loss', 'train_accuracy'):
      logged = [v for s, v in scalars.get(key, {}).items()
                if previous_step < s <= step]
      curves[key].append(float(np.mean(logged)) if logged else np.nan)
    for key in validation:
      curves[key].append(scalars.get(key, {}).get(step, np.nan))
    previous_step = step
  return curves


def load_curves(path):
  """Per-epoch curves of a workdir or of a metrics.json (null as NaN)."""
  if os.path.isdir(path):
    return epoch_curves(read_scalars(path), epoch_seconds(path))
  with open(path) as f:
    curves = json.load(f)['curves']
  return {key: [float('nan') if v is None else v for v in curves[key]]
          for key in CURVE_KEYS + EMA_CURVE_KEYS + (ELAPSED_KEY,)
          if key in curves}


def top1_table(runs):
  """Markdown: validation top-1 per epoch, and each run minus the first."""
  labels = list(runs)
  first = runs[labels[0]]
  header = ['epoch'] + [f'{l} top-1' for l in labels] + [
      f'{l} - {labels[0]}' for l in labels[1:]]
  lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * len(header)]
  largest = {label: 0.0 for label in labels[1:]}
  for index, epoch in enumerate(first['epoch']):
    values = [runs[l]['val_top1'][index] if index < len(runs[l]['val_top1'])
              else None for l in labels]
    cells = [f'{epoch:g}'] + [
        '' if v is None else f'{100 * v:.2f}' for v in values]
    for label, value in zip(labels[1:], values[1:]):
      if value is None:
        cells.append('')
        continue
      difference = 100 * (value - values[0])
      largest[label] = max(largest[label], abs(difference))
      cells.append(f'{difference:+.2f}')
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines), largest


def per_class(labels, predictions, class_names, losses):
  """Each class's images, misses, miss rate and mean validation loss."""
  rows = []
  for index, (wnid, name) in enumerate(class_names):
    mine = labels == index
    images = int(mine.sum())
    misses = int((predictions[mine] != index).sum())
    rows.append({'index': index, 'wnid': wnid, 'name': name, 'images': images,
                 'misses': misses,
                 'miss_rate': misses / images if images else float('nan'),
                 'loss': float(losses[mine].mean()) if images else float('nan')})
  return rows


def ranked(rows):
  """Classes from least to most misclassified.

  Early in training dozens of classes miss every image; among equal miss
  rates the mean loss decides, so the extremes shown are the surest ones.
  """
  return sorted(rows, key=lambda r: (r['miss_rate'], r['loss'], r['wnid']))


def _ties_note(ranked_rows):
  """A sentence when more classes share the shown extreme than are shown."""
  notes = []
  for shown, side in ((ranked_rows[:NUM_EXTREMES], 'lowest'),
                      (ranked_rows[-NUM_EXTREMES:], 'highest')):
    rate = shown[0 if side == 'lowest' else -1]['miss_rate']
    tied = sum(r['miss_rate'] == rate for r in ranked_rows)
    if tied > NUM_EXTREMES:
      notes.append(f'{tied} classes share the {side} miss rate ({rate:.0%}); '
                   f'those shown have the {side} mean loss among them.')
  return ' '.join(notes)


def confusions(labels, predictions, count=NUM_CONFUSIONS):
  """The most frequent (true, predicted) pairs among the mistakes."""
  wrong = labels != predictions
  pairs = collections.Counter(zip(labels[wrong].tolist(),
                                  predictions[wrong].tolist()))
  return pairs.most_common(count)


def _label(wnid, name, width=18):
  name = name.split(',')[0]
  return f'{wnid}\n{name[:width]}'


def plot_curves(runs, x_key='epoch'):
  """The PyTorch original's accuracy and log-loss plots; runs ({label: curves}) overlaid.

  With several runs each has one colour and the line style tells the curves
  apart; a single run gives each curve its own colour. A run with a moving
  average of its weights shows that average's validation curves too.
  `x_key` ELAPSED_KEY plots against seconds trained instead of epochs.
  """
  fig, (acc, loss) = plt.subplots(1, 2, figsize=(11, 4))
  styles = {'train_accuracy': ('train top-1', ':'),
            'val_top1': ('validation top-1', '-'),
            'val_top5': ('validation top-5', '--'),
            'val_ema_top1': ('moving-average validation top-1', '-.'),
            'train_loss': ('train', ':'), 'val_loss': ('validation', '-'),
            'val_ema_loss': ('moving-average validation', '-.')}
  palette = plt.cm.tab10.colors
  for run_index, (run, curves) in enumerate(runs.items()):
    for key_index, (key, (name, style)) in enumerate(styles.items()):
      if key not in curves:
        continue
      axis = loss if key.endswith('loss') else acc
      axis.plot(curves[x_key], curves[key], style, marker='o', markersize=3,
                color=palette[run_index if len(runs) > 1 else key_index],
                label=f'{run} {name}'.strip())
  highest = np.nanmax([v for curves in runs.values() for key in styles
                       if not key.endswith('loss')
                       for v in curves.get(key, [])] + [0.05])
  xlabel = 'epoch' if x_key == 'epoch' else 'seconds trained'
  acc.set(xlabel=xlabel, ylabel='accuracy', title='Accuracy',
          ylim=(0, min(1.0, 1.1 * highest)))
  loss.set(xlabel=xlabel, ylabel='cross-entropy', title='Log loss')
  for axis in (acc, loss):
    axis.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
    axis.grid(alpha=0.3)
    if axis.lines:
      axis.legend(fontsize=8)
    else:  # docs/curves/ hold validation accuracy alone
      axis.text(0.5, 0.5, 'not recorded', ha='center',
                transform=axis.transAxes)
  fig.tight_layout()
  return fig


def plot_miss_rates(rows):
  in_order = ranked(rows)
  chosen = in_order[:NUM_EXTREMES] + in_order[-NUM_EXTREMES:]
  fig, axis = plt.subplots(figsize=(12, 4.5))
  colours = ['tab:green'] * NUM_EXTREMES + ['tab:red'] * NUM_EXTREMES
  bars = axis.bar(range(len(chosen)), [r['miss_rate'] for r in chosen],
                  color=colours)
  axis.bar_label(bars, fmt='{:.0%}', fontsize=8)
  axis.set_xticks(range(len(chosen)),
                  [_label(r['wnid'], r['name']) for r in chosen], fontsize=8)
  axis.set(ylabel='miss rate', ylim=(0, 1.1), yticks=np.linspace(0, 1, 6),
           xlabel=_ties_note(in_order),
           title=f'The {NUM_EXTREMES} least and {NUM_EXTREMES} most '
           'misclassified validation classes')
  fig.tight_layout()
  return fig


def plot_confusions(pairs, class_names):
  fig, axis = plt.subplots(figsize=(9, 4.5))
  labels = [f'{class_names[t][1].split(",")[0][:22]} -> '
            f'{class_names[p][1].split(",")[0][:22]}' for (t, p), _ in pairs]
  axis.barh(range(len(pairs)), [n for _, n in pairs], color='tab:orange')
  axis.set_yticks(range(len(pairs)), labels, fontsize=8)
  axis.invert_yaxis()
  axis.set(xlabel='validation images', title='Most confused class pairs '
           '(true -> predicted)')
  fig.tight_layout()
  return fig


def figure_to_array(fig):
  fig.canvas.draw()
  return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def _table(rows):
  lines = ['| wnid | name | images | misses | miss rate | mean loss |',
           '|---|---|---|---|---|---|']
  lines += [f"| {r['wnid']} | {r['name']} | {r['images']} | {r['misses']} | "
            f"{r['miss_rate']:.2f} | {r['loss']:.2f} |" for r in rows]
  return '\n'.join(lines)


def epoch_table(curves):
  """Markdown: each epoch's figures (accuracies in %), and the seconds
  trained by its end where the curves have them."""
  percent = lambda v: f'{100 * v:.2f}'
  columns = [('epoch', 'epoch', '{:g}'.format),
             (ELAPSED_KEY, 'seconds', '{:.0f}'.format),
             ('train_loss', 'train loss', '{:.3f}'.format),
             ('train_accuracy', 'train top-1', percent),
             ('val_loss', 'val loss', '{:.3f}'.format),
             ('val_top1', 'val top-1', percent),
             ('val_top5', 'val top-5', percent),
             ('val_ema_top1', 'moving-average top-1', percent),
             ('val_ema_top5', 'moving-average top-5', percent)]
  columns = [column for column in columns if column[0] in curves]
  lines = ['| ' + ' | '.join(name for _, name, _ in columns) + ' |',
           '|' + '---|' * len(columns)]
  for index in range(len(curves['epoch'])):
    values = [(curves[key][index], show) for key, _, show in columns]
    lines.append('| ' + ' | '.join(
        '' if np.isnan(value) else show(value) for value, show in values) + ' |')
  return '\n'.join(lines)


def markdown(metrics, curves, rows, pairs, class_names, figures):
  in_order = ranked(rows)
  confused = ['| true | predicted | images |', '|---|---|---|']
  confused += [f'| {class_names[t][0]} {class_names[t][1]} | '
               f'{class_names[p][0]} {class_names[p][1]} | {n} |'
               for (t, p), n in pairs]
  how = ''  # what the figures are of, beside the checkpoint's step
  if metrics.get('weights') == 'ema':
    how += ', moving-average weights'
  if metrics.get('tta') == 'flip':
    how += ', probabilities averaged with the mirror images'
  parts = [
      f"# Evaluation of {metrics['model']} (checkpoint of step "
      f"{metrics['step']}{how})",
      '| top-1 | top-5 | loss | images |\n|---|---|---|---|\n'
      f"| {metrics['top1']:.4f} | {metrics['top5']:.4f} | "
      f"{metrics['loss']:.4f} | {metrics['images']} |",
      'Recipe: ' + ', '.join(f'{key}={metrics["config"][key]}'
                             for key in RECIPE_KEYS
                             if key in metrics.get('config', {})),
      *(f'![{name}]({name}.png)' for name in figures),
      '## Per epoch', epoch_table(curves),
      f'## The {NUM_EXTREMES} least misclassified classes',
      _table(in_order[:NUM_EXTREMES]),
      f'## The {NUM_EXTREMES} most misclassified classes',
      _table(in_order[-NUM_EXTREMES:][::-1]),
      _ties_note(in_order),
      '## Most confused pairs', '\n'.join(confused),
  ]
  return '\n\n'.join(part for part in parts if part) + '\n'


def metrics_json(metrics, curves, rows):
  """The JSON form shared with the PyTorch reference: missing values as null."""
  curves = {key: [None if np.isnan(v) else v for v in values]
            for key, values in curves.items()}
  return json.dumps({**metrics, 'curves': curves, 'per_class': rows}, indent=1)


def write(report_dir, metrics, curves, rows, pairs, class_names, figures):
  """metrics.json, one PNG per figure and report.md, all in `report_dir`."""
  os.makedirs(report_dir, exist_ok=True)
  for name, fig in figures.items():
    fig.savefig(os.path.join(report_dir, f'{name}.png'), dpi=110)
  with open(os.path.join(report_dir, 'metrics.json'), 'w') as f:
    f.write(metrics_json(metrics, curves, rows))
  with open(os.path.join(report_dir, 'report.md'), 'w') as f:
    f.write(markdown(metrics, curves, rows, pairs, class_names, figures))
