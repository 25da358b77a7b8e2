"""Every config and variant loads, validates, and holds the PyTorch original's recipe."""

import importlib
import re

import pytest

from configs import default
from tiny_flax import errors
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import time_budget
from tiny_flax import data

CONFIGS = ['alexnet', 'resnet18', 'resnet50', 'shufflenet_v2', 'smoke', 'default']


def _config(name, variant=''):
  module = importlib.import_module(f'configs.{name}')
  return module.get_config(variant) if variant else module.get_config()


@pytest.mark.parametrize('name', CONFIGS)
def test_config_is_valid(name):
  config = _config(name)
  assert config.model in models.names()
  assert len(data.image_shape(config)) == 3
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
  with pytest.raises(ValueError, match='tuned'):
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
