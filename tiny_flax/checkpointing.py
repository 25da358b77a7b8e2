"""Orbax checkpoints of the train state, and the workdir's record of its config.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so an interrupted save never leaves a checkpoint the next run would
restore. The latest `keep` checkpoints and the best by validation top-1 stay.
"""

import contextlib
import fcntl
import json
import os
import re
import socket
import time

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from tiny_flax import errors

# Changing one of these makes a checkpoint meaningless for the new run.
IDENTITY_KEYS = ('model', 'dataset.source', 'dataset.fake_train_per_class',
                 'dataset.fake_val_per_class')
BEST_METRIC = 'val_top1'


def _lookup(config_dict, dotted):
  value = config_dict
  for key in dotted.split('.'):
    value = value.get(key) if isinstance(value, dict) else None
  return value


def check_same_run(workdir, previous, config):
  """Refuses a config whose model or dataset differs from the workdir's run."""
  previous, current = previous.to_dict(), config.to_dict()
  for key in IDENTITY_KEYS:
    if _lookup(previous, key) != _lookup(current, key):
      raise errors.UserError(
          f'{workdir} holds a run with {key}={_lookup(previous, key)!r}, '
          f'but this config has {key}={_lookup(current, key)!r}. Pass a '
          'new --workdir, or the config that run used.')


def _write_atomically(path, text):
  """Readers see the old file or the new one; processes sharing it never clash."""
  tmp_path = f'{path}.tmp{os.getpid()}'
  with open(tmp_path, 'w') as f:
    f.write(text)
  os.replace(tmp_path, path)


def check_workdir(workdir, config):
  """Creates `workdir`, records the config, refuses a workdir of another run."""
  try:
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(os.path.join(workdir, 'config.json')):
      check_same_run(workdir, load_config(workdir), config)
    _write_atomically(os.path.join(workdir, 'config.json'),
                      config.to_json_best_effort(indent=2))
  except OSError as e:
    raise errors.UserError(
        f'Cannot write to workdir {workdir} ({e.strerror}). Pass a --workdir '
        'you can write to.') from e


def lock_workdir(workdir):
  """An open file holding WORKDIR/.lock: one live run per workdir.

  flock is released by the kernel when its process ends, however it ends, so
  a killed run never blocks the next. Only process 0 locks (a multi-host run
  shares its workdir).
  """
  path = os.path.join(workdir, '.lock')
  lock = open(path, 'a+')  # pylint: disable=consider-using-with
  if jax.process_index() > 0:
    return lock
  try:
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
  except BlockingIOError as e:
    lock.seek(0)
    holder = lock.read().strip() or 'another process'
    lock.close()
    raise errors.UserError(
        f'{workdir} is in use by {holder}. Wait for that run to end or stop '
        'it, or pass another --workdir.') from e
  lock.seek(0)
  lock.truncate()
  lock.write(f'process {os.getpid()} on {socket.gethostname()}\n')
  lock.flush()
  return lock


def load_config(workdir):
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise errors.UserError(f'{workdir} holds no run (no config.json).')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def _best_metric(metrics):
  return metrics[BEST_METRIC]


def save_class_names(workdir, class_names):
  """(wnid, name) per class index, so that predictions need no dataset."""
  _write_atomically(os.path.join(workdir, 'classes.json'),
                    json.dumps(class_names, indent=1))


def load_class_names(workdir):
  """The recorded (wnid, name) pairs, or None for a run that predates them."""
  path = os.path.join(workdir, 'classes.json')
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return [tuple(pair) for pair in json.load(f)]


def manager(workdir, keep=3, read_only=False):
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(keep),
      checkpoint_managers.BestN(get_metric_fn=_best_metric, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  # best_fn makes orbax store each step's metrics; the policy decides deletion.
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(
          preservation_policy=policy, best_fn=_best_metric, best_mode='max',
          read_only=read_only, create=not read_only,
          cleanup_tmp_directories=not read_only))


def save(checkpoints, step, state, metrics=None):
  """Starts an asynchronous save; training goes on while it is written.

  Without metrics (a save inside an epoch) the checkpoint is kept as one of
  the latest, never as the best.
  """
  with _storage_errors(checkpoints):
    checkpoints.save(step, args=ocp.args.StandardSave(state),
                     metrics=None if metrics is None else {
                         k: float(v) for k, v in metrics.items()})


