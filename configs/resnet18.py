"""ResNet18 at 64x64, the seed project's recipe.

    python -m tiny_flax.main --config=configs/resnet18.py --workdir=runs/resnet18

From the seed: RandomHorizontalFlip + ToTensor, no normalisation, 15 epochs.
Inferred (the seed's notebooks are not public; its logs match PyTorch's
transfer-learning tutorial): SGD lr 1e-3, momentum 0.9, x0.1 every 7 epochs.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet18'
  config.input.train = 'random_horizontal_flip|to_tensor'
  config.input.eval = 'to_tensor'
  config.num_epochs = 15
  return config
