"""Where a training run's wall time goes, and how long an epoch takes.

Phases: preparing the input, setup, the first train call (which compiles the
step), validation, and the later steps. The log of the run's end reads them
(scripts/results_table.py parses its images/s), and a time budget sizes the
run from `epoch_s` (time_budget.py).
"""

import contextlib
import time

from absl import logging


class RunClock:
  """The run's phases timed on one clock, from the trainer's start."""

  def __init__(self, clock=time.perf_counter):
    self._clock = clock
    self._started = clock()
    self.input_s = 0.0
    self.validation_s = 0.0
    self.first_call_s = 0.0
    self._first_call_started = None
    self._first_call_steps = 0
    self._first_call_ended = None
    self._validations = []  # (start, end) of each validation of this process

  def elapsed_s(self):
    """Seconds since the trainer started."""
    return self._clock() - self._started

  @contextlib.contextmanager
  def input(self):
    """Times the preparation of the input."""
    started = self._clock()
    yield
    self.input_s += self._clock() - started

  def first_call_begins(self):
    """From here to `first_call_ended`, the first train call's time."""
    self._first_call_started = self._clock()

  @contextlib.contextmanager
  def setup(self):
    """Times work inside the first call's span that is not the call's (a
    validation step compiled beforehand): setup, not the first call."""
    started = self._clock()
    yield
    self._first_call_started += self._clock() - started

  def first_call_ended(self, steps):
    """The first call, of `steps` steps, has its results: its seconds."""
    self._first_call_ended = self._clock()
    self._first_call_steps = steps
    self.first_call_s = self._first_call_ended - self._first_call_started
    return self.first_call_s

  @contextlib.contextmanager
  def validation(self):
    """Times a validation pass."""
    started = self._clock()
    yield
    self._validations.append((started, self._clock()))
    self.validation_s += self._validations[-1][1] - started

  def last_validation_s(self):
    started, ended = self._validations[-1]
    return ended - started

  def epoch_s(self, steps_trained, steps_per_epoch):
    """Seconds an epoch takes, training, validation and checkpoint, at the
    end of a validation, after `steps_trained` steps in this process.

    Between this process's last two validations where it has seen two;
    else its validation plus an epoch of steps at the pace of those since
    the first call, or, where the first call ran them all (resumed at an
    epoch's end), at its pace, compilation included.
    """
    if len(self._validations) > 1:
      return self._validations[-1][1] - self._validations[-2][1]
    started, ended = self._validations[-1]
    timed_steps = steps_trained - self._first_call_steps
    step_s = ((started - self._first_call_ended) / timed_steps if timed_steps
              else self.first_call_s / self._first_call_steps)
    return ended - started + steps_per_epoch * step_s

  def log_run(self, start_step, step, batch_size):
    """Logs where the time of steps `start_step`+1..`step` went; images/s of
    the steps after the first call, their logging and checkpoints included."""
    total_s = self.elapsed_s()
    after_first_s = self._clock() - self._first_call_ended
    training_s = after_first_s - self.validation_s
    images = (step - start_step - self._first_call_steps) * batch_size
    logging.info(
        'Steps %d-%d in %.1f s: input %.1f s, setup %.1f s, first train call '
        '(compilation included) %.1f s, validation %.1f s, later steps %.1f s '
        'at %.0f images/s.', start_step + 1, step, total_s, self.input_s,
        total_s - self.input_s - self.first_call_s - after_first_s,
        self.first_call_s, self.validation_s, training_s,
        images / max(training_s, 1e-9))
