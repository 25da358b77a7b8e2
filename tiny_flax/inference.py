"""A trained model back from its workdir, for evaluation and prediction."""

import jax
import jax.numpy as jnp

from tiny_flax import checkpointing
from tiny_flax import data
from tiny_flax import optim
from tiny_flax import steps


def restore(config, workdir, platform, which='best'):
  """(state, step) of checkpoint `which` (best, latest or a step number).

  The model is built on `platform`'s kernels and compute dtype, whichever
  precision trained it: a float16 run's state (with its loss scale) restores
  on a platform that computes in bfloat16 or float32. A run with config.ema
  gives its moving-average weights. The run may still be training.
  """
  model = steps.create_model(config, data.NUM_CLASSES, platform.kernels,
                             platform.compute_dtype)
  fresh = steps.create_train_state(config, model, data.image_shape(config),
                                   optim.for_training(config, 1))

  def restore_step(checkpoints, step):
    template = steps.fit_checkpoint(
        fresh, checkpointing.saved_fields(checkpoints, step))
    return checkpointing.restore(checkpoints, template, step)

  state, step = checkpointing.read(workdir, which, restore_step)
  if config.ema.decay > 0:
    state = steps.with_ema_weights(state)
  return state, step


def flip_averaged_logits(state, images):
  """Logits whose softmax is the average of the class probabilities of each
  image and of its mirror image (test-time augmentation by a flip)."""
  both = steps.logits_step(state, jnp.concatenate([images, images[:, :, ::-1]]))
  log_probabilities = jax.nn.log_softmax(both).reshape(2, len(images), -1)
  return jax.nn.logsumexp(log_probabilities, axis=0) - jnp.log(2.0)


# Test-time augmentations by name: the `--tta` of evaluate and predict.
TTA = {'none': steps.logits_step, 'flip': flip_averaged_logits}


def compile_logits(platform, tta='none'):
  """`logits(state, images)` in evaluation mode, compiled once per input
  shape; `tta` names a test-time augmentation of TTA."""
  return jax.jit(TTA[tta], compiler_options=platform.compiler_options)
