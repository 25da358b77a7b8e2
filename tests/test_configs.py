"""Every config and variant loads, validates, and holds the PyTorch original's recipe."""

import importlib
import re

import pytest

from configs import default
from tiny_flax import data
from tiny_flax import errors
from tiny_flax import loop_policy
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import time_budget
from tiny_flax.platform import backend

CONFIGS = ['alexnet', 'resnet18', 'resnet50', 'shufflenet_v2', 'smoke', 'default']


def _config(name, variant=''):
  module = importlib.import_module(f'configs.{name}')
  return module.get_config(variant) if variant else module.get_config()


VARIANTS = [('resnet18', 'budget'), ('shufflenet_v2', 'budget'),
            ('resnet18', 'fast')] + [
                (name, 'tuned') for name in
                ('alexnet', 'resnet18', 'resnet50', 'shufflenet_v2')]


@pytest.mark.parametrize('name, variant',
                         [(name, '') for name in CONFIGS] + VARIANTS)
def test_config_is_valid(name, variant):
  config = _config(name, variant)
  assert config.model in models.names()
  assert len(data.image_shape(config)) == 3
  data.check(config)
  optim.check(config)
  loop_policy.check(config)
  optim.for_training(config, 10)


@pytest.mark.parametrize('name', ['alexnet', 'resnet18', 'resnet50', 'shufflenet_v2'])
def test_tuned_variant_is_valid_and_differs(name):
  config = _config(name, 'tuned')
  assert config.to_dict() != _config(name).to_dict()
  assert data.image_shape(config) in ((160, 160, 3), (192, 192, 3),
                                     (224, 224, 3))
  optim.for_training(config, 10)
  assert config.time_budget_minutes == 10.0
  time_budget.check(config)


def test_unknown_variant_is_refused():
  with pytest.raises(errors.UserError, match='tuned'):
    _config('resnet50', 'fast')


def test_tuned_recipes_use_the_regularisers_and_fast_does_not():
  for name in ('alexnet', 'resnet18', 'resnet50', 'shufflenet_v2'):
    config = _config(name, 'tuned')
    assert config.mixing.cutmix_alpha > 0 and config.ema.decay > 0, name
    assert config.schedule.name == 'warmup_cosine'
  fast = _config('resnet18', 'fast')
  assert (fast.mixing.cutmix_alpha, fast.ema.decay) == (0.0, 0.0)
  assert fast.num_epochs < _config('resnet18', 'tuned').num_epochs


def test_the_original_recipes():
  alexnet = _config('alexnet')
  assert alexnet.input.eval.startswith('resize(256)|center_crop(224)')
  assert 'random_resized_crop(224)' in alexnet.input.train
  assert (alexnet.optimizer, alexnet.num_epochs) == ('adam', 30)
  resnet18 = _config('resnet18')
  assert resnet18.input.train == 'random_horizontal_flip|to_tensor'
  assert (resnet18.num_epochs, resnet18.schedule.step_epochs) == (15, 7)
  for name, epochs in (('resnet50', 50), ('shufflenet_v2', 15)):
    config = _config(name)
    assert default.IMAGENET_NORMALIZE in config.input.train
    assert config.num_epochs == epochs


@pytest.mark.parametrize('key, value, message', [
    ('optimizer', 'lamb', "Unknown config.optimizer 'lamb': use sgd, adam, adamw."),
    ('schedule.name', 'linear',
     "Unknown config.schedule.name 'linear': use constant, step, warmup_cosine."),
])
def test_unknown_optimizer_or_schedule_is_refused_by_name(key, value, message):
  config = _config('resnet18')
  if key == 'optimizer':
    config.optimizer = value
  else:
    config.schedule.name = value
  with pytest.raises(errors.UserError, match=re.escape(message)):
    optim.check(config)