def wait(checkpoints):
  """Blocks until the saves in flight are written."""
  with _storage_errors(checkpoints):
    checkpoints.wait_until_finished()


@contextlib.contextmanager
def _storage_errors(checkpoints):
  """A failed write (full disk, quota, unwritable) as one message.

  Orbax reports a failed asynchronous save at the next save or wait. The
  failed checkpoint stays a temporary folder, removed at the next start, so
  every checkpoint completed before it is intact.
  """
  try:
    yield
  # TensorStore reports OS errors (EFBIG, ENOSPC) as ValueErrors.
  except Exception as e:  # pylint: disable=broad-exception-caught
    complete = sorted(int(p.name) for p in checkpoints.directory.iterdir()
                      if p.name.isdigit())
    resume = (f'the same command resumes from step {complete[-1]}'
              if complete else 'no checkpoint is complete yet')
    raise errors.UserError(
        f'Could not write a checkpoint to {checkpoints.directory}: '
        f'{_os_error(e)}. Earlier checkpoints are intact ({resume}); free '
        'disk space, or pass a --workdir on a disk with room.') from e


def restore(checkpoints, state, which='best'):
  """`state` from the checkpoint `which` (best, latest or a step), and its step."""
  steps = checkpoints.all_steps()
  if not steps:
    raise errors.UserError(
        f'No checkpoint in {checkpoints.directory}: train first with '
        'python -m tiny_flax.main.')
  if which == 'best':
    # Checkpoints saved without metrics have no best: take the latest.
    step = checkpoints.best_step() or checkpoints.latest_step()
  elif which == 'latest':
    step = checkpoints.latest_step()
  elif str(which).isdigit() and int(which) in steps:
    step = int(which)
  else:
    raise errors.UserError(
        f'No checkpoint {which!r} in {checkpoints.directory}: use best, latest '
        f'or one of the steps {steps}.')
  return checkpoints.restore(step, args=ocp.args.StandardRestore(state)), step


def restore_latest(checkpoints, state):
  """`state` from the newest checkpoint that restores, or unchanged if none.

  A newer checkpoint that fails to restore while an older one restores was
  damaged after orbax committed it (truncated or overwritten files): it is
  moved to WORKDIR/unreadable_checkpoints with a warning, never deleted. When
  none restores, the config rather than the files is at fault: an error.
  """
  failures = []
  for step in sorted(checkpoints.all_steps(), reverse=True):
    try:
      restored = checkpoints.restore(step, args=ocp.args.StandardRestore(state))
    # TensorStore raises bare Exceptions, orbax ValueErrors and JSON errors.
    except Exception as e:  # pylint: disable=broad-exception-caught
      failures.append((step, e))
      continue
    if failures:
      _set_aside(checkpoints, failures)
    logging.info('Resuming from the checkpoint of step %d.', step)
    return restored
  if failures:
    step, error = failures[0]
    raise errors.UserError(
        f'No checkpoint in {checkpoints.directory} fits this config; the '
        f'latest (step {step}) fails with: {_first_line(error)}. Pass the '
        'config that run used (optimizer, model and precision must match), or '
        'a new --workdir.') from error
  return state


def _os_error(error):
  """The OS's reason inside a TensorStore error, which buries it in paths."""
  code = re.search(r"os_error_code='(\d+)'", str(error))
  if code:
    return f'{os.strerror(int(code.group(1)))} (errno {code.group(1)})'
  return _first_line(error)


def _first_line(error):
  return (str(error).splitlines() or [type(error).__name__])[0][:300]


def _set_aside(checkpoints, failures):
  """Moves unreadable checkpoints out of the manager's way, keeping their files."""
  directory = checkpoints.directory
  aside = directory.parent / 'unreadable_checkpoints'
  for step, error in failures:
    target = aside / f'{step}_{time.strftime("%Y%m%d-%H%M%S")}'
    logging.warning('The checkpoint of step %d does not restore (%s); moved '
                    'it to %s and resumed from an older one.', step,
                    _first_line(error), target)
    if jax.process_index() == 0:
      aside.mkdir(parents=True, exist_ok=True)
      (directory / str(step)).rename(target)
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices('unreadable checkpoints set aside')
  checkpoints.reload()
