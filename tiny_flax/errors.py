"""The one exception type for mistakes a user can fix (data, config, workdir)."""

import contextlib
import sys


class UserError(Exception):
  """Its message names the problem and the fix; entry points exit 1 on it."""


@contextlib.contextmanager
def exit_on_user_error():
  """The entry points' shared ending for a UserError: one line, exit code 1."""
  try:
    yield
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
