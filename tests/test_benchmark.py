"""The benchmark scripts run and report what they promise."""

import json

import conftest


def test_benchmark_quick_writes_json(tmp_path):
  path = tmp_path / 'bench.json'
  result = conftest.run_python(
      ['-m', 'scripts.benchmark', '--models=shufflenet_v2_x1_0', '--quick',
       '--batch_size=8', '--resident', '--resident_examples=64',
       f'--json={path}'])
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(path.read_text())['shufflenet_v2_x1_0']
  for key in ('tiny_flax_img_s', 'torch_img_s', 'eval_img_s', 'compile_s',
              'gflops_per_img', 'mfu', 'peak_memory_gb', 'resident_img_s',
              'resident_device_img_s'):
    assert report[key] > 0, key
  assert 0 <= report['device_idle_share'] < 1
  assert report['ratio'] == report['tiny_flax_img_s'] / report['torch_img_s']
  assert report['image_size'] == 64
  assert report['resident_examples'] == 64
  assert '| shufflenet_v2_x1_0 | 64 |' in result.stdout


def test_benchmark_runs_without_tensorflow(tmp_path):
  code = ('import sys; sys.modules["tensorflow"] = None; '
          'sys.modules["tensorflow_datasets"] = None; '
          'sys.argv = ["benchmark", "--models=resnet18", "--quick", '
          '"--batch_size=4", "--notorch", "--image_size=32", '
          '"--resident", "--resident_examples=16"]; '
          'from absl import app; from scripts import benchmark; '
          'app.run(benchmark.main)')
  result = conftest.run_python(['-c', code])
  assert result.returncode == 0, result.stderr[-3000:]
  assert '| resnet18 | 32 |' in result.stdout
  assert 'resident_img_s' in result.stdout


def test_input_benchmark_writes_json(tmp_path, fake_manual_dir):
  path = tmp_path / 'input.json'
  result = conftest.run_python(
      ['-m', 'scripts.benchmark_input', f'--manual_dir={fake_manual_dir}',
       f'--data_dir={tmp_path / "tfds"}', '--seconds=0.5', '--batch_size=32',
       f'--json={path}'])
  assert result.returncode == 0, result.stderr[-3000:]
  report = json.loads(path.read_text())
  assert len(report) == 3
  for rates in report.values():
    assert rates['tiny_flax_img_s'] > 0 and rates['torch_img_s'] > 0
