"""Model registry: torchvision's names, Flax Linen modules taking NHWC images."""

from tiny_flax import errors
from tiny_flax.models import alexnet
from tiny_flax.models import resnet
from tiny_flax.models import shufflenet
from tiny_flax.models.torchvision_import import check_torchvision_file
from tiny_flax.models.torchvision_import import load_torchvision
from tiny_flax.models.torchvision_import import merge_pretrained
from tiny_flax.models.torchvision_import import to_torchvision

_MODELS = {
    'alexnet': alexnet.AlexNet,
    'resnet18': resnet.ResNet18,
    'resnet50': resnet.ResNet50,
    'resnet_tiny': resnet.ResNetTiny,
    'shufflenet_v2_x1_0': shufflenet.ShuffleNetV2X1_0,
}


# Models that torchvision has under the same name (all but the test-sized one).
TORCHVISION_NAMES = ('alexnet', 'resnet18', 'resnet50', 'shufflenet_v2_x1_0')


def names():
  return sorted(_MODELS)


def create(name, num_classes, **kwargs):
  """Returns the module `name`.

  kwargs: `dtype` (compute), `axis_name` (BatchNorm across devices),
  `kernels` (layers.Kernels; XLA's ops unless given, see backend.kernels).
  """
  if name not in _MODELS:
    raise errors.UserError(
        f'Unknown model {name!r}. Known models: {", ".join(names())}.')
  return _MODELS[name](num_classes=num_classes, **kwargs)
