"""Per-device train and eval step bodies, written once for every parallel wrapper.

Each body runs on one shard of the batch and talks to the others only through
collectives over the axis `AXIS`, which `parallel.py` binds with either
`jax.pmap` or `jax.shard_map`.
"""

import dataclasses
import functools
from typing import Any

from clu import metrics
import flax
from flax.training import dynamic_scale as dynamic_scale_lib
from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from tiny_flax import errors
from tiny_flax import mixing as mixing_lib
from tiny_flax import models

AXIS = 'batch'


class TrainState(train_state.TrainState):
  batch_stats: Any
  # {'params', 'batch_stats'}: their moving average (config.ema), or {}.
  ema: Any = flax.struct.field(default_factory=dict)


class ScaledTrainState(TrainState, kw_only=True):
  """The state of a float16 run: its loss scale travels and is checkpointed
  with it. A class of its own, so that the checkpoints of float32 and
  bfloat16 runs keep their structure."""
  dynamic_scale: dynamic_scale_lib.DynamicScale


# flax's and PyTorch's GradScaler's default. float16 ends at 65504: large
# gradients overflow at first, and the scale halves until they fit.
INITIAL_LOSS_SCALE = 2.0**16


def create_model(config, num_classes, kernels, dtype, axis_name=None):
  """The config's model computing in `dtype`, built on `kernels` (the
  platform's choices for config.half_precision and config.kernels)."""
  return models.create(config.model, num_classes, axis_name=axis_name,
                       dtype=dtype, kernels=kernels)


def create_train_state(config, model, image_shape, tx, loss_scaling=False):
  """A fresh state on the default device, initialised from `config.seed`.

  `tx`: the optax optimizer (optim.for_training, or optim.create).
  `loss_scaling`: a ScaledTrainState, for a model computing in float16.
  """
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(config.seed), jnp.zeros((1,) + image_shape, jnp.float32))
  batch_stats = variables.get('batch_stats', {})
  # Copies: a train step donates the state, which must not hold a buffer twice.
  ema = (jax.tree.map(jnp.copy, {'params': variables['params'],
                                 'batch_stats': batch_stats})
         if config.ema.decay > 0 else {})
  state = TrainState.create(
      apply_fn=model.apply, params=variables['params'],
      batch_stats=batch_stats, ema=ema, tx=tx)
  return with_loss_scaling(state, loss_scaling)


def with_loss_scaling(state, loss_scaling):
  """`state` as a ScaledTrainState (keeping its loss scale, or a fresh one)
  or as a TrainState (without one).

  A run resumed on another GPU may change precision (config.half_dtype
  'auto'): float16 on a T4, bfloat16 on an A100.
  """
  if isinstance(state, ScaledTrainState) == loss_scaling:
    return state
  fields = {field.name: getattr(state, field.name)
            for field in dataclasses.fields(TrainState)}
  if not loss_scaling:
    return TrainState(**fields)
  # Arrays, not Python numbers, so that a checkpoint holds them; the scale
  # in float32, so that the scaled loss stays float32.
  return ScaledTrainState(**fields, dynamic_scale=(
      dynamic_scale_lib.DynamicScale(
          fin_steps=jnp.zeros((), jnp.int32),
          scale=jnp.asarray(INITIAL_LOSS_SCALE, jnp.float32))))


def fit_checkpoint(state, saved_fields):
  """The template of `state` for a checkpoint holding `saved_fields` (names
  of its state's fields): with a loss scale where the checkpoint has one."""
  return with_loss_scaling(state, 'dynamic_scale' in saved_fields)


def ema_settings(ema):
  """(decay, warmup) of config.ema, None when off; a UserError for a bad decay."""
  errors.require(0 <= ema.decay < 1, 'config.ema.decay', 'in [0, 1) (0: off)',
                 ema.decay)
  return (float(ema.decay), bool(ema.warmup)) if ema.decay > 0 else None


