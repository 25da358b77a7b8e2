"""The benchmark scripts run and report what they promise."""

import json
import os
import subprocess
import sys

import pytest

import conftest


def test_rounds_alternate_and_the_ratio_is_the_median_of_theirs():
  from tiny_flax import throughput  # pylint: disable=g-import-not-at-top
  calls = []
  seconds = {'ours': iter([0.5, 1.0, 0.8]), 'theirs': iter([0.6, 0.6, 1.2])}

  def timer(side):
    def time_step():
      calls.append(side)
      return next(seconds[side])
    return time_step
  rates = throughput.alternate([timer('ours'), timer('theirs')], 3, 60)
  assert calls == ['ours', 'theirs'] * 3
  assert rates == [[120, 60, 75], [100, 100, 50]]
  result = throughput.train_rates(rates, gflops_per_img=2.0, peak=1e12)
  assert result['tiny_flax_img_s'] == 75 and result['torch_img_s'] == 100
  # Per round 1.2, 0.6, 1.5: their median, not the medians' quotient (0.75).
  assert result['ratio'] == pytest.approx(1.2)
  assert result['mfu'] == pytest.approx(3 * 2e9 * 75 / 1e12)


def test_resident_measurement_times_the_trainers_log_intervals(tmp_path,
                                                              monkeypatch):
  """Whole log intervals of the trainer's calls, each ending with the fetch of
  its merged metrics that a log step makes; the trainer's loop and its calls
  alone alternate over the rounds; one more interval is profiled."""
  import jax  # pylint: disable=g-import-not-at-top
  from configs import smoke  # pylint: disable=g-import-not-at-top
  from tiny_flax import parallel  # pylint: disable=g-import-not-at-top
  from tiny_flax import throughput  # pylint: disable=g-import-not-at-top
  from tiny_flax.platform import backend  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.log_every_steps = 5
  platform = backend.resolve(config, resident_bytes=0)
  par = parallel.Parallel('shard_map',
                          compiler_options=platform.compiler_options)
  fetched, device_get = [], jax.device_get

  def counting_device_get(tree):
    if isinstance(tree, dict) and 'loss' in tree:
      fetched.append(sorted(tree))
    return device_get(tree)
  monkeypatch.setattr(jax, 'device_get', counting_device_get)
  result = throughput.measure_resident(
      config, platform, par, batch_size=8, num_steps=7, num_examples=64,
      steps_per_dispatch=3, rounds=2, profile_dir=str(tmp_path / 'trace'))
  assert result['resident_steps_timed'] == 10  # two intervals of 5 cover 7
  assert result['calls_per_log_interval'] == 3  # 3 steps, then 1 and 1
  assert len(result['device_idle_share_per_round']) == 2
  # One warm-up interval, two timed ones per round, then the profiled one.
  assert fetched == [['accuracy', 'loss']] * (1 + 2 * 2 + 1)
  assert list((tmp_path / 'trace').rglob('*.xplane.pb'))
  assert result['resident_img_s'] > 0 and result['resident_device_img_s'] > 0
  assert 0 <= result['device_idle_share'] < 1


def test_microbatches_shrink_the_train_steps_buffers():
  """XLA's temporary buffers of the compiled train step, as the benchmark
  records them, with the batch in 1 and in 4 parts."""
  from configs import smoke  # pylint: disable=g-import-not-at-top
  from tiny_flax import parallel  # pylint: disable=g-import-not-at-top
  from tiny_flax import throughput  # pylint: disable=g-import-not-at-top
  from tiny_flax.platform import backend  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  platform = backend.resolve(config, resident_bytes=0)
  par = parallel.Parallel('shard_map')
  temp = {}
  for microbatches in (1, 4):
    config.microbatches = microbatches
    result, _ = throughput.measure_step(config, platform, par, 32,
                                        (64, 64, 3), num_steps=1)
    assert result['microbatches'] == microbatches
    temp[microbatches] = result['train_temp_gb']
  assert 0 < temp[4] < 0.6 * temp[1], temp


def test_each_model_and_set_of_compiler_options_has_a_process_of_its_own(
    tmp_path):
  """An option XLA does not know is refused by name, and the set measured
  after it still runs and is named with its option."""
  path = tmp_path / 'bench.json'
  fast_math = '--xla_cpu_enable_fast_math=false'
  result = conftest.run_python(
      ['-m', 'scripts.benchmark', '--models=resnet18', '--quick',
       '--batch_size=4', '--image_size=32', '--notorch', f'--json={path}',
       '--compiler_options=--xla_no_such_option=1',
       f'--compiler_options={fast_math}'])
  assert result.returncode == 1, result.stderr[-3000:]
  assert result.stderr.count("No such compile option: 'xla_no_such_option'") == 1
  assert ('The benchmark failed for resnet18 [--xla_no_such_option=1].'
          in result.stderr)
  report = json.loads(path.read_text())
  assert list(report) == [f'resnet18 [{fast_math}]']
  rates = report[f'resnet18 [{fast_math}]']
  assert rates['image_size'] == 32 and rates['tiny_flax_img_s'] > 0
  assert rates['compiler_options'] == fast_math
  # The measuring process printed its own table, the parent the merged one.
  assert result.stdout.count('| resnet18 | 32 |') == 1
  assert result.stdout.count(f'| resnet18 [{fast_math}] | 32 |') == 1
  assert result.stdout.count('matmul peak') == 1


