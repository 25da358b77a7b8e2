"""Model registry: torchvision's names, Flax Linen modules taking NHWC images."""

from tiny_flax import errors
from tiny_flax.models import resnet

_MODELS = {
    'resnet18': resnet.ResNet18,
    'resnet50': resnet.ResNet50,
    'resnet_tiny': resnet.ResNetTiny,
}


def names():
  return sorted(_MODELS)


def create(name, num_classes, **kwargs):
  """Returns the module `name`; kwargs: `dtype` (compute), `axis_name` (BN)."""
  if name not in _MODELS:
    raise errors.UserError(
        f'Unknown model {name!r}. Known models: {", ".join(names())}.')
  return _MODELS[name](num_classes=num_classes, **kwargs)
