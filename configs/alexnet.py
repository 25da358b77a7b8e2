"""AlexNet at 224x224: the PyTorch original's recipe, or `:tuned`.

    python -m tiny_flax.main --config=configs/alexnet.py --workdir=runs/alexnet
    python -m tiny_flax.main --config=configs/alexnet.py:tuned --workdir=runs/alexnet_tuned

The original (following DennisHanyuanXu/Tiny-ImageNet): train RandomHorizontalFlip,
RandomResizedCrop(224), ToTensor, Normalize(0.5, 0.5); validation Resize(256),
CenterCrop(224), ToTensor, Normalize(0.5, 0.5); 30 epochs. Inferred from that
source: Adam, lr 1e-3, constant. Not stated: the batch size (128 here).
`:tuned` is sized for ten minutes of one H200 (default.py).
Fine-tuning from ImageNet weights: --config.init_from=alexnet-owt-7be5be79.pth.
"""

from configs import default

NORMALIZE = 'normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))'


def get_config(variant=''):
  config = default.get_config()
  config.model = 'alexnet'
  config.input.train = f'random_horizontal_flip|random_resized_crop(224)|to_tensor|{NORMALIZE}'
  config.input.eval = f'resize(256)|center_crop(224)|to_tensor|{NORMALIZE}'
  config.num_epochs = 30
  config.optimizer = 'adam'
  config.learning_rate = 1e-3
  config.schedule.name = 'constant'
  if default.check_variant(variant) == 'tuned':
    # AlexNet has no BatchNorm to take ResNet's 0.2: its paper's 0.01 at
    # batch 128, scaled to the recipe's 256 (pytorch/examples trains
    # torchvision's AlexNet at 0.01 for 256: the choice if this one stalls).
    default.apply_tuned_recipe(config, image_size=224, num_epochs=90,
                               learning_rate=0.02, normalize=NORMALIZE)
  return config