def ema_decay(step, decay, warmup):
  """The EMA's decay at `step`; with `warmup`, min(decay, (1 + step) / (10 + step))
  as tf.train.ExponentialMovingAverage's num_updates, so early weights fade fast."""
  if not warmup:
    return decay
  step = jnp.asarray(step, jnp.float32)
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def with_ema_weights(state):
  """`state` with its moving averages as the weights (for evaluation)."""
  return state.replace(params=state.ema['params'],
                       batch_stats=state.ema['batch_stats'])


def _top5_correct(logits, labels, **_):
  top5 = jax.lax.top_k(logits, 5)[1]
  return (top5 == labels[:, None]).any(axis=-1).astype(jnp.float32)


@flax.struct.dataclass
class TrainMetrics(metrics.Collection):
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy


@flax.struct.dataclass
class ScaledTrainMetrics(metrics.Collection):
  """TrainMetrics with the loss scale, and the share of steps skipped for
  overflow."""
  loss: metrics.Average.from_output('loss')
  accuracy: metrics.Accuracy
  loss_scale: metrics.Average.from_output('loss_scale')
  skipped: metrics.Average.from_output('skipped')


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


def check_microbatches(microbatches, device_batch_size):
  """Refuses a config.microbatches that does not split a device's batch."""
  if microbatches < 1 or device_batch_size % microbatches:
    raise errors.UserError(
        f'config.microbatches must be >= 1 and divide the batch of each '
        f'device ({device_batch_size} images), got {microbatches}.')


def _gradients(state, loss_fn, examples, key, microbatches, axis_name):
  """(dynamic scale, finite, logits, losses, batch statistics, gradients) of
  the shard's mean loss, the gradients averaged over `axis_name`.

  With `microbatches` > 1 the shard's parts run one after another, each
  normalised by its own BatchNorm statistics (carried to the next part, as
  PyTorch's gradient accumulation does), and the gradients of their shares
  of the loss (`loss_fn` of a part) summed: the activations of one part are
  in memory at a time. Under a loss scale, each part's gradients are
  checked finite, and the step's new scale is the lowest of the parts'
  (lowered if any overflowed).
  """
  scaled = isinstance(state, ScaledTrainState)

  def part(batch_stats, examples, key):
    if scaled:  # unscales the gradients, averages them, checks them finite
      return state.dynamic_scale.value_and_grad(
          loss_fn, has_aux=True, axis_name=axis_name)(
              state.params, batch_stats, examples, key)
    aux, grads = jax.value_and_grad(loss_fn, has_aux=True)(
        state.params, batch_stats, examples, key)
    return None, True, aux, grads

  if microbatches == 1:
    dynamic_scale, finite, (_, (logits, losses, batch_stats)), grads = part(
        state.batch_stats, examples, key)
  else:
    def accumulate(carry, xs):
      batch_stats, total, finite, lowest = carry
      dynamic_scale, part_finite, (_, (logits, losses, batch_stats)), grads = (
          part(batch_stats, *xs))
      if scaled:
        lowest = jax.tree.map(jnp.minimum, lowest, dynamic_scale)
      return ((batch_stats, jax.tree.map(jnp.add, total, grads),
               finite & part_finite, lowest), (logits, losses))

    split = lambda x: x.reshape((microbatches, -1) + x.shape[1:])
    # Above any scale or count a part can return: the first part's replace it.
    highest = (state.dynamic_scale.replace(
        scale=jnp.asarray(jnp.inf, jnp.float32),
        fin_steps=jnp.asarray(jnp.iinfo(jnp.int32).max, jnp.int32))
               if scaled else None)
    (batch_stats, grads, finite, dynamic_scale), (logits, losses) = (
        jax.lax.scan(accumulate, (
            state.batch_stats, jax.tree.map(jnp.zeros_like, state.params),
            jnp.asarray(True), highest), (
                jax.tree.map(split, examples),
                jax.random.split(key, microbatches))))
    logits = logits.reshape((-1,) + logits.shape[2:])
    losses = losses.reshape(-1)
  if not scaled and axis_name:
    grads = jax.lax.pmean(grads, axis_name)
  return dynamic_scale, finite, logits, losses, batch_stats, grads


