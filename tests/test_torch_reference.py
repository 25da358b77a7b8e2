"""The PyTorch reference trainer (the same recipe as tiny_flax, or a refusal by
name) and the BatchNorm-statistics check that compares its runs."""

import json
import os

import numpy as np
import pytest
import torch
import torchvision
from torchvision import transforms

from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-bad-import-order  (after torchvision)

import conftest
from configs import default
from configs import resnet18
from configs import shufflenet_v2
from scripts import torch_reference as reference
from scripts import train_torch_reference
from tiny_flax import errors
from tiny_flax import optim
from tiny_flax import report


def _run(fake_manual_dir, out, *flags, config='configs/shufflenet_v2.py'):
  return conftest.run_python(
      ['-m', 'scripts.train_torch_reference', f'--config={config}',
       f'--manual_dir={fake_manual_dir}', f'--out_dir={out}', '--workers=0',
       '--config.batch_size=32', '--config.steps_per_eval=2',
       '--config.log_every_steps=1'] + list(flags))


def test_trains_writes_the_report_json_and_resumes(fake_manual_dir, tmp_path):
  out = tmp_path / 'torch'
  # No flips: the order of the images is the run's only randomness after
  # its initialisation (torchvision's flips draw from the process's RNG).
  unflipped = '--config.input.train=to_tensor'
  first = _run(fake_manual_dir, out, '--config.num_train_steps=2', unflipped)
  assert first.returncode == 0, first.stderr[-3000:]
  second = _run(fake_manual_dir, out, '--config.num_train_steps=3', unflipped)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Resuming from the checkpoint of step 2' in second.stderr
  metrics = json.loads((out / 'metrics.json').read_text())
  # 200 classes x 4 training images in batches of 32: 25 steps an epoch.
  assert metrics['step'] == 3 and metrics['images'] == 64
  assert metrics['curves']['epoch'] == [2 / 25, 3 / 25]
  assert metrics['curves']['val_top1'][-1] == metrics['top1']
  first_s, second_s = metrics['curves']['elapsed_s']  # the second adds to it
  assert 0 < first_s < second_s
  assert 0 <= metrics['top1'] <= metrics['top5'] <= 1
  assert np.isfinite(metrics['curves']['train_loss']).all()
  assert len(metrics['per_class']) == 200
  assert sum(r['images'] for r in metrics['per_class']) == 64
  assert not list(out.glob('*.tmp'))

  # Resumed mid-epoch, it goes on with the batch an uninterrupted run trains.
  straight = tmp_path / 'straight'
  third = _run(fake_manual_dir, straight, '--config.num_train_steps=3',
               unflipped)
  assert third.returncode == 0, third.stderr[-3000:]
  resumed = torch.load(out / 'checkpoint.pt', weights_only=False)['model']
  for name, value in torch.load(straight / 'checkpoint.pt',
                                weights_only=False)['model'].items():
    torch.testing.assert_close(resumed[name], value, rtol=0, atol=0,
                               msg=name)

  # TensorBoard: the trainer's tags at its steps, once each across the resume.
  events = event_accumulator.EventAccumulator(str(out))
  events.Reload()
  logged = {tag: [e.step for e in events.Scalars(tag)]
            for tag in events.Tags()['scalars']}
  for tag in ('train_loss', 'train_accuracy', 'learning_rate'):
    assert logged[tag] == [1, 2, 3], (tag, logged)
  for tag in ('val_loss', 'val_top1', 'val_top5', 'epoch'):
    assert logged[tag] == [2, 3], (tag, logged)
  assert events.Scalars('val_top1')[-1].value == pytest.approx(metrics['top1'])


def test_each_epochs_order_is_the_one_shuffle_true_draws():
  for seed, epoch in ((0, 0), (1, 3)):
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    shuffled = torch.utils.data.DataLoader(list(range(100)), batch_size=10,
                                           shuffle=True, generator=generator)
    assert torch.cat(list(shuffled)).tolist() == reference.epoch_order(
        seed, epoch, 100).tolist()


