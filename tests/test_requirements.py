"""Requirement files: one jax version everywhere, TensorFlow only for tf.data (no download)."""

import os
import re

import conftest

_PIN = re.compile(r'^(jax|jaxlib)(\[[\w,-]+\])?==([\w.]+)\s*(#.*)?$')


def _pins(name):
  with open(os.path.join(conftest.REPO, name)) as f:
    lines = [line.strip() for line in f]
  return {(m.group(1), m.group(2)): m.group(3)
          for m in map(_PIN.match, lines) if m}


def _packages(name):
  with open(os.path.join(conftest.REPO, name)) as f:
    return [l.split('==')[0].strip() for l in f
            if l.strip() and not l.startswith('#')]


def test_accelerator_pins_name_the_cpu_jax_version():
  core = _pins('requirements-jax.txt')
  version = core[('jax', None)]
  assert core[('jaxlib', None)] == version
  for name, extra in (('requirements-cuda.txt', '[cuda12]'),
                      ('requirements-tpu.txt', '[tpu]')):
    assert _pins(name) == {('jax', extra): version}, name
    assert '-r requirements-jax.txt' in _packages(name)


def test_only_the_tf_data_path_brings_tensorflow():
  for name in ('requirements-jax.txt', 'requirements-cuda.txt',
               'requirements-tpu.txt'):
    assert not {'tensorflow-cpu', 'tensorflow-datasets'} & set(
        _packages(name)), name
  assert 'tensorboard' in _packages('requirements-jax.txt')
  assert {'-r requirements-jax.txt', 'tensorflow-cpu',
          'tensorflow-datasets'} <= set(_packages('requirements.txt'))


def test_tensorflow_is_the_cpu_build_everywhere():
  for name in os.listdir(conftest.REPO):
    if name.startswith('requirements') and name.endswith('.txt'):
      with open(os.path.join(conftest.REPO, name)) as f:
        packages = [l.split('==')[0] for l in f if not l.startswith('#')]
      assert 'tensorflow' not in packages, name
