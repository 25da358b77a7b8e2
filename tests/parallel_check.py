"""Run in a subprocess with 8 host devices: two train steps under every wrapper.

Prints the largest difference of the updated params, BatchNorm statistics and
metrics between pmap, shard_map and a single device, one step per call or
both in one (steps.in_sequence), as JSON; and the same for float16 steps
with loss scaling under each wrapper.
"""

import functools
import json

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import step_runner
from tiny_flax import steps


def run(kind, devices, state, batches, steps_per_dispatch=1):
  """Params, BatchNorm statistics and merged metrics after one step per batch."""
  par = parallel.Parallel(kind, devices)
  body = functools.partial(steps.train_step, dropout_key=jax.random.key(1))
  calls = len(batches) // steps_per_dispatch
  one, several = par.compile_train(body)
  runner = step_runner.StepRunner(par, one, par.replicate(state),
                                  iter(batches), [steps_per_dispatch] * calls,
                                  several)
  assert sum(runner.step() for _ in range(calls)) == len(batches)
  state = par.unreplicate(runner.state)
  return jax.device_get((state.params, state.batch_stats,
                         runner.pop_metrics()))


def largest_differences(results, reference):
  return {name: max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
                    for a, b in zip(jax.tree.leaves(result),
                                    jax.tree.leaves(reference)))
          for name, result in results.items()}


def main():
  assert jax.device_count() == 8, jax.devices()
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer='sgd', momentum=0.9, nesterov=False, weight_decay=1e-4,
      ema=dict(decay=0.0)))
  model = models.create('resnet_tiny', 200, axis_name=steps.AXIS)
  state = jax.device_get(
      steps.create_train_state(config, model, (32, 32, 3),
                               optim.create(config, 0.1)))
  rng = np.random.default_rng(0)
  batches = [{'image': rng.uniform(size=(16, 32, 32, 3)).astype(np.float32),
              'label': rng.integers(0, 200, size=16).astype(np.int32)}
             for _ in range(2)]
  results = {
      'pmap': run('pmap', None, state, batches),
      'shard_map': run('shard_map', None, state, batches),
      'pmap_in_sequence': run('pmap', None, state, batches, 2),
      'shard_map_in_sequence': run('shard_map', None, state, batches, 2),
      'single': run('shard_map', jax.devices()[:1], state, batches),
  }
  reference = results.pop('single')
  moved = largest_differences({'single': reference[0]}, state.params)['single']

  half_model = models.create('resnet_tiny', 200, axis_name=steps.AXIS,
                             dtype=jnp.float16)
  half = jax.device_get(steps.create_train_state(
      config, half_model, (32, 32, 3), optim.create(config, 0.1),
      loss_scaling=True))
  # A shard of 2 examples has 8 times the gradient of one of 16: at the
  # initial scale it overflows float16 and the step is skipped.
  half = half.replace(dynamic_scale=half.dynamic_scale.replace(
      scale=np.float32(2.0**10)))
  half_reference = run('shard_map', jax.devices()[:1], half, batches)
  half_results = {kind: run(kind, None, half, batches)
                  for kind in ('pmap', 'shard_map')}
  print(json.dumps({
      'diffs': largest_differences(results, reference),
      'params_moved': moved,
      'float16_diffs': largest_differences(half_results, half_reference),
      'float16_pmap_shard_map': largest_differences(
          {'pmap': half_results['pmap']}, half_results['shard_map'])['pmap'],
      'float16_skipped': float(half_reference[2]['skipped'])}))


if __name__ == '__main__':
  main()
