"""tiny_flax: torchvision's classifiers trained on Tiny ImageNet with JAX/Flax."""
