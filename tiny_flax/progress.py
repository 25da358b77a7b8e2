"""A live view of training on a terminal: a bar per epoch and the run's ETA.

Drawn by process 0 when its output is a terminal (or when asked, for the
notebook); elsewhere (CI, files, other processes) training reports through
its periodic log lines alone. The running loss and accuracy come from the log interval's summary,
so the bar adds no host sync to the steps.
"""

import datetime
import sys
import time

import tqdm


class EpochBars:
  """One tqdm bar per epoch, counting images; `update` once per step."""

  def __init__(self, steps_per_epoch, num_steps, batch_size, mode='auto',
               stream=None):
    """`mode`: 'auto' draws on a terminal only; 'on' (a notebook reading the
    output) or 'off' decide regardless."""
    self._stream = stream or sys.stderr
    self._enabled = mode == 'on' or (mode == 'auto' and self._stream.isatty())
    self._steps_per_epoch = steps_per_epoch
    self._num_steps = num_steps
    self._batch_size = batch_size
    self._start = None  # (step, time) of the first update: compilation is done
    self._bar = None
    self._postfix = {}

  def _open(self, step):
    epoch = step // self._steps_per_epoch
    total_epochs = -(-self._num_steps // self._steps_per_epoch)
    in_epoch = min(self._steps_per_epoch,
                   self._num_steps - epoch * self._steps_per_epoch)
    self._bar = tqdm.tqdm(
        total=in_epoch * self._batch_size,
        initial=(step - epoch * self._steps_per_epoch) * self._batch_size,
        desc=f'epoch {epoch + 1}/{total_epochs}', unit='img',
        file=self._stream, dynamic_ncols=True, leave=True)

  def update(self, step):
    """Called after `step` (1-based) has been dispatched."""
    if not self._enabled:
      return
    if self._bar is None:
      self._open(step - 1)
    self._bar.update(self._batch_size)
    if self._start is None:
      self._start = (step, time.monotonic())
    first_step, started = self._start
    if step > first_step:
      remaining = ((time.monotonic() - started) / (step - first_step)
                   * (self._num_steps - step))
      self._postfix['run ETA'] = str(datetime.timedelta(seconds=int(remaining)))
    self._bar.set_postfix(self._postfix, refresh=False)
    if step % self._steps_per_epoch == 0 or step == self._num_steps:
      self.close()

  def show(self, summary):
    """The latest log interval's training loss and accuracy, on the bar."""
    for key in ('loss', 'accuracy'):
      if f'train_{key}' in summary:
        self._postfix[key] = f'{float(summary[f"train_{key}"]):.4f}'

  def close(self):
    if self._bar is not None:
      self._bar.close()
      self._bar = None
