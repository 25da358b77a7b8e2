"""What the training loop does after a step: a pure function of the step.

Every event falls on a step fixed by the config (log, epoch and checkpoint
intervals) or requested from outside (a timed checkpoint, a stop signal), so
a resumed run logs, validates and saves at the same steps as an
uninterrupted one. step_runner.dispatch_sizes never lets one call run past
such a step.
"""

from typing import NamedTuple

from tiny_flax import errors


def check(config):
  """Refuses a run length, interval or number of checkpoints kept that the
  loop cannot follow, before anything is prepared or written."""
  for name, value, ok, rule in (
      ('num_epochs', config.num_epochs, config.num_epochs >= 1, '>= 1'),
      ('log_every_steps', config.log_every_steps, config.log_every_steps >= 1,
       '>= 1'),
      ('checkpoint_every_steps', config.checkpoint_every_steps,
       config.checkpoint_every_steps >= 0, '>= 0 (0: at epoch ends only)'),
      ('checkpoints_to_keep', config.checkpoints_to_keep,
       config.checkpoints_to_keep >= 1,
       '>= 1 (a resumed run starts from the latest)')):
    errors.require(ok, f'config.{name}', rule, value)


class Intervals(NamedTuple):
  """The config's fixed events, in steps (0: never, for checkpoint_every)."""
  num_steps: int
  steps_per_epoch: int
  log_every: int
  checkpoint_every: int = 0

  def every(self):
    """The periods no dispatch may cross (step_runner.dispatch_sizes)."""
    return (self.log_every, self.steps_per_epoch, self.checkpoint_every)


class Actions(NamedTuple):
  """After a step, in this order: log, validate, save, stop."""
  log: bool  # write the training metrics of the steps since the last log
  validate: bool  # a validation pass; its metrics go with the checkpoint
  save: bool  # a checkpoint of this step
  # A checkpoint of this step if config.checkpoint_every_minutes have passed
  # since the last; asked after the log, when the step's results are in.
  save_if_due: bool
  # Wait for the checkpoint, then end the run before num_steps; between log
  # steps, the metrics since the last log are saved with the checkpoint.
  stop: bool


def _epoch_end(step, intervals):
  return step % intervals.steps_per_epoch == 0 or step == intervals.num_steps


def after_step(step, intervals, *, stop_requested=False):
  """The `Actions` after `step` (counted from 1).

  Timed checkpoints fall on log steps, so that a resumed run logs the same
  intervals. `stop_requested`: a signal arrived; the run saves this step and
  stops, unless it is the last step anyway. It logs only on a log step:
  between two, the metrics of the steps since the last log go with the
  checkpoint, and the resumed run logs that interval whole, as an
  uninterrupted run does.
  """
  validate = _epoch_end(step, intervals)
  save = validate or (intervals.checkpoint_every > 0
                      and step % intervals.checkpoint_every == 0)
  log = save or step % intervals.log_every == 0
  stop = stop_requested and step < intervals.num_steps
  return Actions(log=log, validate=validate, save=save or stop,
                 save_if_due=log and not (save or stop), stop=stop)
