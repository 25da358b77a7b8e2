"""Kills a training run at random moments and checks it ends as if never stopped.

    python -m scripts.check_resume --check_dir=/tmp/resume_check --kills=3 -- \
        --config=configs/smoke.py --config.num_epochs=2

The flags after `--` are tiny_flax.main's. The run is trained once without
interruption in OUT/uninterrupted, then in OUT/killed it is SIGKILLed
`--kills` times, at moments drawn from `--kill_seed` within the first run's
duration, restarted with the same command each time, and run to the end. The
two final checkpoints (params, batch statistics, optimizer state) and the
logged training and validation metrics (the last value of each tag at each
step) must be bitwise equal. Exit status 0 when they are, 1 with the
differences listed. `--signal=TERM` sends SIGTERM instead, as Colab, SLURM
and preemptible VMs do: each run saves the step it is at and exits.
"""

import os
import random
import re
import signal
import subprocess
import sys
import time

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags
import jax
import numpy as np
import orbax.checkpoint as ocp

from tiny_flax import checkpointing
from tiny_flax import report

_CHECK_DIR = flags.DEFINE_string('check_dir', None,
                                'Folder for the two workdirs and logs.')
_KILLS = flags.DEFINE_integer('kills', 3, 'SIGKILLs before the final run.')
_KILL_SEED = flags.DEFINE_integer('kill_seed', 0, 'Seed of the kill moments.')
_SIGNAL = flags.DEFINE_enum(
    'signal', 'KILL', ['KILL', 'TERM'],
    'KILL: a crash or an out-of-memory kill; TERM: a preemption, which the '
    'run answers by saving its step and exiting.')
flags.mark_flags_as_required(['check_dir'])

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Logged values that depend on the step only; timings (steps_per_sec, uptime)
# do not.
LOGGED_PREFIXES = ('train_', 'val_', 'learning_rate', 'epoch')


def final_checkpoint(workdir):
  """(step, state tree as saved) of the workdir's latest checkpoint.

  Restored onto this process's first device, whatever devices saved it.
  """
  checkpoints = checkpointing.manager(workdir, read_only=True)
  step = checkpoints.latest_step()
  item = checkpoints.directory / str(step) / 'default'
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda leaf: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=device),
      ocp.StandardCheckpointer().metadata(item).item_metadata)
  state = ocp.StandardCheckpointer().restore(item, target)
  checkpoints.close()
  return step, state


def logged_metrics(workdir):
  return {tag: values for tag, values in report.read_scalars(workdir).items()
          if tag.startswith(LOGGED_PREFIXES)}


def differences(expected_workdir, workdir):
  """What differs between two runs' final states and logged metrics."""
  found = []
  expected_step, expected = final_checkpoint(expected_workdir)
  step, state = final_checkpoint(workdir)
  if step != expected_step:
    found.append(f'latest checkpoint at step {step}, expected {expected_step}')
  expected_leaves = dict(jax.tree_util.tree_leaves_with_path(expected))
  leaves = dict(jax.tree_util.tree_leaves_with_path(state))
  if expected_leaves.keys() != leaves.keys():
    found.append('the checkpoints hold different trees')
  for path in expected_leaves.keys() & leaves.keys():
    a, b = np.asarray(expected_leaves[path]), np.asarray(leaves[path])
    if a.shape != b.shape or a.tobytes() != b.tobytes():
      found.append(f'{jax.tree_util.keystr(path)} differs (largest difference '
                   f'{np.max(np.abs(a.astype(np.float64) - b)):.3g})')
  expected_logs, logs = logged_metrics(expected_workdir), logged_metrics(workdir)
  for tag in sorted(expected_logs.keys() | logs.keys()):
    a, b = expected_logs.get(tag, {}), logs.get(tag, {})
    if a.keys() != b.keys():
      found.append(f'{tag} logged at steps {sorted(b)}, expected {sorted(a)}')
    changed = [s for s in a.keys() & b.keys() if a[s] != b[s]]
    if changed:
      found.append(f'{tag} differs at steps {sorted(changed)}')
  return sorted(found)


def _train_command(workdir, main_flags):
  return [sys.executable, '-m', 'tiny_flax.main', f'--workdir={workdir}',
          '--progress=off', *main_flags]


def _run(command, log_path, kill_after=None, signum=signal.SIGKILL):
  """(exit status, whether it was signalled): runs `command`, sends it
  `signum` after `kill_after` seconds if still running."""
  with open(log_path, 'w') as log:
    process = subprocess.Popen(
        command, stdout=log, stderr=subprocess.STDOUT,
        env=dict(os.environ, PYTHONPATH=os.pathsep.join(
            filter(None, [REPO, os.environ.get('PYTHONPATH')]))))
    try:
      return process.wait(timeout=kill_after), False
    except subprocess.TimeoutExpired:
      process.send_signal(signum)
      return process.wait(), True


def _outcome(code, log_path):
  """How a signalled run ended, from its exit status and log."""
  if code == 0:
    with open(log_path) as log:
      stopped = re.findall(r'Stopped at step (\d+)', log.read())
    return f', stopped at step {stopped[-1]}' if stopped else ', exit status 0'
  return f', exit status {code}' if code != -signal.SIGKILL else ''


def main(argv):
  main_flags = argv[1:]
  if not any(f.startswith('--config=') for f in main_flags):
    raise app.UsageError('Pass tiny_flax.main\'s flags after --, with '
                         '--config=.')
  out = os.path.abspath(_CHECK_DIR.value)
  expected, killed = (os.path.join(out, name)
                      for name in ('uninterrupted', 'killed'))
  for workdir in (expected, killed):
    if os.path.exists(workdir):
      raise app.UsageError(f'{workdir} exists: pass a new --check_dir.')
  os.makedirs(killed)
  started = time.monotonic()
  if _run(_train_command(expected, main_flags),
          os.path.join(out, 'uninterrupted.log'))[0]:
    sys.exit(f'The uninterrupted run failed: see {out}/uninterrupted.log')
  duration = time.monotonic() - started
  print(f'Uninterrupted run: {duration:.0f} s.')
  moments = random.Random(_KILL_SEED.value)
  command = _train_command(killed, main_flags)
  signum = signal.Signals[f'SIG{_SIGNAL.value}']
  for attempt in range(_KILLS.value):
    kill_after = moments.uniform(0, duration)
    log_path = os.path.join(out, f'killed_{attempt}.log')
    code, signalled = _run(command, log_path, kill_after, signum)
    print(f'Attempt {attempt}: ' + (
        f'{signum.name} after {kill_after:.1f} s{_outcome(code, log_path)}.'
        if signalled else f'ended with exit status {code} before its '
        f'{signum.name} at {kill_after:.1f} s.'))
  if _run(command, os.path.join(out, 'final.log'))[0]:
    sys.exit(f'The final resumed run failed: see {out}/final.log')
  found = differences(expected, killed)
  for line in found:
    print(line)
  print('Equal: the killed run ended bitwise as the uninterrupted one.'
        if not found else f'{len(found)} differences.')
  sys.exit(1 if found else 0)


if __name__ == '__main__':
  app.run(main)
