"""tiny_flax: torchvision's classifiers trained on Tiny ImageNet with JAX/Flax."""

# The TFDS builder registers itself on import. Models and train steps must
# work without TensorFlow (accelerator hosts may lack it), hence the guard.
try:
  from tiny_flax.data import tiny_imagenet as _tiny_imagenet  # pylint: disable=unused-import
except ModuleNotFoundError as error:
  if error.name not in ('tensorflow', 'tensorflow_datasets'):
    raise
