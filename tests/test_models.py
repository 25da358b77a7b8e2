"""The four architectures against torchvision: shapes, counts, outputs, import."""

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from tiny_flax import errors
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import steps
from tiny_flax import train
from tiny_flax.models import alexnet

torch = pytest.importorskip('torch')
torchvision = pytest.importorskip('torchvision')

TORCHVISION_COUNTS = {
    'alexnet': 57_823_240,
    'resnet18': 11_279_112,
    'resnet50': 23_917_832,
    'shufflenet_v2_x1_0': 1_458_604,
}
# The original's input size first, then another one (AlexNet at 64 pools a 1x1 map
# up to 6x6).
SIZES = {'alexnet': (224, 64), 'resnet18': (64, 96), 'resnet50': (64, 48),
         'shufflenet_v2_x1_0': (64, 80)}


def _torch_model(name, seed=0):
  torch.manual_seed(seed)
  return getattr(torchvision.models, name)(num_classes=200)


def _relative_error(actual, expected):
  return float(np.linalg.norm(actual - expected) / np.linalg.norm(expected))


@pytest.mark.parametrize('name', sorted(TORCHVISION_COUNTS))
def test_parameter_counts_match_torchvision(name):
  module = models.create(name, 200)
  shapes = jax.eval_shape(functools.partial(module.init, train=False),
                          jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  count = sum(x.size for x in jax.tree.leaves(shapes['params']))
  assert count == TORCHVISION_COUNTS[name]
  assert count == sum(p.numel() for p in _torch_model(name).parameters())


@functools.lru_cache(maxsize=None)
def _converted(name):
  torch_model = _torch_model(name)
  return torch_model, models.load_torchvision(name, torch_model.state_dict())


@pytest.mark.parametrize('name', sorted(SIZES))
def test_eval_outputs_match_torchvision(name):
  torch_model, variables = _converted(name)
  torch_model.eval()
  module = models.create(name, 200)
  for size in SIZES[name]:
    images = np.random.default_rng(size).normal(
        size=(2, 3, size, size)).astype(np.float32)
    with torch.no_grad():
      expected = torch_model(torch.from_numpy(images)).numpy()
    logits = module.apply(variables, images.transpose(0, 2, 3, 1), train=False)
    assert _relative_error(np.asarray(logits), expected) < 1e-4, size


@pytest.mark.parametrize('name', ['resnet18', 'resnet50', 'shufflenet_v2_x1_0'])
def test_train_mode_outputs_and_running_stats_match_torchvision(name):
  torch_model, variables = _converted(name)
  torch_model = _torch_model(name)  # fresh running statistics
  torch_model.train()
  module = models.create(name, 200)
  images = np.random.default_rng(1).normal(size=(4, 3, 64, 64)).astype(np.float32)
  expected = torch_model(torch.from_numpy(images)).detach().numpy()
  logits, updates = module.apply(variables, images.transpose(0, 2, 3, 1),
                                 train=True, mutable=['batch_stats'])
  assert _relative_error(np.asarray(logits), expected) < 1e-4
  torch_stats = models.load_torchvision(name, torch_model.state_dict())
  ours = jax.tree.leaves_with_path(updates['batch_stats'])
  theirs = jax.tree.leaves_with_path(torch_stats['batch_stats'])
  assert [path for path, _ in ours] == [path for path, _ in theirs]
  assert ours or name == 'alexnet'  # AlexNet alone has no BatchNorm
  for (path, a), (_, b) in zip(ours, theirs):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5, err_msg=str(path))


def test_adaptive_pool_matches_torch_at_odd_sizes():
  for size in (1, 5, 6, 7, 13):
    x = np.random.default_rng(size).normal(size=(1, 3, size, size + 2))
    x = x.astype(np.float32)
    expected = torch.nn.functional.adaptive_avg_pool2d(
        torch.from_numpy(x), (6, 6)).numpy().transpose(0, 2, 3, 1)
    actual = alexnet.adaptive_avg_pool(x.transpose(0, 2, 3, 1), 6)
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-6)


def test_pretrained_import_replaces_the_head(tmp_path):
  torch.manual_seed(3)
  imagenet = torchvision.models.resnet18(num_classes=1000)
  path = tmp_path / 'resnet18.pth'
  torch.save(imagenet.state_dict(), path)
  module = models.create('resnet18', 200)
  variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  merged = models.merge_pretrained(
      'resnet18', variables, models.load_torchvision('resnet18', str(path)))
  np.testing.assert_array_equal(
      merged['params']['conv1']['kernel'],
      imagenet.conv1.weight.detach().numpy().transpose(2, 3, 1, 0))
  np.testing.assert_array_equal(
      merged['batch_stats']['layer4_1']['bn2']['var'],
      imagenet.layer4[1].bn2.running_var.numpy())
  assert merged['params']['fc']['kernel'].shape == (512, 200)
  np.testing.assert_array_equal(merged['params']['fc']['kernel'],
                                variables['params']['fc']['kernel'])


