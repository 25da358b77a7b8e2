"""Values every config starts from: ResNet18 with the PyTorch original's
recipe. The model configs change what differs; the recipes of the variants
are the functions below.

    python -m tiny_flax.main --config=configs/default.py --workdir=runs/default
"""

import ml_collections

from tiny_flax import errors

# torchvision's Normalize with the ImageNet statistics, as the original used them.
IMAGENET_NORMALIZE = 'normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))'
VARIANTS = ('', 'tuned')


def check_variant(variant, known=VARIANTS):
  if variant not in known:
    others = ' or '.join(f'":{v}"' for v in known if v)
    raise errors.UserError(f'Unknown config variant {variant!r}: append '
                           f'nothing or {others} to the config path.')
  return variant


def get_config():
  config = ml_collections.ConfigDict()
  config.model = 'resnet18'

  config.dataset = ml_collections.ConfigDict()
  config.dataset.source = 'official'  # or 'fake': generated, for offline runs
  config.dataset.data_dir = ''  # prepared records and arrays; '' = ~/tensorflow_datasets
  config.dataset.manual_dir = ''  # holds tiny-imagenet-200.zip when offline
  config.dataset.fake_train_per_class = 20
  config.dataset.fake_val_per_class = 5

  # Transforms, as torchvision.transforms.Compose lists (see
  # tiny_flax/data/tf_transforms.py for the ops).
  config.input = ml_collections.ConfigDict()
  config.input.train = 'random_horizontal_flip|to_tensor'
  config.input.eval = 'to_tensor'
  config.input.shuffle_buffer = 16_384
  config.input.cache = True  # decoded uint8 images in RAM: 1.2 GB for train
  # Both decoded splits in accelerator memory (1.35 GB per device), the
  # training transforms applied there in the step; the host feeds indices and
  # TensorFlow is not needed. 'auto': on for a GPU or TPU with room, and where
  # TensorFlow is not installed; else tf.data on the host. 'true' | 'false'.
  config.input.on_device = 'auto'

  config.batch_size = 128  # global, over all devices and processes
  # Each device's batch computed in this many parts, one after another,
  # their gradients summed into one update (gradient accumulation): for a
  # batch that does not fit the device's memory, which then holds the
  # activations of one part. BatchNorm normalises each part by its own
  # statistics, as under PyTorch's gradient accumulation.
  config.microbatches = 1
  config.num_epochs = 15
  config.num_train_steps = -1  # -1: num_epochs of steps
  # Minutes of wall time for the whole run, compilation and validation
  # included (0: off): an early epoch is measured, then the schedule is
  # sized to the whole epochs that fit, at most num_epochs
  # (tiny_flax/time_budget.py). A cosine schedule needs warmup_epochs >= 1.
  config.time_budget_minutes = 0.0
  config.steps_per_eval = -1  # -1: the whole validation split
  config.log_every_steps = 100
  # A jax.profiler trace of this many train steps after each start's first
  # (compiling) train call, for TensorBoard's Profile tab (0: none).
  config.profile_steps = 0
  # Train steps per host dispatch, scanned in one compiled call. Where a step
  # is shorter than Python's dispatch of it (small batches on a GPU), more
  # keep the device busy; logs, checkpoints and validation still fall on the
  # same steps, and a resumed run still matches an uninterrupted one.
  # 0: the platform's choice (tiny_flax/platform/backend.py: 1 on CPU, 16
  # elsewhere).
  config.steps_per_dispatch = 0

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
  # timm's Mixup and CutMix (tiny_flax/mixing.py), applied inside the train
  # step on each device's shard; both alphas 0: off. mode: 'batch' (one draw
  # per batch) or 'elem' (one per example). Targets take label_smoothing.
  config.mixing = ml_collections.ConfigDict()
  config.mixing.mixup_alpha = 0.0
  config.mixing.cutmix_alpha = 0.0
  config.mixing.prob = 1.0
  config.mixing.switch_prob = 0.5
  config.mixing.mode = 'batch'
  # A moving average of the weights and BatchNorm statistics (decay 0: off),
  # validated every epoch beside them, checkpointed, and the weights that
  # evaluate and export use. warmup: the decay is min(decay,
  # (1 + step) / (10 + step)), so the first weights fade fast.
  config.ema = ml_collections.ConfigDict()
  config.ema.decay = 0.0
  config.ema.warmup = True

  # jit over shard_map, as JAX recommends since 0.8; under pmap XLA copies
  # AlexNet's FC weights and Adam moments at every step (docs/performance.md).
  config.parallelism = 'shard_map'  # shard_map | pmap
  # Half-precision compute, float32 parameters. half_dtype: 'bfloat16';
  # 'float16' with dynamic loss scaling, for GPUs without bfloat16 tensor
  # cores (T4, V100); 'auto': float16 on those, bfloat16 elsewhere.
  config.half_precision = False
  config.half_dtype = 'auto'
  # Convolution and max-pool forms: 'auto' takes tiny_flax/platform/cpu_kernels.py
  # on the CPU backend (faster there), its max pool on GPUs, and XLA's ops
  # elsewhere (tiny_flax/platform/backend.py); 'xla' | 'cpu' | 'space_to_depth'
  # ('auto' with the stems' strided convolutions on stride^2 x 3 channels,
  # tiny_flax/platform/space_to_depth.py; slower on the CPU, a GPU candidate).
  config.kernels = 'auto'
  config.seed = 0
  config.checkpoints_to_keep = 3
  # Checkpoints besides every epoch end (0: off for either). Timed ones wait
  # for the next log step; every_steps ones end a log interval.
  config.checkpoint_every_minutes = 10.0
  config.checkpoint_every_steps = 0
  # A torchvision state dict (.pth) to start from; a head of another class
  # count is re-initialised.
  config.init_from = ''
  return config