@pytest.mark.parametrize('key, value, named', [
    ('half_precision', True, 'half_precision'),
    ('init_from', 'imagenet.pth', 'init_from'),
    ('optimizer', 'lamb', 'lamb'),
    ('schedule.name', 'polynomial', 'polynomial'),
    ('input.train', 'random_horizontal_flip|solarize|to_tensor', 'solarize'),
])
def test_refuses_what_it_cannot_reproduce(key, value, named):
  config = shufflenet_v2.get_config()
  section, _, leaf = key.rpartition('.')
  (config[section] if section else config)[leaf] = value
  with pytest.raises(errors.UserError, match=named):
    reference.check_config(config)


def test_refuses_a_model_torchvision_lacks(fake_manual_dir, tmp_path):
  result = _run(fake_manual_dir, tmp_path / 'out', config='configs/smoke.py')
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert 'resnet_tiny' in [l for l in result.stderr.splitlines()
                           if l.startswith('error:')][0]


def test_missing_archive_is_a_clear_error(tmp_path):
  with pytest.raises(errors.UserError, match='Tiny ImageNet not found'):
    train_torch_reference.train(shufflenet_v2.get_config(), str(tmp_path),
                                str(tmp_path / 'out'), workers=0)


@pytest.mark.parametrize('config', [
    resnet18.get_config(), shufflenet_v2.get_config('budget'),
    resnet18.get_config('tuned')])
def test_schedule_equals_tiny_flax(config):
  steps_per_epoch = 50
  ours = optim.learning_rate_schedule(config, steps_per_epoch)
  factor = reference.learning_rate_factor(config, steps_per_epoch)
  for step in range(0, config.num_epochs * steps_per_epoch, 7):
    assert config.learning_rate * factor(step) == pytest.approx(
        float(ours(step)), rel=1e-4, abs=1e-7)  # optax computes in float32


def test_recipes_map_to_torchvision_transforms():
  config = resnet18.get_config('budget')
  train = reference.compose(config.input.train).transforms
  assert [type(t) for t in train] == [
      transforms.RandomResizedCrop, transforms.RandomHorizontalFlip,
      transforms.ToTensor, transforms.Normalize]
  assert train[0].size == (64, 64) and train[0].scale == (0.35, 1.0)
  assert train[3].mean == (0.485, 0.456, 0.406)
  with pytest.raises(errors.UserError, match='no torchvision counterpart'):
    reference.compose('to_tensor|posterize(4)')


def test_optimizer_carries_the_recipe():
  config = default.get_config()
  config.optimizer, config.nesterov, config.weight_decay = 'sgd', True, 5e-4
  group = reference.optimizer(config, [torch.zeros(1)]).param_groups[0]
  assert (group['lr'], group['momentum'], group['nesterov'],
          group['weight_decay']) == (1e-3, 0.9, True, 5e-4)


def test_top1_table_and_largest_difference(tmp_path):
  curves = {key: [0.1, 0.2] for key in ('train_loss', 'train_accuracy',
                                        'val_loss', 'val_top5')}
  first = {**curves, 'epoch': [1.0, 2.0], 'val_top1': [0.10, 0.20]}
  second = {**curves, 'epoch': [1.0, 2.0], 'val_top1': [0.12, 0.17]}
  path = tmp_path / 'metrics.json'
  path.write_text(json.dumps({'curves': {**second, 'val_loss': [None, 0.2]}}))
  loaded = report.load_curves(str(path))
  assert np.isnan(loaded['val_loss'][0]) and loaded['val_top1'] == [0.12, 0.17]
  table, largest = report.top1_table({'a': first, 'b': loaded})
  assert largest['b'] == pytest.approx(3.0)
  assert '| 2 | 20.00 | 17.00 | -3.00 |' in table.splitlines()


