"""A trained model back from its workdir, for evaluation and prediction."""

import jax

from tiny_flax import checkpointing
from tiny_flax import data
from tiny_flax import optim
from tiny_flax import steps


def restore(config, workdir, platform, which='best'):
  """(state, step) of checkpoint `which` (best, latest or a step number).

  The model is built on `platform`'s kernels and compute dtype, whichever
  precision trained it: a float16 run's state (with its loss scale) restores
  on a platform that computes in bfloat16 or float32. A run with config.ema
  gives its moving-average weights.
  """
  model = steps.create_model(config, data.NUM_CLASSES, platform.kernels,
                             platform.compute_dtype)
  checkpoints = checkpointing.manager(workdir, read_only=True)
  try:
    step = checkpointing.find_step(checkpoints, which)
    template = steps.fit_checkpoint(
        steps.create_train_state(config, model, data.image_shape(config),
                                 optim.for_training(config, 1)),
        checkpointing.saved_fields(checkpoints, step))
    state = checkpointing.restore(checkpoints, template, step)
  finally:
    checkpoints.close()
  if config.ema.decay > 0:
    state = steps.with_ema_weights(state)
  return state, step


def compile_logits(platform):
  """`logits(state, images)` in evaluation mode, compiled once per input shape."""
  return jax.jit(steps.logits_step, compiler_options=platform.compiler_options)
