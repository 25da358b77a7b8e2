"""ResNet50 at 64x64: the PyTorch original's recipe, or `:tuned`.

    python -m tiny_flax.main --config=configs/resnet50.py --workdir=runs/resnet50
    python -m tiny_flax.main --config=configs/resnet50.py:tuned --workdir=runs/resnet50_tuned

The original: RandomHorizontalFlip + ToTensor + Normalize(ImageNet mean/std), 50
epochs. Inferred: SGD lr 1e-3, momentum 0.9, x0.1 every 7 epochs (the
tutorial's schedule, as for ResNet18). Not stated: the batch size (128 here).
`:tuned` is sized for ten minutes of one H200 (default.py).
"""

from configs import default


def get_config(variant=''):
  config = default.get_config()
  config.model = 'resnet50'
  config.input.train = f'random_horizontal_flip|to_tensor|{default.IMAGENET_NORMALIZE}'
  config.input.eval = f'to_tensor|{default.IMAGENET_NORMALIZE}'
  config.num_epochs = 50
  if default.check_variant(variant) == 'tuned':
    default.apply_tuned_recipe(config, image_size=192, num_epochs=40,
                               learning_rate=0.2)
  return config
