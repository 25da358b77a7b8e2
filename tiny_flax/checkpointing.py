"""Orbax checkpoints of the train state: save, wait, restore.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so an interrupted save never leaves a checkpoint the next run would
restore. The latest `keep` checkpoints and the best by validation top-1 stay:
the top-1 of the weights that evaluate and export use, the moving average's
where a run keeps one.
"""

import contextlib
import os
import re
import time

from absl import logging
from flax import serialization
import jax
from jax.experimental import multihost_utils
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers

from tiny_flax import errors

_UNLOGGED = 'train_metrics_since_last_log'


def _best_metric(metrics):
  return metrics.get('val_ema_top1', metrics['val_top1'])


def _directory(workdir):
  return os.path.join(os.path.abspath(workdir), 'checkpoints')


def _complete_steps(directory):
  """Steps of the finished checkpoints in `directory`, sorted: orbax names
  each by its step, one being written has a temporary name."""
  if not os.path.isdir(directory):
    return []
  return sorted(int(name) for name in os.listdir(directory) if name.isdigit())


def holds_checkpoints(workdir):
  """Whether a run finished a checkpoint in `workdir`."""
  return bool(_complete_steps(_directory(workdir)))


def manager(workdir, keep=3, read_only=False):
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(keep),
      checkpoint_managers.BestN(get_metric_fn=_best_metric, n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  # best_fn makes orbax store each step's metrics; the policy decides deletion.
  # The handler named, so that a checkpoint's metadata (`saved_fields`) reads
  # before any save or restore.
  return ocp.CheckpointManager(
      _directory(workdir),
      item_handlers=ocp.StandardCheckpointHandler(),
      options=ocp.CheckpointManagerOptions(
          preservation_policy=policy, best_fn=_best_metric, best_mode='max',
          read_only=read_only, create=not read_only,
          cleanup_tmp_directories=not read_only))


def save(checkpoints, step, state, metrics=None, unlogged=None):
  """Starts an asynchronous save; training goes on while it is written.

  Without metrics (a save inside an epoch) the checkpoint is kept as one of
  the latest, never as the best. `unlogged`: the merged training metrics
  (a clu collection) of the steps since the last log, when a stop falls
  between log steps; they go into the checkpoint's metadata, for the
  resumed run's first log (`unlogged_metrics`).
  """
  custom = None
  if unlogged is not None:  # float32 and int32 round-trip through JSON
    custom = {_UNLOGGED: jax.tree.map(
        lambda x: x.item(),
        serialization.to_state_dict(jax.device_get(unlogged)))}
  with _storage_errors(checkpoints):
    checkpoints.save(step, args=ocp.args.StandardSave(state),
                     metrics=None if metrics is None else {
                         k: float(v) for k, v in metrics.items()},
                     custom_metadata=custom)


def unlogged_metrics(checkpoints, step):
  """The state dict of the unlogged metrics saved with the checkpoint of
  `step` (`save`), or None."""
  if step not in checkpoints.all_steps():
    return None
  return (checkpoints.metadata(step).custom_metadata or {}).get(_UNLOGGED)


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
    complete = _complete_steps(str(checkpoints.directory))
    resume = (f'the same command resumes from step {complete[-1]}'
              if complete else 'no checkpoint is complete yet')
    raise errors.UserError(
        f'Could not write a checkpoint to {checkpoints.directory}: '
        f'{_os_error(e)}. Earlier checkpoints are intact ({resume}); free '
        'disk space, or pass a --workdir on a disk with room.') from e


def find_step(checkpoints, which='best'):
  """The step of the checkpoint `which`: best, latest or a step number."""
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
  return step


def saved_fields(checkpoints, step):
  """The names of the state's fields in the checkpoint of `step`."""
  return set(checkpoints.item_metadata(step).tree)


def restore(checkpoints, state, step):
  """`state` from the checkpoint of `step` (`find_step`)."""
  return checkpoints.restore(step, args=ocp.args.StandardRestore(state))


def read(workdir, which, restore_fn, attempts=3):
  """(restore_fn(checkpoints, step), step) for the checkpoint `which`
  (find_step) of `workdir`, opened read-only.

  The run that writes the workdir may be live, deleting all but its latest
  and best checkpoints: a read that fails as checkpoints are deleted is
  made again (`which` may then name another), up to `attempts` times.
  Other errors are raised.
  """
  directory = _directory(workdir)
  for attempt in range(attempts):
    listed = _complete_steps(directory)
    checkpoints = None
    try:
      checkpoints = manager(workdir, read_only=True)
      step = find_step(checkpoints, which)
      return restore_fn(checkpoints, step), step
    except Exception:  # pylint: disable=broad-exception-caught
      deleted = sorted(set(listed) - set(_complete_steps(directory)))
      if not deleted or attempt + 1 == attempts:
        raise
      logging.warning('Checkpoints %s were deleted while they were read (by '
                      'the run training in %s); reading %r again.', deleted,
                      workdir, which)
    finally:
      if checkpoints is not None:
        checkpoints.close()


def restore_latest(checkpoints, state, fit=lambda state, saved_fields: state):
  """`state` from the newest checkpoint that restores, or unchanged if none.

  `fit(state, saved_fields)`: the template for a checkpoint holding the
  fields named in `saved_fields`; the restored state has its structure.

  A newer checkpoint that fails to restore while an older one restores was
  damaged after orbax committed it (truncated or overwritten files): it is
  moved to WORKDIR/unreadable_checkpoints with a warning, never deleted. When
  none restores, the config rather than the files is at fault: an error.
  """
  failures = []
  for step in sorted(checkpoints.all_steps(), reverse=True):
    try:
      template = fit(state, saved_fields(checkpoints, step))
      restored = checkpoints.restore(step,
                                     args=ocp.args.StandardRestore(template))
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
