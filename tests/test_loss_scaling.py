"""float16 compute with dynamic loss scaling, for GPUs without bfloat16."""

import functools
import types

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

import conftest
from tiny_flax import checkpointing
from tiny_flax import errors
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import report
from tiny_flax import steps
from tiny_flax.platform import backend


def _fake_gpu(monkeypatch, capability):
  device = types.SimpleNamespace(platform='gpu', compute_capability=capability)
  monkeypatch.setattr(jax, 'local_devices', lambda *a, **k: [device])


@pytest.mark.parametrize('half_precision,half_dtype,expected', [
    (False, 'auto', jnp.float32), (False, 'float16', jnp.float32),
    (True, 'auto', jnp.bfloat16),  # the CPU
    (True, 'bfloat16', jnp.bfloat16), (True, 'float16', jnp.float16)])
def test_compute_dtype_choices(half_precision, half_dtype, expected):
  assert backend.compute_dtype(half_precision, half_dtype) == expected


@pytest.mark.parametrize('capability,expected', [
    ('6.0', jnp.float16), ('7.5', jnp.float16),  # P100, T4
    ('8.0', jnp.bfloat16), ('9.0', jnp.bfloat16)])  # A100, H100
def test_auto_takes_float16_on_gpus_without_bfloat16(monkeypatch, capability,
                                                     expected):
  _fake_gpu(monkeypatch, capability)
  assert backend.compute_dtype(True, 'auto') == expected
  assert backend.compute_dtype(True, 'bfloat16') == jnp.bfloat16


def test_a_bad_half_dtype_is_named():
  with pytest.raises(errors.UserError, match="auto, bfloat16, float16.*'fp16'"):
    backend.compute_dtype(True, 'fp16')


def _scaled_state(ema_decay=0.0):
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer='sgd', momentum=0.9, nesterov=False, weight_decay=0.0,
      ema=dict(decay=ema_decay)))
  model = models.create('resnet_tiny', 200, axis_name=steps.AXIS,
                        dtype=jnp.float16)
  return steps.create_train_state(config, model, (32, 32, 3),
                                  optim.create(config, 0.05),
                                  loss_scaling=True)


def _batch(size=16, seed=0):
  rng = np.random.default_rng(seed)
  return {'image': rng.uniform(size=(size, 32, 32, 3)).astype(np.float32),
          'label': rng.integers(0, 200, size=size).astype(np.int32)}


def _run(par, state, batches, microbatches=1):
  step = par.compile(functools.partial(
      steps.train_step, dropout_key=jax.random.key(0),
      microbatches=microbatches))
  state = par.replicate(state)
  collected = []
  for batch in batches:
    state, metrics = step(state, par.shard_batch(batch))
    collected.append(par.unreplicate(metrics).compute())
  return jax.device_get(par.unreplicate(state)), collected


@pytest.mark.parametrize('kind', parallel.KINDS)
def test_float16_steps_lower_the_loss(kind):
  state, collected = _run(parallel.Parallel(kind), _scaled_state(),
                          [_batch()] * 8)
  losses = [float(m['loss']) for m in collected]
  assert all(np.isfinite(losses)), losses
  assert losses[-1] < 0.5 * losses[0], losses
  assert [float(m['skipped']) for m in collected] == [0.0] * 8
  assert [float(m['loss_scale']) for m in collected] == [2.0**16] * 8
  assert int(state.step) == 8 and int(state.dynamic_scale.fin_steps) == 8


def test_an_overflowing_step_is_skipped_and_halves_the_scale():
  """A scale that overflows float16's gradients: nothing that trains moves,
  the scale halves, the step counts; the next finite step trains."""
  state = _scaled_state(ema_decay=0.9)
  huge = state.dynamic_scale.replace(scale=jnp.asarray(2.0**100, jnp.float32),
                                     fin_steps=jnp.asarray(5, jnp.int32))
  state = state.replace(dynamic_scale=huge)
  before = jax.device_get(state)
  par = parallel.Parallel('shard_map')
  after, collected = _run(par, state, [_batch()])
  assert float(collected[0]['skipped']) == 1.0
  assert np.isfinite(float(collected[0]['loss']))
  assert int(after.step) == 1
  assert float(after.dynamic_scale.scale) == 2.0**99
  assert int(after.dynamic_scale.fin_steps) == 0
  for field in ('params', 'opt_state', 'batch_stats', 'ema'):
    jax.tree.map(np.testing.assert_array_equal, getattr(after, field),
                 getattr(before, field))

  fitting = after.replace(dynamic_scale=after.dynamic_scale.replace(
      scale=jnp.asarray(2.0**10, jnp.float32)))
  trained, collected = _run(par, fitting, [_batch()])
  assert float(collected[0]['skipped']) == 0.0
  moved = jax.tree.map(lambda a, b: np.abs(a - b).max(), trained.params,
                       before.params)
  assert max(jax.tree.leaves(moved)) > 1e-4
  assert int(trained.step) == 2


