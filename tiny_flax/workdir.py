"""A run's folder: one live run at a time, its config and its class names.

WORKDIR/config.json records the config of the latest start (once the run has
checkpoints, a later command with another model or dataset is refused),
WORKDIR/classes.json the class names for prediction without the dataset,
WORKDIR/.lock the live run. Checkpoints live under WORKDIR/checkpoints
(checkpointing.py).
"""

import fcntl
import json
import os
import socket

from absl import logging
import jax
import ml_collections

from tiny_flax import checkpointing
from tiny_flax import errors
from tiny_flax import hparams

# Changing one of these makes a checkpoint meaningless for the new run.
IDENTITY_KEYS = ('model', 'dataset.source', 'dataset.fake_train_per_class',
                 'dataset.fake_val_per_class')


def _lookup(config_dict, dotted):
  value = config_dict
  for key in dotted.split('.'):
    value = value.get(key) if isinstance(value, dict) else None
  return value


def check_same_run(workdir, previous, config):
  """Refuses a config whose model or dataset differs from the workdir's run;
  warns of another batch size, which the run takes but which moves its
  epochs and schedule against the steps it has trained, and names every
  other value changed since the last start (a flag forgotten or added)."""
  changed = _changed_values(previous, config)
  previous, current = previous.to_dict(), config.to_dict()
  for key in IDENTITY_KEYS:
    if _lookup(previous, key) != _lookup(current, key):
      raise errors.UserError(
          f'{workdir} holds a run with {key}={_lookup(previous, key)!r}, '
          f'but this config has {key}={_lookup(current, key)!r}. Pass a '
          'new --workdir, or the config that run used.')
  if 'batch_size' in changed:
    logging.warning(
        '%s holds a run of batch_size=%s, resumed at batch_size=%s: its '
        'steps so far count as other epochs, and its data order and '
        'learning-rate schedule change. To fit a device with less memory, '
        'keep the batch and compute it in parts (--config.microbatches=2, '
        '4, ...).', workdir, *changed.pop('batch_size'))
  if changed:
    logging.warning(
        '%s is resumed with config values other than its last start\'s: %s. '
        'The run goes on with these.', workdir,
        ', '.join(f'{key}={old!r} -> {new!r}'
                  for key, (old, new) in changed.items()))


def _changed_values(previous, config):
  """{dotted key: (previous, current)} of the values that differ, the current
  config read back as config.json records it (tuples become lists)."""
  before = hparams.flat(previous)
  now = hparams.flat(ml_collections.ConfigDict(
      json.loads(config.to_json_best_effort())))
  return {key: (before.get(key), now.get(key))
          for key in sorted(before.keys() | now.keys())
          if before.get(key) != now.get(key)}


def write_atomically(path, text):
  """Readers see the old file or the new one; processes sharing it never clash."""
  tmp_path = f'{path}.tmp{os.getpid()}'
  with open(tmp_path, 'w') as f:
    f.write(text)
  os.replace(tmp_path, path)


def _unwritable(workdir, error):
  return errors.UserError(
      f'Cannot write to workdir {workdir} ({error.strerror}). Pass a '
      '--workdir you can write to.')


def check_workdir(workdir, config):
  """Records the config; refuses it where checkpoints of another run are.

  A workdir without checkpoints takes any config: a run that stopped before
  its first save (missing data, a device out of memory) leaves nothing to
  protect.
  """
  try:
    if (checkpointing.holds_checkpoints(workdir)
        and os.path.exists(os.path.join(workdir, 'config.json'))):
      check_same_run(workdir, load_config(workdir), config)
    write_atomically(os.path.join(workdir, 'config.json'),
                      config.to_json_best_effort(indent=2))
  except OSError as e:
    raise _unwritable(workdir, e) from e


def lock_workdir(workdir):
  """An open file holding WORKDIR/.lock (the folder made if need be): one
  live run per workdir.

  flock is released by the kernel when its process ends, however it ends, so
  a killed run never blocks the next. Only process 0 locks (a multi-host run
  shares its workdir).
  """
  try:
    os.makedirs(workdir, exist_ok=True)
    lock = open(os.path.join(workdir, '.lock'), 'a+')  # pylint: disable=consider-using-with
  except OSError as e:
    raise _unwritable(workdir, e) from e
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
  except OSError as e:  # a file system without locks (some network mounts)
    logging.warning('Cannot lock %s (%s): a second run started on this '
                    'workdir will not be refused.', workdir, e.strerror)
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


def save_class_names(workdir, class_names):
  """(wnid, name) per class index, so that predictions need no dataset."""
  write_atomically(os.path.join(workdir, 'classes.json'),
                    json.dumps(class_names, indent=1))


def load_class_names(workdir):
  """The recorded (wnid, name) pairs."""
  path = os.path.join(workdir, 'classes.json')
  if not os.path.exists(path):
    raise errors.UserError(f'{workdir} holds no class names (no classes.json): '
                           'train there first with python -m tiny_flax.main.')
  with open(path) as f:
    return [tuple(pair) for pair in json.load(f)]
