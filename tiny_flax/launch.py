"""How the command-line entry points start their process.

XLA:CPU allocates a step's temporaries afresh at every step and frees them
after it. glibc's malloc serves every block above 32 MB with a new mapping,
so each 4 KiB page of those temporaries faults on first touch, every step:
on a 2-core machine 37,000 faults and about 65 ms of kernel time per ResNet18
step, 40,000 and 60 ms per ShuffleNet step (docs/performance.md). glibc's
`glibc.malloc.hugetlb=1` tunable backs such mappings with transparent huge
pages (2 MiB), which cuts the faults a hundredfold. Tunables are read when a
process starts, so the entry points re-execute themselves once with it set.
"""

import os
import platform
import sys

HUGE_PAGES_TUNABLE = 'glibc.malloc.hugetlb'
_TRANSPARENT_HUGE_PAGES = '/sys/kernel/mm/transparent_hugepage/enabled'
_FIRST_GLIBC_WITH_TUNABLE = (2, 35)


def tunables_with_huge_pages(tunables):
  """`tunables` (GLIBC_TUNABLES' syntax) plus malloc on huge pages.

  None where they already choose: a user who sets the tunable, to 0 or
  otherwise, keeps their choice.
  """
  names = [setting.split('=')[0] for setting in tunables.split(':')]
  if HUGE_PAGES_TUNABLE in names:
    return None
  return ':'.join(filter(None, [tunables, f'{HUGE_PAGES_TUNABLE}=1']))


def transparent_huge_pages_mode():
  """The kernel's mode ('always', 'madvise' or 'never'); None if unknown."""
  try:
    with open(_TRANSPARENT_HUGE_PAGES) as modes:
      return modes.read().split('[')[1].split(']')[0]
  except (OSError, IndexError):
    return None


def huge_pages_supported():
  """glibc has the tunable and the kernel lends huge pages on request."""
  libc, version = platform.libc_ver()
  if libc != 'glibc' or tuple(
      int(part) for part in version.split('.')[:2]) < _FIRST_GLIBC_WITH_TUNABLE:
    return False
  return transparent_huge_pages_mode() in ('always', 'madvise')


def restart_with_huge_pages():
  """Re-executes this command with malloc on huge pages, unless it already is.

  Call it before any work: the process is replaced, with the same
  interpreter, arguments and environment plus the tunable. Does nothing where
  glibc or the kernel lack huge pages, or where GLIBC_TUNABLES already sets
  glibc.malloc.hugetlb (`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` opts out).
  """
  tunables = tunables_with_huge_pages(os.environ.get('GLIBC_TUNABLES', ''))
  if tunables is None or not huge_pages_supported():
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
            {**os.environ, 'GLIBC_TUNABLES': tunables})