def test_one_overflowing_microbatch_skips_the_step_as_the_whole_would():
  """One part of four beyond float16: the step is skipped and the scale
  halves; every part finite at the growth interval, the scale doubles, as
  for the shard computed at once."""
  state = _scaled_state()
  interval = int(state.dynamic_scale.growth_interval)
  state = state.replace(dynamic_scale=state.dynamic_scale.replace(
      fin_steps=jnp.asarray(interval, jnp.int32)))
  par = parallel.Parallel('shard_map')
  overflowing = _batch()
  overflowing['image'][8:12] *= 1e6  # float16 ends at 65504
  after, [metrics] = _run(par, state, [overflowing], microbatches=4)
  assert float(metrics['skipped']) == 1.0
  assert float(after.dynamic_scale.scale) == 2.0**15
  assert int(after.dynamic_scale.fin_steps) == 0
  jax.tree.map(np.testing.assert_array_equal, after.params,
               jax.device_get(state.params))

  grown = {}
  for microbatches in (1, 4):
    after, [metrics] = _run(par, state, [_batch()], microbatches)
    assert float(metrics['skipped']) == 0.0
    grown[microbatches] = (float(after.dynamic_scale.scale),
                           int(after.dynamic_scale.fin_steps))
  assert grown[4] == grown[1] == (2.0**17, 0)


def test_float16_logits_reach_the_loss_in_float32():
  state = _scaled_state()
  logits = steps.logits_step(state, _batch(4)['image'])
  assert logits.dtype == jnp.float32


def _saved_fields(workdir, step):
  checkpoints = checkpointing.manager(workdir, read_only=True)
  try:
    return checkpointing.saved_fields(checkpoints, step)
  finally:
    checkpoints.close()


def test_a_float16_run_resumes_and_evaluates_in_bfloat16(
    fake_config, fake_builder, tmp_path):
  """A run may move between a T4 (float16) and an A100 (bfloat16): its
  checkpoints restore either way, the loss scale kept only in float16."""
  del fake_builder  # prepared once for the session
  workdir = str(tmp_path / 'run')
  dataset = [f'--config.dataset.{key}={fake_config.dataset[key]}'
             for key in ('manual_dir', 'data_dir', 'fake_train_per_class',
                         'fake_val_per_class')]
  command = ['-m', 'tiny_flax.main', '--config=configs/smoke.py',
             f'--workdir={workdir}', '--config.batch_size=80',
             '--config.log_every_steps=2', '--config.half_precision=true',
             *dataset]
  first = conftest.run_python(command + ['--config.half_dtype=float16',
                                         '--config.num_train_steps=4'])
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'computing in float16' in first.stderr
  assert 'dynamic_scale' in _saved_fields(workdir, 4)
  scalars = report.read_scalars(workdir)
  assert scalars['train_loss_scale'] == {2: 2.0**16, 4: 2.0**16}
  assert scalars['train_skipped'] == {2: 0.0, 4: 0.0}
  assert all(np.isfinite(list(scalars['train_loss'].values())))

  second = conftest.run_python(command + ['--config.half_dtype=bfloat16',
                                          '--config.num_train_steps=6'])
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Resuming from the checkpoint of step 4' in second.stderr
  assert 'dynamic_scale' not in _saved_fields(workdir, 6)
  scalars = report.read_scalars(workdir)
  assert 6 in scalars['train_loss'] and 6 not in scalars['train_loss_scale']

  evaluated = conftest.run_python(
      ['-m', 'tiny_flax.evaluate', f'--workdir={workdir}', '--checkpoint=4',
       '--config=configs/smoke.py', '--config.half_precision=true',
       '--config.half_dtype=bfloat16', *dataset])
  assert evaluated.returncode == 0, evaluated.stderr[-3000:]
  assert 'computing in bfloat16' in evaluated.stderr
  assert '(400 images, step 4)' in evaluated.stdout


def test_a_state_gains_a_fresh_scale_and_loses_it():
  scaled = _scaled_state()
  scaled = scaled.replace(dynamic_scale=scaled.dynamic_scale.replace(
      scale=jnp.asarray(8.0, jnp.float32)))
  assert steps.with_loss_scaling(scaled, True) is scaled
  plain = steps.with_loss_scaling(scaled, False)
  assert type(plain) is steps.TrainState  # pylint: disable=unidiomatic-typecheck
  assert plain.params is scaled.params and plain.opt_state is scaled.opt_state
  again = steps.with_loss_scaling(plain, True)
  assert float(again.dynamic_scale.scale) == steps.INITIAL_LOSS_SCALE
  assert again.params is scaled.params
