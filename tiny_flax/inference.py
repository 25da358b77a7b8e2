"""A trained model back from its workdir, for evaluation and prediction."""

import functools

import jax

from tiny_flax import backend
from tiny_flax import checkpointing
from tiny_flax import optim
from tiny_flax import steps
from tiny_flax import data


def restore(config, workdir, which='best'):
  """(state, step) of checkpoint `which` (best, latest or a step number).

  A run with config.ema gives its moving-average weights.
  """
  model = steps.create_model(config, data.NUM_CLASSES)
  template = steps.create_train_state(
      config, model, data.image_shape(config),
      optim.learning_rate_schedule(config, 1))
  checkpoints = checkpointing.manager(workdir, read_only=True)
  try:
    state, step = checkpointing.restore(checkpoints, template, which)
  finally:
    checkpoints.close()
  if config.ema.decay > 0:
    state = steps.with_ema_weights(state)
  return state, step


@functools.cache
def _compiled_logits():
  return jax.jit(steps.logits_step, compiler_options=backend.compiler_options())


def logits(state, images):
  """Evaluation-mode logits of `images`, compiled once per input shape."""
  return _compiled_logits()(state, images)
