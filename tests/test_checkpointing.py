"""Checkpoint retention and the workdir's config record."""

import os
import shutil
from unittest import mock

import jax.numpy as jnp
import ml_collections
import pytest

from tiny_flax import checkpointing
from tiny_flax import errors
from tiny_flax import workdir as workdir_lib


def test_keeps_the_latest_three_and_the_best(tmp_path):
  manager = checkpointing.manager(str(tmp_path), keep=3)
  top1 = {1: 0.9, 2: 0.1, 3: 0.2, 4: 0.3, 5: 0.4, 6: 0.35}
  for step, value in top1.items():
    checkpointing.save(manager, step, {'w': jnp.full((2,), step)},
                       {'val_top1': value})
    manager.wait_until_finished()
  assert manager.all_steps() == [1, 4, 5, 6]
  assert manager.best_step() == 1
  assert manager.metrics(5) == {'val_top1': pytest.approx(0.4)}
  restored = checkpointing.restore_latest(manager, {'w': jnp.zeros((2,))})
  assert restored['w'].tolist() == [6, 6]
  manager.close()


def test_with_a_moving_average_the_best_is_by_its_top1(tmp_path):
  """evaluate and export take the average's weights: the best is theirs."""
  manager = checkpointing.manager(str(tmp_path), keep=1)
  metrics = {1: {'val_top1': 0.5, 'val_ema_top1': 0.2},
             2: {'val_top1': 0.3, 'val_ema_top1': 0.4},
             3: {'val_top1': 0.6, 'val_ema_top1': 0.1}}
  for step, values in metrics.items():
    checkpointing.save(manager, step, {'w': jnp.full((2,), step)}, values)
    manager.wait_until_finished()
  assert manager.all_steps() == [2, 3]
  assert checkpointing.find_step(manager, 'best') == 2
  manager.close()


def _saved(workdir, steps):
  manager = checkpointing.manager(str(workdir), keep=len(steps))
  for step in steps:
    checkpointing.save(manager, step, {'w': jnp.full((2,), step)},
                       {'val_top1': step / 10})
  manager.wait_until_finished()
  manager.close()


def test_a_checkpoint_deleted_by_the_live_run_while_read_is_read_again(
    tmp_path):
  """evaluate, predict and export on a run that is still training: it keeps
  its latest checkpoints, so the one being read may vanish."""
  _saved(tmp_path, [1, 2, 3])
  tried = []

  def restore_while_the_run_deletes(checkpoints, step):
    tried.append(step)
    if len(tried) == 1:  # the run saves step 4 and drops step 3 meanwhile
      _saved(tmp_path / 'elsewhere', [4])
      shutil.copytree(tmp_path / 'elsewhere' / 'checkpoints' / '4',
                      tmp_path / 'checkpoints' / '4')
      shutil.rmtree(tmp_path / 'checkpoints' / '3')
    return checkpointing.restore(checkpoints, {'w': jnp.zeros((2,))}, step)

  restored, step = checkpointing.read(str(tmp_path), 'latest',
                                      restore_while_the_run_deletes)
  assert tried == [3, 4] and step == 4
  assert restored['w'].tolist() == [4, 4]


def test_a_failing_read_of_checkpoints_left_in_place_is_raised(tmp_path):
  _saved(tmp_path, [1, 2])
  tried = []

  def fails(checkpoints, step):
    tried.append(step)
    raise ValueError('damaged')

  with pytest.raises(ValueError, match='damaged'):
    checkpointing.read(str(tmp_path), 'best', fails)
  assert tried == [2]  # not retried: nothing was deleted
  with pytest.raises(errors.UserError, match='No checkpoint in'):
    checkpointing.read(str(tmp_path / 'empty'), 'best', fails)


def test_config_record_refuses_another_model_once_checkpoints_exist(tmp_path):
  config = ml_collections.ConfigDict({'model': 'resnet50', 'dataset': {
      'source': 'official', 'fake_train_per_class': 1, 'fake_val_per_class': 1}})
  workdir_lib.check_workdir(str(tmp_path), config)
  # A start that saved nothing (missing data, say) binds the workdir to nothing.
  (tmp_path / 'checkpoints' / '3.orbax-checkpoint-tmp-1').mkdir(parents=True)
  config.model = 'resnet18'
  workdir_lib.check_workdir(str(tmp_path), config)
  (tmp_path / 'checkpoints' / '4').mkdir()
  config.num_epochs = 3  # other values may change between runs
  workdir_lib.check_workdir(str(tmp_path), config)
  assert workdir_lib.load_config(str(tmp_path)).num_epochs == 3
  config.model = 'alexnet'
  with pytest.raises(errors.UserError, match='resnet18'):
    workdir_lib.check_workdir(str(tmp_path), config)
  assert workdir_lib.load_config(str(tmp_path)).model == 'resnet18'


