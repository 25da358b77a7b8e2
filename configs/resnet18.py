"""ResNet18 at 64x64: the seed project's recipe, or `:tuned` for accuracy.

    python -m tiny_flax.main --config=configs/resnet18.py --workdir=runs/resnet18
    python -m tiny_flax.main --config=configs/resnet18.py:budget --workdir=runs/resnet18_budget
    python -m tiny_flax.main --config=configs/resnet18.py:tuned --workdir=runs/resnet18_tuned
    python -m tiny_flax.main --config=configs/resnet18.py:fast --workdir=runs/resnet18_fast

`:budget` keeps the seed's 64x64 inputs and 15 epochs and changes only the
recipe; `:tuned` and `:fast` are sized for ten minutes of one H200 (see
configs/default.py); docs/results.md has their results.

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
  variant = default.check_variant(variant,
                                  default.VARIANTS + ('budget', 'fast'))
  if variant == 'budget':
    default.apply_budget_recipe(config, learning_rate=0.2, weight_decay=5e-4,
                                crop_scale=0.35)
  if variant == 'tuned':
    default.apply_tuned_recipe(config, image_size=224, num_epochs=50,
                               learning_rate=0.2)
  if variant == 'fast':
    # The least time to 50% top-1: 128 px, 16 epochs, no regularisers that
    # pay off only over long schedules, a larger batch to fill the H200.
    default.apply_tuned_recipe(config, image_size=128, num_epochs=16,
                               learning_rate=0.4, regularise=False)
    config.batch_size = 512
  return config
