"""A host with JAX but no TensorFlow: train, evaluate, predict and export.

Every command runs where importing tensorflow or tensorflow_datasets raises
ImportError (tests/without_tensorflow/sitecustomize.py), as on the
accelerator hosts tiny_flax targets.
"""

import json
import os
import textwrap

import numpy as np
from PIL import Image
import pytest

import conftest
from tiny_flax import report

BLOCK = os.path.join(conftest.REPO, 'tests', 'without_tensorflow')

pytest.importorskip('torchvision')  # export's library form needs it


def _run(args, timeout=600):
  return conftest.run_python(args, path=[BLOCK], timeout=timeout)


def test_the_block_holds():
  result = _run(['-c', 'import tensorflow'])
  assert result.returncode != 0 and 'tensorflow halted' in result.stderr


def _event_tags(workdir):
  from tensorboard.backend.event_processing import event_accumulator  # pylint: disable=g-import-not-at-top
  accumulator = event_accumulator.EventAccumulator(workdir)
  accumulator.Reload()
  return accumulator.Tags()


def test_train_evaluate_predict_export_without_tensorflow(
    tmp_path, fake_manual_dir):
  workdir = str(tmp_path / 'run')
  data_dir = tmp_path / 'data'
  result = _run(
      ['-m', 'tiny_flax.main', '--config=configs/smoke.py',
       f'--workdir={workdir}', '--config.model=resnet18',
       '--config.num_train_steps=3', '--config.batch_size=16',
       '--config.log_every_steps=1', '--progress=off',
       f'--config.dataset.manual_dir={fake_manual_dir}',
       f'--config.dataset.data_dir={data_dir}',
       f'--config.dataset.fake_train_per_class={conftest.TRAIN_PER_CLASS}',
       f'--config.dataset.fake_val_per_class={conftest.VAL_PER_CLASS}'])
  assert result.returncode == 0, result.stderr[-3000:]
  # 'auto' chose the resident path, the only one without TensorFlow.
  assert ('Input: resident in device memory (config.input.on_device=auto)'
          in result.stderr)
  assert 'Training and validation splits resident on the devices' in result.stderr
  assert sorted(os.listdir(data_dir)) == [  # no TFDS records
      '.tiny_flax_prepare.lock', 'tiny_imagenet_arrays']

  scalars = report.read_scalars(workdir)
  assert sorted(scalars['train_loss']) == [1, 2, 3]
  assert set(scalars['val_top1']) == {3}
  tags = _event_tags(workdir)
  assert 'augmented_train_images' in tags['images']
  assert '_hparams_/session_start_info' in tags['tensors']

  image = tmp_path / 'cat.png'
  Image.fromarray(np.full((80, 50, 3), 200, np.uint8)).save(image)
  result = _run(['-m', 'tiny_flax.evaluate', f'--workdir={workdir}',
                 '--checkpoint=latest'])
  assert result.returncode == 0, result.stderr[-3000:]
  metrics = json.load(open(os.path.join(workdir, 'report', 'metrics.json')))
  assert metrics['images'] == 200 * conftest.VAL_PER_CLASS  # each counted once
  assert metrics['curves']['elapsed_s'][0] > 0  # from the writer's events
  report_dir = os.path.join(workdir, 'report')
  assert 'report/miss_rates' in _event_tags(report_dir)['images']

  result = _run(['-m', 'tiny_flax.predict', f'--workdir={workdir}',
                 '--checkpoint=latest', str(image)])
  assert result.returncode == 0, result.stderr[-3000:]
  assert len(result.stdout.splitlines()) == 6  # the file, then its top 5

  pth = tmp_path / 'resnet18.pth'
  result = _run(['-c', textwrap.dedent(f'''
      from tiny_flax import export
      print(export.export({workdir!r}, {str(pth)!r}, 'latest'))
      ''')])
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.strip().splitlines()[-1] == "('resnet18', 3)"
  assert pth.exists()
