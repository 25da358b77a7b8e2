"""The training loop's policy: what happens after each step."""

from tiny_flax import loop_policy

# 25 steps, epochs of 10, logs every 4, no step checkpoints.
INTERVALS = loop_policy.Intervals(num_steps=25, steps_per_epoch=10,
                                  log_every=4)


def _steps_where(field, intervals=INTERVALS, **kwargs):
  return [step for step in range(1, intervals.num_steps + 1)
          if getattr(loop_policy.after_step(step, intervals, **kwargs), field)]


def test_epoch_ends_and_the_last_step_validate_log_and_save():
  assert _steps_where('validate') == [10, 20, 25]
  assert _steps_where('save') == [10, 20, 25]
  assert _steps_where('log') == [4, 8, 10, 12, 16, 20, 24, 25]
  assert not _steps_where('stop')


def test_timed_checkpoints_are_asked_only_at_log_steps_that_save_nothing():
  assert _steps_where('save_if_due') == [4, 8, 12, 16, 24]
  for step in range(1, 26):
    todo = loop_policy.after_step(step, INTERVALS)
    assert not (todo.save and todo.save_if_due)
    assert not todo.save_if_due or todo.log


def test_every_n_step_checkpoints_end_a_log_interval_without_validation():
  intervals = INTERVALS._replace(checkpoint_every=7)
  assert _steps_where('save', intervals) == [7, 10, 14, 20, 21, 25]
  assert _steps_where('validate', intervals) == [10, 20, 25]
  assert set(_steps_where('save', intervals)) <= set(
      _steps_where('log', intervals))


def test_a_stop_request_saves_and_stops_mid_epoch_logging_only_on_log_steps():
  """Between log steps the interval's metrics go with the checkpoint
  (train.py), so that the resumed run logs the interval whole."""
  todo = loop_policy.after_step(3, INTERVALS, stop_requested=True)
  assert todo == loop_policy.Actions(log=False, validate=False, save=True,
                                     save_if_due=False, stop=True)
  todo = loop_policy.after_step(8, INTERVALS, stop_requested=True)
  assert todo == loop_policy.Actions(log=True, validate=False, save=True,
                                     save_if_due=False, stop=True)


def test_a_stop_request_at_an_epoch_end_validates_and_saves_once():
  todo = loop_policy.after_step(10, INTERVALS, stop_requested=True)
  assert todo.validate and todo.save and todo.stop and todo.log


def test_a_stop_request_at_the_last_step_just_finishes():
  assert loop_policy.after_step(25, INTERVALS, stop_requested=True) == (
      loop_policy.after_step(25, INTERVALS))


def test_the_intervals_are_what_no_dispatch_may_cross():
  intervals = INTERVALS._replace(checkpoint_every=7)
  assert intervals.every() == (4, 10, 7)
