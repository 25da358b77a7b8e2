"""The Colab notebook runs top to bottom on a CPU with the smoke config."""

import os

import nbformat
import pytest

import conftest

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