def test_an_interrupted_save_does_not_break_the_next_run(tmp_path):
  manager = checkpointing.manager(str(tmp_path))
  checkpointing.save(manager, 5, {'w': jnp.full((2,), 5.0)}, {'val_top1': 0.1})
  manager.wait_until_finished()
  manager.close()
  # What a run killed in the middle of saving step 9 leaves behind.
  partial = tmp_path / 'checkpoints' / '9.orbax-checkpoint-tmp-1234'
  partial.mkdir()
  (partial / 'half_written').write_bytes(b'\0' * 100)
  manager = checkpointing.manager(str(tmp_path))
  assert manager.latest_step() == 5
  restored = checkpointing.restore_latest(manager, {'w': jnp.zeros((2,))})
  assert restored['w'].tolist() == [5.0, 5.0]
  checkpointing.save(manager, 9, {'w': jnp.full((2,), 9.0)}, {'val_top1': 0.2})
  manager.wait_until_finished()
  assert manager.all_steps() == [5, 9]
  manager.close()


def _largest_file(folder):
  files = [os.path.join(root, name) for root, _, names in os.walk(folder)
           for name in names]
  return max(files, key=os.path.getsize)


def test_a_damaged_latest_checkpoint_is_set_aside_and_the_previous_restored(
    tmp_path, caplog):
  manager = checkpointing.manager(str(tmp_path))
  for step in (5, 9):
    checkpointing.save(manager, step, {'w': jnp.arange(1000.0) * step})
  manager.wait_until_finished()
  manager.close()
  with open(_largest_file(tmp_path / 'checkpoints' / '9'), 'r+b') as f:
    f.truncate(50)  # what a disk fault leaves of a committed checkpoint

  manager = checkpointing.manager(str(tmp_path))
  restored = checkpointing.restore_latest(manager, {'w': jnp.zeros(1000)})
  assert restored['w'][1] == 5.0
  assert manager.all_steps() == [5]
  (aside,) = os.listdir(tmp_path / 'unreadable_checkpoints')
  assert aside.startswith('9_')
  assert any('step 9 does not restore' in line and aside in line
             for line in caplog.messages), caplog.messages
  checkpointing.save(manager, 9, {'w': jnp.ones(1000)})  # the step is free again
  manager.wait_until_finished()
  assert manager.all_steps() == [5, 9]
  manager.close()


def test_no_checkpoint_fitting_the_config_is_an_error(tmp_path):
  manager = checkpointing.manager(str(tmp_path))
  checkpointing.save(manager, 5, {'w': jnp.ones(3)})
  manager.wait_until_finished()
  with pytest.raises(errors.UserError, match='step 5.*Pass the config that run'):
    checkpointing.restore_latest(manager, {'w': jnp.ones(3), 'extra': jnp.ones(2)})
  assert manager.all_steps() == [5]  # nothing set aside
  manager.close()


def test_a_resume_at_another_batch_size_is_warned_of(tmp_path):
  config = ml_collections.ConfigDict({'model': 'resnet18', 'batch_size': 256,
                                      'dataset': {'source': 'official'}})
  workdir_lib.check_workdir(str(tmp_path), config)
  (tmp_path / 'checkpoints' / '4').mkdir(parents=True)
  with mock.patch.object(workdir_lib.logging, 'warning') as warning:
    workdir_lib.check_workdir(str(tmp_path), config)  # the same batch
    assert not warning.called
    config.batch_size = 128  # fits a smaller GPU, but moves the epochs
    workdir_lib.check_workdir(str(tmp_path), config)
  message = warning.call_args[0][0] % warning.call_args[0][1:]
  assert 'batch_size=256, resumed at batch_size=128' in message
  assert '--config.microbatches=2' in message
  assert workdir_lib.load_config(str(tmp_path)).batch_size == 128


def test_a_resume_with_other_values_names_them(tmp_path):
  """A forgotten or added flag shows at the restart, before any training."""
  config = ml_collections.ConfigDict({
      'model': 'resnet18', 'batch_size': 256, 'num_epochs': 15,
      'dataset': {'source': 'official', 'data_dir': '/data'},
      'schedule': {'boundaries': (7, 14)}})
  workdir_lib.check_workdir(str(tmp_path), config)
  (tmp_path / 'checkpoints' / '4').mkdir(parents=True)
  with mock.patch.object(workdir_lib.logging, 'warning') as warning:
    workdir_lib.check_workdir(str(tmp_path), config)  # tuples read as lists
    assert not warning.called
    config.num_epochs = 30
    config.dataset.data_dir = '/scratch'
    workdir_lib.check_workdir(str(tmp_path), config)
  message = warning.call_args[0][0] % warning.call_args[0][1:]
  assert ("config values other than its last start's: dataset.data_dir="
          "'/data' -> '/scratch', num_epochs=15 -> 30.") in message
