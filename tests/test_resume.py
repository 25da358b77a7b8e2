"""Exact resume: a run killed three times, stopped by SIGTERM between log
steps, out of device memory once and failed by a full disk ends as an
uninterrupted one."""

import os
import re
import signal
import sys

from clu import metric_writers
import jax.numpy as jnp
import pytest

import conftest
from scripts import check_resume
from tiny_flax import checkpointing

# Before the first checkpoint; while orbax writes the checkpoint of step 8;
# SIGTERM between the log steps 12 and 15 (its call ends at step 13, or 14
# with two steps per call), which saves and exits 0; inside the next run's
# first validation pass (the last epoch's): (fault, exit code).
FAULTS = (('kill_after_step:2', -9), ('kill_in_save:8', -9),
          ('sigterm_after_step:13', 0), ('kill_in_eval:1', -9))


def _flags(workdir, fake_config):
  # 10 steps an epoch; logs every 3 steps, checkpoints every 4 and at epoch
  # ends, so log intervals, checkpoints and epochs all cut one another.
  return [f'--workdir={workdir}', '--config=configs/smoke.py', '--progress=off',
          '--config.batch_size=80', '--config.num_epochs=2',
          '--config.log_every_steps=3', '--config.checkpoint_every_steps=4',
          '--config.checkpoint_every_minutes=0', '--config.steps_per_eval=2',
          '--config.checkpoints_to_keep=10'] + [
              f'--config.dataset.{key}={fake_config.dataset[key]}'
              for key in ('manual_dir', 'data_dir', 'fake_train_per_class',
                          'fake_val_per_class')]


@pytest.mark.slow  # about 4 minutes of one core each: python -m pytest -m slow
@pytest.mark.parametrize('input_flags', [
    [], ['--config.input.on_device=true', '--config.steps_per_dispatch=2',
         '--config.ema.decay=0.9', '--config.mixing.mixup_alpha=0.2',
         '--config.mixing.cutmix_alpha=1.0', '--config.mixing.mode=elem',
         '--config.microbatches=4']],
                         ids=['tf_data', 'on_device_2_steps_per_dispatch_ema_mixing_microbatches'])
def test_killed_three_times_and_a_full_disk_the_run_ends_bitwise_as_uninterrupted(
    input_flags, fake_config, fake_builder, tmp_path):
  """Three SIGKILLs and a SIGTERM, a device out of memory, then a full disk
  at the last checkpoint, then the end."""
  del fake_builder  # prepared once for the session
  expected, killed = str(tmp_path / 'expected'), str(tmp_path / 'killed')
  flags = lambda workdir: _flags(workdir, fake_config) + input_flags
  result = conftest.run_python(['-m', 'tiny_flax.main', *flags(expected)])
  assert result.returncode == 0, result.stderr[-3000:]

  for fault, code in FAULTS:
    result = conftest.run_python(['tests/faults.py', fault, *flags(killed)])
    assert result.returncode == code, (fault, result.stderr[-3000:])
    if fault.startswith('sigterm'):  # the log interval's first steps kept
      stopped = int(re.search(r'Stopped at step (\d+)', result.stderr)[1])
      checkpoints = checkpointing.manager(killed, read_only=True)
      unlogged = checkpointing.unlogged_metrics(checkpoints, stopped)
      checkpoints.close()
      assert unlogged['loss']['count'] == (stopped - 12) * 80
  checkpoints = os.listdir(os.path.join(killed, 'checkpoints'))
  assert '20' not in checkpoints  # killed before the last epoch's checkpoint

  # Out of device memory after the checkpoint of step 16: one line naming
  # the fixes, the checkpoints kept.
  result = conftest.run_python(['tests/faults.py', 'out_of_memory_after_step:18',
                                *flags(killed)])
  assert result.returncode == 1, result.stderr[-3000:]
  assert '16' in os.listdir(os.path.join(killed, 'checkpoints'))
  assert re.search(r'error: The device ran out of memory \(RESOURCE_EXHAUSTED: '
                   r'Out of memory while trying to allocate 8589934592 bytes'
                   r'\)\. Compute each batch in parts', result.stderr), (
                       result.stderr[-3000:])

  # The last checkpoint's files cannot grow: one clear error, nothing lost.
  result = conftest.run_python(['tests/faults.py', 'full_disk:20',
                                *flags(killed)])
  assert result.returncode == 1, result.stderr[-3000:]
  # Orbax's threads may print to stderr in the middle of the line at exit.
  errors = re.findall(r'error: (Could not write a checkpoint[^\n]*)',
                      result.stderr)
  assert errors, result.stderr[-3000:]
  assert 'File too large' in errors[0]
  assert 'the same command resumes from step 16' in errors[0]

  result = conftest.run_python(['-m', 'tiny_flax.main', *flags(killed)])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'from step 16' in result.stderr
  assert check_resume.differences(expected, killed) == []


def _workdir(path, weight, loss):
  checkpoints = checkpointing.manager(str(path))
  checkpointing.save(checkpoints, 4, {'params': {'w': jnp.full((3,), weight)}})
  checkpoints.wait_until_finished()
  checkpoints.close()
  writer = metric_writers.SummaryWriter(str(path))
  writer.write_scalars(4, {'train_loss': loss, 'steps_per_sec': loss})
  writer.close()
  return str(path)


def test_differences_are_found(tmp_path):
  """The comparison can fail: it names a changed leaf and logged metric."""
  expected = _workdir(tmp_path / 'a', 1.0, 2.0)
  assert check_resume.differences(expected, _workdir(tmp_path / 'b', 1.0, 2.0)) == []
  found = check_resume.differences(
      expected, _workdir(tmp_path / 'c', 1.0 + 2**-20, 2.5))
  assert found == ["['params']['w'] differs (largest difference 9.54e-07)",
                   'train_loss differs at steps [4]']


def test_the_random_interruptions_say_how_each_run_ended(tmp_path):
  """check_resume --signal=TERM: the signal reaches the run, and a run that
  saved and exited is reported with its step."""
  log = str(tmp_path / 'run.log')
  code, signalled = check_resume._run(
      [sys.executable, '-c', 'import time; time.sleep(60)'], log, 0.5,
      signal.SIGTERM)
  assert (code, signalled) == (-signal.SIGTERM, True)
  assert check_resume._run([sys.executable, '-c', ''], log, 30) == (0, False)
  with open(log, 'w') as f:
    f.write('W1208 train.py:262] Stopped at step 7 of 62, checkpoint saved\n')
  assert check_resume._outcome(0, log) == ', stopped at step 7'
  assert check_resume._outcome(-signal.SIGTERM, log) == ', exit status -15'
  assert check_resume._outcome(-signal.SIGKILL, log) == ''
