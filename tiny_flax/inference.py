"""A trained model back from its workdir, for evaluation and prediction."""

import functools

import jax
import jax.numpy as jnp

from tiny_flax import backend
from tiny_flax import checkpointing
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import steps
from tiny_flax.data import pipeline


def restore(config, workdir, which='best'):
  """(state, step) of checkpoint `which` (best, latest or a step number)."""
  model = models.create(
      config.model, pipeline.NUM_CLASSES,
      dtype=jnp.bfloat16 if config.half_precision else jnp.float32,
      kernels=backend.kernels(config.get('kernels', 'auto')))
  template = steps.create_train_state(
      config, model, pipeline.image_shape(config),
      optim.learning_rate_schedule(config, 1))
  checkpoints = checkpointing.manager(workdir, read_only=True)
  try:
    return checkpointing.restore(checkpoints, template, which)
  finally:
    checkpoints.close()


@functools.cache
def _compiled_logits():
  return jax.jit(steps.logits_step, compiler_options=backend.compiler_options())


def logits(state, images):
  """Evaluation-mode logits of `images`, compiled once per input shape."""
  return _compiled_logits()(state, images)
