"""docs/curves: the per-epoch validation figures of docs/ as data.

Each file is a run's curves in the metrics.json form, so that
`scripts.compare_runs` overlays a new run on it; each names the table rows
of docs/ it was taken from, and must still equal them.
"""

import glob
import json
import os
import warnings

import numpy as np
import pytest

import conftest
from tiny_flax import report

CURVE_FILES = sorted(glob.glob(os.path.join(conftest.REPO, 'docs', 'curves',
                                            '*.json')))


def _cells(line):
  return [cell.strip() for cell in line.strip().strip('|').split('|')]


def read_rows(repo, source):
  """{'epoch': [...], key: [...]} from the rows `source['rows']` ({key: row
  label}) of the tables in `source['section']` of `source['doc']`, each row
  paired with the epochs of the table's header; percentages as fractions,
  empty cells left out."""
  with open(os.path.join(repo, source['doc'])) as f:
    lines = f.read().splitlines()
  start = next(i for i, line in enumerate(lines)
               if line.startswith('#') and
               line.lstrip('#').strip() == source['section'])
  curves = {}
  epochs = None
  for line in lines[start + 1:]:
    if line.startswith('#'):
      break
    if not line.startswith('|'):
      continue
    cells = _cells(line)
    if cells[0] == 'epoch':
      epochs = cells[1:]
    for key, label in source['rows'].items():
      if cells[0] == label and key not in curves:
        filled = [(float(e), round(float(v) / 100, 6))
                  for e, v in zip(epochs, cells[1:]) if v]
        row_epochs = [e for e, _ in filled]
        if curves.setdefault('epoch', row_epochs) != row_epochs:
          raise ValueError(f'{label}: other epochs than {curves["epoch"]}')
        curves[key] = [v for _, v in filled]
  missing = set(source['rows']) - set(curves)
  if missing:
    raise ValueError(f'{source}: no rows for {sorted(missing)}')
  return curves


def test_there_are_curves_of_both_recipes_of_resnet18_and_shufflenet():
  names = {os.path.basename(path)[:-len('.json')] for path in CURVE_FILES}
  assert {'resnet18_original', 'resnet18_budget', 'shufflenet_v2_original',
          'shufflenet_v2_budget'} <= names


@pytest.mark.parametrize('path', CURVE_FILES, ids=os.path.basename)
def test_each_file_equals_the_rows_it_names_and_loads_as_a_run(path):
  with open(path) as f:
    record = json.load(f)
  assert {'hardware', 'precision', 'date', 'command',
          'source'} <= set(record), sorted(record)
  expected = read_rows(conftest.REPO, record['source'])
  assert set(record['curves']) == set(expected)
  for key, values in expected.items():
    np.testing.assert_allclose(record['curves'][key], values, rtol=0,
                               atol=1e-9, err_msg=key)
  epochs = record['curves']['epoch']
  assert epochs == list(range(1, len(epochs) + 1))
  loaded = report.load_curves(path)
  assert loaded['val_top1'] == record['curves']['val_top1']


def test_a_run_is_compared_with_a_reference_epoch_by_epoch():
  reference = report.load_curves(os.path.join(
      conftest.REPO, 'docs', 'curves', 'resnet18_original_pytorch.json'))
  mine = {'epoch': [1.0, 2.0, 3.0, 4.0], 'val_top1': [0.05, 0.08, 0.1, 0.12]}
  table, largest = report.top1_table({'mine': mine, 'PyTorch': reference})
  assert largest['PyTorch'] == pytest.approx(2.0)  # epoch 3: 8.00 - 10.00
  assert '| 4 | 12.00 |  |  |' in table.splitlines()


def test_references_alone_draw_their_accuracy_and_say_the_loss_is_missing():
  references = {name: report.load_curves(os.path.join(
      conftest.REPO, 'docs', 'curves', f'{name}.json'))
                for name in ('resnet18_original', 'resnet18_original_pytorch')}
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    accuracy, loss = report.plot_curves(references).axes
  assert len(accuracy.lines) == 2 and accuracy.get_legend() is not None
  assert not loss.lines and loss.get_legend() is None
  assert [text.get_text() for text in loss.texts] == ['not recorded']


def test_a_changed_table_no_longer_matches(tmp_path):
  doc = tmp_path / 'docs.md'
  doc.write_text('## A\n\n| epoch | 1 | 2 |\n|---|---|---|\n'
                 '| top-1 | 1.50 | 2.25 |\n| top-5 | 5.00 | |\n\n## B\n\n'
                 '| epoch | 1 |\n|---|---|\n| top-1 | 9.00 |\n')
  source = {'doc': 'docs.md', 'section': 'A',
            'rows': {'val_top1': 'top-1'}}
  assert read_rows(str(tmp_path), source) == {'epoch': [1.0, 2.0],
                                              'val_top1': [0.015, 0.0225]}
  with pytest.raises(ValueError, match='other epochs'):
    read_rows(str(tmp_path), {**source, 'rows': {'val_top1': 'top-1',
                                                 'val_top5': 'top-5'}})
  with pytest.raises(ValueError, match='no rows'):
    read_rows(str(tmp_path), {**source, 'rows': {'val_top1': 'top-3'}})
