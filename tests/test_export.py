"""Export to torchvision: exact round trip, equal logits, and the command's errors."""

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import conftest
from tiny_flax import checkpointing
from tiny_flax import errors
from tiny_flax import export
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import steps
from tiny_flax import workdir as workdir_lib

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

# The original's input size of each model.
SIZES = {'alexnet': 224, 'resnet18': 64, 'resnet50': 64,
         'shufflenet_v2_x1_0': 64}


def _trained_like_variables(name):
  """Initial variables with running statistics that are not the defaults."""
  variables = jax.jit(functools.partial(models.create(name, 200).init,
                                        train=False))(
                                            jax.random.key(1),
                                            jnp.zeros((1, 64, 64, 3)))
  rng = np.random.default_rng(2)
  variables = jax.tree.map(np.asarray, variables)
  variables['batch_stats'] = jax.tree.map(
      lambda x: (x + rng.uniform(0.1, 0.5, x.shape)).astype(x.dtype),
      variables.get('batch_stats', {}))
  return variables


@pytest.mark.parametrize('name', sorted(SIZES))
def test_torchvision_loads_it_strictly_and_gives_the_same_logits(name):
  variables = _trained_like_variables(name)
  state_dict = models.to_torchvision(name, variables, num_batches_tracked=7)
  back = models.load_torchvision(name, state_dict)
  for collection in ('params', 'batch_stats'):
    assert jax.tree.all(jax.tree.map(np.array_equal, back[collection],
                                     variables.get(collection, {})))
  torch_model = getattr(torchvision.models, name)(num_classes=200)
  torch_model.load_state_dict(
      {k: torch.from_numpy(np.array(v)) for k, v in state_dict.items()}, strict=True)
  torch_model.eval()
  size = SIZES[name]
  images = np.random.default_rng(3).normal(
      size=(2, size, size, 3)).astype(np.float32)
  logits = np.asarray(models.create(name, 200).apply(variables, images,
                                                     train=False))
  with torch.no_grad():
    expected = torch_model(torch.from_numpy(images.transpose(0, 3, 1, 2)))
  expected = expected.numpy()
  assert np.linalg.norm(logits - expected) / np.linalg.norm(expected) < 1e-4


@pytest.fixture(scope='module')
def resnet18_run(fake_config, tmp_path_factory):
  """A ResNet18 workdir with one checkpoint, of step 1, as training leaves it."""
  workdir = tmp_path_factory.mktemp('resnet18')
  config = fake_config.copy_and_resolve_references()
  config.model = 'resnet18'
  workdir_lib.check_workdir(str(workdir), config)
  model = models.create('resnet18', 200)
  state = steps.create_train_state(config, model, (64, 64, 3),
                                   optim.for_training(config, 1))
  variables = _trained_like_variables('resnet18')
  state = state.replace(step=1, batch_stats=variables['batch_stats'])
  manager = checkpointing.manager(str(workdir))
  checkpointing.save(manager, 1, state, {'val_top1': 0.1})
  manager.wait_until_finished()
  manager.close()
  return workdir


def test_export_command_writes_a_loadable_state_dict(resnet18_run, tmp_path):
  unwritable = tmp_path / 'missing_folder' / 'model.pth'
  failed = conftest.run_python(['-m', 'tiny_flax.export',
                                f'--workdir={resnet18_run}', f'--out={unwritable}'])
  assert failed.returncode == 1, failed.stderr[-2000:]
  message = [l for l in failed.stderr.splitlines() if l.startswith('error:')]
  assert message and 'Cannot write' in message[0]
  assert not os.path.exists(unwritable)
  assert not os.path.exists(f'{unwritable}.partial')

  out = tmp_path / 'resnet18.pth'
  result = conftest.run_python(['-m', 'tiny_flax.export',
                                f'--workdir={resnet18_run}', f'--out={out}'])
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'step 1' in result.stdout
  state_dict = torch.load(out, weights_only=True)
  model = torchvision.models.resnet18(num_classes=200)
  model.load_state_dict(state_dict, strict=True)
  assert int(state_dict['bn1.num_batches_tracked']) == 1
  assert not torch.equal(state_dict['bn1.running_var'], torch.ones(64))


@pytest.mark.parametrize('case', ['no_checkpoint', 'not_torchvision'])
def test_export_refuses_runs_it_cannot_export(resnet18_run, tmp_path, case):
  workdir = tmp_path / case
  os.makedirs(workdir)
  record = (resnet18_run / 'config.json').read_text()
  if case == 'not_torchvision':
    record = record.replace('"resnet18"', '"resnet_tiny"')
  (workdir / 'config.json').write_text(record)
  out = tmp_path / 'model.pth'
  with pytest.raises(errors.UserError,
                     match='No checkpoint' if case == 'no_checkpoint'
                     else 'resnet_tiny'):
    export.export(str(workdir), str(out))
  assert not os.path.exists(out)
