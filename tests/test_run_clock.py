"""run_clock: the run's phases and the epoch that sizes a time budget, on a
clock the test moves by hand."""

import re

from absl import logging
import pytest

from tiny_flax import run_clock


class FakeClock:

  def __init__(self):
    self.now = 100.0

  def __call__(self):
    return self.now

  def advance(self, seconds):
    self.now += seconds


@pytest.fixture
def fake():
  return FakeClock()


def _first_epoch(fake, clock, *, input_s=5.0, setup_s=2.0, compile_s=30.0,
                 aside_s=4.0, first_steps=2, step_s=0.5, steps=10):
  """Input, setup, a first call of `first_steps` with a validation step
  compiled inside its span, then the epoch's other steps."""
  with clock.input():
    fake.advance(input_s)
  fake.advance(setup_s)
  clock.first_call_begins()
  fake.advance(1.0)
  with clock.setup():
    fake.advance(aside_s)
  fake.advance(compile_s - 1.0)
  clock.first_call_ended(first_steps)
  fake.advance(step_s * (steps - first_steps))


def test_the_first_epoch_is_its_validation_and_its_later_steps_pace(fake):
  clock = run_clock.RunClock(fake)
  _first_epoch(fake, clock)
  with clock.validation():
    fake.advance(3.0)
  assert clock.first_call_s == 30.0  # the validation compiled inside: setup
  assert clock.last_validation_s() == 3.0
  # 8 timed steps at 0.5 s: an epoch of 10 is 5 s, plus its validation.
  assert clock.epoch_s(10, 10) == pytest.approx(8.0)
  assert clock.elapsed_s() == pytest.approx(5 + 2 + 4 + 30 + 4 + 3)


def test_a_first_call_that_ran_every_step_sets_the_pace(fake):
  """Resumed at the epoch's end: the only steps timed are the first call's,
  compilation included."""
  clock = run_clock.RunClock(fake)
  _first_epoch(fake, clock, first_steps=10, compile_s=20.0)
  with clock.validation():
    fake.advance(3.0)
  assert clock.epoch_s(10, 10) == pytest.approx(3.0 + 20.0)


def test_after_two_validations_an_epoch_is_the_time_between_them(fake):
  clock = run_clock.RunClock(fake)
  _first_epoch(fake, clock)
  with clock.validation():
    fake.advance(3.0)
  fake.advance(1.5)  # the checkpoint
  fake.advance(7.0)  # the second epoch's steps
  with clock.validation():
    fake.advance(2.5)
  assert clock.epoch_s(20, 10) == pytest.approx(1.5 + 7.0 + 2.5)
  assert clock.validation_s == pytest.approx(5.5)


def test_the_run_log_splits_the_wall_time_into_its_phases(fake, monkeypatch):
  clock = run_clock.RunClock(fake)
  _first_epoch(fake, clock, steps=10)  # 8 later steps of batch 4 in 4 s
  with clock.validation():
    fake.advance(3.0)
  fake.advance(1.0)
  lines = []
  monkeypatch.setattr(logging, 'info',
                      lambda message, *args: lines.append(message % args))
  clock.log_run(0, 10, batch_size=4)
  times = re.fullmatch(
      r'Steps 1-10 in ([\d.]+) s: input ([\d.]+) s, setup ([\d.]+) s, first '
      r'train call \(compilation included\) ([\d.]+) s, validation ([\d.]+) '
      r's, later steps ([\d.]+) s at (\d+) images/s\.', lines[0])
  total, input_s, setup, first, validation, later, images_s = map(
      float, times.groups())
  assert (input_s, setup, first, validation, later) == (5.0, 6.0, 30.0, 3.0,
                                                        5.0)
  assert total == 49.0 == input_s + setup + first + validation + later
  assert images_s == round(8 * 4 / 5.0)
