"""The evaluation report and prediction on files, over a one-epoch smoke run."""

import json
import os

import numpy as np
from PIL import Image
import pytest
from tensorboard.compat.proto import event_pb2
from tensorboard.summary.writer import record_writer

import conftest
from configs import smoke
from tiny_flax import report


@pytest.fixture(scope='module')
def trained(fake_config, fake_builder, tmp_path_factory):
  """A workdir trained for one epoch on the small fake archive."""
  del fake_builder  # prepared once for the session
  workdir = tmp_path_factory.mktemp('trained')
  overrides = [f'--config.dataset.{key}={fake_config.dataset[key]}'
               for key in ('manual_dir', 'data_dir', 'fake_train_per_class',
                           'fake_val_per_class')]
  result = conftest.run_python(
      ['-m', 'tiny_flax.main', '--config=configs/smoke.py',
       f'--workdir={workdir}', '--config.num_epochs=1', '--config.batch_size=80']
      + overrides)
  assert result.returncode == 0, result.stderr[-3000:]
  return str(workdir), overrides


def test_report_files(trained):
  """From the workdir alone: the config comes from its record."""
  workdir, _ = trained
  result = conftest.run_python(['-m', 'tiny_flax.evaluate',
                                f'--workdir={workdir}'])
  assert result.returncode == 0, result.stderr[-3000:]
  report_dir = os.path.join(workdir, 'report')
  with open(os.path.join(report_dir, 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['images'] == 400 and metrics['step'] == 10
  assert metrics['tta'] == 'none'
  assert 0 <= metrics['top1'] <= metrics['top5'] <= 1
  assert len(metrics['per_class']) == 200
  assert metrics['curves']['epoch'] == [1.0]
  assert metrics['curves']['val_top1'][0] == pytest.approx(metrics['top1'])
  # Compilation, ten steps and a validation: more than nothing, under the
  # whole fixture's run.
  assert 0 < metrics['curves']['elapsed_s'][0] < 300
  misses = sum(row['misses'] for row in metrics['per_class'])
  assert misses == round((1 - metrics['top1']) * 400)
  assert all(row['images'] == 2 for row in metrics['per_class'])
  for name in ('curves', 'miss_rates', 'confusions'):
    with Image.open(os.path.join(report_dir, f'{name}.png')) as image:
      assert image.size[0] > 500
  text = open(os.path.join(report_dir, 'report.md')).read()
  assert 'most misclassified' in text and '![curves](curves.png)' in text
  assert '| epoch | seconds | train loss | train top-1 | val loss |' in text
  assert metrics['config']['model'] == 'resnet_tiny'
  assert 'Recipe: input.train=random_horizontal_flip|to_tensor' in text
  assert any(n.startswith('events.out') for n in os.listdir(report_dir))
  assert 'Evaluating' not in result.stderr  # its bar: on a terminal only


def test_flip_averaged_evaluation(trained):
  """`--tta=flip` evaluates the same checkpoint on both mirror images and
  says so; its loss is not the one validation logged for that step."""
  workdir, _ = trained
  result = conftest.run_python(['-m', 'tiny_flax.evaluate',
                                f'--workdir={workdir}', '--tta=flip'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert '(400 images, step 10, flip-averaged)' in result.stdout
  with open(os.path.join(workdir, 'report', 'metrics.json')) as f:
    metrics = json.load(f)
  assert metrics['tta'] == 'flip' and metrics['images'] == 400
  assert metrics['loss'] != pytest.approx(metrics['curves']['val_loss'][0],
                                          rel=1e-4)
  text = open(os.path.join(workdir, 'report', 'report.md')).read()
  assert 'probabilities averaged with the mirror images' in text.splitlines()[0]


def test_predict_on_files(trained, tmp_path):
  workdir, _ = trained
  gray = tmp_path / 'gray.png'
  Image.fromarray(np.full((90, 130), 128, np.uint8)).save(gray)
  colour = tmp_path / 'colour.jpg'
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(colour)
  broken = tmp_path / 'broken.jpg'
  broken.write_bytes(b'not an image')
  folder = tmp_path / 'folder'  # its images by name; other files passed over
  folder.mkdir()
  for name, value in (('b.PNG', 0), ('a.jpeg', 255)):
    Image.fromarray(np.full((64, 64, 3), value, np.uint8)).save(folder / name)
  (folder / 'notes.txt').write_text('not an image')
  empty = tmp_path / 'empty'
  empty.mkdir()
  result = conftest.run_python(
      ['-m', 'tiny_flax.predict', f'--workdir={workdir}', str(gray),
       str(broken), str(colour), str(folder), str(empty)])
  assert result.returncode == 1
  errors = [l for l in result.stderr.splitlines() if 'error:' in l]
  assert len(errors) == 2 and str(broken) in errors[0], errors
  assert errors[1] == (f'{empty}: error: a folder without image files '
                       '(.jpeg, .jpg, .png, .bmp, .gif, .webp)')
  lines = result.stdout.splitlines()
  assert lines[::6] == [str(gray), str(colour), str(folder / 'a.jpeg'),
                        str(folder / 'b.PNG')]
  # Each file's own row of the batch: the two black images agree, the white
  # one differs.
  assert lines[7:12] == lines[19:24] != lines[13:18]
  probabilities = [float(l.split('%')[0]) for l in lines[1:6]]
  assert probabilities == sorted(probabilities, reverse=True)
  assert lines[1].split()[1].startswith('n0')  # a wnid, then its name


# In a process of its own: tiny_flax.predict defines the flags that other
# entry points imported by the tests define too.
_PREDICT_IN_BATCHES = """
import json, sys
from tiny_flax import predict
workdir, paths = sys.argv[1], sys.argv[2:]
whole = list(predict.predict(workdir, paths))
predict.BATCH = 2
print(json.dumps([whole, list(predict.predict(workdir, paths))]))
"""


def test_predictions_do_not_depend_on_the_batch(trained, tmp_path):
  """Batches of 2 (boundaries inside the files, padding in the last) give
  what batches of 64 give, each result in its file's place."""
  workdir, _ = trained
  paths = []
  for i in range(5):
    paths.append(str(tmp_path / f'{i}.png'))
    Image.fromarray(np.full((64, 64, 3), 50 * i, np.uint8)).save(paths[-1])
  paths.insert(2, str(tmp_path / 'missing.png'))
  result = conftest.run_python(['-c', _PREDICT_IN_BATCHES, workdir, *paths])
  assert result.returncode == 0, result.stderr[-3000:]
  whole, in_pairs = json.loads(result.stdout.splitlines()[-1])
  assert [path for path, _ in in_pairs] == paths
  assert 'missing.png' in in_pairs[2][1]  # an error message, in its place
  for (_, got), (_, expected) in zip(in_pairs, whole):
    if isinstance(expected, str):
      assert got == expected
      continue
    assert [row[:2] for row in got] == [row[:2] for row in expected]
    np.testing.assert_allclose([row[2] for row in got],
                               [row[2] for row in expected], rtol=1e-5)


def test_evaluate_without_checkpoint(tmp_path):
  workdir = tmp_path / 'empty'
  os.makedirs(workdir)
  (workdir / 'config.json').write_text(smoke.get_config().to_json())
  result = conftest.run_python(['-m', 'tiny_flax.evaluate',
                                '--config=configs/smoke.py', f'--workdir={workdir}'])
  assert result.returncode == 1
  assert 'No checkpoint' in result.stderr


def test_evaluate_refuses_a_workdir_of_another_model(trained):
  workdir, overrides = trained
  result = conftest.run_python(
      ['-m', 'tiny_flax.evaluate', '--config=configs/resnet18.py',
       f'--workdir={workdir}'] + overrides)
  assert result.returncode == 1
  assert 'resnet_tiny' in result.stderr


def test_per_class_rows_and_confusions():
  labels = np.array([0, 0, 1, 1, 1, 2])
  predictions = np.array([0, 1, 1, 2, 2, 2])
  names = [('n0', 'zero'), ('n1', 'one'), ('n2', 'two')]
  losses = np.array([0.5, 1.5, 0.2, 2.0, 4.0, 0.1])
  rows = report.per_class(labels, predictions, names, losses)
  assert [(r['images'], r['misses']) for r in rows] == [(2, 1), (3, 2), (1, 0)]
  assert [r['loss'] for r in rows] == pytest.approx([1.0, 6.2 / 3, 0.1])
  assert report.confusions(labels, predictions) == [((1, 2), 2), ((0, 1), 1)]


def test_equal_miss_rates_rank_by_loss_and_are_counted():
  """Early on, dozens of classes miss everything: the loss picks the five."""
  names = [(f'n{i}', f'class {i}') for i in range(12)]
  labels = np.arange(12)
  predictions = np.where(labels < 2, labels, 0)  # classes 2..11 all missed
  losses = np.arange(12, dtype=float)
  rows = report.per_class(labels, predictions, names, losses)
  worst = [r['wnid'] for r in report.ranked(rows)[-5:]]
  assert worst == ['n7', 'n8', 'n9', 'n10', 'n11']
  text = report.markdown({'model': 'm', 'step': 1, 'top1': 0.2, 'top5': 0.5,
                          'loss': 1.0, 'images': 12}, {'epoch': []}, rows,
                         [], names, {})
  assert '10 classes share the highest miss rate (100%)' in text


def test_curves_from_scalars_with_one_epoch():
  scalars = {'epoch': {10: 1.0}, 'train_loss': {5: 4.0, 10: 2.0},
             'train_accuracy': {5: 0.1, 10: 0.3}, 'val_loss': {10: 3.0},
             'val_top1': {10: 0.2}, 'val_top5': {10: 0.5}}
  curves = report.epoch_curves(scalars)
  assert curves['epoch'] == [1.0] and curves['train_loss'] == [3.0]
  assert curves['val_top1'] == [0.2]
  image = report.figure_to_array(report.plot_curves({'': curves}))
  assert image.ndim == 3 and image.std() > 0


def test_the_moving_average_curves_are_kept_and_drawn(tmp_path):
  scalars = {'epoch': {10: 1.0, 20: 2.0}, 'train_loss': {10: 4.0, 20: 3.0},
             'train_accuracy': {10: 0.1, 20: 0.2},
             'val_loss': {10: 3.0, 20: 2.8}, 'val_top1': {10: 0.2, 20: 0.25},
             'val_top5': {10: 0.5, 20: 0.55}, 'val_ema_loss': {20: 2.5},
             'val_ema_top1': {10: 0.22, 20: 0.3},
             'val_ema_top5': {10: 0.52, 20: 0.6}}
  curves = report.epoch_curves(scalars)
  assert curves['val_ema_top1'] == [0.22, 0.3]
  assert curves['val_ema_loss'][1] == 2.5 and np.isnan(curves['val_ema_loss'][0])
  path = tmp_path / 'metrics.json'
  path.write_text(report.metrics_json({}, curves, []))
  loaded = report.load_curves(str(path))
  assert loaded['val_ema_top5'] == [0.52, 0.6]
  assert np.isnan(loaded['val_ema_loss'][0])
  accuracy, loss = report.plot_curves({'': loaded}).axes
  labels = [line.get_label() for line in accuracy.lines + loss.lines]
  assert 'moving-average validation top-1' in labels
  assert 'moving-average validation' in labels
  without = report.epoch_curves({k: v for k, v in scalars.items()
                                 if 'ema' not in k})
  assert not set(report.EMA_CURVE_KEYS) & set(without)


def _event_file(path, events):
  """An event file of (wall_time, step, tag) events, with chosen times."""
  with open(path, 'wb') as f:
    records = record_writer.RecordWriter(f)
    for wall_time, step, tag in events:
      event = event_pb2.Event(wall_time=wall_time, step=step)
      if tag is None:
        event.file_version = 'brain.Event:2'
      else:
        event.summary.value.add(tag=tag, simple_value=1.0)
      records.write(event.SerializeToString())


def test_seconds_trained_add_up_the_processes_of_a_resumed_run(tmp_path):
  """Each process's seconds from its first to its last event, not the gap
  between them; a step validated again after a stop takes its later time."""
  # Named so that sorting by name would put the later process first.
  _event_file(tmp_path / 'events.out.tfevents.b', [
      (1000.0, 0, None), (1010.0, 0, 'hparams'), (1100.0, 10, 'epoch'),
      (1150.0, 20, 'epoch'), (1170.0, 25, 'train_loss')])
  _event_file(tmp_path / 'events.out.tfevents.a', [
      (5000.0, 0, None), (5040.0, 20, 'epoch'), (5090.0, 30, 'epoch')])
  seconds = report.epoch_seconds(str(tmp_path))
  assert seconds == {10: 100.0, 20: 170.0 + 40.0, 30: 170.0 + 90.0}
  curves = report.epoch_curves({'epoch': {10: 1.0, 20: 2.0, 30: 3.0}},
                               seconds)
  assert curves['elapsed_s'] == [100.0, 210.0, 260.0]


def test_epoch_table_shows_the_columns_a_run_has():
  curves = {'epoch': [1.0, 2.0], 'elapsed_s': [61.4, 120.0],
            'train_loss': [3.0, 2.5], 'train_accuracy': [0.1, np.nan],
            'val_loss': [3.1, 2.6], 'val_top1': [0.1234, 0.2],
            'val_top5': [0.3, 0.4]}
  lines = report.epoch_table(curves).splitlines()
  assert lines[0] == ('| epoch | seconds | train loss | train top-1 | '
                      'val loss | val top-1 | val top-5 |')
  assert lines[2] == '| 1 | 61 | 3.000 | 10.00 | 3.100 | 12.34 | 30.00 |'
  assert lines[3] == '| 2 | 120 | 2.500 |  | 2.600 | 20.00 | 40.00 |'
  with_average = report.epoch_table(
      {**curves, 'val_ema_top1': [0.2, 0.3], 'val_ema_top5': [0.5, 0.6]})
  assert with_average.splitlines()[0].endswith(
      '| moving-average top-1 | moving-average top-5 |')


def test_curve_overlay_draws_every_run():
  curves = {'epoch': [1.0, 2.0], 'train_loss': [3.0, 2.0],
            'train_accuracy': [0.1, 0.2], 'val_loss': [3.1, 2.5],
            'val_top1': [0.1, 0.15], 'val_top5': [0.3, 0.4]}
  fig = report.plot_curves({'tiny_flax': curves, 'PyTorch': curves})
  accuracy, loss = fig.axes
  assert len(accuracy.lines) == 6 and len(loss.lines) == 4
  colours = {line.get_color() for line in accuracy.lines}
  assert len(colours) == 2
  assert any('PyTorch validation top-1' == line.get_label()
             for line in accuracy.lines)