def train_step(state, batch, *, dropout_key, label_smoothing=0.0,
               mixing=None, ema=None, microbatches=1):
  """One SGD step on this device's shard; gradients averaged over AXIS.

  `mixing`: a mixing.Mixing, applied to the shard before the forward pass.
  `ema`: (decay, warmup) of the moving average kept in `state.ema`.
  `microbatches`: the shard computed in that many parts (`_gradients`).
  A ScaledTrainState's step scales the loss, and where a gradient overflows
  it keeps the weights, optimizer, statistics and average as they were and
  lowers the scale (flax's DynamicScale); the step count still advances.
  """
  key = jax.random.fold_in(jax.random.fold_in(dropout_key, state.step),
                           jax.lax.axis_index(AXIS))
  # Each example with what its loss needs: its label, and where mixed its
  # partner's label and its own share.
  examples = {'image': batch['image'], 'label': batch['label']}
  shard_size = batch['label'].shape[0]
  if mixing is not None and mixing.enabled:
    draw = mixing_lib.sample(mixing, jax.random.fold_in(key, 1),
                             *examples['image'].shape[:3])
    examples['image'], examples['share'] = mixing_lib.mix_images(
        draw, examples['image'])
    examples['partner'] = batch['label'][::-1]

  def loss_fn(params, batch_stats, examples, key):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': batch_stats}, examples['image'],
        train=True, mutable=['batch_stats'], rngs={'dropout': key})
    logits = logits.astype(jnp.float32)  # the softmax in float32
    if 'share' not in examples:
      losses = cross_entropy(logits, examples['label'], label_smoothing)
    else:
      losses = optax.softmax_cross_entropy(logits, mixing_lib.mix_targets(
          examples['share'], examples['label'], examples['partner'],
          logits.shape[-1], label_smoothing))
    # The shard's mean, or a part's share of it: under a loss scale, a part's
    # gradients in float16 are as large as the whole shard's would be.
    return losses.sum() / shard_size, (logits, losses, updates['batch_stats'])

  # Over one device the mean is the identity, but XLA:CPU copies every
  # gradient for it (docs/performance.md).
  axis_name = AXIS if jax.lax.axis_size(AXIS) > 1 else None
  scaled = isinstance(state, ScaledTrainState)
  dynamic_scale, finite, logits, losses, batch_stats, grads = _gradients(
      state, loss_fn, examples, key, microbatches, axis_name)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  if ema is not None:
    decay = ema_decay(state.step, *ema)
    new_state = new_state.replace(ema=jax.tree.map(
        lambda average, value: decay * average + (1.0 - decay) * value,
        state.ema, {'params': new_state.params,
                    'batch_stats': new_state.batch_stats}))
  if not scaled:
    return new_state, TrainMetrics.gather_from_model_output(
        axis_name=AXIS, logits=logits, labels=batch['label'], loss=losses)

  def unless_overflow(new, old):
    return jax.tree.map(functools.partial(jnp.where, finite), new, old)

  new_state = new_state.replace(
      dynamic_scale=dynamic_scale,
      **{field: unless_overflow(getattr(new_state, field), getattr(state, field))
         for field in ('params', 'opt_state', 'batch_stats', 'ema')})
  return new_state, ScaledTrainMetrics.gather_from_model_output(
      axis_name=AXIS, logits=logits, labels=batch['label'], loss=losses,
      loss_scale=dynamic_scale.scale,
      skipped=jnp.logical_not(finite).astype(jnp.float32))


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
  """float32 logits in evaluation mode; no collectives, for plain `jax.jit`."""
  return state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, images,
      train=False).astype(jnp.float32)
