"""Command line of the trainer.

    python -m tiny_flax.main --config=configs/resnet18.py --workdir=runs/resnet18

Values of the config can be overridden (`--config.num_epochs=2`); running the
same command again resumes from the latest checkpoint in the workdir. Without
`--workdir` a run goes to runs/CONFIG (runs/CONFIG_VARIANT for
`--config=configs/CONFIG.py:VARIANT`). `--print_config` prints the resolved
config and exits. Training on a Linux CPU, the command first restarts itself
once with malloc tunables that keep XLA:CPU's large buffers mapped between
steps (tiny_flax/platform/launch.py), before it imports anything heavy.
"""

# pylint: disable=g-import-not-at-top,wrong-import-position
from tiny_flax.platform import launch

if __name__ == '__main__':
  launch.restart_with_malloc_tunables()

import logging as py_logging
import os

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from tiny_flax import errors
from tiny_flax import train
from tiny_flax.platform import backend

_CONFIG = config_flags.DEFINE_config_file(
    'config', None, 'Path of a config file (configs/*.py).', lock_config=True)
_WORKDIR = flags.DEFINE_string(
    'workdir', None, 'Folder of the run: checkpoints, TensorBoard events. '
    'Default: runs/ and the config\'s name (and variant).')
_PRINT_CONFIG = flags.DEFINE_bool(
    'print_config', False, 'Print the resolved config and exit.')
_PROGRESS = flags.DEFINE_enum(
    'progress', 'auto', ['auto', 'on', 'off'], 'Live progress bars: auto '
    'draws them when the output is a terminal.')
_DISTRIBUTED = flags.DEFINE_bool(
    'distributed', None, 'Call jax.distributed.initialize() (multi-process '
    'runs). Default: when a cluster environment is detected or '
    '--coordinator_address is given.')
_COORDINATOR = flags.DEFINE_string(
    'coordinator_address', None, 'HOST:PORT of process 0 in a multi-process '
    'run that no cluster (TPU slice, SLURM, Open MPI) describes; with '
    '--num_processes and --process_id.')
_NUM_PROCESSES = flags.DEFINE_integer(
    'num_processes', None, 'Processes of a --coordinator_address run.')
_PROCESS_ID = flags.DEFINE_integer(
    'process_id', None, 'This process in a --coordinator_address run (0 on '
    'the coordinator\'s host).')
_HEARTBEAT = flags.DEFINE_integer(
    'heartbeat_timeout_seconds', 100, 'In a multi-process run, how long the '
    'other processes wait for one that stopped answering before they exit '
    'with an error.')
flags.mark_flags_as_required(['config'])

# Environment variables through which jax.distributed finds its cluster.
_CLUSTER_VARIABLES = ('JAX_COORDINATOR_ADDRESS', 'SLURM_STEP_NUM_TASKS',
                      'OMPI_COMM_WORLD_SIZE', 'TPU_WORKER_HOSTNAMES')


class _HideLibraryInfo(py_logging.Filter):
  """Drops orbax's INFO records (a dozen lines per checkpoint)."""

  def filter(self, record):
    return record.levelno > py_logging.INFO or '/orbax/' not in record.pathname


def _is_multi_process():
  if _DISTRIBUTED.value is not None:
    return _DISTRIBUTED.value
  if _COORDINATOR.value:
    return True
  hosts = os.environ.get('TPU_WORKER_HOSTNAMES', '')
  return ',' in hosts or any(
      v in os.environ for v in _CLUSTER_VARIABLES if v != 'TPU_WORKER_HOSTNAMES')


def default_workdir(config_filename):
  """runs/NAME for configs/NAME.py, runs/NAME_VARIANT for configs/NAME.py:VARIANT."""
  path, _, variant = config_filename.partition(':')
  name = os.path.splitext(os.path.basename(path))[0]
  return os.path.join('runs', f'{name}_{variant}' if variant else name)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  if _PRINT_CONFIG.value:
    print(_CONFIG.value)
    return
  workdir = _WORKDIR.value or default_workdir(
      config_flags.get_config_filename(flags.FLAGS['config']))
  logging.get_absl_handler().addFilter(_HideLibraryInfo())
  if _is_multi_process():
    jax.distributed.initialize(
        _COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value,
        heartbeat_timeout_seconds=_HEARTBEAT.value)
  logging.info('Process %d of %d; local devices: %s', jax.process_index(),
               jax.process_count(), jax.local_devices())
  backend.use_compilation_cache()
  with errors.exit_on_user_error():
    return train.train_and_validate(_CONFIG.value, workdir, _PROGRESS.value)


if __name__ == '__main__':
  app.run(main, flags_parser=errors.parse_flags)
