"""The entry points' restart with malloc tunables."""

import pytest

import conftest
from tiny_flax.platform import launch

# Prints a line per start, then what the restarted process sees: its tunables
# and the page faults of filling a 64 MiB block from malloc (as XLA:CPU's
# buffers are; numpy asks for huge pages itself), freeing it and filling a
# second one, as a step's temporaries are at the next step.
_PROBE = '''
import ctypes, os, resource
print('start', flush=True)
from tiny_flax.platform import launch
launch.restart_with_malloc_tunables()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
faults = []
for _ in range(2):
  before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
  block = libc.malloc(64 << 20)
  ctypes.memset(block, 1, 64 << 20)
  faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
  libc.free(block)
print(os.environ.get('GLIBC_TUNABLES', ''), *faults)
'''
_PAGES_OF_64_MIB = (64 << 20) // 4096
_OURS = ':'.join(f'{name}={value}' for name, value in launch.MALLOC_TUNABLES)


@pytest.mark.parametrize('tunables, expected', [
    ('', _OURS),
    ('glibc.malloc.tcache_count=0', 'glibc.malloc.tcache_count=0:' + _OURS),
    ('glibc.malloc.hugetlbx=2', 'glibc.malloc.hugetlbx=2:' + _OURS),
    ('glibc.malloc.hugetlb=0', None),
    ('glibc.malloc.tcache_count=0:glibc.malloc.mmap_max=4', None),
])
def test_tunables_keep_the_users_choice(tunables, expected):
  assert launch.tunables_with_malloc_settings(tunables) == expected


def _probe(tunables):
  """(starts, tunables seen after the restart, faults of two 64 MiB fills)."""
  result = conftest.run_python(['-c', _PROBE], env={'GLIBC_TUNABLES': tunables})
  assert result.returncode == 0, result.stderr
  *starts, last = result.stdout.splitlines()
  seen_tunables, first, second = last.rsplit(' ', 2)
  return len(starts), seen_tunables, int(first), int(second)


@pytest.mark.skipif(not launch.huge_pages_supported(),
                    reason='no glibc >= 2.35 or no transparent huge pages here')
def test_restarts_once_and_large_blocks_stay_mapped_on_huge_pages():
  starts, tunables, first, second = _probe('')
  assert (starts, tunables) == (2, _OURS)
  assert first < _PAGES_OF_64_MIB / 4
  assert second < 16  # kept mapped (huge pages alone: ~500 faults again)


def test_an_explicit_choice_is_not_restarted():
  starts, tunables, first, second = _probe('glibc.malloc.hugetlb=0')
  assert (starts, tunables) == (1, 'glibc.malloc.hugetlb=0')
  assert second >= _PAGES_OF_64_MIB * 0.9  # mapped afresh: faults again
  if launch.transparent_huge_pages_mode() == 'madvise':  # else none or all
    assert first >= _PAGES_OF_64_MIB * 0.9  # the 4 KiB pages it avoids


@pytest.mark.parametrize('environ, devices, on_cpu', [
    ({}, (), True),
    ({}, ('/dev/nvidiactl',), False),
    ({}, ('/dev/accel0',), False),
    ({'COLAB_TPU_ADDR': '10.0.0.2:8470'}, (), False),
    ({'JAX_PLATFORMS': 'cpu'}, ('/dev/nvidiactl',), True),
    ({'JAX_PLATFORMS': 'cuda,cpu'}, (), False),
])
def test_accelerator_hosts_are_told_apart_without_importing_jax(
    environ, devices, on_cpu):
  assert launch.runs_on_cpu(environ, devices.__contains__) == on_cpu


@pytest.mark.skipif(not launch.huge_pages_supported(),
                    reason='no glibc >= 2.35 or no transparent huge pages here')
def test_main_restarts_before_importing_jax_and_never_imports_tensorflow():
  """-X importtime reports each process's imports: JAX loads once (in the
  restarted process), the launcher in both, and TensorFlow, which only the
  tf.data path needs, in neither."""
  result = conftest.run_python(
      ['-X', 'importtime', '-m', 'tiny_flax.main', '--config=configs/smoke.py',
       '--print_config'], env={'GLIBC_TUNABLES': ''})
  assert result.returncode == 0, result.stderr[-3000:]
  imported = [line.rsplit('|', 1)[-1].strip()
              for line in result.stderr.splitlines()
              if line.startswith('import time:')]
  assert imported.count('tiny_flax.platform.launch') == 2
  assert imported.count('jax') == 1
  assert imported.count('tensorflow') == 0


def test_importing_the_trainer_loads_neither_matplotlib_nor_tensorflow():
  """The loop's modules keep plotting (report.py) and tf.data (data/pipeline.py)
  to the commands that use them."""
  result = conftest.run_python(
      ['-c', 'import sys, tiny_flax.train, tiny_flax.main\n'
       'print(sorted(m for m in sys.modules if m.split(".")[0] in '
       '("matplotlib", "tensorflow", "tensorflow_datasets", "clu")))'])
  assert result.returncode == 0, result.stderr[-2000:]
  loaded = result.stdout.strip()
  assert 'matplotlib' not in loaded and 'tensorflow' not in loaded, loaded
