"""The live progress bars: drawn on a terminal only, one per epoch, with the run's ETA."""

import io
import logging as std_logging
import sys

from absl import logging

from tiny_flax import progress


class _Terminal(io.StringIO):

  def isatty(self):
    return True


def _train(stream, steps_per_epoch=4, num_steps=10, start_step=0, **kwargs):
  bars = progress.EpochBars(steps_per_epoch, num_steps, 32, stream=stream,
                            **kwargs)
  for step in range(start_step + 1, num_steps + 1):
    bars.update(step)
    if step % 2 == 0:
      bars.show({'train_loss': 5.25, 'train_accuracy': 0.125})
  bars.close()
  return stream.getvalue()


def test_a_bar_per_epoch_on_a_terminal():
  text = _train(_Terminal())
  for epoch in ('epoch 1/3', 'epoch 2/3', 'epoch 3/3'):
    assert epoch in text
  assert '128/128' in text and '64/64' in text  # the last epoch is shorter
  assert 'img/s' in text and 'run ETA' in text
  assert 'loss=5.2500' in text and 'accuracy=0.1250' in text


def test_resumed_mid_epoch_the_bar_starts_where_the_run_is():
  text = _train(_Terminal(), start_step=5)
  assert 'epoch 1/3' not in text and 'epoch 2/3' in text
  assert '128/128' in text


def test_nothing_drawn_off_a_terminal_or_on_other_processes():
  assert _train(io.StringIO()) == ''
  assert _train(_Terminal(), mode='off') == ''


def test_drawn_off_a_terminal_when_asked():
  assert 'epoch 3/3' in _train(io.StringIO(), mode='on')


def test_log_lines_go_above_the_bar_not_onto_it(monkeypatch):
  terminal = _Terminal()
  handler = logging.get_absl_handler().python_handler
  monkeypatch.setattr(handler, 'stream', terminal)
  monkeypatch.setattr(sys, 'stderr', terminal)
  bars = progress.EpochBars(4, 8, 32, stream=terminal)
  for step in range(1, 9):
    bars.update(step)
    if step in (2, 6):
      # What absl's handler does with a record once flags are parsed.
      std_logging.StreamHandler.emit(handler, std_logging.makeLogRecord(
          {'msg': 'logged at step %d', 'args': (step,),
           'levelno': std_logging.INFO, 'levelname': 'INFO'}))
      print(f'printed at step {step}', file=sys.stderr)
  assert handler.stream is terminal and sys.stderr is terminal  # given back
  text = terminal.getvalue()
  # What a terminal shows of each line: the text after its last \r.
  shown = [line.split('\r')[-1] for line in text.split('\n')]
  for step in (2, 6):
    for message in (f'logged at step {step}', f'printed at step {step}'):
      [line] = [i for i, l in enumerate(shown) if message in l]
      assert 'epoch ' not in shown[line], shown[line]  # not on the bar
      assert f'epoch {step // 4 + 1}/2' in text.split('\n')[line + 1]
