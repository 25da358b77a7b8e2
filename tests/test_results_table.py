"""scripts/results_table.py: a run's row from its report and train.log."""

import json

from scripts import results_table


def _metrics(**changes):
  metrics = {
      'model': 'resnet18', 'step': 300, 'top1': 0.5123, 'top5': 0.7771,
      'weights': 'trained', 'config': {'num_epochs': 4, 'num_train_steps': -1},
      'curves': {'epoch': [1.0, 2.0, 3.0], 'val_top1': [0.2, 0.49, 0.52],
                 'val_ema_top1': [0.3, 0.51, 0.53],
                 'elapsed_s': [40.2, 75.6, 110.4]}}
  metrics.update(changes)
  return metrics


def test_the_first_epoch_at_the_target_and_the_last_speed():
  log = ('later steps 30.0 s at 9000 images/s.\n'
         'resumed ... later steps 60.0 s at 11000 images/s.\n')
  assert results_table.row('run', _metrics(), log, 0.5) == [
      'run', 'resnet18', '3 of 4', '51.23% / 77.71%', 'step 300', '110',
      '11000', 'epoch 3, 110 s']


def test_a_time_budget_is_named_beside_the_epochs():
  metrics = _metrics(config={'num_epochs': 4, 'num_train_steps': -1,
                             'time_budget_minutes': 10.0})
  assert results_table.row('run', metrics, '', 0.5)[2] == (
      '3 of 4 (10-minute budget)')


def test_a_moving_average_is_judged_by_its_own_top1():
  cells = results_table.row('run', _metrics(weights='ema'), '', 0.5)
  assert cells[4] == 'step 300, moving average'
  assert cells[6:] == ['', 'epoch 2, 76 s']


def test_a_flip_averaged_evaluation_says_so():
  cells = results_table.row('run', _metrics(weights='ema', tta='flip'), '', 0.5)
  assert cells[4] == 'step 300, moving average, flip-averaged'
  assert results_table.row('run', _metrics(tta='none'), '', 0.5)[4] == (
      'step 300')


def test_a_target_missed_a_step_count_and_no_times():
  metrics = _metrics(config={'num_epochs': 4, 'num_train_steps': 250})
  del metrics['curves']['elapsed_s']
  metrics['curves']['val_top1'][1] = None
  cells = results_table.row('run', metrics, '', 0.6)
  assert cells[2] == '3' and cells[5] == ''
  assert cells[7] == 'not reached (best 52.00%)'


def test_table_rows_in_the_order_given(tmp_path):
  (tmp_path / 'b' / 'report').mkdir(parents=True)
  (tmp_path / 'b' / 'report' / 'metrics.json').write_text(
      json.dumps(_metrics()))
  (tmp_path / 'a').mkdir()
  lines = results_table.table([str(tmp_path / 'b'), str(tmp_path / 'a')],
                              0.5).splitlines()
  assert lines[0].endswith('| first epoch at 50% top-1 |')
  assert lines[2].startswith('| b | resnet18 | 3 of 4 |')
  assert lines[3] == ('| a | not evaluated: no report/metrics.json |'
                      + ' |' * 6)
  assert len({line.count('|') for line in lines}) == 1
