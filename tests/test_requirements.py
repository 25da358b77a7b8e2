"""Accelerator requirement files pin the jax of requirements.txt (no download)."""

import os
import re

import conftest

_PIN = re.compile(r'^(jax|jaxlib)(\[[\w,-]+\])?==([\w.]+)\s*(#.*)?$')


def _pins(name):
  with open(os.path.join(conftest.REPO, name)) as f:
    lines = [line.strip() for line in f]
  return {(m.group(1), m.group(2)): m.group(3)
          for m in map(_PIN.match, lines) if m}


def test_accelerator_pins_name_the_cpu_jax_version():
  cpu = _pins('requirements.txt')
  version = cpu[('jax', None)]
  assert cpu[('jaxlib', None)] == version
  for name, extra in (('requirements-cuda.txt', '[cuda12]'),
                      ('requirements-tpu.txt', '[tpu]')):
    assert _pins(name) == {('jax', extra): version}, name
    with open(os.path.join(conftest.REPO, name)) as f:
      assert '-r requirements.txt' in f.read().splitlines()


def test_tensorflow_is_the_cpu_build_everywhere():
  for name in os.listdir(conftest.REPO):
    if name.startswith('requirements') and name.endswith('.txt'):
      with open(os.path.join(conftest.REPO, name)) as f:
        packages = [l.split('==')[0] for l in f if not l.startswith('#')]
      assert 'tensorflow' not in packages, name
