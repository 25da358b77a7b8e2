"""Optimizers and learning-rate schedules from the config, all from optax.

Schedules are declared in epochs, as PyTorch recipes are, and converted to
steps here. Weight decay on 'sgd' and 'adam' is torch's coupled L2 (added to
the gradient); 'adamw' decouples it.
"""

import optax

from tiny_flax import errors


def _constant(config, steps_per_epoch):
  del steps_per_epoch
  return optax.constant_schedule(config.learning_rate)


def _step(config, steps_per_epoch):
  """torch.optim.lr_scheduler.StepLR(step_size=step_epochs, gamma=gamma)."""
  return optax.exponential_decay(
      config.learning_rate,
      transition_steps=config.schedule.step_epochs * steps_per_epoch,
      decay_rate=config.schedule.gamma, staircase=True)


def _warmup_cosine(config, steps_per_epoch):
  warmup = int(config.schedule.warmup_epochs * steps_per_epoch)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0, peak_value=config.learning_rate, warmup_steps=warmup,
      decay_steps=max(config.num_epochs * steps_per_epoch, warmup + 1))


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
  """Refuses an unknown optimizer or schedule before any data is prepared."""
  _choice(OPTIMIZERS, config.optimizer, 'config.optimizer')
  _choice(SCHEDULES, config.schedule.name, 'config.schedule.name')


def learning_rate_schedule(config, steps_per_epoch):
  return _choice(SCHEDULES, config.schedule.name, 'config.schedule.name')(
      config, steps_per_epoch)


def create(config, learning_rate_fn):
  optimizer = _choice(OPTIMIZERS, config.optimizer, 'config.optimizer')(
      config, learning_rate_fn)
  if config.weight_decay and config.optimizer != 'adamw':
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optimizer)
  return optimizer
