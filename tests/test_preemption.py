"""Stopping and resuming: SIGTERM/SIGINT mid-epoch, timed checkpoints, one run per workdir."""

import errno
import fcntl
import os
import signal
import subprocess
import sys
from unittest import mock

import pytest

import conftest
from tiny_flax import errors
from tiny_flax import preemption
from tiny_flax import train
from tiny_flax import workdir as workdir_lib
from tiny_flax.data import locate


def _steps_saved(workdir):
  return sorted(int(n) for n in os.listdir(os.path.join(workdir, 'checkpoints'))
                if n.isdigit())


def _command(workdir, fake_config, *flags):
  return [sys.executable, '-m', 'tiny_flax.main', '--config=configs/smoke.py',
          f'--workdir={workdir}', '--config.log_every_steps=1',
          '--config.batch_size=80', '--config.steps_per_eval=1',
          '--config.num_epochs=2', *flags] + [
              f'--config.dataset.{key}={fake_config.dataset[key]}'
              for key in ('manual_dir', 'data_dir', 'fake_train_per_class',
                          'fake_val_per_class')]


def _start(command):
  return subprocess.Popen(
      command, cwd=conftest.REPO, env=dict(os.environ, PYTHONPATH=conftest.REPO),
      stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)


def _wait_for_step(process, step):
  """Reads the run's log until it has logged training step `step`."""
  lines = []
  for line in process.stderr:
    lines.append(line)
    if f'[{step}] learning_rate' in line:
      return lines
  raise AssertionError('the run ended before step %d:\n%s' % (
      step, ''.join(lines[-30:])))


def test_sigterm_mid_epoch_saves_that_step_and_the_same_command_resumes(
    fake_config, fake_builder, tmp_path):
  """Timed checkpoints every step (a tiny interval), then SIGTERM mid-epoch."""
  del fake_builder  # prepared once for the session
  workdir = tmp_path / 'run'
  command = _command(workdir, fake_config, '--config.num_epochs=1',
                     '--config.checkpoint_every_minutes=0.0001',
                     '--config.checkpoints_to_keep=50')
  process = _start(command)
  _wait_for_step(process, 3)  # 10 steps an epoch: mid-epoch
  process.send_signal(signal.SIGTERM)
  rest = process.stderr.read()
  assert process.wait(timeout=120) == 0, rest[-3000:]
  assert 'resume with the same command' in rest and 'Trained to' not in rest
  stopped = _steps_saved(workdir)[-1]
  assert 3 <= stopped < 10
  assert _steps_saved(workdir) == list(range(1, stopped + 1))
  resumed = subprocess.run(command, cwd=conftest.REPO, capture_output=True,
                           text=True, env=dict(os.environ,
                                               PYTHONPATH=conftest.REPO))
  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert f'from step {stopped}' in resumed.stderr
  assert 'Trained to step 10 of 10.' in resumed.stderr
  assert _steps_saved(workdir)[-1] == 10


def test_ctrl_c_before_training_is_one_line_and_exit_130(
    fake_config, fake_builder, tmp_path):
  """Before the loop serves Ctrl-C as a stop (data preparation, compilation):
  one line, no traceback, and no crash in Python's teardown while XLA still
  compiles in another thread (a segmentation fault, 1 exit in 3 before)."""
  del fake_builder  # prepared once for the session
  command = _command(tmp_path / 'run', fake_config)
  result = conftest.run_python(['tests/faults.py', 'ctrl_c_in_setup:0',
                                *command[3:]])
  assert result.returncode == 130, result.stderr[-3000:]
  assert result.stderr.rstrip().endswith(f'error: {errors.INTERRUPTED}'), (
      result.stderr[-3000:])
  assert 'Traceback' not in result.stderr
  assert not os.path.exists(tmp_path / 'run' / 'checkpoints')


