"""How the command-line entry points start their process on a CPU.

XLA:CPU allocates a step's temporaries afresh at every step, and its Eigen
convolutions allocate and free a large packing buffer per call. glibc's
malloc serves every block above 32 MB with a new mapping and unmaps it when
freed, so every page of those buffers faults on first touch, zeroed by the
kernel, at every step. The entry points set glibc tunables that keep such
memory: large blocks come from malloc's heaps (`mmap_max=0`), which are not
trimmed between steps (`trim_threshold`) and grow in large steps (`top_pad`),
on transparent huge pages (`hugetlb=1`), at the cost of more peak memory
(freed memory is kept, not returned); docs/performance.md has the measured
effect. Tunables are read when a process starts, so the CPU entry points
re-execute themselves once with them set, before importing JAX or
TensorFlow. Hosts with an accelerator keep their first process: the buffers
live in device memory there, and a restart would only cost start-up time.
"""

import os
import platform
import sys

MALLOC_TUNABLES = (
    ('glibc.malloc.hugetlb', '1'),
    ('glibc.malloc.mmap_max', '0'),
    ('glibc.malloc.trim_threshold', str(4 << 30)),
    ('glibc.malloc.top_pad', str(128 << 20)),
)
_TRANSPARENT_HUGE_PAGES = '/sys/kernel/mm/transparent_hugepage/enabled'
# Device files of NVIDIA and AMD GPUs and of TPUs (v4 and earlier: accel,
# later ones: vfio), and variables set on TPU hosts (Cloud and Colab).
_ACCELERATOR_DEVICES = ('/dev/nvidiactl', '/dev/kfd', '/dev/accel0',
                        '/dev/vfio/0')
_TPU_VARIABLES = ('TPU_ACCELERATOR_TYPE', 'TPU_NAME', 'COLAB_TPU_ADDR')
_FIRST_GLIBC_WITH_TUNABLE = (2, 35)


def tunables_with_malloc_settings(tunables):
  """`tunables` (GLIBC_TUNABLES' syntax) plus MALLOC_TUNABLES.

  None where they already set any of those: a user who chooses one, e.g.
  `glibc.malloc.hugetlb=0`, keeps malloc as they set it.
  """
  names = [setting.split('=')[0] for setting in tunables.split(':')]
  if any(name in names for name, _ in MALLOC_TUNABLES):
    return None
  return ':'.join(filter(None, [
      tunables, *(f'{name}={value}' for name, value in MALLOC_TUNABLES)]))


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


def runs_on_cpu(environ, path_exists=os.path.exists):
  """Whether JAX will compute on the CPU, told without importing it.

  JAX_PLATFORMS decides when set (its first entry); otherwise JAX takes an
  accelerator when the host has one.
  """
  platforms = environ.get('JAX_PLATFORMS', '')
  if platforms:
    return platforms.split(',')[0].strip() == 'cpu'
  return not (any(map(path_exists, _ACCELERATOR_DEVICES))
              or any(name in environ for name in _TPU_VARIABLES))


def restart_with_malloc_tunables():
  """Re-executes this command with MALLOC_TUNABLES, unless already set.

  Call it first, before the heavy imports: the process is replaced, with
  the same interpreter, arguments and environment plus the tunables. Does
  nothing where JAX will use an accelerator (`runs_on_cpu`), where glibc or
  the kernel lack huge pages, or where GLIBC_TUNABLES already sets one of
  MALLOC_TUNABLES (`GLIBC_TUNABLES=glibc.malloc.hugetlb=0` opts out).
  """
  tunables = tunables_with_malloc_settings(os.environ.get('GLIBC_TUNABLES', ''))
  if (tunables is None or not runs_on_cpu(os.environ)
      or not huge_pages_supported()):
    return
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]],
            {**os.environ, 'GLIBC_TUNABLES': tunables})
