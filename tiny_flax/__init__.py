"""tiny_flax: torchvision's classifiers trained on Tiny ImageNet with JAX/Flax."""

import importlib.util

# The TFDS builder registers itself on import. Models and train steps must
# import without TensorFlow (accelerator hosts may lack it), hence the guard.
if importlib.util.find_spec('tensorflow_datasets') is not None:
  from tiny_flax.data import tiny_imagenet as _tiny_imagenet  # pylint: disable=unused-import
