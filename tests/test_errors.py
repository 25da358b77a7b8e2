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


@pytest.mark.parametrize('override, message', [
    ('--config.bacth_size=8', "--config.bacth_size: config has no key "
     "'bacth_size'; did you mean --config.batch_size?"),
    ('--config.input.trian=to_tensor', "--config.input.trian: config.input "
     "has no key 'trian'; did you mean --config.input.train?"),
    ('--noconfig.input.cashe', "--config.input.cashe: config.input has no "
     "key 'cashe'; did you mean --config.input.cache?"),
    ('--config.inptu.train=to_tensor', "--config.inptu.train: config has "
     "no key 'inptu'; did you mean --config.input?"),
    ('--config.input.zzz=1', "--config.input.zzz: config.input has no key "
     "'zzz'; config.input holds cache, eval, on_device, shuffle_buffer, "
     "train."),
])
def test_an_override_of_no_key_is_named_with_the_nearest_key(override,
                                                              message):
  argv = ['main', '--config', 'configs/smoke.py', '--config.num_epochs=1',
          override]
  assert errors.unknown_config_key(argv) == message


def test_overrides_of_existing_keys_and_of_a_variant_are_not_reported():
  argv = ['main', '--config=configs/resnet18.py:budget',
          '--config.mixing.cutmix_alpha=1.0', '--config.input.cache=false']
  assert errors.unknown_config_key(argv) is None
  assert errors.unknown_config_key(['main', '--workdir=x']) is None


def test_an_override_without_a_config_file_says_to_name_one(capsys):
  with pytest.raises(SystemExit) as exited:
    errors.parse_flags(['evaluate', '--workdir=runs/x',
                        '--config.half_precision=true'])
  assert exited.value.code == 1
  assert capsys.readouterr().err == (
      'error: --config.half_precision changes a value of a config: name the '
      'config file too, before it (--config=configs/NAME.py).\n')


@pytest.mark.parametrize('spec, message', [
    ('configs/shufflenet.py', 'no config file configs/shufflenet.py; did you '
     'mean --config=configs/shufflenet_v2.py?'),
    ('configs/resnet.py', 'no config file configs/resnet.py; did you mean '
     '--config=configs/resnet50.py or --config=configs/resnet18.py?'),
    ('configs/resnet18', 'no config file configs/resnet18; did you mean '
     '--config=configs/resnet18.py?'),
    ('resnet18.py:budget', 'no config file resnet18.py; did you mean '
     '--config=configs/resnet18.py?'),  # a path from another folder
    ('configs/vgg.py', 'no config file configs/vgg.py; configs holds '
     'alexnet.py, default.py, resnet18.py, resnet50.py, shufflenet_v2.py, '
     'smoke.py.'),
    ('configs/smoke.py:tuned', 'configs/smoke.py has no variants; drop '
     '":tuned".'),
])
def test_a_config_file_that_cannot_load_is_named_with_the_nearest(spec,
                                                                  message):
  assert errors.config_file_problem(spec) == f'--config={spec}: {message}'


def test_config_files_that_load_are_not_reported():
  for spec in ('configs/resnet18.py', 'configs/resnet18.py:budget',
               'configs/smoke.py'):
    assert errors.config_file_problem(spec) is None
