"""profiling.StepTrace: its window, and traces that cannot be taken or written.

The trainer's own trace is tested end to end in test_main.py.
"""

import logging
import os

import jax
import jax.numpy as jnp
import pytest

from tiny_flax import errors
from tiny_flax import profiling


def _trace_folders(workdir):
  folder = os.path.join(workdir, 'plugins', 'profile')
  return os.listdir(folder) if os.path.isdir(folder) else []


@pytest.fixture(autouse=True)
def _info_logs(caplog):
  caplog.set_level(logging.INFO, logger='absl')


def test_the_window_is_cut_at_the_run_end_and_taken_once(tmp_path, caplog):
  trace = profiling.StepTrace(str(tmp_path), 5)
  state = jnp.ones(3)
  trace.start(10, run_steps=12)
  trace.after(11, state)
  assert not _trace_folders(tmp_path)  # step 12 is still to come
  trace.after(12, state)
  assert len(_trace_folders(tmp_path)) == 1
  assert 'Profile of steps 11-12 written' in caplog.text
  trace.start(12, run_steps=20)  # a second first call: no second trace
  trace.after(20, state)
  trace.stop(20)
  assert len(_trace_folders(tmp_path)) == 1


def test_nothing_is_traced_when_the_first_call_ends_the_run(tmp_path):
  trace = profiling.StepTrace(str(tmp_path), 5)
  trace.start(4, run_steps=4)
  trace.stop(4)
  assert not _trace_folders(tmp_path)


def test_an_unwritable_folder_only_warns(tmp_path, caplog):
  (tmp_path / 'plugins').write_text('a file where the folder would go')
  trace = profiling.StepTrace(str(tmp_path), 2)
  trace.start(1, run_steps=10)
  trace.after(3, jnp.ones(3))
  trace.stop(3)
  assert 'No profile: ' in caplog.text and 'plugins' in caplog.text
  jax.profiler.start_trace(str(tmp_path / 'next'))  # left free for others
  jax.profiler.stop_trace()


def test_a_failed_write_only_warns(tmp_path, caplog):
  trace = profiling.StepTrace(str(tmp_path), 2)
  trace.start(1, run_steps=10)
  profiles = tmp_path / 'plugins' / 'profile'
  profiles.rmdir()
  profiles.write_text('the folder taken away while tracing')
  trace.after(3, jnp.ones(3))
  assert 'The profile of steps 2-3 could not be written' in caplog.text
  assert 'Training goes on' in caplog.text
  # jax keeps a trace whose export failed open: end it for the next test.
  profiles.unlink()
  jax.profiler.stop_trace()


def test_a_trace_already_running_is_left_alone(tmp_path, caplog):
  jax.profiler.start_trace(str(tmp_path / 'theirs'))
  try:
    trace = profiling.StepTrace(str(tmp_path / 'ours'), 2)
    trace.start(1, run_steps=10)
    trace.after(3, jnp.ones(3))
    trace.stop(3)
    assert 'No profile: Profile has already been started' in caplog.text
  finally:
    jax.profiler.stop_trace()  # still theirs to stop
  assert _trace_folders(tmp_path / 'theirs')
  assert not _trace_folders(tmp_path / 'ours')


@pytest.mark.parametrize('value', [-1, 1.5, '3'])
def test_a_bad_value_is_refused(tmp_path, value):
  with pytest.raises(errors.UserError, match='config.profile_steps'):
    profiling.StepTrace(str(tmp_path), value)
