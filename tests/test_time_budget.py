"""config.time_budget_minutes: the run sized by its first epoch, kept on resume."""

import copy
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from configs import resnet18
from tiny_flax import checkpointing
from tiny_flax import errors
from tiny_flax import optim
from tiny_flax import time_budget
from tiny_flax import train


def test_epochs_that_fit_the_rest_of_the_budget():
  # 100 s gone with the first epoch, 45 s per later one: two more end by 200 s.
  assert time_budget.epochs_that_fit(200, 100, 45, 10, done_epochs=1) == 3
  assert time_budget.epochs_that_fit(200, 100, 50, 10, done_epochs=1) == 3
  assert time_budget.epochs_that_fit(200, 100, 45, 2, done_epochs=1) == 2
  assert time_budget.epochs_that_fit(200, 100, 45, 10, done_epochs=2) == 4
  # The measured epochs alone overran the budget: the run ends with them.
  assert time_budget.epochs_that_fit(200, 250, 45, 10, done_epochs=1) == 1
  assert time_budget.epochs_that_fit(200, 250, 45, 10, done_epochs=2) == 2


def test_the_second_epoch_is_measured_where_the_schedule_allows():
  tuned = resnet18.get_config('tuned')  # three warmup epochs, then cosine
  assert time_budget.decision_epoch(tuned) == 2
  budget = resnet18.get_config('budget')  # one warmup epoch
  assert time_budget.decision_epoch(budget) == 1
  original = resnet18.get_config()  # StepLR: never depends on the length
  assert time_budget.decision_epoch(original) == 2
  original.num_epochs = 1
  assert time_budget.decision_epoch(original) == 1


class _Clock:
  """A RunClock's two readings, fixed."""

  def __init__(self, epoch_s, elapsed_s):
    self.asked = []
    self._epoch_s, self._elapsed_s = epoch_s, elapsed_s

  def epoch_s(self, steps_trained, steps_per_epoch):
    self.asked.append((steps_trained, steps_per_epoch))
    return self._epoch_s

  def elapsed_s(self):
    return self._elapsed_s


def test_the_loop_sizes_at_the_measured_epochs_end_once():
  budget = resnet18.get_config('budget')  # sized after epoch 1
  budget.time_budget_minutes = 10.0
  sizing = time_budget.Sizing(budget, steps_per_epoch=100)
  assert sizing.step == 100
  assert sizing.times_first_epoch(0) and sizing.times_first_epoch(99)
  assert not sizing.times_first_epoch(100)
  assert not sizing.sized_before(99) and sizing.sized_before(100)
  # 500 s left at 60 s an epoch: 8 more after the first, 9 of 15.
  clock = _Clock(epoch_s=60.0, elapsed_s=100.0)
  assert sizing.num_steps(clock, start_step=30) == 900
  assert clock.asked == [(70, 100)]  # the steps this start trained

  tuned = resnet18.get_config('tuned')  # sized after epoch 2
  sizing = time_budget.Sizing(tuned, steps_per_epoch=100)
  assert sizing.step == 200 and not sizing.times_first_epoch(0)
  tuned.num_train_steps = 5  # no budget: never sized
  sizing = time_budget.Sizing(tuned, steps_per_epoch=100)
  assert sizing.step == 0 and not sizing.sized_before(10**6)
  assert not sizing.times_first_epoch(0)


@pytest.mark.parametrize('override, fragment', [
    ({'time_budget_minutes': -1.0}, 'must be >= 0'),
    ({'time_budget_minutes': float('nan')}, 'must be >= 0'),
    ({'schedule.warmup_epochs': 0.5}, 'warmup_epochs >= 1'),
])
def test_a_budget_the_run_cannot_keep_is_refused(override, fragment):
  config = resnet18.get_config('tuned')
  config.time_budget_minutes = 10.0
  config.update_from_flattened_dict(override)
  with pytest.raises(errors.UserError, match=fragment):
    time_budget.check(config)


def test_num_train_steps_set_the_length_and_leave_the_budget_unused():
  config = resnet18.get_config('tuned')
  assert time_budget.active(config)
  config.num_train_steps = 2
  config.schedule.warmup_epochs = 0.5  # would be refused with the budget
  time_budget.check(config)
  assert not time_budget.active(config)
  assert not hasattr(optim.for_training(config, 10).init({'w': jnp.ones(2)}),
                     'hyperparams')


def test_a_budget_is_accepted_with_a_warmup_epoch_or_a_step_schedule():
  tuned = resnet18.get_config('tuned')
  tuned.time_budget_minutes = 10.0
  original = resnet18.get_config()  # StepLR: its rates never depend on the length
  original.time_budget_minutes = 10.0
  for config in (tuned, original):
    time_budget.check(config)


def test_the_schedule_of_a_traced_length_is_optaxs_and_the_known_lengths():
  config = resnet18.get_config('budget')  # one warmup epoch, then cosine
  steps_per_epoch = 10
  traced = jax.jit(lambda count, num_steps: optim.learning_rate_schedule(
      config, steps_per_epoch, num_steps)(count))
  for num_steps in (10, 30, 150):
    counts = np.arange(num_steps + 3)
    rates = [float(traced(c, jnp.int32(num_steps))) for c in counts]
    known = jax.jit(optim.learning_rate_schedule(config, steps_per_epoch,
                                                 num_steps))
    np.testing.assert_array_equal(rates, [float(known(c)) for c in counts])
    expected = jax.jit(optax.warmup_cosine_decay_schedule(
        0.0, config.learning_rate, steps_per_epoch,
        max(num_steps, steps_per_epoch + 1)))
    np.testing.assert_allclose(rates, [float(expected(c)) for c in counts],
                               rtol=0, atol=1e-6 * config.learning_rate)
  assert traced._cache_size() == 1  # pylint: disable=protected-access


