"""`python -m tiny_flax.main` end to end: smoke run, resume, and bad inputs."""

import collections
import glob
import gzip
import json
import os
import time

import pytest
import tensorflow as tf

import conftest


def _main(workdir, *overrides, config='configs/smoke.py', env=None):
  return conftest.run_python(
      ['-m', 'tiny_flax.main', f'--config={config}', f'--workdir={workdir}']
      + list(overrides), env=env)


def _scalars(workdir):
  """{tag: {step: [values...]}} from every TensorBoard event file."""
  found = collections.defaultdict(lambda: collections.defaultdict(list))
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      for value in event.summary.value:
        array = tf.make_ndarray(value.tensor) if value.HasField('tensor') else None
        if array is not None and array.ndim == 0 and array.dtype.kind == 'f':
          found[value.tag][event.step].append(float(array))
  return found


def _has_image(workdir, tag):
  for path in glob.glob(os.path.join(workdir, 'events.out.tfevents.*')):
    for event in tf.compat.v1.train.summary_iterator(path):
      if any(value.tag == tag for value in event.summary.value):
        return True
  return False


def _hparams_dashboard(logdir):
  """(hyperparameter names, metric tags) as TensorBoard's HParams tab lists them."""
  from tensorboard import context  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import data_provider  # pylint: disable=g-import-not-at-top
  from tensorboard.backend.event_processing import plugin_event_multiplexer  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins import base_plugin  # pylint: disable=g-import-not-at-top
  from tensorboard.plugins.hparams import backend_context  # pylint: disable=g-import-not-at-top
  multiplexer = plugin_event_multiplexer.EventMultiplexer()
  multiplexer.AddRunsFromDirectory(logdir)
  multiplexer.Reload()
  hparams = backend_context.Context(base_plugin.TBContext(
      logdir=logdir, multiplexer=multiplexer,
      data_provider=data_provider.MultiplexerDataProvider(multiplexer, logdir)))
  request = context.RequestContext()
  experiment = hparams.experiment_from_metadata(
      request, '', True, hparams.hparams_metadata(request, ''),
      hparams.hparams_from_data_provider(request, '', None))
  return ({h.name for h in experiment.hparam_infos},
          {m.name.tag for m in experiment.metric_infos})


def _steps_saved(workdir):
  return sorted(int(name) for name in os.listdir(
      os.path.join(workdir, 'checkpoints')) if name.isdigit())


@pytest.fixture(scope='module')
def smoke_data(tmp_path_factory):
  root = tmp_path_factory.mktemp('smoke')
  return [f'--config.dataset.manual_dir={root / "manual"}',
          f'--config.dataset.data_dir={root / "tfds"}']


def test_smoke_run_stops_resumes_and_learns(tmp_path, smoke_data):
  """The design's own command (--config alone: the default workdir), resumed."""
  config = os.path.join(conftest.REPO, 'configs', 'smoke.py')
  first = conftest.run_python(
      ['-m', 'tiny_flax.main', f'--config={config}', *smoke_data,
       '--config.num_train_steps=62'], cwd=tmp_path)
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'Workdir: runs/smoke (the same command resumes it)' in first.stderr
  assert ('Trained to step 62 of 62. Its report (curves, the most and least '
          'misclassified classes): python -m tiny_flax.evaluate '
          '--workdir=runs/smoke') in first.stderr
  workdir = str(tmp_path / 'runs' / 'smoke')
  assert _steps_saved(workdir) == [62]
  assert 62 in _scalars(workdir)['val_top1']

  second = _main(workdir, *smoke_data)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'from step 62' in second.stderr
  scalars = _scalars(workdir)
  assert sorted(scalars['val_top1']) == [62, 124, 186, 248]
  for tag in ('train_loss', 'train_accuracy', 'learning_rate', 'val_top5',
              'val_loss'):
    assert scalars[tag], tag
  assert _has_image(workdir, 'augmented_train_images')
  hparams, metrics = _hparams_dashboard(workdir)
  assert {'learning_rate', 'input.train', 'model'} <= hparams
  assert {'val_top1', 'val_top5'} <= metrics
  logged_twice = {step for step, values in scalars['train_loss'].items()
                  if len(values) > 1}
  assert not logged_twice
  assert max(scalars['train_loss']) == 248
  final_top1 = scalars['val_top1'][248][0]
  assert final_top1 > 0.2, f'validation top-1 {final_top1} is near chance'
  assert _steps_saved(workdir)[-1] == 248
  assert len(_steps_saved(workdir)) <= 4  # latest 3 and the best