def test_signals_are_recorded_with_their_exit_codes():
  """SIGTERM stops a run with 0 (resumable), Ctrl-C with 130, a second one at once.

  The handlers found at the start come back: Python's default for SIGINT, or
  SIG_IGN where a shell started the process in the background.
  """
  handlers_before = {s: signal.getsignal(s)
                     for s in (signal.SIGINT, signal.SIGTERM)}
  for signum, code in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
    stop = preemption.StopRequests(checkpoints=None)
    try:
      assert not stop.reached(1)
      os.kill(os.getpid(), signum)
      assert stop.reached(1) and stop.exit_code() == code
      if signum == signal.SIGINT:
        with pytest.raises(KeyboardInterrupt):
          os.kill(os.getpid(), signum)
    finally:
      stop.restore_handlers()
    assert {s: signal.getsignal(s) for s in handlers_before} == handlers_before


def test_a_live_run_holds_its_workdir(tmp_path):
  holder = subprocess.Popen(
      [sys.executable, '-c', 'import sys, time\n'
       'from tiny_flax import workdir as workdir_lib\n'
       f'lock = workdir_lib.lock_workdir({str(tmp_path)!r})\n'
       'print("locked", flush=True)\ntime.sleep(60)'],
      cwd=conftest.REPO, env=dict(os.environ, PYTHONPATH=conftest.REPO),
      stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == 'locked'
    with pytest.raises(errors.UserError, match=f'process {holder.pid} on'):
      workdir_lib.lock_workdir(str(tmp_path))
  finally:
    holder.kill()
    holder.wait()
  workdir_lib.lock_workdir(str(tmp_path)).close()  # a dead holder holds nothing


def test_without_file_locks_a_run_goes_on_unguarded(
    tmp_path, monkeypatch):
  """Some network file systems refuse flock: the workdir is used with a
  warning, the data prepared unlocked."""
  def no_locks(*_):
    raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
  monkeypatch.setattr(fcntl, 'flock', no_locks)
  with mock.patch.object(workdir_lib.logging, 'warning') as warning:
    workdir_lib.lock_workdir(str(tmp_path)).close()
  assert 'will not be refused' in warning.call_args[0][0]
  prepared = []
  with locate.preparing(str(tmp_path / 'data')):
    prepared.append(True)
  assert prepared


def test_a_diverging_run_stops_before_checkpointing_it(fake_config, fake_builder,
                                                      tmp_path):
  del fake_builder
  workdir = tmp_path / 'run'
  result = subprocess.run(
      _command(workdir, fake_config, '--config.learning_rate=1e12',
               '--config.schedule.warmup_epochs=0'),
      cwd=conftest.REPO, capture_output=True, text=True,
      env=dict(os.environ, PYTHONPATH=conftest.REPO))
  assert result.returncode == 1, result.stderr[-3000:]
  message = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert message and 'Training diverged by step' in message[0]
  assert 'learning_rate' in message[0]
  assert not os.path.isdir(workdir / 'checkpoints') or not _steps_saved(workdir)


class _Checkpoints:

  def __init__(self, latest):
    self._latest = latest

  def latest_step(self):
    return self._latest


def test_a_divergence_names_the_last_finite_loss_and_where_to_resume():
  last_finite = {}
  train._check_finite(10, {'train_loss': 2.5}, last_finite, _Checkpoints(None))
  with pytest.raises(errors.UserError) as raised:
    train._check_finite(20, {'val_loss': float('nan')}, last_finite,
                        _Checkpoints(10))
  assert ("{'val_loss': nan}; last finite training loss 2.5 at step 10; the "
          'same command resumes from the checkpoint of step 10. Lower '
          'config.learning_rate') in str(raised.value)
  with pytest.raises(errors.UserError) as raised:
    train._check_finite(20, {'train_loss': float('nan')}, {},
                        _Checkpoints(None))
  assert ('no finite training loss logged; no checkpoint was written.'
          in str(raised.value))
