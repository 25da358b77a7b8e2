"""The one exception type for mistakes a user can fix (data, config, workdir),
and the entry points' one way out for it."""

import contextlib
import sys

from absl import logging

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


@contextlib.contextmanager
def exit_on_user_error():
  """The entry points' shared ending for a UserError, or a device out of
  memory: one line, exit code 1."""
  try:
    yield
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except RuntimeError as e:
    user_error = out_of_memory(e)
    if user_error is None:
      raise
    logging.error('%s', e)  # XLA's report of the buffers, for the curious
    print(f'error: {user_error}', file=sys.stderr)
    sys.exit(1)
