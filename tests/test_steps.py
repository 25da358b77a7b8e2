"""Train and eval step bodies, and their pmap / shard_map wrappers."""

import functools
import json

from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

import conftest
from tiny_flax import errors
from tiny_flax import mixing as mixing_lib
from tiny_flax.platform import backend
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import steps


def _state(learning_rate=0.05):
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer='sgd', momentum=0.9, nesterov=False, weight_decay=0.0,
      ema=dict(decay=0.0)))
  model = models.create('resnet_tiny', 200, axis_name=steps.AXIS)
  return steps.create_train_state(config, model, (32, 32, 3),
                                  optim.create(config, learning_rate))


def _batch(size=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.uniform(size=(size, 32, 32, 3)).astype(np.float32),
          'label': rng.integers(0, 200, size=size).astype(np.int32)}


@pytest.mark.parametrize('kind', parallel.KINDS)
def test_train_step_lowers_the_loss_on_a_fixed_batch(kind):
  par = parallel.Parallel(kind)
  step = par.compile(functools.partial(
      steps.train_step, dropout_key=jax.random.key(0)), donate_state=True)
  state = par.replicate(_state())
  batch = par.shard_batch(_batch())
  losses = []
  for _ in range(8):
    state, metrics = step(state, batch)
    losses.append(float(par.unreplicate(metrics).compute()['loss']))
  assert losses[-1] < 0.5 * losses[0], losses
  assert int(par.unreplicate(state).step) == 8


def test_eval_step_ignores_masked_examples():
  par = parallel.Parallel('pmap')
  state = par.replicate(_state())
  eval_step = par.compile(steps.eval_step)
  batch = _batch()
  batch['mask'] = np.arange(16) < 5
  masked = par.unreplicate(eval_step(state, par.shard_batch(batch))).compute()
  first5 = {k: v[:5] for k, v in batch.items()}
  direct = {k: np.concatenate([v, v[:3]]) for k, v in first5.items()}  # pad to 8
  direct['mask'] = np.arange(8) < 5
  expected = par.unreplicate(eval_step(state, par.shard_batch(direct))).compute()
  for key in ('loss', 'top1', 'top5'):
    np.testing.assert_allclose(masked[key], expected[key], rtol=1e-5)


def test_cross_entropy_smoothing_matches_torch_definition():
  logits = np.random.default_rng(0).normal(size=(4, 10)).astype(np.float32)
  labels = np.array([0, 3, 9, 2], np.int32)
  smoothing = 0.1
  log_probs = jax.nn.log_softmax(logits)
  expected = -((1 - smoothing) * log_probs[np.arange(4), labels]
               + smoothing * log_probs.mean(axis=-1))
  np.testing.assert_allclose(steps.cross_entropy(logits, labels, smoothing),
                             expected, rtol=1e-5)


def test_unknown_parallelism_is_refused():
  with pytest.raises(errors.UserError, match='pmap, shard_map'):
    parallel.Parallel('data_parallel')


@pytest.mark.parametrize('kind', parallel.KINDS)
def test_merge_metrics_counts_every_step(kind):
  par = parallel.Parallel(kind)
  gather = par.compile(
      lambda unused_state, batch: steps.TrainMetrics.gather_from_model_output(
          axis_name=steps.AXIS, logits=batch['logits'], labels=batch['label'],
          loss=batch['loss']))
  rng = np.random.default_rng(0)
  batches = [{'logits': rng.normal(size=(4, 10)).astype(np.float32),
              'label': rng.integers(0, 10, 4).astype(np.int32),
              'loss': rng.uniform(size=4).astype(np.float32)}
             for _ in range(3)]
  collected = [gather(par.replicate(jnp.zeros(())), par.shard_batch(batch))
               for batch in batches]
  merged = par.merge_metrics(collected).compute()
  logits = np.concatenate([b['logits'] for b in batches])
  labels = np.concatenate([b['label'] for b in batches])
  np.testing.assert_allclose(
      merged['loss'], np.concatenate([b['loss'] for b in batches]).mean(),
      rtol=1e-6)
  np.testing.assert_allclose(merged['accuracy'],
                             (logits.argmax(-1) == labels).mean(), rtol=1e-6)


