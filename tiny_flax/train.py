"""The training loop: data, parallel steps, metrics to TensorBoard, checkpoints.

Metrics stay on the devices between logging steps (no host sync per step);
a validation pass and an asynchronous checkpoint close every epoch, and a
restarted run resumes from the latest checkpoint.
"""

import functools
import itertools
import math
import sys

from absl import logging
from clu import metric_writers
from clu import periodic_actions
import jax
import ml_collections
import numpy as np

from tiny_flax import backend
from tiny_flax import checkpointing
from tiny_flax import errors
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import preemption
from tiny_flax import progress
from tiny_flax import report
from tiny_flax import resident_data
from tiny_flax import step_runner
from tiny_flax import steps
from tiny_flax.data import pipeline


def _init_from_torchvision(config, state):
  """`state` with torchvision weights; the optimizer starts afresh on them."""
  logging.info('Initialising from the torchvision weights in %s.',
               config.init_from)
  variables = models.merge_pretrained(
      config.model, {'params': state.params, 'batch_stats': state.batch_stats},
      models.load_torchvision(config.model, config.init_from))
  return state.replace(
      params=variables['params'], batch_stats=variables['batch_stats'],
      opt_state=state.tx.init(variables['params']))


def _training_input(config, builder, par, train_step, start_step,
                    steps_per_epoch):
  """(compiled step, compiled steps in sequence, host batches, first images).

  From tf.data, or with `config.input.on_device` from the training split kept
  in device memory, augmented inside the step.
  """
  if not config.input.on_device:
    batches = pipeline.train_batches(builder, config, start_step=start_step)
    first = next(batches)
    return (*par.compile_train(train_step),
            itertools.chain([first], batches), first['image'])
  arrays = pipeline.decoded_train_arrays(builder)
  resident = resident_data.place(par, train_step, arrays, config.input.train,
                                 config.batch_size, steps_per_epoch,
                                 config.seed, start_step)
  logging.info('Training split resident on the devices: %d images, %.2f GB.',
               len(arrays['label']), arrays['image'].nbytes / 1e9)
  first = next(resident.batches)
  first_images = jax.jit(resident.augment)(arrays['image'][first['index']],
                                           resident.key)
  return (resident.step, resident.steps,
          itertools.chain([first], resident.batches), np.asarray(first_images))


