"""Per-device train and eval step bodies, written once for every parallel wrapper.

Each body runs on one shard of the batch and talks to the others only through
collectives over the axis `AXIS`, which `parallel.py` binds with either
`jax.pmap` or `jax.shard_map`.
"""

import functools
from typing import Any

from clu import metrics
import flax
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from tiny_flax import backend
from tiny_flax import models
from tiny_flax import optim

AXIS = 'batch'


class TrainState(train_state.TrainState):
  batch_stats: Any


def create_model(config, num_classes, axis_name=None):
  """The config's model: its compute dtype, and the kernels of `config.kernels`.

  Run records older than `config.kernels` get 'auto'.
  """
  return models.create(
      config.model, num_classes, axis_name=axis_name,
      dtype=jnp.bfloat16 if config.half_precision else jnp.float32,
      kernels=backend.kernels(config.get('kernels', 'auto')))


def create_train_state(config, model, image_shape, learning_rate_fn):
  """A fresh state on the default device, initialised from `config.seed`."""
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(config.seed), jnp.zeros((1,) + image_shape, jnp.float32))
  return TrainState.create(
      apply_fn=model.apply, params=variables['params'],
      batch_stats=variables.get('batch_stats', {}),
      tx=optim.create(config, learning_rate_fn))


def _top5_correct(logits, labels, **_):
  top5 = jax.lax.top_k(logits, 5)[1]
  return (top5 == labels[:, None]).any(axis=-1).astype(jnp.float32)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


@flax.struct.dataclass
class EvalMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  top1: metrics.Accuracy
  top5: metrics.Average.from_fun(_top5_correct)


def cross_entropy(logits, labels, label_smoothing=0.0):
  """Per-example loss, with labels smoothed as torch's CrossEntropyLoss does."""
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]),
                                label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state, batch, *, dropout_key, label_smoothing=0.0):
  """One SGD step on this device's shard; gradients averaged over AXIS."""
  key = jax.random.fold_in(jax.random.fold_in(dropout_key, state.step),
                           jax.lax.axis_index(AXIS))

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
        train=True, mutable=['batch_stats'], rngs={'dropout': key})
    losses = cross_entropy(logits, batch['label'], label_smoothing)
    return losses.mean(), (logits, losses, updates['batch_stats'])

  (_, (logits, losses, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  # Over one device the mean is the identity, but XLA:CPU copies every
  # gradient for it: AlexNet's step 336 -> 470 ms (docs/performance.md).
  if jax.lax.axis_size(AXIS) > 1:
    grads = jax.lax.pmean(grads, AXIS)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  step_metrics = TrainMetrics.gather_from_model_output(
      axis_name=AXIS, logits=logits, labels=batch['label'], loss=losses)
  return new_state, step_metrics


def in_sequence(body):
  """`body(state, batch, *replicated)` over batches stacked on a leading axis.

  Several train steps in one compiled call (config.steps_per_dispatch): the
  host dispatches once for all of them, and their metrics come back merged.
  """
  def run(state, batches, *replicated):
    state, metrics = jax.lax.scan(
        lambda state, batch: body(state, batch, *replicated), state, batches)
    return state, metrics.reduce()
  return run


def eval_step(state, batch):
  """Metrics over this shard; padded examples (mask False) do not count."""
  logits = logits_step(state, batch['image'])
  return EvalMetrics.gather_from_model_output(
      axis_name=AXIS, logits=logits, labels=batch['label'],
      loss=cross_entropy(logits, batch['label']), mask=batch['mask'])


def logits_step(state, images):
  """Logits in evaluation mode; no collectives, for plain `jax.jit`."""
  return state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, images,
      train=False)