def test_a_new_length_in_the_optimizer_state_changes_the_update_not_the_program():
  config = resnet18.get_config('budget')
  config.time_budget_minutes = 1.0
  config.momentum = 0.0
  tx = optim.for_training(config, 10)
  params = {'w': jnp.ones(3)}
  grads = {'w': jnp.ones(3)}
  update = jax.jit(tx.update)
  opt_state = tx.init(params)
  assert int(opt_state.hyperparams['schedule_steps']) == 15 * 10
  for _ in range(12):  # past the warmup epoch
    _, opt_state = update(grads, opt_state, params)
  long, _ = update(grads, opt_state, params)
  short, _ = update(grads, optim.with_schedule_steps(
      opt_state, jnp.int32(20)), params)
  for num_steps, updates in ((150, long), (20, short)):
    rate = optim.learning_rate_schedule(config, 10, num_steps)(12)
    np.testing.assert_allclose(updates['w'], -(rate * (1 + 5e-4)),
                               rtol=1e-6)
  assert update._cache_size() == 1  # pylint: disable=protected-access


def _budget_config(fake_config, warmup_epochs):
  config = copy.deepcopy(fake_config)
  config.update_from_flattened_dict({
      'batch_size': 80,  # 10 steps an epoch
      'num_epochs': 4, 'time_budget_minutes': 5.0,
      'schedule.warmup_epochs': warmup_epochs, 'log_every_steps': 5,
      'steps_per_eval': 2, 'checkpoint_every_minutes': 0.0,
      'checkpoint_every_steps': 5, 'checkpoints_to_keep': 10})
  return config


def _final(workdir):
  checkpoints = checkpointing.manager(str(workdir), read_only=True)
  try:
    step = checkpoints.latest_step()
    return step, checkpoints.restore(step, args=ocp.args.StandardRestore())
  finally:
    checkpoints.close()


@pytest.mark.parametrize('warmup_epochs', [1.0, 2.0])
def test_a_budgeted_run_trains_the_epochs_it_chose_and_keeps_them(
    warmup_epochs, fake_config, fake_builder, tmp_path, monkeypatch):
  """Sized to 3 of 4 epochs it ends as a 3-epoch run; resumed after the
  choice, it keeps 3 however the budget would choose now; resumed before,
  it chooses again."""
  del fake_builder  # prepared once for the session
  asked = []

  def choose(epochs):
    def epochs_that_fit(budget_s, elapsed_s, epoch_s, max_epochs,
                        done_epochs):
      asked.append((budget_s, elapsed_s, epoch_s, max_epochs, done_epochs))
      return epochs
    return epochs_that_fit

  monkeypatch.setattr(time_budget, 'epochs_that_fit', choose(3))
  config = _budget_config(fake_config, warmup_epochs)
  train.train_and_validate(config, str(tmp_path / 'budget'), 'off')
  (budget_s, elapsed_s, epoch_s, max_epochs, done), = asked
  assert (budget_s, max_epochs, done) == (300.0, 4, int(warmup_epochs))
  assert 0 < epoch_s < elapsed_s
  step, sized = _final(tmp_path / 'budget')
  assert step == 30
  assert int(sized['opt_state']['hyperparams']['schedule_steps']) == 30

  plain = copy.deepcopy(config)
  plain.update_from_flattened_dict({'time_budget_minutes': 0.0,
                                    'num_epochs': 3})
  train.train_and_validate(plain, str(tmp_path / 'plain'), 'off')
  _, expected = _final(tmp_path / 'plain')
  jax.tree.map(np.testing.assert_array_equal, sized['params'],
               expected['params'])

  # Back to the checkpoint of the step that chose, which holds the choice.
  checkpoints = tmp_path / 'budget' / 'checkpoints'
  chosen_at = 10 * done
  for later in range(chosen_at + 5, 35, 5):
    shutil.rmtree(checkpoints / str(later))
  monkeypatch.setattr(time_budget, 'epochs_that_fit', choose(4))
  train.train_and_validate(config, str(tmp_path / 'budget'), 'off')
  assert len(asked) == 1
  step, resumed = _final(tmp_path / 'budget')
  assert step == 30
  jax.tree.map(np.testing.assert_array_equal, resumed['params'],
               sized['params'])

  # Back before the choice: it is made again, from this start.
  for later in range(chosen_at, 35, 5):
    shutil.rmtree(checkpoints / str(later))
  monkeypatch.setattr(time_budget, 'epochs_that_fit', choose(3))
  train.train_and_validate(config, str(tmp_path / 'budget'), 'off')
  assert len(asked) == 2 and asked[1][2] > 0
  step, again = _final(tmp_path / 'budget')
  assert step == 30
  jax.tree.map(np.testing.assert_array_equal, again['params'],
               sized['params'])
