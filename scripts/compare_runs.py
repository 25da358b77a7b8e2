"""Curves of several runs overlaid, and their validation top-1 epoch by epoch.

    python -m scripts.compare_runs --run=tiny_flax=runs/shufflenet \
        --run=PyTorch=runs/torch_shufflenet/metrics.json --out=shufflenet.png

A run is LABEL=PATH: a tiny_flax workdir (curves read from its TensorBoard
events, no evaluation needed) or a metrics.json written by
`tiny_flax.evaluate` or `scripts.train_torch_reference`, or one of
docs/curves/ (the per-epoch tables of docs/results_checks.md). Prints a
markdown table of validation top-1 per epoch, with each run's difference from
the first and the largest such difference. `--x=seconds` plots the curves
against seconds trained, for runs of different speeds (a GPU against a CPU,
tiny_flax against PyTorch).
"""

import os
import sys

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags

from tiny_flax import report

_RUNS = flags.DEFINE_multi_string('run', None, 'LABEL=PATH, two or more.')
_OUT = flags.DEFINE_string('out', None, 'PNG of the overlaid curves.')
_X = flags.DEFINE_enum(
    'x', 'epoch', ['epoch', 'seconds'], "The plot's x axis: epochs, or "
    'seconds trained (compilation and validation included), which compares '
    'runs of different speeds.')
flags.mark_flags_as_required(['run'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  runs = {}
  for run in _RUNS.value:
    label, sep, path = run.partition('=')
    if not sep or not os.path.exists(path):
      raise app.UsageError(f'--run={run}: write LABEL=PATH of a workdir or '
                           'metrics.json that exists.')
    runs[label] = report.load_curves(path)
    if _X.value == 'seconds' and report.ELAPSED_KEY not in runs[label]:
      raise app.UsageError(
          f'--x=seconds: {path} has no {report.ELAPSED_KEY} curve (a '
          'metrics.json written before the seconds were recorded); plot it '
          'against epochs.')
  table, largest = report.top1_table(runs)
  print(table)
  for label, difference in largest.items():
    print(f'largest |{label} - {next(iter(runs))}| in top-1: '
          f'{difference:.2f} points')
  if _OUT.value:
    x_key = 'epoch' if _X.value == 'epoch' else report.ELAPSED_KEY
    report.plot_curves(runs, x_key).savefig(_OUT.value, dpi=90)


if __name__ == '__main__':
  app.run(main)
