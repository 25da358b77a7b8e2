"""Runs tiny_flax's commands from a notebook (scripts/colab_tpu.ipynb).

Each command runs in a process of its own: a TPU is held by one process,
and the notebook's kernel stays free of JAX. Its output is shown as it
comes: the progress bar redrawn in place, the metric lines, errors.

The notebook's stop button interrupts the kernel, not the run. `run` passes
one Ctrl-C on, so the run stops after its step with a checkpoint, as in a
terminal, and frees the device before the cell ends; a kernel that dies
(a restart) sends the run SIGTERM, with the same effect. The run has a
session of its own, so that a signal to the kernel's process group does
not reach it a second time (two Ctrl-C stop a run at once, unsaved).
"""

import codecs
import ctypes
import os
import re
import signal
import subprocess
import sys

# Log lines worth a notebook's space: metrics, the trainer's lines, errors.
_SHOWN = ('logging_writer', 'summaries.py', 'train.py', 'error')
_PR_SET_PDEATHSIG = 1  # prctl option: a signal for when the parent dies
try:  # looked up here: the child, forked from a threaded kernel, only calls it
  _prctl = ctypes.CDLL(None).prctl
except (OSError, AttributeError):  # not Linux: a run outlives its kernel
  _prctl = None


def run(module, *flags):
  """Runs `python -m tiny_flax.MODULE FLAGS...`, showing its output."""
  code = run_command([sys.executable, '-m', f'tiny_flax.{module}', *flags])
  if code:
    raise RuntimeError(f'{module} failed with exit status {code}')


def run_command(command):
  """Runs `command` as `run` does; returns its exit status.

  A KeyboardInterrupt in the kernel is passed on as one SIGINT; the run's
  last lines are shown, then the interrupt is raised again, so that the
  notebook stops there.
  """
  with subprocess.Popen(command, stdout=subprocess.PIPE,
                        stderr=subprocess.STDOUT, start_new_session=True,
                        preexec_fn=_prctl and _terminated_with_parent
                        ) as process:
    try:
      _show(process.stdout)
    except KeyboardInterrupt:
      process.send_signal(signal.SIGINT)
      _show(process.stdout)
      process.wait()
      print('Interrupted: the run stopped with a checkpoint (exit status '
            f'{process.returncode}); running the cell again resumes it.')
      raise
  return process.returncode


def _terminated_with_parent():
  """In the child, before it starts: SIGTERM when the kernel dies."""
  _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _show(stream):
  """Prints the lines of `stream` worth showing, as they come."""
  decoder = codecs.getincrementaldecoder('utf-8')(errors='replace')
  pending = ''
  # Whatever the process has written so far, so that the bar moves live.
  for chunk in iter(lambda: os.read(stream.fileno(), 1 << 16), b''):
    *pieces, pending = re.split(r'(?<=[\r\n])', pending + decoder.decode(chunk))
    for piece in pieces:
      if piece.startswith('epoch '):  # a redraw of the bar
        print('\r' + piece.rstrip('\r\n'), end=piece[-1].replace('\r', ''),
              flush=True)
      elif any(name in piece for name in _SHOWN):
        print(piece, end='')
