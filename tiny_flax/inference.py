"""A trained model back from its workdir, for evaluation and prediction."""

import jax

from tiny_flax import checkpointing
from tiny_flax import data
from tiny_flax import optim
from tiny_flax import steps


def restore(config, workdir, platform, which='best'):
  """(state, step) of checkpoint `which` (best, latest or a step number).

  The model is built on `platform`'s kernels. A run with config.ema gives its
  moving-average weights.
  """
  model = steps.create_model(config, data.NUM_CLASSES, platform.kernels)
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


def compile_logits(platform):
  """`logits(state, images)` in evaluation mode, compiled once per input shape."""
  return jax.jit(steps.logits_step, compiler_options=platform.compiler_options)