@pytest.mark.parametrize('key, value, message', [
    ('learning_rate', -0.1, 'config.learning_rate must be >= 0, got -0.1.'),
    ('learning_rate', float('nan'), 'config.learning_rate must be >= 0'),
    ('weight_decay', -5e-4, 'config.weight_decay must be >= 0, got -0.0005.'),
    ('momentum', 1.0, 'config.momentum must be in [0, 1) (0: none), got 1.0.'),
    ('label_smoothing', 1.0,
     'config.label_smoothing must be in [0, 1), got 1.0.'),
    ('schedule.warmup_epochs', -1.0,
     'config.schedule.warmup_epochs must be >= 0, got -1.0.'),
    ('schedule.step_epochs', 0,
     'config.schedule.step_epochs must be >= 1, got 0.'),
    ('schedule.gamma', 0.0, 'config.schedule.gamma must be in (0, 1], got 0.0.'),
    ('num_epochs', 0, 'config.num_epochs must be >= 1, got 0.'),
    ('log_every_steps', 0, 'config.log_every_steps must be >= 1, got 0.'),
    ('checkpoint_every_steps', -1,
     'config.checkpoint_every_steps must be >= 0 (0: at epoch ends only), '
     'got -1.'),
    ('checkpoints_to_keep', 0, 'config.checkpoints_to_keep must be >= 1'),
    ('input.shuffle_buffer', 0,
     'config.input.shuffle_buffer must be >= 1 (1: no shuffling), got 0.'),
    ('dataset.source', 'kaggle',
     'config.dataset.source must be "official" or "fake", got \'kaggle\'.'),
])
def test_a_value_out_of_its_range_is_refused_by_name(key, value, message):
  config = _config('resnet18')  # SGD with momentum, the 'step' schedule
  config.update_from_flattened_dict({key: value})
  with pytest.raises(errors.UserError, match=re.escape(message)):
    data.check(config)
    optim.check(config)
    loop_policy.check(config)


def test_the_step_schedules_values_bind_only_that_schedule():
  config = _config('resnet18', 'budget')  # warmup_cosine
  config.schedule.step_epochs = 0
  optim.check(config)


@pytest.mark.parametrize('batch_size', [0, -128])
def test_a_batch_size_below_one_is_refused(batch_size):
  with pytest.raises(errors.UserError, match=re.escape(
      f'config.batch_size must be >= 1, got {batch_size}.')):
    parallel.Parallel('shard_map').check_batch_size(batch_size)


@pytest.mark.parametrize('key, value, message', [
    ('kernels', 'cudnn', "config.kernels must be one of auto, xla, cpu, "
     "space_to_depth, got 'cudnn'."),
    ('half_dtype', 'fp16', "config.half_dtype must be one of auto, bfloat16, "
     "float16, got 'fp16'."),
    ('steps_per_dispatch', -2, 'config.steps_per_dispatch must be a whole '
     'number >= 1, or 0 to let the platform choose, got -2.'),
    ('input.on_device', 'yes', "config.input.on_device must be one of auto, "
     "true, false, got 'yes'."),
])
def test_a_platform_value_out_of_its_choices_is_refused_by_name(key, value,
                                                                message):
  config = _config('resnet18')
  config.update_from_flattened_dict({key: value})
  with pytest.raises(errors.UserError, match=re.escape(message)):
    backend.resolve(config, resident_bytes=0)


def test_a_gpu_left_unused_by_jaxs_cpu_build_is_named(tmp_path):
  driver = tmp_path / 'version'
  driver.write_text('NVRM version: NVIDIA UNIX x86_64 Kernel Module 575.57')
  warning = backend.unused_gpu('cpu', {}, str(driver))
  assert 'requirements-cuda.txt' in warning
  # No GPU; JAX on it; or the CPU chosen on purpose.
  assert backend.unused_gpu('cpu', {}, str(tmp_path / 'none')) is None
  assert backend.unused_gpu('gpu', {}, str(driver)) is None
  for environ in ({'JAX_PLATFORMS': 'cpu'}, {'CUDA_VISIBLE_DEVICES': ''},
                  {'CUDA_VISIBLE_DEVICES': '-1'}):
    assert backend.unused_gpu('cpu', environ, str(driver)) is None
  assert backend.unused_gpu('cpu', {'CUDA_VISIBLE_DEVICES': '0'}, str(driver))
