"""Optimizers and learning-rate schedules from the config, all from optax.

Schedules are declared in epochs, as PyTorch recipes are, and converted to
steps here. Weight decay on 'sgd' and 'adam' is torch's coupled L2 (added to
the gradient); 'adamw' decouples it.
"""

import optax

from tiny_flax import errors


def learning_rate_schedule(config, steps_per_epoch):
  base = config.learning_rate
  schedule = config.schedule
  total_steps = config.num_epochs * steps_per_epoch
  if schedule.name == 'constant':
    return optax.constant_schedule(base)
  if schedule.name == 'step':
    # torch.optim.lr_scheduler.StepLR(step_size=step_epochs, gamma=gamma).
    return optax.exponential_decay(
        base, transition_steps=schedule.step_epochs * steps_per_epoch,
        decay_rate=schedule.gamma, staircase=True)
  if schedule.name == 'warmup_cosine':
    warmup = int(schedule.warmup_epochs * steps_per_epoch)
    return optax.warmup_cosine_decay_schedule(
        init_value=0.0, peak_value=base, warmup_steps=warmup,
        decay_steps=max(total_steps, warmup + 1))
  raise errors.UserError(
      f'Unknown config.schedule.name {schedule.name!r}: use constant, step or '
      'warmup_cosine.')


def create(config, learning_rate_fn):
  name = config.optimizer
  if name == 'sgd':
    optimizer = optax.sgd(learning_rate_fn, momentum=config.momentum or None,
                          nesterov=config.nesterov)
  elif name == 'adam':
    optimizer = optax.adam(learning_rate_fn)
  elif name == 'adamw':
    return optax.adamw(learning_rate_fn, weight_decay=config.weight_decay)
  else:
    raise errors.UserError(
        f'Unknown config.optimizer {name!r}: use sgd, adam or adamw.')
  if config.weight_decay:
    return optax.chain(optax.add_decayed_weights(config.weight_decay), optimizer)
  return optimizer
