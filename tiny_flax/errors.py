"""The one exception type for mistakes a user can fix (data, config, workdir),
the entry points' one way out for it, and their flag parsing, which gives a
mistyped config file, key or variant the same one line."""

import contextlib
import difflib
import inspect
import os
import re
import runpy
import sys

from absl import app
from absl import logging
import ml_collections

# The status of XLA's allocation failures, on GPUs and TPUs alike: at run
# time ("Out of memory while trying to allocate N bytes", "Failed to allocate
# request for ...") and at compile time (a TPU's "Ran out of memory in memory
# space hbm").
_OUT_OF_MEMORY = 'RESOURCE_EXHAUSTED'


class UserError(Exception):
  """Its message names the problem and the fix; entry points exit 1 on it."""


def require(ok, name, rule, value):
  """A UserError naming config value `name`, its `rule` and `value`, unless `ok`."""
  if not ok:
    raise UserError(f'{name} must be {rule}, got {value!r}.')


def out_of_memory(error):
  """The UserError for a device's allocation failure (a jax.errors.
  JaxRuntimeError), else None: the config asked for more than the device
  holds."""
  if not isinstance(error, RuntimeError):
    return None
  found = [line for line in str(error).splitlines() if _OUT_OF_MEMORY in line]
  if not found:
    return None
  return UserError(
      f'The device ran out of memory ({found[0].strip().rstrip(".")}). '
      'Compute each batch in parts (--config.microbatches=2, 4, ...), or '
      'lower --config.batch_size (and the learning rate with it), or set '
      '--config.half_precision=true, or keep the input on the host '
      '(--config.input.on_device=false); or '
      'end the other process that holds the device (a notebook that '
      'imported JAX holds 75% of a GPU unless XLA_PYTHON_CLIENT_PREALLOCATE'
      '=false).')


INTERRUPTED = ('interrupted (Ctrl-C). Files are written whole or not at all, '
               'so the same command starts again; a training run resumes '
               'from its latest checkpoint.')


@contextlib.contextmanager
def exit_on_user_error():
  """The entry points' shared ending for a UserError, or a device out of
  memory: one line, exit code 1; for Ctrl-C where no stop is served (data
  preparation, compilation, a second Ctrl-C): one line, exit code 130."""
  try:
    yield
  except UserError as e:
    _exit(e)
  except KeyboardInterrupt:
    print(f'error: {INTERRUPTED}', file=sys.stderr)
    # An interrupted compilation or tf.data read goes on in other threads,
    # and Python's teardown under them can crash: end here, streams flushed.
    logging.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)  # pylint: disable=protected-access
  except RuntimeError as e:
    user_error = out_of_memory(e)
    if user_error is None:
      raise
    logging.error('%s', e)  # XLA's report of the buffers, for the curious
    _exit(user_error)


# A command-line override of a config value: --config.KEY=..., --noconfig.KEY.
_OVERRIDE = re.compile(r'^--?(?:no)?config\.([^=]+)')


def parse_flags(argv):
  """absl's flag parsing (app.run's `flags_parser`), with a config's own
  mistakes in one line: an override without a config file, an override
  naming no key of the config (ml_collections raises a bare AttributeError
  or KeyError), a config file that is not there or takes no variant, and a
  config file's UserError (an unknown variant)."""
  spec = _config_file(argv)
  if spec is None:
    override = next((arg for arg in argv[1:] if _OVERRIDE.match(arg)), None)
    if override:
      _exit(f'{override.split("=")[0]} changes a value of a config: name the '
            'config file too, before it (--config=configs/NAME.py).')
  elif problem := config_file_problem(spec):
    _exit(problem)
  try:
    return app.parse_flags_with_usage(argv)
  except UserError as e:
    _exit(e)
  except (AttributeError, KeyError):
    message = unknown_config_key(argv)
    if message is None:  # raised by the config file itself: its traceback
      raise
    _exit(message)


def _exit(message):
  print(f'error: {message}', file=sys.stderr)
  sys.exit(1)


def _config_file(argv):
  """The value of --config (FILE[:VARIANT]) in `argv`, or None."""
  found = None
  for i, arg in enumerate(argv):
    if arg in ('-config', '--config') and i + 1 < len(argv):
      found = argv[i + 1]
    elif arg.startswith(('-config=', '--config=')):
      found = arg.split('=', 1)[1]
  return found


def config_file_problem(spec):
  """What keeps `--config=spec` (FILE[:VARIANT]) from loading, or None: no
  such file (ml_collections defers its error to a traceback at the first
  use), or a variant given to a config that takes none."""
  path, colon, variant = spec.partition(':')
  if not os.path.isfile(path):
    folder = os.path.dirname(path)
    names = _configs_in(folder)
    if not names:  # a path from elsewhere: the project's own configs
      folder, names = 'configs', _configs_in('configs')
    if not names:
      return (f'--config={spec}: no config file {path}; run from the folder '
              f'that holds configs/ (here: {os.getcwd()}).')
    stem = os.path.splitext(os.path.basename(path))[0]
    close = ([stem] if stem in names else
             difflib.get_close_matches(stem, names, n=2))
    if close:
      hint = ('did you mean ' + ' or '.join(
          f'--config={os.path.join(folder, name)}.py' for name in close) + '?')
    else:
      hint = f'{folder} holds {", ".join(f"{name}.py" for name in names)}.'
    return f'--config={spec}: no config file {path}; {hint}'
  if colon:
    get_config = runpy.run_path(path).get('get_config')
    if callable(get_config) and not inspect.signature(get_config).parameters:
      return f'--config={spec}: {path} has no variants; drop ":{variant}".'
  return None


def _configs_in(folder):
  """The config files' names in `folder` (without .py), or []."""
  folder = folder or '.'
  if not os.path.isdir(folder):
    return []
  return sorted(name[:-3] for name in os.listdir(folder)
                if name.endswith('.py') and name != '__init__.py')


def unknown_config_key(argv):
  """What is wrong with the first `--config.KEY=...` of `argv` that names no
  key of the config `--config=FILE[:VARIANT]` loads, or None."""
  spec = _config_file(argv)
  if not spec:
    return None
  path, _, variant = spec.partition(':')
  config = runpy.run_path(path)['get_config'](*([variant] if variant else []))
  for arg in argv:
    match = _OVERRIDE.match(arg)
    if match:
      message = _missing_key(config, match.group(1).split('.'))
      if message:
        return message
  return None


def _missing_key(config, keys):
  node = config
  for depth, key in enumerate(keys):
    if not isinstance(node, ml_collections.ConfigDict):
      return None  # within a value (a dict or a dataclass): not ours to judge
    if key not in node:
      parent = '.'.join(['config'] + keys[:depth])
      close = difflib.get_close_matches(key, list(node.keys()), n=1)
      hint = (f'did you mean --{parent}.{close[0]}?' if close else
              f'{parent} holds {", ".join(sorted(node.keys()))}.')
      return f'--config.{".".join(keys)}: {parent} has no key {key!r}; {hint}'
    node = node[key]
  return None
