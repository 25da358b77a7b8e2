"""The Colab notebook runs top to bottom on a CPU with the smoke config."""

import os
import signal
import subprocess
import sys
import threading
import time

import nbformat
import pytest

import conftest
from tiny_flax import notebook

nbclient = pytest.importorskip('nbclient')


def test_notebook_runs_with_the_smoke_config(tmp_path, fake_config,
                                             fake_builder, monkeypatch):
  del fake_builder  # prepared once for the session
  workdir = tmp_path / 'run'
  flags = ' '.join(
      [f'--config.dataset.{key}={fake_config.dataset[key]}'
       for key in ('manual_dir', 'fake_train_per_class', 'fake_val_per_class')]
      + ['--config.num_epochs=1', '--config.batch_size=80'])
  for name, value in {'TINY_FLAX_CONFIG': 'configs/smoke.py',
                      'TINY_FLAX_WORKDIR': str(workdir),
                      'TINY_FLAX_DATA_DIR': fake_config.dataset.data_dir,
                      'TINY_FLAX_FLAGS': flags,
                      'PYTHONPATH': conftest.REPO}.items():
    monkeypatch.setenv(name, value)
  notebook = nbformat.read(
      os.path.join(conftest.REPO, 'scripts', 'colab_tpu.ipynb'), as_version=4)
  nbclient.NotebookClient(
      notebook, timeout=600, kernel_name='python3',
      resources={'metadata': {'path': conftest.REPO}}).execute()
  assert os.path.exists(workdir / 'report' / 'metrics.json')
  images = [output for cell in notebook.cells
            for output in cell.get('outputs', [])
            if 'image/png' in output.get('data', {})]
  assert len(images) == 3
  shown = ''.join(output.get('data', {}).get('text/markdown', '')
                  for cell in notebook.cells
                  for output in cell.get('outputs', []))
  assert '| epoch | seconds | train loss |' in shown  # after the figures
  assert 'most misclassified classes' in shown
  text = ''.join(output.get('text', '') for cell in notebook.cells
                 for output in cell.get('outputs', []))
  assert '\repoch 1/1: 100%' in text  # the live bar, redrawn in place
  assert 'JAX backend: cpu' in text  # hence float32


# A stand-in for a training run: serves SIGINT as a stop after its step.
_RUN = '''
import os, signal, sys, time
received = []
signal.signal(signal.SIGINT, lambda *_: received.append(1))
print(f'train.py ready; own session: {os.getpgid(0) == os.getpid()}', flush=True)
while not received:
  time.sleep(0.05)
time.sleep(0.5)  # the step in flight, then its checkpoint
print(f'train.py stopped after {len(received)} SIGINT', flush=True)
sys.exit(130)
'''


def test_the_stop_button_stops_the_run_once_after_its_step(capsys):
  """The kernel's interrupt reaches the run once; the cell shows the run's
  last lines, then stops with the interrupt."""
  previous = signal.signal(signal.SIGINT, signal.default_int_handler)
  timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
  try:
    timer.start()
    with pytest.raises(KeyboardInterrupt):
      notebook.run_command([sys.executable, '-c', _RUN])
  finally:
    timer.cancel()
    signal.signal(signal.SIGINT, previous)
  shown = capsys.readouterr().out
  assert 'train.py ready; own session: True' in shown
  assert 'train.py stopped after 1 SIGINT' in shown
  assert 'exit status 130' in shown


def test_a_run_whose_kernel_dies_gets_sigterm(tmp_path):
  """A kernel restarted or killed stops its run (which saves and exits on
  SIGTERM) instead of leaving it holding the device."""
  run = ('import pathlib, signal, time\n'
         f'marker = pathlib.Path({str(tmp_path)!r})\n'
         'signal.signal(signal.SIGTERM, lambda *_: (marker / "sigterm")'
         '.write_text("") or exit(0))\n'
         '(marker / "started").write_text("")\n'
         'time.sleep(60)\n')
  kernel = subprocess.Popen(
      [sys.executable, '-c', 'import sys\nfrom tiny_flax import notebook\n'
       f'notebook.run_command([sys.executable, "-c", {run!r}])'],
      cwd=conftest.REPO, env=dict(os.environ, PYTHONPATH=conftest.REPO))
  try:
    for _ in range(200):
      if (tmp_path / 'started').exists():
        break
      time.sleep(0.05)
    kernel.kill()
    kernel.wait()
    for _ in range(200):
      if (tmp_path / 'sigterm').exists():
        break
      time.sleep(0.05)
    assert (tmp_path / 'sigterm').exists()
  finally:
    kernel.kill()
