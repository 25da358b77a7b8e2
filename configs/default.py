"""Values every config starts from; the model configs change what differs.

Not a recipe on its own, but runnable:
    python -m tiny_flax.main --config=configs/default.py --workdir=runs/default
"""

import ml_collections


def get_config():
  config = ml_collections.ConfigDict()
  config.model = 'resnet18'

  config.dataset = ml_collections.ConfigDict()
  config.dataset.source = 'official'  # or 'fake': generated, for offline runs
  config.dataset.data_dir = ''  # prepared TFDS records; '' = ~/tensorflow_datasets
  config.dataset.manual_dir = ''  # holds tiny-imagenet-200.zip when offline
  config.dataset.fake_train_per_class = 20
  config.dataset.fake_val_per_class = 5

  # Preprocessing recipes, as torchvision.transforms.Compose lists (see
  # tiny_flax/data/preprocess.py for the ops).
  config.input = ml_collections.ConfigDict()
  config.input.train = 'random_horizontal_flip|to_tensor'
  config.input.eval = 'to_tensor'
  config.input.shuffle_buffer = 16_384
  config.input.cache = True  # decoded uint8 images in RAM: 1.2 GB for train

  config.batch_size = 128  # global, over all devices and processes
  config.num_epochs = 15
  config.num_train_steps = -1  # -1: num_epochs of steps
  config.steps_per_eval = -1  # -1: the whole validation split
  config.log_every_steps = 100

  config.optimizer = 'sgd'  # sgd | adam | adamw
  config.learning_rate = 1e-3
  config.momentum = 0.9
  config.nesterov = False
  config.weight_decay = 0.0
  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = 'step'  # constant | step | warmup_cosine
  config.schedule.step_epochs = 7
  config.schedule.gamma = 0.1
  config.schedule.warmup_epochs = 0.0
  config.label_smoothing = 0.0

  config.parallelism = 'pmap'  # pmap | shard_map
  config.half_precision = False  # bf16 compute, float32 params
  config.seed = 0
  config.checkpoints_to_keep = 3
  return config
