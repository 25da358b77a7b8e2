"""Optimizers and learning-rate schedules from the config, all from optax.

Schedules are declared in epochs, as PyTorch recipes are, and converted to
steps here. Weight decay on 'sgd' and 'adam' is torch's coupled L2 (added to
the gradient); 'adamw' decouples it.
"""

import jax
import jax.numpy as jnp
import optax

from tiny_flax import errors
from tiny_flax import time_budget


def _constant(config, steps_per_epoch, num_steps):
  del steps_per_epoch, num_steps
  return optax.constant_schedule(config.learning_rate)


def _step(config, steps_per_epoch, num_steps):
  """torch.optim.lr_scheduler.StepLR(step_size=step_epochs, gamma=gamma)."""
  del num_steps
  return optax.exponential_decay(
      config.learning_rate,
      transition_steps=config.schedule.step_epochs * steps_per_epoch,
      decay_rate=config.schedule.gamma, staircase=True)


def _warmup_cosine(config, steps_per_epoch, num_steps):
  """optax.warmup_cosine_decay_schedule from 0 through the peak to 0 at
  `num_steps`, written out because optax's wants a Python int there and a
  time budget passes a traced one (`for_training`)."""
  warmup = int(config.schedule.warmup_epochs * steps_per_epoch)
  peak = config.learning_rate
  warm = optax.linear_schedule(0.0, peak, warmup)

  def schedule(count):
    decay = (jnp.maximum(num_steps, warmup + 1) - warmup).astype(jnp.float32)
    # XLA would fold a known length into the arithmetic around it; behind
    # the barrier it computes as a traced one does, to the same rates.
    decay = jax.lax.optimization_barrier(decay)
    cosine = 0.5 * (1 + jnp.cos(jnp.pi * jnp.minimum(count - warmup, decay)
                                / decay))
    return jnp.where(count < warmup, warm(count), peak * cosine)
  return schedule


SCHEDULES = {'constant': _constant, 'step': _step,
             'warmup_cosine': _warmup_cosine}

OPTIMIZERS = {
    'sgd': lambda config, lr: optax.sgd(
        lr, momentum=config.momentum or None, nesterov=config.nesterov),
    'adam': lambda config, lr: optax.adam(lr),
    'adamw': lambda config, lr: optax.adamw(
        lr, weight_decay=config.weight_decay),
}


def _choice(table, value, key):
  if value not in table:
    raise errors.UserError(
        f'Unknown {key} {value!r}: use {", ".join(table)}.')
  return table[value]


def check(config):
  """Refuses an unknown optimizer or schedule, or a value of the recipe (the
  loss's label smoothing too) out of its range, before anything is prepared
  or written."""
  _choice(OPTIMIZERS, config.optimizer, 'config.optimizer')
  _choice(SCHEDULES, config.schedule.name, 'config.schedule.name')
  schedule = config.schedule
  for name, value, ok, rule in (
      ('learning_rate', config.learning_rate, config.learning_rate >= 0,
       '>= 0'),
      ('weight_decay', config.weight_decay, config.weight_decay >= 0, '>= 0'),
      ('momentum', config.momentum, 0 <= config.momentum < 1,
       'in [0, 1) (0: none)'),
      ('label_smoothing', config.label_smoothing,
       0 <= config.label_smoothing < 1, 'in [0, 1)'),
      ('schedule.warmup_epochs', schedule.warmup_epochs,
       schedule.warmup_epochs >= 0, '>= 0'),
      ('schedule.step_epochs', schedule.step_epochs,
       schedule.name != 'step' or schedule.step_epochs >= 1, '>= 1'),
      ('schedule.gamma', schedule.gamma,
       schedule.name != 'step' or 0 < schedule.gamma <= 1, 'in (0, 1]')):
    errors.require(ok, f'config.{name}', rule, value)


def learning_rate_schedule(config, steps_per_epoch, num_steps=None):
  """step -> learning rate; `num_steps`, the run's length (default
  config.num_epochs of steps), may be a traced value."""
  if num_steps is None:
    num_steps = config.num_epochs * steps_per_epoch
  return _choice(SCHEDULES, config.schedule.name, 'config.schedule.name')(
      config, steps_per_epoch, jnp.asarray(num_steps, jnp.int32))


def for_training(config, steps_per_epoch):
  """The optimizer of a training run, and of the states that restore its
  checkpoints.

  Under config.time_budget_minutes the schedule's length is a value of the
  optimizer state (`hyperparams['schedule_steps']`, config.num_epochs of
  steps until time_budget.py sizes the run), so that it changes without a
  recompilation and travels with the checkpoints.
  """
  if time_budget.active(config):
    return optax.inject_hyperparams(lambda schedule_steps: create(
        config, learning_rate_schedule(config, steps_per_epoch,
                                       schedule_steps)))(
        schedule_steps=jnp.asarray(config.num_epochs * steps_per_epoch,
                                   jnp.int32))
  return create(config, learning_rate_schedule(config, steps_per_epoch))


def schedule_steps(opt_state):
  """The schedule's length in steps held by `for_training`'s state under a
  time budget."""
  return int(opt_state.hyperparams['schedule_steps'])


def with_schedule_steps(opt_state, num_steps):
  """`for_training`'s state under a time budget, its schedule `num_steps`
  long (an int32 array placed as the state is)."""
  return opt_state._replace(
      hyperparams={**opt_state.hyperparams, 'schedule_steps': num_steps})


def create(config, learning_rate_fn):
  """The config's optimizer at `learning_rate_fn` (a rate, or a schedule)."""
  optimizer = _choice(OPTIMIZERS, config.optimizer, 'config.optimizer')(
      config, learning_rate_fn)
  if config.weight_decay and config.optimizer != 'adamw':
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optimizer)
  return optimizer
