"""A jax.profiler trace of a few train steps, for TensorBoard's Profile tab.

The trace covers the steps right after the first train call of each start:
that call compiles, and compilation would fill the trace and hide the steps.
It goes to WORKDIR/plugins/profile/<time>/, where TensorBoard's profile plugin
(`pip install tensorboard-plugin-profile`) finds it beside the run's scalars.
A trace that cannot be taken or written costs a warning, never the run.
Not clu's periodic_actions.Profile: importing it imports TensorFlow, which
the accelerator hosts' input path does without.
"""

import os

from absl import logging
import jax

from tiny_flax import errors


class StepTrace:
  """Traces `num_steps` train steps (0: none) after the first train call."""

  def __init__(self, workdir, num_steps, enabled=True):
    if not isinstance(num_steps, int) or num_steps < 0:
      raise errors.UserError(
          f'config.profile_steps must be a whole number >= 0 (0: no trace), '
          f'got {num_steps!r}.')
    self._workdir = workdir
    self._folder = os.path.join(workdir, 'plugins', 'profile')
    self._num_steps = num_steps if enabled else 0
    self._first = self._last = None  # the traced steps, while tracing

  def start(self, step, run_steps):
    """Starts the trace after `step`, the first train call's last step, to
    end by `run_steps`, the run's last."""
    num_steps, self._num_steps = self._num_steps, 0  # one trace per start
    if not num_steps or step >= run_steps:
      return
    try:
      os.makedirs(self._folder, exist_ok=True)
      jax.profiler.start_trace(self._workdir)
    except (OSError, RuntimeError) as e:  # or a trace already running
      logging.warning('No profile: %s', e)
      return
    self._first = step + 1
    self._last = min(step + num_steps, run_steps)

  def after(self, step, state):
    """Ends the trace once `step` reaches its last step, `state` computed."""
    if self._last is not None and step >= self._last:
      jax.block_until_ready(state)
      self.stop(step)

  def stop(self, step):
    """Ends a trace still open (the run ended or stopped within it)."""
    if self._last is None:
      return
    first, self._first = self._first, None
    self._last = None
    try:
      jax.profiler.stop_trace()
    except RuntimeError as e:  # full disk, unwritable folder
      logging.warning('The profile of steps %d-%d could not be written under '
                      '%s: %s. Training goes on.', first, step, self._folder,
                      e)
      return
    logging.info('Profile of steps %d-%d written under %s.', first, step,
                 self._folder)
