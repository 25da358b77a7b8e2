"""Images/s of the tf.data training pipeline against torchvision's DataLoader.

    python -m scripts.benchmark_input --manual_dir=DIR --json=input.json

DIR holds tiny-imagenet-200.zip (the official one, or one written by
scripts/make_fake_tiny_imagenet.py). For each of the PyTorch original's training transforms,
both pipelines read the archive's training images with the same transforms,
in one run on the same machine: torchvision's ImageFolder + DataLoader
(num_workers = cores, PIL decoding every epoch) and tiny_flax's pipeline
(decoded images cached in RAM after the first pass, which is not timed).
"""

import json
import os
import sys
import tempfile
import time
import zipfile

if __package__ in (None, ''):  # run as `python scripts/NAME.py`
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from absl import app
from absl import flags

_MANUAL_DIR = flags.DEFINE_string('manual_dir', None, 'Folder of the zip.',
                                  required=True)
_DATA_DIR = flags.DEFINE_string('data_dir', None, 'TFDS data dir (default: a '
                                'temporary one).')
_JSON = flags.DEFINE_string('json', None, 'Write the results here.')
_BATCH_SIZE = flags.DEFINE_integer('batch_size', 128, 'Batch size.')
_SECONDS = flags.DEFINE_float('seconds', 20.0, 'Measuring time per pipeline.')
_TORCH = flags.DEFINE_bool('torch', True, 'Also measure torchvision.')

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
# name: (tiny_flax transforms, torchvision transforms as (name, args) pairs)
TRANSFORMS = {
    'resnet18 (flip, 64)': (
        'random_horizontal_flip|to_tensor',
        [('RandomHorizontalFlip', ()), ('ToTensor', ())]),
    'resnet50/shufflenet (flip, normalize, 64)': (
        f'random_horizontal_flip|to_tensor|normalize{IMAGENET}',
        [('RandomHorizontalFlip', ()), ('ToTensor', ()), ('Normalize', IMAGENET)]),
    'alexnet (flip, random resized crop 224, normalize)': (
        f'random_horizontal_flip|random_resized_crop(224)|to_tensor|normalize{HALF}',
        [('RandomHorizontalFlip', ()), ('RandomResizedCrop', (224,)),
         ('ToTensor', ()), ('Normalize', HALF)]),
}


def _rate(batches, batch_size, seconds, warmup_batches=5):
  for _ in range(warmup_batches):
    next(batches)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < seconds:
    next(batches)
    count += 1
  return count * batch_size / (time.perf_counter() - start)


def torch_rates(extracted_train):
  """Measured before TensorFlow loads: forked DataLoader workers and TF clash."""
  import torch  # pylint: disable=g-import-not-at-top
  import torchvision  # pylint: disable=g-import-not-at-top
  from torchvision import transforms  # pylint: disable=g-import-not-at-top
  rates = {}
  for name, (_, torch_ops) in TRANSFORMS.items():
    transform = transforms.Compose(
        [getattr(transforms, op)(*args) for op, args in torch_ops])
    dataset = torchvision.datasets.ImageFolder(extracted_train, transform)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=_BATCH_SIZE.value, shuffle=True, drop_last=True,
        num_workers=os.cpu_count(), persistent_workers=True)

    def endless():
      while True:
        yield from loader
    rates[name] = _rate(endless(), _BATCH_SIZE.value, _SECONDS.value)
    print(f'torch      {name}: {rates[name]:8.1f} img/s', flush=True)
  return rates


def tiny_flax_rates(config):
  from tiny_flax.data import pipeline  # pylint: disable=g-import-not-at-top
  rates = {}
  for name, (ops, _) in TRANSFORMS.items():
    config.input.train = ops
    dataset = pipeline.dataset(config)
    per_epoch = dataset.steps_per_epoch
    batches = dataset.train_batches(0)
    rates[name] = _rate(batches, config.batch_size, _SECONDS.value,
                        warmup_batches=per_epoch)
    print(f'tiny_flax  {name}: {rates[name]:8.1f} img/s', flush=True)
  return rates


def main(argv):
  del argv
  from configs import default  # pylint: disable=g-import-not-at-top
  config = default.get_config()
  config.batch_size = _BATCH_SIZE.value
  config.dataset.manual_dir = _MANUAL_DIR.value
  with tempfile.TemporaryDirectory() as tmp:
    config.dataset.data_dir = _DATA_DIR.value or os.path.join(tmp, 'tfds')
    torch_results = {}
    if _TORCH.value:
      with zipfile.ZipFile(os.path.join(_MANUAL_DIR.value,
                                        'tiny-imagenet-200.zip')) as archive:
        members = [m for m in archive.namelist()
                   if m.startswith('tiny-imagenet-200/train/')]
        archive.extractall(tmp, members)
      torch_results = torch_rates(os.path.join(tmp, 'tiny-imagenet-200', 'train'))
    ours = tiny_flax_rates(config)
  results = {}
  print('\n| transforms | tiny_flax img/s | torch img/s | ratio |\n|---|---|---|---|')
  for name in TRANSFORMS:
    results[name] = {'tiny_flax_img_s': ours[name]}
    torch_rate = torch_results.get(name)
    if torch_rate:
      results[name]['torch_img_s'] = torch_rate
    ratio = f'{ours[name] / torch_rate:.2f}x' if torch_rate else '-'
    print(f'| {name} | {ours[name]:.0f} | {torch_rate or 0:.0f} | {ratio} |')
  if _JSON.value:
    with open(_JSON.value, 'w') as f:
      json.dump(results, f, indent=2)


if __name__ == '__main__':
  app.run(main)
