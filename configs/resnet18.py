"""ResNet18 at 64x64: the seed project's recipe, or `:tuned` for accuracy.

    python -m tiny_flax.main --config=configs/resnet18.py --workdir=runs/resnet18
    python -m tiny_flax.main --config=configs/resnet18.py:budget --workdir=runs/resnet18_budget
    python -m tiny_flax.main --config=configs/resnet18.py:tuned --workdir=runs/resnet18_tuned

`:budget` keeps the seed's 64x64 inputs and 15 epochs and changes only the
recipe: 46.0% validation top-1 after 15 epochs (docs/results.md).

Seed: RandomHorizontalFlip + ToTensor, no normalisation, 15 epochs. Inferred
(the seed's notebooks are not public; its logs match PyTorch's
transfer-learning tutorial): SGD lr 1e-3, momentum 0.9, x0.1 every 7 epochs.
Not stated anywhere: the batch size (128 here).
"""

from configs import default


def get_config(variant=''):
  config = default.get_config()
  config.model = 'resnet18'
  config.input.train = 'random_horizontal_flip|to_tensor'
  config.input.eval = 'to_tensor'
  config.num_epochs = 15
  variant = default.check_variant(variant, default.VARIANTS + ('budget',))
  if variant == 'budget':
    default.apply_budget_recipe(config, learning_rate=0.2, weight_decay=5e-4,
                                crop_scale=0.35)
  if variant == 'tuned':
    default.apply_tuned_recipe(config, image_size=128, num_epochs=60,
                               weight_decay=5e-4)
  return config