def test_compare_runs_draws_the_overlay(tmp_path):
  curves = {'epoch': [1.0], 'train_loss': [3.0], 'train_accuracy': [0.1],
            'val_loss': [3.0], 'val_top1': [0.1], 'val_top5': [0.3]}
  for name in ('a', 'b'):
    (tmp_path / f'{name}.json').write_text(json.dumps({'curves': curves}))
  out = tmp_path / 'overlay.png'
  result = conftest.run_python(
      ['-m', 'scripts.compare_runs', f'--run=A={tmp_path / "a.json"}',
       f'--run=B={tmp_path / "b.json"}', f'--out={out}'])
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'largest |B - A| in top-1: 0.00 points' in result.stdout
  assert os.path.getsize(out) > 10_000

  seconds = [f'--run=A={tmp_path / "a.json"}', f'--run=B={tmp_path / "b.json"}',
             '--x=seconds', f'--out={tmp_path / "by_time.png"}']
  result = conftest.run_python(['-m', 'scripts.compare_runs'] + seconds)
  assert result.returncode == 1 and 'has no elapsed_s curve' in result.stderr
  (tmp_path / 'b.json').write_text(
      json.dumps({'curves': {**curves, 'elapsed_s': [61.0]}}))
  (tmp_path / 'a.json').write_text(
      json.dumps({'curves': {**curves, 'elapsed_s': [30.0]}}))
  result = conftest.run_python(['-m', 'scripts.compare_runs'] + seconds)
  assert result.returncode == 0, result.stderr[-2000:]
  assert os.path.getsize(tmp_path / 'by_time.png') > 10_000


def test_curves_against_seconds_trained():
  curves = {'epoch': [1.0, 2.0], 'elapsed_s': [40.0, 90.0],
            'train_loss': [3.0, 2.0], 'train_accuracy': [0.1, 0.2],
            'val_loss': [3.1, 2.5], 'val_top1': [0.1, 0.15],
            'val_top5': [0.3, 0.4]}
  accuracy, _ = report.plot_curves({'run': curves}, report.ELAPSED_KEY).axes
  assert accuracy.get_xlabel() == 'seconds trained'
  assert all(list(line.get_xdata()) == [40.0, 90.0] for line in accuracy.lines)


def test_recomputed_batch_norm_statistics_are_the_training_average():
  model = torchvision.models.resnet18(num_classes=200)
  model.bn1.running_mean.fill_(100.)
  batches = [(torch.rand(8, 3, 64, 64), torch.zeros(8)) for _ in range(2)]
  reference.recompute_batch_norm(model, batches)
  with torch.no_grad():
    expected = model.conv1(torch.cat([x for x, _ in batches])).mean((0, 2, 3))
  np.testing.assert_allclose(model.bn1.running_mean, expected, rtol=1e-4,
                             atol=1e-5)
  assert not model.training


def test_recompute_bn_reports_both_statistics_per_weights_file(
    fake_manual_dir, tmp_path):
  weights = tmp_path / 'resnet18.pth'
  torch.save({'model': torchvision.models.resnet18(num_classes=200).state_dict()},
             weights)
  result = conftest.run_python(
      ['-m', 'scripts.recompute_bn', '--config=configs/resnet18.py',
       f'--manual_dir={fake_manual_dir}', f'--weights={weights}',
       '--images=64', '--config.batch_size=32'])
  assert result.returncode == 0, result.stderr[-3000:]
  row = [l for l in result.stdout.splitlines() if l.startswith(f'| {weights}')]
  stored, recomputed = [cell.split(' / ') for cell in row[0].split(' | ')[1:3]]
  # Fresh weights' stored statistics (mean 0, variance 1) fit no real input.
  assert float(stored[2]) != float(recomputed[2].rstrip(' |'))
  with pytest.raises(errors.UserError, match='No weights file'):
    reference.load_model(resnet18.get_config(), str(tmp_path / 'missing.pt'))
  with pytest.raises(errors.UserError, match='no shufflenet_v2_x1_0 weights'):
    reference.load_model(shufflenet_v2.get_config(), str(weights))