def test_pmap_shard_map_and_one_device_agree_on_8_devices():
  result = conftest.run_python(
      ['tests/parallel_check.py'],
      env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(result.stdout.strip().splitlines()[-1])
  assert report['params_moved'] > 1e-3
  for kind, diff in report['diffs'].items():
    assert diff < 1e-5, (kind, diff)
  # float16: the wrappers agree with each other, and with one device within
  # float16's rounding of the weight gradients (sums over 2 or 16 images).
  assert report['float16_pmap_shard_map'] < 1e-5, report
  assert report['float16_skipped'] == 0.0, report
  for kind, diff in report['float16_diffs'].items():
    assert diff < 0.05, (kind, diff)


def test_cpu_compiler_options_are_known_to_this_jaxlib():
  if jax.default_backend() == 'cpu':
    assert backend.compiler_options() == backend.CPU_COMPILER_OPTIONS
  lowered = jax.jit(lambda x: x + 1).lower(np.ones(3))
  compiled = lowered.compile(compiler_options=backend.CPU_COMPILER_OPTIONS)
  np.testing.assert_array_equal(compiled(np.ones(3)), 2)


def test_compile_falls_back_when_jaxlib_lacks_an_option(monkeypatch):
  monkeypatch.setattr(backend, 'CPU_COMPILER_OPTIONS',
                      {'xla_cpu_no_such_option': 'x'})
  monkeypatch.setattr(backend, 'on_cpu', lambda: True)
  backend.compiler_options.cache_clear()
  try:
    assert backend.compiler_options() is None
  finally:
    backend.compiler_options.cache_clear()


@pytest.mark.parametrize('kind', parallel.KINDS)
def test_train_steps_move_nothing_between_host_and_device(kind):
  """Once the batch is placed, steps and metric merging stay on the device."""
  model = models.create('resnet_tiny', 10, axis_name=steps.AXIS)
  config = ml_collections.ConfigDict({
      'seed': 0, 'optimizer': 'sgd', 'momentum': 0.9, 'nesterov': False,
      'weight_decay': 5e-4, 'ema': {'decay': 0.0}})
  par = parallel.Parallel(kind)
  state = par.replicate(steps.create_train_state(
      config, model, (32, 32, 3),
      optim.create(config, optax.cosine_decay_schedule(0.1, 10))))
  step = par.compile(functools.partial(
      steps.train_step, dropout_key=jax.random.key(0)), donate_state=True)
  rng = np.random.default_rng(0)
  batches = [par.shard_batch({
      'image': rng.normal(size=(8, 32, 32, 3)).astype(np.float32),
      'label': rng.integers(0, 10, 8).astype(np.int32)}) for _ in range(4)]
  state, metrics = step(state, batches[0])  # compiles
  collected = [metrics]
  with jax.transfer_guard('disallow'):
    for batch in batches[1:]:
      state, metrics = step(state, batch)
      collected.append(metrics)
    merged = par.merge_metrics(collected)
  assert np.isfinite(merged.compute()['loss'])


class _Linear(nn.Module):
  """No BatchNorm, no dropout: splitting its batch changes no gradient."""

  @nn.compact
  def __call__(self, images, train=False):
    return nn.Dense(200)(images.reshape((images.shape[0], -1)))


def _microbatch_step(par, microbatches, **kwargs):
  return par.compile(functools.partial(
      steps.train_step, dropout_key=jax.random.key(0),
      microbatches=microbatches, **kwargs))


@pytest.mark.parametrize('mixing', [
    None, mixing_lib.Mixing(mixup_alpha=0.2, cutmix_alpha=1.0, mode='elem')],
                         ids=['plain', 'mixed'])
def test_microbatches_sum_to_the_whole_batchs_update(mixing):
  """Four parts of a shard update as the shard at once, with smoothed and
  mixed targets (each example mixed with its mirror across the whole shard,
  images and labels: timm's, tests/test_mixing.py)."""
  model, batch = _Linear(), _batch()
  state = steps.TrainState.create(
      apply_fn=model.apply, batch_stats={}, tx=optax.sgd(0.5, momentum=0.9),
      params=model.init(jax.random.key(1), jnp.zeros((1, 32, 32, 3)))['params'])
  par = parallel.Parallel('shard_map')
  fitted = par.replicate(state)  # so that the accuracies say something
  for _ in range(5):
    fitted, _ = _microbatch_step(par, 1)(fitted, par.shard_batch(batch))
  state = par.unreplicate(fitted)
  results = []
  for microbatches in (1, 4):
    step = _microbatch_step(par, microbatches, label_smoothing=0.1,
                            mixing=mixing)
    new, metrics = step(par.replicate(state), par.shard_batch(batch))
    results.append((par.unreplicate(new).params,
                    par.unreplicate(metrics).compute()))
  (whole, whole_metrics), (parts, parts_metrics) = results
  images, targets = batch['image'], optax.smooth_labels(
      jax.nn.one_hot(batch['label'], 200), 0.1)
  if mixing:  # the step's draw: its key for step 5 on device 0
    key = jax.random.fold_in(jax.random.fold_in(jax.random.key(0), 5), 0)
    images, share = mixing_lib.mix_images(mixing_lib.sample(
        mixing, jax.random.fold_in(key, 1), 16, 32, 32), images)
    targets = mixing_lib.mix_targets(share, batch['label'],
                                     batch['label'][::-1], 200, 0.1)
  expected_loss = optax.softmax_cross_entropy(
      model.apply({'params': state.params}, images), targets).mean()
  np.testing.assert_allclose(whole_metrics['loss'], expected_loss, rtol=1e-5)
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), whole, state.params)
  assert min(jax.tree.leaves(moved)) > 1e-3
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-6), parts, whole)
  np.testing.assert_allclose(parts_metrics['loss'], whole_metrics['loss'],
                             rtol=1e-6)
  assert parts_metrics['accuracy'] == whole_metrics['accuracy'] > 0.5


