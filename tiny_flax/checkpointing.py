"""Orbax checkpoints of the train state, and the workdir's record of its config.

Orbax writes each checkpoint to a temporary folder and renames it when
complete, so an interrupted save never leaves a checkpoint the next run would
restore. The latest `keep` checkpoints and the best by validation top-1 stay.
"""

import json
import os

from absl import logging
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


def check_workdir(workdir, config):
  """Creates `workdir`, records the config, refuses a workdir of another run."""
  path = os.path.join(workdir, 'config.json')
  try:
    os.makedirs(workdir, exist_ok=True)
    if os.path.exists(path):
      with open(path) as f:
        previous = json.load(f)
      current = config.to_dict()
      for key in IDENTITY_KEYS:
        if _lookup(previous, key) != _lookup(current, key):
          raise errors.UserError(
              f'{workdir} holds a run with {key}={_lookup(previous, key)!r}, '
              f'but this config has {key}={_lookup(current, key)!r}. Pass a '
              'new --workdir, or the config that run used.')
    tmp_path = path + '.tmp'
    with open(tmp_path, 'w') as f:
      f.write(config.to_json_best_effort(indent=2))
    os.replace(tmp_path, path)
  except OSError as e:
    raise errors.UserError(
        f'Cannot write to workdir {workdir} ({e.strerror}). Pass a --workdir '
        'you can write to.') from e


def load_config(workdir):
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise errors.UserError(f'{workdir} holds no run (no config.json).')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def manager(workdir, keep=3, read_only=False):
  policy = checkpoint_managers.AnyPreservationPolicy([
      checkpoint_managers.LatestN(keep),
      checkpoint_managers.BestN(get_metric_fn=lambda m: m[BEST_METRIC], n=1,
                                keep_checkpoints_without_metrics=False),
  ])
  return ocp.CheckpointManager(
      os.path.join(os.path.abspath(workdir), 'checkpoints'),
      options=ocp.CheckpointManagerOptions(
          preservation_policy=policy, read_only=read_only,
          create=not read_only, cleanup_tmp_directories=not read_only))


def save(checkpoints, step, state, metrics):
  """Starts an asynchronous save; training goes on while it is written."""
  checkpoints.save(step, args=ocp.args.StandardSave(state),
                   metrics={k: float(v) for k, v in metrics.items()})


def restore_latest(checkpoints, state):
  """`state` restored from the latest checkpoint, or unchanged if none."""
  step = checkpoints.latest_step()
  if step is None:
    return state
  logging.info('Resuming from the checkpoint of step %d.', step)
  return checkpoints.restore(step, args=ocp.args.StandardRestore(state))
