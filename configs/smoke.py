"""A few-minute run on a laptop CPU with no data: generated images, tiny ResNet.

    python -m tiny_flax.main --config=configs/smoke.py --workdir=/tmp/smoke

Shows the whole system (dataset preparation, training, validation, TensorBoard,
checkpoints, resuming) working; accuracy ends far above chance (0.5%).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model = 'resnet_tiny'
  config.dataset.source = 'fake'
  config.input.train = 'random_horizontal_flip|to_tensor'
  config.input.eval = 'to_tensor'
  config.batch_size = 64
  config.num_epochs = 4
  config.log_every_steps = 20
  config.optimizer = 'sgd'
  config.learning_rate = 0.1
  config.schedule.name = 'warmup_cosine'
  config.schedule.warmup_epochs = 0.5
  config.weight_decay = 5e-4
  return config
