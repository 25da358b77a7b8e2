"""tiny_flax.main with one fault injected at a chosen point, for resume tests.

    python tests/faults.py FAULT:N MAIN_FLAGS...

FAULT:N is one of
  kill_after_step:N  SIGKILL once training step N is dispatched;
  sigterm_after_step:N
                     SIGTERM once training step N is dispatched: the run
                     saves the step that call ends at and exits 0;
  ctrl_c_in_setup:0  SIGINT while the train state's initialisation compiles,
                     before the loop's handler would serve it as a stop;
  kill_in_save:N     SIGKILL just after the checkpoint of step N started,
                     while orbax writes it in the background;
  kill_in_eval:N     SIGKILL inside this process's N-th validation pass,
                     after its first batch;
  full_disk:N        from the checkpoint of step N on, no file may grow past
                     FULL_DISK_BYTES (RLIMIT_FSIZE): checkpoint writes fail
                     with EFBIG, as on a full disk (the TensorBoard image
                     grid shrinks to one pixel to stay below it);
  out_of_memory_after_step:N
                     raise XLA's error of a device out of memory once
                     training step N is dispatched;
  budget_spent_in:N  process N's clock reads the whole time budget spent
                     when the run is sized (config.time_budget_minutes), so
                     that its own choice would differ from process 0's.
"""

import os
import resource
import signal
import sys
import threading

from absl import app
import jax

from tiny_flax import checkpointing
from tiny_flax import main
from tiny_flax import progress
from tiny_flax import steps
from tiny_flax import summaries
from tiny_flax import time_budget
from tiny_flax import train

# Below the larger data files of every checkpoint: orbax spreads the smoke
# run's 2.5 MB over a few files whose sizes vary from run to run (the largest
# 1.09-1.42 MB, so a 1 MB limit was not always reached). The run's TensorBoard
# file stays far below it: full_disk writes a 1x1 image grid instead of the
# 0.3 MB one.
FULL_DISK_BYTES = 100_000


def _die():
  os.kill(os.getpid(), signal.SIGKILL)


def _after_step(step, action):
  """Calls `action()` once training step `step` is dispatched."""
  update = progress.EpochBars.update

  def update_then_act(bars, current):
    update(bars, current)
    if current == step:
      action()

  progress.EpochBars.update = update_then_act


def kill_after_step(step):
  _after_step(step, _die)


def sigterm_after_step(step):
  _after_step(step, lambda: os.kill(os.getpid(), signal.SIGTERM))


def ctrl_c_in_setup(_):
  create_train_state = steps.create_train_state

  def interrupted_while_compiling(*args, **kwargs):
    signal.signal(signal.SIGINT, signal.default_int_handler)
    threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT)).start()
    return create_train_state(*args, **kwargs)

  steps.create_train_state = interrupted_while_compiling


def _out_of_memory():
  raise jax.errors.JaxRuntimeError(
      'RESOURCE_EXHAUSTED: Out of memory while trying to allocate '
      '8589934592 bytes.\nBufferAssignment OOM Debugging.')


def out_of_memory_after_step(step):
  _after_step(step, _out_of_memory)


def kill_in_save(step):
  save = checkpointing.save

  def save_then_die(checkpoints, current, *args, **kwargs):
    save(checkpoints, current, *args, **kwargs)
    if current == step:
      _die()

  checkpointing.save = save_then_die


def kill_in_eval(count):
  validate = train.validate
  calls = []

  def first_batch_then_die(batches):
    for index, batch in enumerate(batches):
      if index == 1:
        _die()
      yield batch

  def validate_then_die(eval_step, state, batches, par):
    calls.append(None)
    if len(calls) == count:
      batches = first_batch_then_die(batches)
    return validate(eval_step, state, batches, par)

  train.validate = validate_then_die


def full_disk(step):
  save = checkpointing.save

  def save_on_a_full_disk(checkpoints, current, *args, **kwargs):
    if current >= step:
      resource.setrlimit(resource.RLIMIT_FSIZE,
                         (FULL_DISK_BYTES, resource.RLIM_INFINITY))
    save(checkpoints, current, *args, **kwargs)

  checkpointing.save = save_on_a_full_disk
  summaries.image_grid = lambda images: images[0, :1, :1].astype('float32')


def budget_spent_in(index):
  decide = time_budget.decide

  def decide_late(config, epoch_s, elapsed_s):
    if jax.process_index() == index:
      elapsed_s = 60 * config.time_budget_minutes
    return decide(config, epoch_s, elapsed_s)

  time_budget.decide = decide_late


if __name__ == '__main__':
  fault, number = sys.argv.pop(1).split(':')
  globals()[fault](int(number))
  app.run(main.main)
