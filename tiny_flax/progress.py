"""A live view of training on a terminal: a bar per epoch and the run's ETA.

Drawn by process 0 when its output is a terminal (or when asked, for the
notebook); elsewhere (CI, files, other processes) training reports through
its periodic log lines alone. The running loss and accuracy come from the
log interval's summary, so the bar adds no host sync to the steps. While a
bar is drawn, the log's lines go above it rather than onto its end.
"""

import datetime
import sys
import time

from absl import logging
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
    self._lines_above = _LinesAbove(self._stream)

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
      self._lines_above.close()
      self._bar.close()
      self._bar = None


class _LinesAbove:
  """While a bar is drawn on `stream`, the lines the log (absl's handler)
  and sys.stderr would write there go above the bar, which tqdm draws again
  below them; written as they were, they ended up on the bar's own line."""

  def __init__(self, stream):
    self._stream = stream
    self._partial = ''
    self._handler = logging.get_absl_handler().python_handler
    self._swapped = {'handler': self._handler.stream is stream,
                     'stderr': sys.stderr is stream}
    if self._swapped['handler']:
      self._handler.stream = self
    if self._swapped['stderr']:
      sys.stderr = self

  def write(self, text):
    lines = (self._partial + text).split('\n')
    self._partial = lines.pop()
    for line in lines:
      tqdm.tqdm.write(line, file=self._stream)
    return len(text)

  def flush(self):
    self._stream.flush()

  def __getattr__(self, name):  # isatty, fileno, encoding: the stream's
    return getattr(self._stream, name)

  def close(self):
    """Gives the stream back, with any line not yet ended."""
    if self._swapped['handler'] and self._handler.stream is self:
      self._handler.stream = self._stream
    if self._swapped['stderr'] and sys.stderr is self:
      sys.stderr = self._stream
    if self._partial:
      self._stream.write(self._partial)
      self._partial = ''
