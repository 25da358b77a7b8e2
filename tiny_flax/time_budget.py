"""A run sized to a wall-time budget (config.time_budget_minutes).

How many epochs fit in ten minutes depends on the hardware, and a time limit
that stops a cosine schedule part-way ends it at a high learning rate, far
from what the same minutes give when the schedule ends on time. With a
budget the run measures an epoch while its learning rates do not yet depend
on the schedule's length (inside the warmup), and sizes the schedule to the
whole epochs that fit what is left of the budget, at most config.num_epochs.
The length is a value of the optimizer state (optim.for_training): it
changes without a recompilation, and every later checkpoint holds it, so a
resumed run keeps it; a run restarted before the choice makes it afresh.

The measured epoch is the second where the schedule allows (two warmup
epochs, or a schedule whose rates never depend on the length): by then
everything is compiled (a GPU's second form of the step, the metric merges)
and tf.data's cache holds the decoded images. Otherwise it is the first:
its validation step is compiled beforehand and its training timed from the
end of the first (compiling) call, and whatever else it compiles or decodes
makes the estimate err short.
"""

from absl import logging
from jax.experimental import multihost_utils
import numpy as np

from tiny_flax import errors


def active(config):
  """Whether the budget sizes the run: set, and no num_train_steps fixing
  its length (a quick check of a budgeted variant)."""
  # .get: the recorded configs of runs from before the budget lack it.
  return (config.get('time_budget_minutes', 0) > 0
          and config.num_train_steps <= 0)


def check(config):
  """Refuses a budget the run cannot keep, before any data is prepared."""
  budget = config.time_budget_minutes
  errors.require(budget >= 0, 'config.time_budget_minutes', '>= 0 (0: off)',
                 budget)
  if budget > 0 and not active(config):
    logging.info('config.num_train_steps=%d sets the run\'s length; '
                 'config.time_budget_minutes is not used.',
                 config.num_train_steps)
  if (active(config) and config.schedule.name == 'warmup_cosine'
      and config.schedule.warmup_epochs < 1):
    raise errors.UserError(
        'config.time_budget_minutes measures the first epoch before the '
        'cosine schedule\'s length is known, so that epoch must be warmup: '
        'set config.schedule.warmup_epochs >= 1 (it is '
        f'{config.schedule.warmup_epochs}).')


def decision_epoch(config):
  """The epoch after which the run is sized: the second, or the first where
  a cosine schedule's rates depend on the length from the second epoch on."""
  early = (config.schedule.name == 'warmup_cosine'
           and config.schedule.warmup_epochs < 2)
  return 1 if early or config.num_epochs < 2 else 2


def epochs_that_fit(budget_s, elapsed_s, epoch_s, max_epochs, done_epochs):
  """Whole epochs in the run: the `done_epochs` that `elapsed_s` includes,
  and as many more of `epoch_s` each as end within `budget_s`; at most
  `max_epochs`."""
  more = int((budget_s - elapsed_s) // epoch_s) if epoch_s > 0 else max_epochs
  return max(done_epochs, min(max_epochs, done_epochs + more))


def decide(config, epoch_s, elapsed_s):
  """The run's epochs, after `decision_epoch`: `epoch_s` an epoch (training,
  validation and checkpoint), `elapsed_s` since the trainer started. By
  process 0's clock, the same in every process."""
  done = decision_epoch(config)
  epochs = epochs_that_fit(60 * config.time_budget_minutes, elapsed_s,
                           epoch_s, config.num_epochs, done)
  epochs = int(multihost_utils.broadcast_one_to_all(np.int32(epochs)))
  message = (f'Time budget of {config.time_budget_minutes:g} minutes: '
             f'{elapsed_s:.0f} s spent by the end of epoch {done}, '
             f'{epoch_s:.1f} s an epoch from here: {epochs} of at most '
             f'{config.num_epochs} epochs.')
  if epochs > config.schedule.warmup_epochs:
    logging.info(message)
  else:
    logging.warning(message + ' The learning rate will not decay within '
                    'them: lower config.schedule.warmup_epochs or raise the '
                    'budget.')
  return epochs


class Sizing:
  """A budget as the training loop meets it, in steps."""

  def __init__(self, config, steps_per_epoch):
    self._config = config
    self._steps_per_epoch = steps_per_epoch
    # The step whose validation ends the measured epoch (0: no budget).
    self.step = (decision_epoch(config) * steps_per_epoch if active(config)
                 else 0)

  def sized_before(self, start_step):
    """Whether a start of the run before this one chose its length."""
    return 0 < self.step <= start_step

  def times_first_epoch(self, start_step):
    """Whether this start measures the first epoch, whose validation must
    then be compiled beforehand to take what each later one will."""
    return self.step == self._steps_per_epoch and start_step < self.step

  def num_steps(self, clock, start_step):
    """The run's length, decided at `self.step` from `clock` (a RunClock)."""
    epoch_s = clock.epoch_s(self.step - start_step, self._steps_per_epoch)
    return self._steps_per_epoch * decide(self._config, epoch_s,
                                          clock.elapsed_s())
