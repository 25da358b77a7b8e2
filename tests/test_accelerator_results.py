"""scripts/accelerator_results.sh on the CPU, where TensorFlow is absent."""

import json
import os
import re
import subprocess
import tarfile
import time

import pytest

import conftest

BLOCK = os.path.join(conftest.REPO, 'tests', 'without_tensorflow')


def test_trains_evaluates_and_packs_each_model(tmp_path, fake_manual_dir):
  """Two models at a time (JOBS=2) on arrays decoded once beforehand."""
  out = tmp_path / 'out'
  env = dict(os.environ, JOBS='2',
             EXTRA_FLAGS=_fake_flags(tmp_path, fake_manual_dir, steps=2),
             PYTHONPATH=os.pathsep.join([BLOCK, conftest.REPO]))
  result = subprocess.run(
      ['bash', 'scripts/accelerator_results.sh', str(out), 'alexnet',
       'resnet18:fast'], cwd=conftest.REPO, env=env, capture_output=True,
      text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  packed = out / 'results.tar.gz'
  assert packed.stat().st_size < 16 * 2**20
  with tarfile.open(packed) as archive:
    names = set(archive.getnames())
    prepared = archive.extractfile('./prepare.log').read().decode()
    assert 'Decoded' in prepared and 'Arrays: exit 0' in prepared
    assert 'jobs 2, memory fraction 0.450' in archive.extractfile(
        './versions.txt').read().decode()
    timings = archive.extractfile('./timings.tsv').read().decode().splitlines()
    summary = archive.extractfile('./summary.md').read().decode()
    for model, run in (('alexnet', 'alexnet'), ('resnet18', 'resnet18_fast')):
      for name in ('report/metrics.json', 'report/miss_rates.png',
                   'report/curves.png', 'train.log', 'config.json'):
        assert f'./{run}/{name}' in names
      metrics = json.load(archive.extractfile(f'./{run}/report/metrics.json'))
      assert (metrics['model'], metrics['step']) == (model, 2)
      log = archive.extractfile(f'./{run}/train.log').read().decode()
      assert 'Input: resident in device memory' in log
      assert "'val_top1'" in log
      assert 'Decoded' not in log  # the arrays were ready
      times = re.search(r'Steps 1-2 in ([\d.]+) s: input ([\d.]+) s, setup '
                        r'([\d.]+) s, first train call \(compilation '
                        r'included\) ([\d.]+) s, validation ([\d.]+) s, '
                        r'later steps ([\d.]+) s at (\d+) images/s', log)
      assert times, log[-3000:]
      total, *parts = map(float, times.groups()[:6])
      assert abs(total - sum(parts)) <= 0.31 and all(p >= 0 for p in parts)
      assert float(times.group(5)) > 0  # the validation at step 2
      assert re.search(rf'^\| {run} \| {model} \| [\d.]+ \| [\d.]+% / '
                       r'[\d.]+% \| step 2 \| \d+ \| \d+ \| not reached',
                       summary, re.M), summary
  assert summary in result.stdout  # printed too
  rows = sorted(line.split('\t') for line in timings[1:])
  assert [(row[0], row[1], row[2], row[4]) for row in rows] == [
      ('alexnet', '3600', '0', '0'), ('resnet18_fast', '3600', '0', '0')]


def _fake_flags(tmp_path, fake_manual_dir, steps):
  return ' '.join([
      '--config.dataset.source=fake',
      f'--config.dataset.manual_dir={fake_manual_dir}',
      f'--config.dataset.data_dir={tmp_path / "data"}',
      f'--config.dataset.fake_train_per_class={conftest.TRAIN_PER_CLASS}',
      f'--config.dataset.fake_val_per_class={conftest.VAL_PER_CLASS}',
      f'--config.num_train_steps={steps}', '--config.batch_size=8',
      '--config.steps_per_eval=2', '--config.half_precision=false'])


@pytest.mark.slow  # the deadline is 100 s of wall time: python -m pytest -m slow
def test_a_deadline_cuts_the_training_limits_and_skips_what_cannot_start(
    tmp_path, fake_manual_dir):
  """DEADLINE_S: the first model trains until EVAL_RESERVE_S before it and
  is stopped, evaluated and packed; the second, with no time left, is
  skipped and named, and the script exits 1 with the archive written."""
  out = tmp_path / 'out'
  env = dict(os.environ, EXTRA_FLAGS=_fake_flags(tmp_path, fake_manual_dir,
                                                 steps=100000),
             DEADLINE_S='100', EVAL_RESERVE_S='50',
             PYTHONPATH=os.pathsep.join([BLOCK, conftest.REPO]))
  started = time.monotonic()
  result = subprocess.run(
      ['bash', 'scripts/accelerator_results.sh', str(out), 'resnet18',
       'alexnet'], cwd=conftest.REPO, env=env, capture_output=True,
      text=True, timeout=600)
  assert result.returncode == 1, result.stdout[-2000:] + result.stderr[-2000:]
  assert time.monotonic() - started < 100 + 30
  assert 'alexnet: skipped, no time left before DEADLINE_S=100' in result.stdout
  with tarfile.open(out / 'results.tar.gz') as archive:
    timings = archive.extractfile('./timings.tsv').read().decode().splitlines()
    log = archive.extractfile('./resnet18/train.log').read().decode()
    metrics = json.load(
        archive.extractfile('./resnet18/report/metrics.json'))
    summary = archive.extractfile('./summary.md').read().decode()
  assert '| alexnet | not evaluated: no report/metrics.json |' in summary
  first, second = (line.split('\t') for line in timings[1:])
  assert first[0] == 'resnet18' and 0 < int(first[1]) <= 100 - 50
  assert (first[2], first[4]) == ('0', '0')  # stopped by SIGTERM, evaluated
  stopped = int(re.search(r'Stopped at step (\d+)', log).group(1))
  assert 0 < metrics['step'] <= stopped < 100000
  assert second[:3] == ['alexnet', '0', 'skipped']

  # The same command again resumes the stopped run; its log keeps both parts.
  env.update(DEADLINE_S='0', TIME_LIMIT_S='20')
  result = subprocess.run(
      ['bash', 'scripts/accelerator_results.sh', str(out), 'resnet18'],
      cwd=conftest.REPO, env=env, capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
  with tarfile.open(out / 'results.tar.gz') as archive:
    log = archive.extractfile('./resnet18/train.log').read().decode()
  assert f'from step {stopped} on' in log
  assert log.count('Training resnet18 for') == 2


def test_an_unknown_model_is_named(tmp_path):
  result = subprocess.run(
      ['bash', 'scripts/accelerator_results.sh', str(tmp_path), 'vgg16'],
      cwd=conftest.REPO, capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and 'Unknown model vgg16' in result.stderr


@pytest.mark.parametrize('name, value', [
    ('JOBS', 'two'), ('TIME_LIMIT_S', '0'), ('DEADLINE_S', '9.5'),
    ('EVAL_RESERVE_S', '-1')])
def test_settings_must_be_whole_numbers(tmp_path, name, value):
  result = subprocess.run(
      ['bash', 'scripts/accelerator_results.sh', str(tmp_path), 'alexnet'],
      cwd=conftest.REPO, env=dict(os.environ, **{name: value}),
      capture_output=True, text=True, timeout=120)
  assert result.returncode == 2 and 'must be a whole number' in result.stderr
  assert f"got '{value}'" in result.stderr
  assert not (tmp_path / 'pack').exists()