def test_input_benchmark_writes_json(tmp_path, fake_manual_dir):
  """Run by its path from another folder, as `python scripts/X.py` is."""
  path = tmp_path / 'input.json'
  result = conftest.run_python(
      [os.path.join(conftest.REPO, 'scripts', 'benchmark_input.py'),
       f'--manual_dir={fake_manual_dir}', f'--data_dir={tmp_path / "tfds"}',
       '--seconds=0.5', '--batch_size=32', f'--json={path}'],
      cwd=tmp_path, repo_on_path=False)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(path.read_text())
  assert len(report) == 3
  for rates in report.values():
    assert rates['tiny_flax_img_s'] > 0 and rates['torch_img_s'] > 0


@pytest.mark.parametrize('script', ['check_resume', 'compare_runs',
                                    'check_eval_transforms'])
def test_scripts_run_by_their_path(script, tmp_path):
  """Every script starts the same way; two stand for them."""
  result = conftest.run_python(
      [os.path.join(conftest.REPO, 'scripts', f'{script}.py'), '--help'],
      cwd=tmp_path, repo_on_path=False)
  assert 'flags:' in result.stdout + result.stderr, result.stderr[-3000:]
  assert 'Error' not in result.stderr, result.stderr[-3000:]


@pytest.mark.slow  # about 1.5 minutes of two processes: python -m pytest -m slow
def test_gpu_script_runs_a_subset_on_cpu_without_tensorflow(tmp_path):
  """The device-lease script, cut down to one quick model, on a host where
  TensorFlow cannot be imported, as on the accelerator hosts (no GPU needed)."""
  no_tensorflow = os.path.join(conftest.REPO, 'tests', 'without_tensorflow')
  out = tmp_path / 'out'
  env = dict(os.environ, PYTHON=sys.executable,
             PYTHONPATH=f'{no_tensorflow}{os.pathsep}{conftest.REPO}',
             MODELS='resnet18', RESNET50_224='0', DISPATCH_STEPS='3',
             BENCHMARK_FLAGS='--quick --batch_size=8 --image_size=32 '
                             '--resident_examples=64 --notorch_compile '
                             '--log_every_steps=4')
  blocked = subprocess.run([sys.executable, '-c', 'import tensorflow'],
                           env=env, capture_output=True, text=True)
  assert 'tensorflow halted' in blocked.stderr
  result = subprocess.run(['bash', 'scripts/benchmark_gpu.sh', str(out)],
                          cwd=conftest.REPO, env=env, capture_output=True,
                          text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads((out / 'resnet18.json').read_text())['resnet18']
  for key in ('tiny_flax_img_s', 'torch_img_s', 'eval_img_s', 'compile_s',
              'gflops_per_img', 'mfu', 'peak_memory_gb', 'train_temp_gb',
              'resident_img_s',
              'resident_device_img_s'):
    assert report[key] > 0, key
  assert 0 <= report['device_idle_share'] < 1
  assert report['ratio'] == report['tiny_flax_img_s'] / report['torch_img_s']
  assert report['image_size'] == 32 and report['resident_examples'] == 64
  assert '| resnet18 | 32 |' in result.stdout
  assert 'jax' in (out / 'versions.txt').read_text()
  assert not (out / 'resnet50_224.json').exists()
  dispatched = json.loads(
      (out / 'resnet18_b128_dispatch3.json').read_text())['resnet18']
  assert dispatched['steps_per_dispatch'] == 3
  assert dispatched['calls_per_log_interval'] == 2  # 3 steps, then 1
  assert dispatched['resident_img_s'] > 0 and 'tiny_flax_img_s' not in dispatched


def test_compiler_options_are_parsed_as_xla_flags_write_them():
  from scripts import benchmark  # pylint: disable=g-import-not-at-top
  assert benchmark.parse_compiler_options(
      ' --xla_gpu_force_conv_nhwc=true xla_gpu_autotune_level=2 '
      '--xla_gpu_enable_command_buffer=FUSION,CUBLAS --a=0.5 --b=False') == {
          'xla_gpu_force_conv_nhwc': True, 'xla_gpu_autotune_level': 2,
          'xla_gpu_enable_command_buffer': 'FUSION,CUBLAS', 'a': 0.5,
          'b': False}
  assert benchmark.parse_compiler_options('') == {}
  with pytest.raises(Exception, match="name=value pairs.*'--xla_a'"):
    benchmark.parse_compiler_options('--xla_a --xla_b=1')
