"""Several train steps per dispatch: which calls run how many steps."""

import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tiny_flax import checkpointing
from tiny_flax import loop_policy
from tiny_flax import parallel
from tiny_flax import step_runner
from tiny_flax import steps


def _ends(start, sizes):
  return list(itertools.accumulate(sizes, initial=start))[1:]


def test_calls_stop_at_every_event_and_remainders_go_singly():
  assert list(step_runner.dispatch_sizes(0, 10, 4, (5,))) == [4, 1, 4, 1]
  # Logs every 10, epochs of 7 steps, no step checkpoints, 25 steps.
  sizes = list(step_runner.dispatch_sizes(0, 25, 4, (10, 7, 0)))
  assert set(sizes) == {1, 4} and sum(sizes) == 25
  ends = set(_ends(0, sizes))
  assert {7, 10, 14, 20, 21, 25} <= ends
  for start, end in zip([0] + _ends(0, sizes), _ends(0, sizes)):
    assert not [s for s in range(start + 1, end) if s % 7 == 0 or s % 10 == 0]


def test_a_resumed_run_dispatches_as_an_uninterrupted_one():
  every = (6, 9, 4)
  sizes = list(step_runner.dispatch_sizes(0, 40, 3, every))
  for position, resumed_at in enumerate(_ends(0, sizes)):
    assert list(step_runner.dispatch_sizes(resumed_at, 40, 3, every)) == (
        sizes[position + 1:])


def test_one_step_per_call_is_every_step():
  assert list(step_runner.dispatch_sizes(3, 8, 1, (2, 5))) == [1] * 5


@pytest.mark.parametrize('steps_per_epoch, epochs, log_every, checkpoint_every',
                         [(781, 50, 100, 0), (390, 15, 100, 0),
                          (781, 15, 50, 1562), (100, 3, 30, 0)])
def test_the_alignment_hint_names_settings_where_every_call_is_whole(
    steps_per_epoch, epochs, log_every, checkpoint_every):
  """The settings the hint suggests leave no one-step call in the run."""
  intervals = loop_policy.Intervals(steps_per_epoch * epochs, steps_per_epoch,
                                    log_every, checkpoint_every)
  hint = step_runner.alignment_hint(intervals, 16)
  assert 1 in set(step_runner.dispatch_sizes(0, intervals.num_steps, 16,
                                             intervals.every()))
  suggested = re.search(r'--config.steps_per_dispatch=(\d+) '
                        r'--config.log_every_steps=(\d+)', hint)
  per_call, log_every = map(int, suggested.groups())
  aligned = intervals._replace(log_every=log_every)
  assert set(step_runner.dispatch_sizes(0, aligned.num_steps, per_call,
                                        aligned.every())) == {per_call}
  assert step_runner.alignment_hint(aligned, per_call) is None


def test_the_alignment_hint_is_silent_when_calls_are_whole_or_single():
  intervals = loop_policy.Intervals(781 * 15, 781, 110, 0)
  assert step_runner.alignment_hint(intervals, 11) is None
  assert step_runner.alignment_hint(intervals, 1) is None
  prime = loop_policy.Intervals(97 * 3, 97, 100, 0)
  hint = step_runner.alignment_hint(prime, 16)
  assert 'the epoch (97 steps)' in hint and '--config' not in hint


def test_groups_stack_successive_batches_in_order():
  batches = iter([{'index': np.full(2, i)} for i in range(5)])
  groups = list(step_runner.grouped(batches, [3, 1, 1]))
  assert [size for size, _ in groups] == [3, 1, 1]
  np.testing.assert_array_equal(groups[0][1]['index'],
                                [[0, 0], [1, 1], [2, 2]])
  np.testing.assert_array_equal(groups[2][1]['index'], [4, 4])


class _Output:
  """A step output that records when the host waits for it."""

  def __init__(self, step, waited):
    self.step, self._waited = step, waited

  def block_until_ready(self):
    self._waited.append(self.step)
    return self


def test_the_host_waits_once_it_is_three_steps_ahead():
  waited = []
  steps_ahead = step_runner.StepsAhead(limit=3)
  for step in range(1, 7):
    steps_ahead.dispatched({'loss': _Output(step, waited)})
    assert waited == list(range(1, step - 2)), step


def _metrics_body(state, batch):
  """A step whose losses are sums that float32 rounds in the order taken."""
  return state + 1, steps.TrainMetrics.gather_from_model_output(
      axis_name=steps.AXIS, logits=batch['logits'], labels=batch['label'],
      loss=batch['loss'])


def _logged(par, compiled, batches, sizes, unlogged=None):
  runner = step_runner.StepRunner(par, compiled, par.replicate(jnp.int32(0)),
                                  iter(batches), sizes, unlogged=unlogged)
  for _ in sizes:
    runner.step()
  return runner


def test_a_log_interval_cut_by_a_stop_is_logged_whole_after_the_resume(
    tmp_path):
  """The metrics of an interval's first steps go through a checkpoint's
  metadata (JSON) and are merged with the resumed run's: the logged values
  equal an uninterrupted run's bit for bit."""
  rng = np.random.default_rng(0)
  batches = [{'loss': rng.uniform(0.5, 1.5, 8).astype(np.float32),
              'logits': rng.normal(size=(8, 5)).astype(np.float32),
              'label': rng.integers(0, 5, 8).astype(np.int32)}
             for _ in range(7)]
  batches[0]['loss'][:] = 2**25  # a sum of 2**28: each later step's is lost
  par = parallel.Parallel('shard_map')
  compiled, _ = par.compile_train(_metrics_body)
  whole = jax.device_get(_logged(par, compiled, batches, [1] * 7).pop_metrics())

  stopped = _logged(par, compiled, batches[:3], [1] * 3)
  checkpoints = checkpointing.manager(str(tmp_path))
  checkpointing.save(checkpoints, 3, {'step': np.int32(3)},
                     unlogged=stopped.unlogged_metrics())
  checkpointing.wait(checkpoints)
  unlogged = checkpointing.unlogged_metrics(checkpoints, 3)
  assert unlogged['loss']['count'] == 24
  resumed = _logged(par, compiled, batches[3:], [1] * 4, unlogged)
  assert jax.device_get(resumed.pop_metrics()) == whole
  # The next interval starts afresh; without the carried metrics the
  # resumed interval is another one.
  assert checkpointing.unlogged_metrics(checkpoints, 4) is None
  alone = _logged(par, compiled, batches[3:], [1] * 4)
  assert jax.device_get(alone.pop_metrics())['loss'] != whole['loss']
  checkpoints.close()
