"""The one exception type for mistakes a user can fix (data, config, workdir)."""


class UserError(Exception):
  """Its message names the problem and the fix; main prints it and exits 1."""
