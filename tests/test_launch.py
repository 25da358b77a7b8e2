"""The entry points' restart with malloc on transparent huge pages."""

import pytest

import conftest
from tiny_flax import launch

# Prints a line per start, then what the restarted process sees: its tunables
# and the page faults of filling a block from malloc (as XLA:CPU's buffers
# are; numpy asks for huge pages itself).
_PROBE = '''
import ctypes, os, resource
print('start', flush=True)
from tiny_flax import launch
launch.restart_with_huge_pages()
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
ctypes.memset(libc.malloc(64 << 20), 1, 64 << 20)
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(os.environ.get('GLIBC_TUNABLES', ''), faults)
'''
_PAGES_OF_64_MIB = (64 << 20) // 4096


@pytest.mark.parametrize('tunables, expected', [
    ('', 'glibc.malloc.hugetlb=1'),
    ('glibc.malloc.tcache_count=0',
     'glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1'),
    ('glibc.malloc.hugetlbx=2', 'glibc.malloc.hugetlbx=2:glibc.malloc.hugetlb=1'),
    ('glibc.malloc.hugetlb=0', None),
    ('glibc.malloc.tcache_count=0:glibc.malloc.hugetlb=1', None),
])
def test_tunables_keep_the_users_choice(tunables, expected):
  assert launch.tunables_with_huge_pages(tunables) == expected


def _probe(tunables):
  """(starts, tunables seen after the restart, page faults of 64 MiB)."""
  result = conftest.run_python(['-c', _PROBE], env={'GLIBC_TUNABLES': tunables})
  assert result.returncode == 0, result.stderr
  *starts, last = result.stdout.splitlines()
  seen_tunables, faults = last.rsplit(' ', 1)
  return len(starts), seen_tunables, int(faults)


@pytest.mark.skipif(not launch.huge_pages_supported(),
                    reason='no glibc >= 2.35 or no transparent huge pages here')
def test_restarts_once_and_large_blocks_fault_per_huge_page():
  starts, tunables, faults = _probe('')
  assert (starts, tunables) == (2, 'glibc.malloc.hugetlb=1')
  assert faults < _PAGES_OF_64_MIB / 4


def test_an_explicit_choice_is_not_restarted():
  starts, tunables, faults = _probe('glibc.malloc.hugetlb=0')
  assert (starts, tunables) == (1, 'glibc.malloc.hugetlb=0')
  if launch.transparent_huge_pages_mode() == 'madvise':  # else none or all
    assert faults >= _PAGES_OF_64_MIB * 0.9  # the 4 KiB pages it avoids
