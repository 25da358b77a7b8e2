"""Stopping cleanly when asked (SIGTERM from Colab or SLURM, Ctrl-C) or by time.

The loop asks after each step whether to stop and whether to checkpoint now;
it then saves synchronously at that step, so that the same command resumes
from there with the same batches.
"""

import signal
import time

from absl import logging
import jax
from jax.experimental import multihost_utils


class StopRequests:
  """Records SIGTERM and SIGINT instead of dying mid-step.

  With several processes, JAX's coordination service owns SIGTERM and orbax's
  `reached_preemption` makes all processes agree on the step to stop at; a
  handler here would shadow it, so only one process runs install this one.
  """

  def __init__(self, checkpoints):
    self._checkpoints = checkpoints
    self.signal = None
    self._previous = {}
    if jax.process_count() == 1:
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous[signum] = signal.signal(signum, self._record)

  def _record(self, signum, frame):
    del frame
    if self.signal == signal.SIGINT and signum == signal.SIGINT:
      raise KeyboardInterrupt  # a second Ctrl-C: stop at once
    self.signal = signum
    logging.warning('Received %s: stopping after this step.',
                    signal.Signals(signum).name)

  def reached(self, step):
    """Whether to checkpoint and stop after `step`, the same on every process."""
    if jax.process_count() > 1:
      return self._checkpoints.reached_preemption(step)
    return self.signal is not None

  def exit_code(self):
    """0 after SIGTERM (the run is resumable, not failed), 130 after Ctrl-C."""
    return 130 if self.signal == signal.SIGINT else 0

  def restore_handlers(self):
    for signum, handler in self._previous.items():
      signal.signal(signum, handler)


class CheckpointTimer:
  """Whether `minutes` have passed since the last checkpoint, asked at log steps.

  Process 0's clock decides for all, so every process saves at the same step.
  """

  def __init__(self, minutes):
    self._seconds = minutes * 60
    self._last = time.monotonic()

  def due(self):
    due = self._seconds > 0 and time.monotonic() - self._last >= self._seconds
    if jax.process_count() > 1:
      due = bool(multihost_utils.broadcast_one_to_all(due))
    return due

  def saved(self):
    self._last = time.monotonic()
