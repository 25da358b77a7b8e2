"""ResNet18 at 64x64: the PyTorch original's recipe, or a variant.

    python -m tiny_flax.main --config=configs/resnet18.py --workdir=runs/resnet18
    python -m tiny_flax.main --config=configs/resnet18.py:budget --workdir=runs/resnet18_budget
    python -m tiny_flax.main --config=configs/resnet18.py:tuned --workdir=runs/resnet18_tuned
    python -m tiny_flax.main --config=configs/resnet18.py:fast --workdir=runs/resnet18_fast

The original: RandomHorizontalFlip + ToTensor, no normalisation, 15 epochs,
all of which default.py holds. Inferred (the original's notebooks are not
public; its logs match PyTorch's transfer-learning tutorial): SGD lr 1e-3,
momentum 0.9, x0.1 every 7 epochs. Not stated: the batch size (128 here).
`:budget` keeps its 64x64 inputs and 15 epochs and changes the recipe;
`:tuned` and `:fast` are sized for ten minutes of one H200 (default.py).
"""

from configs import default


def get_config(variant=''):
  config = default.get_config()
  variant = default.check_variant(variant,
                                  default.VARIANTS + ('budget', 'fast'))
  if variant == 'budget':
    default.apply_budget_recipe(config, learning_rate=0.2, weight_decay=5e-4,
                                crop_scale=0.35)
  if variant == 'tuned':
    default.apply_tuned_recipe(config, image_size=224, num_epochs=50,
                               learning_rate=0.2)
  if variant == 'fast':
    # The least time to 50% top-1: 128 px, 16 epochs, none of the
    # regularisers that pay off only over long schedules, and a larger batch
    # to fill the H200.
    default.apply_tuned_recipe(config, image_size=128, num_epochs=16,
                               learning_rate=0.4, regularise=False)
    config.batch_size = 512
  return config