def image_grid(images, columns=8, rows=4):
  """Up to rows x columns images tiled, each rescaled to [0, 1] for display."""
  images = images[:rows * columns].astype(np.float32)
  low = images.min(axis=(1, 2, 3), keepdims=True)
  high = images.max(axis=(1, 2, 3), keepdims=True)
  images = (images - low) / np.maximum(high - low, 1e-6)
  count, height, width, channels = images.shape
  rows = -(-count // columns)
  grid = np.zeros((rows * columns, height, width, channels), np.float32)
  grid[:count] = images
  grid = grid.reshape(rows, columns, height, width, channels)
  return grid.transpose(0, 2, 1, 3, 4).reshape(
      rows * height, columns * width, channels)


def evaluate(p_eval_step, state, batches, par):
  """Metrics of the whole split: merged on device in one call, one fetch."""
  collected = [p_eval_step(state, batch) for batch in par.prefetch(batches)]
  return {k: float(v)
          for k, v in par.merge_metrics(collected).compute().items()}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str,
                       progress_bars: str = 'auto'):
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  `progress_bars`: 'auto' (on a terminal), 'on' or 'off'.

  Returns the process's exit code: 0, or 130 when Ctrl-C stopped the run
  (SIGTERM stops it with 0: the run is resumable, not failed).
  """
  checkpointing.check_workdir(workdir, config)
  lock = checkpointing.lock_workdir(workdir)  # held until the process ends
  par = parallel.Parallel(config.parallelism)
  par.check_batch_size(config.batch_size)
  steps_per_dispatch = backend.steps_per_dispatch(config.steps_per_dispatch)
  # Mistakes in the config fail here, before minutes of data preparation.
  model = steps.create_model(config, pipeline.NUM_CLASSES, steps.AXIS)
  image_shape = pipeline.image_shape(config)
  optim.check(config)

  builder = pipeline.prepare(config)
  checkpointing.save_class_names(workdir, pipeline.class_names(builder))
  steps_per_epoch = pipeline.steps_per_epoch(builder, config.batch_size)
  num_steps = (config.num_train_steps if config.num_train_steps > 0
               else config.num_epochs * steps_per_epoch)
  learning_rate_fn = optim.learning_rate_schedule(config, steps_per_epoch)
  state = steps.create_train_state(config, model, image_shape, learning_rate_fn)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('%s: %s parameters.', config.model, f'{num_params:,}')
  checkpoints = checkpointing.manager(workdir, config.checkpoints_to_keep)
  state = checkpointing.restore_latest(checkpoints, state)
  start_step = int(state.step)
  if start_step == 0 and config.init_from:
    state = _init_from_torchvision(config, state)

  writer = metric_writers.create_default_writer(
      workdir, just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(report.flat_config(config))
  logging.info('Training %s for %d steps (%d per epoch) from step %d on %d '
               'devices with %s, %d steps per dispatch.', config.model,
               num_steps, steps_per_epoch, start_step, par.num_devices,
               par.kind, steps_per_dispatch)

  train_step = functools.partial(
      steps.train_step, dropout_key=jax.random.key(config.seed + 1),
      label_smoothing=config.label_smoothing)
  p_train_step, p_train_steps, host_batches, first_images = _training_input(
      config, builder, par, train_step, start_step, steps_per_epoch)
  writer.write_images(start_step, {
      'augmented_train_images': image_grid(first_images)[None]})
  p_eval_step = par.compile(steps.eval_step)
  eval_batches = pipeline.EvalBatches(builder, config)
  sizes = step_runner.dispatch_sizes(
      start_step, num_steps, steps_per_dispatch,
      (config.log_every_steps, steps_per_epoch, config.checkpoint_every_steps))
  runner = step_runner.StepRunner(par, p_train_step, par.replicate(state),
                                  host_batches, sizes, p_train_steps)
  del state  # the runner's replicated copy is the one that trains
  report_progress = periodic_actions.ReportProgress(
      num_train_steps=num_steps, writer=writer)
  bars = progress.EpochBars(steps_per_epoch, num_steps, config.batch_size,
                            mode=progress_bars if jax.process_index() == 0
                            else 'off')

  stop = preemption.StopRequests(checkpoints)
  timer = preemption.CheckpointTimer(config.checkpoint_every_minutes)

  last_finite = {}  # step and training loss of the last finite log

  def check_finite(step, values):
    """Ends the run before a non-finite state can be checkpointed."""
    values = {k: float(v) for k, v in values.items()}
    if all(math.isfinite(v) for v in values.values()):
      if 'train_loss' in values:
        last_finite.update(step=step, loss=values['train_loss'])
      return
    raise errors.UserError(
        f'Training diverged by step {step}: {values}. Last finite training '
        f'loss: {last_finite.get("loss")} at step {last_finite.get("step")}; '
        f'last checkpoint: step {checkpoints.latest_step()}, which the same '
        'command resumes from. Lower config.learning_rate or add warmup '
        '(config.schedule.warmup_epochs).')

  def save(step, metrics=None):
    checkpointing.save(checkpoints, step, par.unreplicate(runner.state),
                       metrics)
    timer.saved()

  def log_training(step):
    """Writes the mean of the steps since the last log; ends a log interval."""
    summary = {f'train_{k}': v for k, v in runner.pop_metrics().items()}
    summary['learning_rate'] = learning_rate_fn(step - 1)
    writer.write_scalars(step, summary)
    bars.show(summary)
    check_finite(step, {'train_loss': summary['train_loss']})

  try:
    step = start_step
    while step < num_steps:
      first = step + 1
      with jax.profiler.StepTraceAnnotation('train', step_num=first):
        step += runner.step()
      report_progress(step)
      for dispatched in range(first, step + 1):
        bars.update(dispatched)
      # A call never runs past the steps below (step_runner.dispatch_sizes).
      epoch_end = step % steps_per_epoch == 0 or step == num_steps
      # Checkpoints fall on log steps (the timed ones by waiting for one), so
      # a resumed run logs the same intervals as an uninterrupted one.
      scheduled_save = epoch_end or (
          config.checkpoint_every_steps > 0
          and step % config.checkpoint_every_steps == 0)

      if step % config.log_every_steps == 0 or scheduled_save:
        log_training(step)
        if not epoch_end and (scheduled_save or timer.due()):
          save(step)

      if epoch_end:
        with report_progress.timed('eval'):
          eval_metrics = evaluate(p_eval_step, runner.state, eval_batches, par)
        eval_metrics = {f'val_{k}': v for k, v in eval_metrics.items()}
        eval_metrics['epoch'] = step / steps_per_epoch
        writer.write_scalars(step, eval_metrics)
        logging.info('Step %d: %s', step, eval_metrics)
        check_finite(step, {'val_loss': eval_metrics['val_loss']})
        save(step, eval_metrics)

      if stop.reached(step) and step < num_steps:
        if checkpoints.latest_step() != step:
          if runner.has_metrics:
            log_training(step)
          save(step)
        checkpointing.wait(checkpoints)
        bars.close()
        message = (f'Stopped at step {step} of {num_steps}, checkpoint saved: '
                   'resume with the same command.')
        logging.warning(message)
        print(message, file=sys.stderr)
        break
  finally:
    stop.restore_handlers()
    writer.flush()
    try:
      checkpointing.wait(checkpoints)
    finally:
      checkpoints.close()
      lock.close()
  return stop.exit_code()