def _assert_user_error(result, *fragments):
  assert result.returncode == 1, (result.returncode, result.stderr[-2000:])
  message = [l for l in result.stderr.splitlines() if l.startswith('error:')]
  assert message, result.stderr[-2000:]
  for fragment in fragments:
    assert fragment in message[0], message[0]


def test_unknown_model(tmp_path, smoke_data):
  workdir = tmp_path / 'run'
  result = _main(workdir, *smoke_data, '--config.model=vgg11')
  _assert_user_error(result, 'vgg11', 'resnet18')
  assert 'Workdir:' not in result.stderr  # nothing to resume
  # Refused before the workdir is written: the corrected command starts there.
  assert not workdir.exists()


@pytest.mark.parametrize('config, override, message', [
    ('configs/smoke.py', '--config.bacth_size=8',
     'did you mean --config.batch_size?'),
    ('configs/smoke.py', '--config.inptu.train=to_tensor',
     'did you mean --config.input?'),
    ('configs/resnet50.py:fast', '--config.num_epochs=1',
     "Unknown config variant 'fast': append nothing or \":tuned\""),
    ('configs/shufflenet.py', '--config.num_epochs=1',
     'no config file configs/shufflenet.py; did you mean '
     '--config=configs/shufflenet_v2.py?'),
    ('configs/smoke.py:tuned', '--config.num_epochs=1',
     'configs/smoke.py has no variants; drop ":tuned".'),
])
def test_a_mistyped_config_key_or_variant_is_one_line_not_a_traceback(
    tmp_path, config, override, message):
  result = _main(tmp_path / 'run', override, config=config)
  _assert_user_error(result, message)
  assert 'Traceback' not in result.stderr, result.stderr[-2000:]
  assert 'Workdir:' not in result.stderr
  assert not (tmp_path / 'run').exists()


def test_missing_torchvision_weights_are_named_before_data_preparation(
    tmp_path, smoke_data):
  workdir = tmp_path / 'run'
  missing = tmp_path / 'imagenet.pth'
  _assert_user_error(_main(workdir, *smoke_data, f'--config.init_from={missing}'),
                     f'No torchvision checkpoint at {missing}.')
  assert not workdir.exists()


def test_batch_not_divisible_by_devices(tmp_path, smoke_data):
  result = _main(tmp_path, *smoke_data, '--config.batch_size=12',
                 env={'XLA_FLAGS': '--xla_force_host_platform_device_count=8'})
  _assert_user_error(result, '12', '8 devices')


def test_microbatches_that_do_not_divide_each_devices_batch(tmp_path,
                                                           smoke_data):
  result = _main(tmp_path, *smoke_data, '--config.batch_size=80',
                 '--config.microbatches=3',
                 env={'XLA_FLAGS': '--xla_force_host_platform_device_count=2'})
  _assert_user_error(result, 'config.microbatches', '(40 images)', 'got 3')


def test_negative_steps_per_dispatch(tmp_path, smoke_data):
  _assert_user_error(_main(tmp_path, *smoke_data,
                           '--config.steps_per_dispatch=-2'),
                     'steps_per_dispatch', '>= 1', '-2')


def test_negative_profile_steps(tmp_path, smoke_data):
  _assert_user_error(_main(tmp_path, *smoke_data, '--config.profile_steps=-1'),
                     'config.profile_steps', '>= 0', '-1')


def _traced_steps(trace_folder):
  """The train steps a jax.profiler trace folder holds, by their annotation."""
  [path] = glob.glob(os.path.join(trace_folder, '*.trace.json.gz'))
  assert glob.glob(os.path.join(trace_folder, '*.xplane.pb'))
  with gzip.open(path) as f:
    events = json.load(f)['traceEvents']
  return sorted(int(e['args']['step_num']) for e in events
                if e.get('name') == 'train')


def test_profile_steps_trace_the_steps_after_the_first_call(tmp_path,
                                                            smoke_data):
  """Each start traces its own window, cut at the run's last step."""
  workdir = tmp_path / 'run'
  profiles = workdir / 'plugins' / 'profile'
  first = _main(workdir, *smoke_data, '--config.num_train_steps=4',
                '--config.profile_steps=2', '--config.log_every_steps=1')
  assert first.returncode == 0, first.stderr[-3000:]
  assert 'Profile of steps 2-3 written' in first.stderr
  [folder] = os.listdir(profiles)
  assert _traced_steps(profiles / folder) == [2, 3]

  time.sleep(1.1)  # jax names trace folders by the second
  second = _main(workdir, *smoke_data, '--config.num_train_steps=6',
                 '--config.profile_steps=2', '--config.log_every_steps=1')
  assert second.returncode == 0, second.stderr[-3000:]
  [later] = set(os.listdir(profiles)) - {folder}
  assert _traced_steps(profiles / later) == [6]


