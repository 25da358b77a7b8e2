"""Both splits resident in accelerator memory, the host feeding only indices.

The decoded uint8 splits (1.35 GB for Tiny ImageNet) are put on every device
once; a batch is a vector of indices, and the compiled step gathers its
images and transforms them with tiny_flax/data/jax_transforms.py. An epoch
then needs no decoding and no host-to-device image traffic. This module
hands out the gather-and-transform functions; the trainer composes them with
its steps and compiles the whole.
"""

from typing import Callable, NamedTuple

import jax
import numpy as np

from tiny_flax.data import jax_transforms

class Resident(NamedTuple):
  """The arrays to place on the devices and what turns indices into batches."""
  arrays: dict  # {'train': {'image', 'label'}, 'validation': ...}, numpy
  augment: Callable  # (uint8 images, key) -> the training transforms' images
  preprocess: Callable  # uint8 images -> the evaluation transforms' images

  def train_batch(self, arrays, batch, key):
    """{'image', 'label'} of the indices in `batch`, augmented with `key`."""
    index = batch['index']
    return {'image': self.augment(arrays['train']['image'][index], key),
            'label': arrays['train']['label'][index]}

  def eval_batch(self, arrays, batch):
    """{'image', 'label', 'mask'} of the indices in `batch`."""
    index = batch['index']
    return {'image': self.preprocess(arrays['validation']['image'][index]),
            'label': arrays['validation']['label'][index],
            'mask': batch['mask']}


def build(train, validation, train_transforms, eval_transforms):
  """`Resident` of the two splits (numpy dicts, the same on every process)."""
  evaluate = jax_transforms.build(eval_transforms)
  return Resident({'train': train, 'validation': validation},
                  jax_transforms.build(train_transforms),
                  # Evaluation transforms draw nothing from their key.
                  lambda images: evaluate(images, jax.random.key(0)))


def train_batches(num_examples, batch_size, batches_per_epoch, seed,
                  start_step=0, offset=0):
  """Endless index batches into rows [offset, offset + num_examples).

  Each epoch's order is a pure function of (seed, epoch).
  """
  step = start_step
  while True:
    epoch, position = divmod(step, batches_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    for index in range(position, batches_per_epoch):
      yield {'index': (order[index * batch_size:(index + 1) * batch_size]
                       + offset).astype(np.int32)}
    step = (epoch + 1) * batches_per_epoch


class EvalBatches:
  """Index batches into rows [offset, offset + count), each with a `mask`.

  Iterable again. `num_batches` is the same on every process, so collective
  steps stay in lockstep; padding points at row 0 and is masked out.
  """

  def __init__(self, count, batch_size, num_batches, offset=0):
    self._count, self._batch_size = count, batch_size
    self._num_batches, self._offset = num_batches, offset

  def __len__(self):
    return self._num_batches

  def __iter__(self):
    for start in range(0, self._num_batches * self._batch_size,
                       self._batch_size):
      position = np.arange(start, start + self._batch_size)
      mask = position < self._count
      yield {'index': np.where(mask, position + self._offset, 0).astype(
          np.int32), 'mask': mask}


def process_share(total, process_index, process_count, even):
  """(offset, count): this process's rows of a split of `total` rows.

  `even`: equal shares, the remainder dropped (training). Otherwise every
  row counts once: shares of ceil(total / processes) rows, the last ones
  shorter. Every process holds the whole split and reads its own rows.
  """
  size = total // process_count if even else -(-total // process_count)
  offset = min(process_index * size, total)
  return offset, min(size, total - offset)
