"""errors: the entry points' one way out, for a UserError and a device out of
memory."""

import jax
import jax.numpy as jnp
import pytest

from tiny_flax import errors

# As XLA reports an allocation failure on a GPU (the buffer report shortened).
GPU_OUT_OF_MEMORY = (
    'RESOURCE_EXHAUSTED: Out of memory while trying to allocate 6291456 '
    'bytes.\nBufferAssignment OOM Debugging.\nBufferAssignment stats:\n'
    '             parameter allocation:    6.00MiB\n')


def _exit(error, capsys):
  with pytest.raises(SystemExit) as exited:
    with errors.exit_on_user_error():
      raise error
  lines = capsys.readouterr().err.splitlines()
  return exited.value.code, [l for l in lines if l.startswith('error: ')]


def test_a_user_error_is_one_line_and_exit_code_1(capsys):
  code, lines = _exit(errors.UserError('Bad value: use another.'), capsys)
  assert (code, lines) == (1, ['error: Bad value: use another.'])


def test_a_device_out_of_memory_names_its_allocation_and_the_fixes(capsys):
  code, [line] = _exit(jax.errors.JaxRuntimeError(GPU_OUT_OF_MEMORY), capsys)
  assert code == 1
  assert ('out of memory (RESOURCE_EXHAUSTED: Out of memory while trying to '
          'allocate 6291456 bytes).') in line
  for fix in ('--config.microbatches=2', '--config.batch_size',
              '--config.half_precision=true',
              '--config.input.on_device=false',
              'XLA_PYTHON_CLIENT_PREALLOCATE=false'):
    assert fix in line, line
  assert 'BufferAssignment' not in line


def test_xlas_own_allocation_failure_is_recognised(capsys):
  """A petabyte: beyond the address space, XLA:CPU refuses it at once."""
  with pytest.raises(SystemExit) as exited:
    with errors.exit_on_user_error():
      jnp.ones((2**48,), jnp.float32).block_until_ready()
  assert exited.value.code == 1
  assert ('error: The device ran out of memory (RESOURCE_EXHAUSTED: Out of '
          'memory allocating 1125899906842624 bytes). Compute') in capsys.readouterr().err


def test_other_runtime_errors_pass_through():
  error = jax.errors.JaxRuntimeError('INTERNAL: something else failed')
  with pytest.raises(jax.errors.JaxRuntimeError) as raised:
    with errors.exit_on_user_error():
      raise error
  assert raised.value is error
  assert errors.out_of_memory(ValueError('RESOURCE_EXHAUSTED')) is None