def apply_tuned_recipe(config, *, image_size, num_epochs, learning_rate,
                       weight_decay=5e-4, regularise=True,
                       normalize=IMAGENET_NORMALIZE):
  """A from-scratch recipe for one 10-minute run on one H200, aimed at top-1.

  The unmodified torchvision network, exportable, with the published
  from-scratch practice (docs/results.md, "The :tuned recipes"):
  - Larger inputs: upsampling the 64x64 images to `image_size` gives the
    network's first stage the spatial size that a 3x3 stride-1 stem gets at
    64 px (56x56 at 224), the main difference behind the best published
    ResNet figures; the sizes and epochs fill ten minutes at the measured
    H200 throughput.
  - RandomResizedCrop with scale (0.35, 1): the ImageNet default (0.08) crops
    away most of an already small object.
  - Nesterov SGD, batch 256 (the baseline's 0.1 at batch 128, scaled),
    3 warmup epochs then cosine decay, weight decay, label smoothing 0.1.
  - `regularise`: CutMix (alpha 1) or Mixup (alpha 0.2), one of them on half
    the batches, and a moving average of the weights: the main levers of the
    published Tiny ImageNet tables, at a strength that suits tens of epochs
    rather than hundreds.
  - A ten-minute time budget: `num_epochs` is the most the run trains; it
    trains fewer where its second epoch shows that they would not fit.
  """
  config.input.train = (
      f'random_resized_crop({image_size}, scale=(0.35, 1.0))|'
      f'random_horizontal_flip|to_tensor|{normalize}')
  config.input.eval = f'resize({image_size})|to_tensor|{normalize}'
  _nesterov_cosine(config, num_epochs=num_epochs, learning_rate=learning_rate,
                   weight_decay=weight_decay, warmup_epochs=3)
  config.time_budget_minutes = 10.0
  if regularise:
    config.mixing.mixup_alpha = 0.2
    config.mixing.cutmix_alpha = 1.0
    config.mixing.prob = 0.5
    config.mixing.switch_prob = 0.5
    config.ema.decay = 0.9995


def apply_budget_recipe(config, *, learning_rate, weight_decay,
                        crop_scale=None):
  """The original's budget (64x64 inputs, 15 epochs) spent on accuracy.

  The original's SGD at lr 1e-3 without weight decay barely moves a network in 15
  epochs. This one trains the same unmodified network on the same images
  and epochs with the short-schedule ImageNet practice: batch 256, Nesterov
  SGD at a high peak rate, one warmup epoch then cosine decay to zero, weight
  decay and label smoothing 0.1. `crop_scale` adds a RandomResizedCrop at the
  native 64 pixels, against a large network overfitting 100k images; without
  it the augmentation is the original's flips alone.
  """
  crop = (f'random_resized_crop(64, scale=({crop_scale}, 1.0))|'
          if crop_scale else '')
  config.input.train = (
      f'{crop}random_horizontal_flip|to_tensor|{IMAGENET_NORMALIZE}')
  config.input.eval = f'to_tensor|{IMAGENET_NORMALIZE}'
  _nesterov_cosine(config, num_epochs=15, learning_rate=learning_rate,
                   weight_decay=weight_decay, warmup_epochs=1)


def _nesterov_cosine(config, *, num_epochs, learning_rate, weight_decay,
                     warmup_epochs):
  """Batch 256, Nesterov SGD, linear warmup then cosine, label smoothing 0.1."""
  config.batch_size = 256
  config.num_epochs = num_epochs
  config.optimizer = 'sgd'
  config.learning_rate = learning_rate
  config.momentum = 0.9
  config.nesterov = True
  config.weight_decay = weight_decay
  config.schedule.name = 'warmup_cosine'
  config.schedule.warmup_epochs = warmup_epochs
  config.label_smoothing = 0.1
