"""Shared fixtures: a small fake archive and its prepared TFDS dataset."""

import os
import shutil
import subprocess
import sys
import tempfile

# torchvision 0.29 segfaults when imported after TensorFlow 2.21: load it first.
try:
  import torch  # pylint: disable=unused-import
  import torchvision  # pylint: disable=unused-import
except ImportError:
  pass

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_CACHE_ENV = 'JAX_COMPILATION_CACHE_DIR'
TRAIN_PER_CLASS = 4
VAL_PER_CLASS = 2


def pytest_configure(config):
  """One JAX compilation cache for the run, its workers and subprocesses.

  Compiling the same small steps again, in every test and fresh process, is
  most of the suite's time on CPU. The cache lives only as long as the run,
  so every run still compiles each step once; set JAX_COMPILATION_CACHE_DIR
  (empty turns it off) to choose otherwise.
  """
  if _CACHE_ENV in os.environ:  # chosen by the user, or inherited by a worker
    return
  config.tiny_flax_jax_cache = tempfile.mkdtemp(prefix='tiny_flax_jax_cache_')
  os.environ[_CACHE_ENV] = config.tiny_flax_jax_cache


def pytest_unconfigure(config):
  cache_dir = getattr(config, 'tiny_flax_jax_cache', None)
  if cache_dir:
    shutil.rmtree(cache_dir, ignore_errors=True)
    del os.environ[_CACHE_ENV]


@pytest.fixture(scope='session')
def fake_manual_dir(tmp_path_factory):
  from tiny_flax.data import fake
  manual_dir = tmp_path_factory.mktemp('manual')
  fake.write_archive(str(manual_dir / 'tiny-imagenet-200.zip'),
                     train_per_class=TRAIN_PER_CLASS,
                     val_per_class=VAL_PER_CLASS, num_test=50)
  return str(manual_dir)


@pytest.fixture(scope='session')
def fake_config(fake_manual_dir, tmp_path_factory):
  """The smoke config on the small fake archive, prepared once per session."""
  from configs import smoke
  config = smoke.get_config()
  config.dataset.manual_dir = fake_manual_dir
  config.dataset.data_dir = str(tmp_path_factory.mktemp('tfds'))
  config.dataset.fake_train_per_class = TRAIN_PER_CLASS
  config.dataset.fake_val_per_class = VAL_PER_CLASS
  return config


@pytest.fixture(scope='session')
def fake_builder(fake_config):
  from tiny_flax.data import pipeline
  return pipeline.prepare(fake_config)


def crop_offsets(padded, crops):
  """The (top, left) at which each crop lies in `padded`; each must be one."""
  height, width = crops[0].shape[:2]
  windows = np.lib.stride_tricks.sliding_window_view(
      padded, (height, width, 3))[:, :, 0]
  found = []
  for crop in crops:
    [(top, left)] = np.argwhere((windows == crop).all(axis=(2, 3, 4)))
    found.append((top, left))
  return np.array(found)


def run_python(args, env=None, timeout=600, cwd=REPO, repo_on_path=True,
               path=()):
  """Runs `python args...` in a fresh process (from the repo root by default).

  `repo_on_path=False` runs it as a user would outside the repo root, with
  no PYTHONPATH; `path` lists folders to put on it first.
  """
  full_env = dict(os.environ, **(env or {}))
  full_env['PYTHONPATH'] = os.pathsep.join(
      list(path) + ([REPO] if repo_on_path else []))
  return subprocess.run([sys.executable] + list(args), cwd=cwd, env=full_env,
                        capture_output=True, text=True, timeout=timeout)
