"""Training data resident on the accelerator (`config.input.on_device`).

The decoded uint8 training split (1.2 GB for Tiny ImageNet) is put on every
device once; the host then feeds only index batches, and the train step
gathers and augments its images with tiny_flax/device_preprocess.py. An epoch
needs no decoding and no host-to-device image traffic.
"""

from typing import Callable, Iterator, NamedTuple

import jax
import numpy as np

from tiny_flax import device_preprocess
from tiny_flax import steps


def index_batches(num_examples, batch_size, batches_per_epoch, seed,
                  start_step=0):
  """Endless index batches; each epoch's order is a pure function of (seed, epoch)."""
  step = start_step
  while True:
    epoch, position = divmod(step, batches_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    for index in range(position, batches_per_epoch):
      yield {'index': order[index * batch_size:(index + 1) * batch_size].astype(
          np.int32)}
    step = (epoch + 1) * batches_per_epoch


class ResidentInput(NamedTuple):
  """The training input of `config.input.on_device`, built by `place`."""
  step: Callable  # step(state, batch) -> (state, metrics), compiled by par
  steps: Callable  # the same over stacked batches (steps.in_sequence)
  batches: Iterator  # index batches, from the host
  augment: Callable  # (images, key) -> the recipe's augmented images
  key: jax.Array  # the augmentation's key, folded with step and device


def place(par, train_step, arrays, recipe, batch_size, batches_per_epoch,
          seed, start_step=0):
  """Puts `arrays` (a decoded split) on the devices and compiles their step.

  The batch holds indices into the split; the step gathers those images and
  augments them. The trainer and scripts/benchmark.py both train this way.
  """
  key = jax.random.key(seed + 2)
  augment = device_preprocess.build(recipe)

  def body(state, batch, data):
    step_key = jax.random.fold_in(jax.random.fold_in(key, state.step),
                                  jax.lax.axis_index(steps.AXIS))
    images = augment(data['image'][batch['index']], step_key)
    return train_step(state, {'image': images,
                              'label': data['label'][batch['index']]})

  compiled, compiled_steps = par.compile_train(body, replicated_inputs=1)
  data = par.replicate(arrays)
  batches = index_batches(len(arrays['label']),
                          batch_size // jax.process_count(), batches_per_epoch,
                          seed, start_step)
  return ResidentInput(lambda state, batch: compiled(state, batch, data),
                       lambda state, batches: compiled_steps(state, batches,
                                                             data),
                       batches, augment, key)