def test_pretrained_import_rejects_incompatible_shapes():
  module = models.create('resnet18', 200)
  variables = module.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
  wide = _torch_model('resnet50').state_dict()
  wide = {k: v for k, v in wide.items() if k.startswith('conv1')
          or k.startswith('layer1.0.conv1')}
  wide['layer1.0.conv1.weight'] = torch.zeros(64, 32, 3, 3)
  with pytest.raises(errors.UserError, match=r'layer1_0/conv1/kernel.*\(3, 3, 32, 64\).*\(3, 3, 64, 64\)'):
    models.merge_pretrained('resnet18', variables,
                            models.load_torchvision('resnet18', wide))


@pytest.mark.parametrize('bad', ['missing.pth', 'not_a_state_dict'])
def test_unreadable_pretrained_file(tmp_path, bad):
  path = tmp_path / bad
  if bad == 'not_a_state_dict':
    path.write_bytes(b'plain bytes')
  with pytest.raises(errors.UserError, match=str(path)):
    models.load_torchvision('resnet18', str(path))


def test_alexnet_names_its_smallest_input():
  module = models.create('alexnet', 200)
  x = jnp.zeros((1, alexnet.MIN_INPUT_SIZE, alexnet.MIN_INPUT_SIZE, 3))
  assert module.init(jax.random.key(0), x)['params']
  with pytest.raises(errors.UserError, match='at least 63x63.*got 62x70'):
    module.init(jax.random.key(0), jnp.zeros((1, 62, 70, 3)))


def test_unknown_model_lists_the_known_ones():
  with pytest.raises(errors.UserError, match='alexnet.*resnet18.*shufflenet'):
    models.create('vgg16', 200)


@pytest.mark.parametrize('name', sorted(TORCHVISION_COUNTS))
def test_one_train_step_per_model(name):
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer='sgd', momentum=0.9, nesterov=False, weight_decay=0.0,
      ema=dict(decay=0.0)))
  module = models.create(name, 200, axis_name=steps.AXIS)
  state = steps.create_train_state(config, module, (64, 64, 3),
                                   optim.create(config, 0.01))
  before = jax.device_get(state.params)
  par = parallel.Parallel('pmap')
  step = par.compile(functools.partial(
      steps.train_step, dropout_key=jax.random.key(0)), donate_state=True)
  rng = np.random.default_rng(0)
  batch = {'image': rng.normal(size=(2, 64, 64, 3)).astype(np.float32),
           'label': np.array([3, 7], np.int32)}
  state, metrics = step(par.replicate(state), par.shard_batch(batch))
  assert np.isfinite(float(par.unreplicate(metrics).compute()['loss']))
  after = jax.device_get(par.unreplicate(state).params)
  assert jax.tree.structure(after) == jax.tree.structure(before)
  unchanged = [jax.tree_util.keystr(path) for (path, a), b in zip(
      jax.tree.leaves_with_path(after), jax.tree.leaves(before))
               if np.array_equal(a, b)]
  assert jax.tree.leaves(before) and not unchanged, unchanged


def test_training_starts_from_torchvision_weights(tmp_path):
  torch.manual_seed(5)
  imagenet = torchvision.models.resnet18(num_classes=1000)
  path = tmp_path / 'resnet18-imagenet.pth'
  torch.save(imagenet.state_dict(), path)
  config = ml_collections.ConfigDict(dict(
      seed=0, optimizer='sgd', momentum=0.9, nesterov=False, weight_decay=0.0,
      model='resnet18', init_from=str(path), ema=dict(decay=0.0)))
  module = models.create('resnet18', 200, axis_name=steps.AXIS)
  state = steps.create_train_state(config, module, (64, 64, 3),
                                   optim.create(config, 0.01))
  state = train._init_from_torchvision(config, state)  # pylint: disable=protected-access
  np.testing.assert_array_equal(
      state.params['layer2_0']['downsample_0']['kernel'],
      imagenet.layer2[0].downsample[0].weight.detach().numpy().transpose(2, 3, 1, 0))
  assert state.params['fc']['kernel'].shape == (512, 200)