def test_unwritable_workdir(tmp_path, smoke_data):
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  _assert_user_error(_main(blocker / 'run', *smoke_data), 'Cannot write')


def test_bad_preprocessing_op(tmp_path, smoke_data):
  _assert_user_error(
      _main(tmp_path, *smoke_data, '--config.input.train=flip|to_tensor'),
      "'flip'", 'random_horizontal_flip')


@pytest.mark.parametrize('on_device', ['false', 'true'])
def test_missing_data_without_network(tmp_path, on_device):
  result = _main(tmp_path / 'run', '--config.dataset.source=official',
                 f'--config.dataset.manual_dir={tmp_path / "nothing"}',
                 f'--config.dataset.data_dir={tmp_path / "tfds"}',
                 f'--config.input.on_device={on_device}')
  _assert_user_error(result, 'tiny-imagenet-200.zip', 'manual_dir')


def test_a_bad_on_device_value_is_refused(tmp_path, smoke_data):
  result = _main(tmp_path / 'run', '--config.input.on_device=yes', *smoke_data)
  _assert_user_error(result, 'config.input.on_device', "'yes'")


def test_workdir_of_another_model_is_refused(tmp_path, smoke_data):
  workdir = tmp_path / 'run'
  os.makedirs(workdir)
  (workdir / 'config.json').write_text(
      '{"model": "resnet50", "dataset": {"source": "fake", '
      '"fake_train_per_class": 20, "fake_val_per_class": 5}}')
  (workdir / 'checkpoints' / '781').mkdir(parents=True)
  _assert_user_error(_main(workdir, *smoke_data), 'resnet50', 'resnet_tiny')


def test_print_config_prints_and_trains_nothing():
  result = conftest.run_python(
      ['-m', 'tiny_flax.main', '--config=configs/resnet18.py:budget',
       '--print_config', '--config.num_epochs=3'], cwd=conftest.REPO)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'model: resnet18' in result.stdout and 'num_epochs: 3' in result.stdout
  assert 'nesterov: true' in result.stdout
  assert 'Workdir' not in result.stderr


def test_the_compilation_cache_is_kept_off_the_cpu_unless_jax_says_otherwise(
    monkeypatch, tmp_path):
  """No compilation happens here: JAX builds its cache at the first one."""
  import jax  # pylint: disable=g-import-not-at-top
  from tiny_flax.platform import backend  # pylint: disable=g-import-not-at-top
  monkeypatch.setenv('HOME', str(tmp_path))
  suites_cache = jax.config.jax_compilation_cache_dir  # conftest's
  try:
    jax.config.update('jax_compilation_cache_dir', None)
    monkeypatch.setattr(backend, 'on_cpu', lambda: True)
    assert backend.use_compilation_cache() is None
    assert jax.config.jax_compilation_cache_dir is None
    monkeypatch.setattr(backend, 'on_cpu', lambda: False)
    assert backend.use_compilation_cache() == str(
        tmp_path / '.cache' / 'tiny_flax' / 'jax')
    jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'own'))
    assert backend.use_compilation_cache() == str(tmp_path / 'own')
    jax.config.update('jax_enable_compilation_cache', False)
    assert backend.use_compilation_cache() is None
  finally:
    jax.config.update('jax_compilation_cache_dir', suites_cache)
    jax.config.update('jax_enable_compilation_cache', True)


def test_a_later_run_loads_the_compiled_steps_and_a_cut_entry_only_warns(
    tmp_path, smoke_data):
  """JAX_COMPILATION_CACHE_DIR on the CPU: the second run loads what the
  first compiled; an entry cut short (its writer killed) is compiled again."""
  cache = tmp_path / 'cache'
  env = {'JAX_COMPILATION_CACHE_DIR': str(cache), 'JAX_LOG_COMPILES': '1'}
  first = _main(tmp_path / 'a', *smoke_data, '--config.num_train_steps=2',
                env=env)
  assert first.returncode == 0, first.stderr[-3000:]
  assert f'Compiled programs are kept in {cache} for later runs' in first.stderr
  entries = sorted(cache.glob('*-cache'), key=lambda p: p.stat().st_size)
  assert len(entries) >= 2, entries
  largest = entries[-1]
  largest.write_bytes(largest.read_bytes()[:1000])
  second = _main(tmp_path / 'b', *smoke_data, '--config.num_train_steps=2',
                 env=env)
  assert second.returncode == 0, second.stderr[-3000:]
  assert 'Persistent compilation cache hit' in second.stderr
  assert 'Error reading persistent compilation cache entry' in second.stderr