def test_each_microbatch_is_normalised_by_its_own_statistics_carried_on():
  """Two parts: BatchNorm's running statistics updated by the first part,
  then the second, and the mean of the parts' gradients, as PyTorch's
  gradient accumulation computes them."""
  state, batch = _state(learning_rate=0.05), _batch()
  par = parallel.Parallel('shard_map')
  new, _ = _microbatch_step(par, 2)(par.replicate(state), par.shard_batch(batch))
  new = par.unreplicate(new)

  model = models.create('resnet_tiny', 200)  # no collective: by hand

  def loss(params, batch_stats, part):
    logits, updates = model.apply(
        {'params': params, 'batch_stats': batch_stats}, part['image'],
        train=True, mutable=['batch_stats'])
    return steps.cross_entropy(logits, part['label']).mean(), (
        updates['batch_stats'])

  batch_stats, grads = state.batch_stats, []
  for half in (slice(0, 8), slice(8, 16)):
    (_, batch_stats), part_grads = jax.value_and_grad(loss, has_aux=True)(
        state.params, batch_stats, jax.tree.map(lambda x: x[half], batch))
    grads.append(part_grads)
  # SGD's first step with momentum: the learning rate times the gradient.
  expected = jax.tree.map(lambda p, a, b: p - 0.05 * (a + b) / 2,
                          state.params, *grads)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-5,
                                 atol=1e-6), new.batch_stats, batch_stats)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-4,
                                 atol=1e-6), new.params, expected)


def test_microbatches_hold_one_parts_activations():
  """The compiled step's temporary memory shrinks with the parts."""
  par = parallel.Parallel('shard_map')
  state, batch = par.replicate(_state()), par.shard_batch(_batch(64))
  temp = {}
  for microbatches in (1, 4):
    compiled = _microbatch_step(par, microbatches).lower(state, batch).compile()
    temp[microbatches] = compiled.memory_analysis().temp_size_in_bytes
  assert temp[4] < 0.5 * temp[1], temp


@pytest.mark.parametrize('microbatches', [0, 3])
def test_microbatches_must_divide_each_devices_batch(microbatches):
  with pytest.raises(errors.UserError, match=f'divide the batch of each '
                     f'device \\(16 images\\), got {microbatches}'):
    steps.check_microbatches(microbatches, 16)
  steps.check_microbatches(4, 16)
