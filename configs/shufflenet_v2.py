"""ShuffleNetV2 x1.0 at 64x64: the PyTorch original's recipe, or a variant.

    python -m tiny_flax.main --config=configs/shufflenet_v2.py --workdir=runs/shufflenet
    python -m tiny_flax.main --config=configs/shufflenet_v2.py:budget --workdir=runs/shufflenet_budget
    python -m tiny_flax.main --config=configs/shufflenet_v2.py:tuned --workdir=runs/shufflenet_tuned

The original: RandomHorizontalFlip + ToTensor + Normalize(ImageNet mean/std),
15 epochs. Inferred: SGD lr 1e-3, momentum 0.9, x0.1 every 7 epochs. Not
stated: the batch size (128 here). `:budget` keeps its 64x64 inputs, flips
and 15 epochs and changes the optimizer; `:tuned` is sized for ten minutes
of one H200 (default.py).
"""

from configs import default


def get_config(variant=''):
  config = default.get_config()
  config.model = 'shufflenet_v2_x1_0'
  config.input.train = f'random_horizontal_flip|to_tensor|{default.IMAGENET_NORMALIZE}'
  config.input.eval = f'to_tensor|{default.IMAGENET_NORMALIZE}'
  variant = default.check_variant(variant, default.VARIANTS + ('budget',))
  if variant == 'budget':
    # No crop, which makes it underfit; more weight decay than the 5e-5
    # under which it overfits, less than ResNet18's (docs/results_checks.md).
    default.apply_budget_recipe(config, learning_rate=0.2, weight_decay=2e-4)
  if variant == 'tuned':
    # ShuffleNet's paper: little weight decay for a small network.
    default.apply_tuned_recipe(config, image_size=160, num_epochs=50,
                               learning_rate=0.2, weight_decay=4e-5)
  return config
