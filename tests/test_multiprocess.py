"""Two processes x 4 CPU devices on localhost: as one process x 8, stopping together."""

import os
import re
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import conftest
from scripts import check_resume

# About 5 minutes of two cores: run with `python -m pytest -m slow`.
pytestmark = pytest.mark.slow


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _command(workdir, fake_config, *flags, batch_size=800):
  # The whole fake split in one global batch, no random augmentation, at a
  # low learning rate: the two layouts see the same examples per step and
  # differ only in the order of float sums (at lr 0.1 that grows to 4e-4 in
  # 3 steps between 8 and 4 devices of one process alike).
  return [sys.executable, '-m', 'tiny_flax.main', '--config=configs/smoke.py',
          f'--workdir={workdir}', '--progress=off',
          f'--config.batch_size={batch_size}',
          '--config.input.train=to_tensor', '--config.learning_rate=0.001',
          '--config.log_every_steps=1', '--config.steps_per_eval=1', *flags] + [
              f'--config.dataset.{key}={fake_config.dataset[key]}'
              for key in ('manual_dir', 'data_dir', 'fake_train_per_class',
                          'fake_val_per_class')]


def _start_pair(command, log_prefix):
  """The two processes, each logging to LOG_PREFIX.INDEX (no pipe to fill)."""
  port = _free_port()
  return [subprocess.Popen(
      command + [f'--coordinator_address=localhost:{port}',
                 '--num_processes=2', f'--process_id={index}'],
      cwd=conftest.REPO, stderr=open(f'{log_prefix}.{index}', 'w'),  # pylint: disable=consider-using-with
      stdout=subprocess.DEVNULL, env=dict(
          os.environ, PYTHONPATH=conftest.REPO,
          XLA_FLAGS='--xla_force_host_platform_device_count=4'))
          for index in range(2)]


def _largest_difference(a, b):
  return max(jax.tree.leaves(jax.tree.map(
      lambda x, y: float(np.max(np.abs(np.asarray(x) - np.asarray(y)))), a, b)))


def test_two_processes_train_as_one_stop_together_and_fail_together(
    fake_config, fake_builder, tmp_path):
  del fake_builder  # prepared once for the session
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  result = conftest.run_python(
      _command(one, fake_config, '--config.num_train_steps=2')[1:],
      env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert result.returncode == 0, result.stderr[-3000:]

  pair = _start_pair(_command(two, fake_config, '--config.num_train_steps=2'),
                     tmp_path / 'first')
  logs = _wait(pair, tmp_path / 'first')
  for process, log in zip(pair, logs):
    assert process.returncode == 0, log[-3000:]
  assert 'Process 1 of 2; local devices' in logs[1]
  assert 'on 8 devices with shard_map' in logs[0]

  # The pair's checkpoint restores in this single process.
  step_one, expected = check_resume.final_checkpoint(one)
  step_two, state = check_resume.final_checkpoint(two)
  assert step_one == step_two == 2
  assert _largest_difference(expected['params'], state['params']) < 1e-5
  assert _largest_difference(expected['batch_stats'],
                             state['batch_stats']) < 1e-5

  # SIGTERM to both (as SLURM sends it): they agree on one step to stop at.
  # Batches of 80 from here on: 10 steps an epoch, fast ones.
  pair = _start_pair(_command(two, fake_config, '--config.num_train_steps=50',
                              batch_size=80),
                     tmp_path / 'stopped')
  _wait_for_step(pair[1], tmp_path / 'stopped.1', 4)
  for process in pair:
    process.send_signal(signal.SIGTERM)
  logs = _wait(pair, tmp_path / 'stopped')
  for process, log in zip(pair, logs):
    assert process.returncode == 0, log[-3000:]
  assert 'from step 2' in logs[0]
  stopped = {re.search(r'Stopped at step (\d+) of 50', log).group(1)
             for log in logs}
  assert len(stopped) == 1, stopped
  stopped = int(stopped.pop())
  assert check_resume.final_checkpoint(two)[0] == stopped

  # Resumed again: when process 1 dies, process 0 exits with an error.
  pair = _start_pair(_command(two, fake_config, '--config.num_train_steps=50',
                              '--heartbeat_timeout_seconds=10', batch_size=80),
                     tmp_path / 'killed')
  _wait_for_step(pair[1], tmp_path / 'killed.1', stopped + 3)
  pair[1].kill()
  log = _wait(pair, tmp_path / 'killed')[0]
  assert pair[0].returncode != 0, log[-3000:]


def _validation(log):
  """{metric: value} of the last validation a log reports."""
  found = re.findall(r"'val_loss': ([\d.e-]+), 'val_top1': ([\d.e-]+)", log)
  assert found, log[-3000:]
  return [float(v) for v in found[-1]]


def test_two_processes_train_from_device_memory_as_one(fake_config,
                                                       fake_builder, tmp_path):
  """Each process holds its share of both splits; together they are one run."""
  del fake_builder  # prepared once for the session
  one, two = str(tmp_path / 'one'), str(tmp_path / 'two')
  flags = ('--config.num_train_steps=2', '--config.input.on_device=true')
  result = conftest.run_python(
      _command(one, fake_config, *flags)[1:],
      env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert result.returncode == 0, result.stderr[-3000:]
  pair = _start_pair(_command(two, fake_config, *flags), tmp_path / 'pair')
  logs = _wait(pair, tmp_path / 'pair')
  for process, log in zip(pair, logs):
    assert process.returncode == 0, log[-3000:]
    assert 'Training and validation splits resident on the devices' in log
  assert 'on 8 devices with shard_map' in logs[0]
  _, expected = check_resume.final_checkpoint(one)
  _, state = check_resume.final_checkpoint(two)
  assert _largest_difference(expected['params'], state['params']) < 1e-5
  # Every validation example counted once, whichever process holds it.
  np.testing.assert_allclose(_validation(logs[0]),
                             _validation(result.stderr), atol=1e-4)


def test_two_processes_size_a_time_budget_by_process_0s_clock(
    fake_config, fake_builder, tmp_path):
  """Process 1's clock reads the budget spent when the run is sized: alone it
  would stop after the measured epoch, but both train the 3 epochs that
  process 0 chose, and end together."""
  del fake_builder  # prepared once for the session
  workdir = tmp_path / 'run'
  command = _command(str(workdir), fake_config, '--config.num_epochs=3',
                     '--config.time_budget_minutes=10',
                     '--config.schedule.warmup_epochs=1', batch_size=80)
  command[1:3] = ['tests/faults.py', 'budget_spent_in:1']
  pair = _start_pair(command, tmp_path / 'budget')
  logs = _wait(pair, tmp_path / 'budget')
  for process, log in zip(pair, logs):
    assert process.returncode == 0, log[-3000:]
    assert '3 of at most 3 epochs' in log, log[-3000:]
  assert '600 s spent by the end of epoch 1' in logs[1]  # the fault acted
  assert check_resume.final_checkpoint(str(workdir))[0] == 30  # 10 an epoch


def _wait_for_step(process, log_path, step):
  while f'[{step}] learning_rate' not in log_path.read_text():
    assert process.poll() is None, f'the process ended before step {step}'
    time.sleep(0.2)


def _wait(pair, log_prefix, timeout=300):
  """The logs of both processes once they end; kills them after `timeout`."""
  try:
    for process in pair:
      process.wait(timeout=timeout)
  finally:
    for process in pair:
      process.kill()
  return [open(f'{log_prefix}.{index}').read() for index in range(2)]
