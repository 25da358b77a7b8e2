"""The training loop: data, parallel steps, metrics to TensorBoard, checkpoints.

Metrics stay on the devices between logging steps (no host sync per step);
a validation pass and an asynchronous checkpoint close every epoch, and a
restarted run resumes from the latest checkpoint.
"""

import functools
import math
import sys

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from tiny_flax import checkpointing
from tiny_flax import data
from tiny_flax import errors
from tiny_flax import hparams
from tiny_flax import loop_policy
from tiny_flax import mixing
from tiny_flax import models
from tiny_flax import optim
from tiny_flax import parallel
from tiny_flax import preemption
from tiny_flax import profiling
from tiny_flax import progress
from tiny_flax import run_clock
from tiny_flax import step_runner
from tiny_flax import steps
from tiny_flax import summaries
from tiny_flax import time_budget
from tiny_flax import workdir as workdir_lib
from tiny_flax.platform import backend


def _init_from_torchvision(config, state):
  """`state` with torchvision weights; the optimizer and the moving average
  start afresh on them."""
  logging.info('Initialising from the torchvision weights in %s.',
               config.init_from)
  variables = models.merge_pretrained(
      config.model, {'params': state.params, 'batch_stats': state.batch_stats},
      models.load_torchvision(config.model, config.init_from))
  return state.replace(
      params=variables['params'], batch_stats=variables['batch_stats'],
      opt_state=state.tx.init(variables['params']),
      ema=jax.tree.map(jnp.copy, dict(variables)) if state.ema else {})


def validate(eval_step, state, batches, par):
  """Metrics of the whole validation split: merged on device, one fetch."""
  collected = [eval_step(state, batch) for batch in par.prefetch(batches)]
  return {k: float(v)
          for k, v in par.merge_metrics(collected).compute().items()}


def _check_finite(step, values, last_finite, checkpoints):
  """Ends the run before a non-finite state can be checkpointed."""
  values = {k: float(v) for k, v in values.items()}
  if all(math.isfinite(v) for v in values.values()):
    if 'train_loss' in values:
      last_finite.update(step=step, loss=values['train_loss'])
    return
  finite = (f'last finite training loss {last_finite["loss"]:.4g} at step '
            f'{last_finite["step"]}' if last_finite else
            'no finite training loss logged')
  saved = checkpoints.latest_step()
  resume = (f'the same command resumes from the checkpoint of step {saved}'
            if saved is not None else 'no checkpoint was written')
  raise errors.UserError(
      f'Training diverged by step {step}: {values}; {finite}; {resume}. '
      'Lower config.learning_rate or add warmup '
      '(config.schedule.warmup_epochs).')


def train_and_validate(config: ml_collections.ConfigDict, workdir: str,
                       progress_bars: str = 'auto'):
  """Trains `config` in `workdir`, resuming from its latest checkpoint.

  `progress_bars`: 'auto' (on a terminal), 'on' or 'off'.

  Returns the process's exit code: 0, or 130 when Ctrl-C stopped the run
  (SIGTERM stops it with 0: the run is resumable, not failed).
  """
  clock = run_clock.RunClock()
  # Every config value and the platform's choices are checked before the
  # workdir is written (a mistyped value leaves nothing behind), the workdir
  # before minutes of data preparation.
  platform = backend.resolve(config, data.resident_bytes(config))
  par = parallel.Parallel(config.parallelism,
                          compiler_options=platform.compiler_options)
  par.check_batch_size(config.batch_size)
  steps.check_microbatches(config.microbatches,
                           config.batch_size // par.num_devices)
  model = steps.create_model(config, data.NUM_CLASSES, platform.kernels,
                             platform.compute_dtype, steps.AXIS)
  if config.init_from and not checkpointing.holds_checkpoints(workdir):
    models.check_torchvision_file(config.init_from)  # read by a fresh start
  data.check(config)
  optim.check(config)
  loop_policy.check(config)
  time_budget.check(config)
  train_step = functools.partial(
      steps.train_step, dropout_key=jax.random.key(config.seed + 1),
      label_smoothing=config.label_smoothing,
      mixing=mixing.from_config(config.mixing),
      ema=steps.ema_settings(config.ema), microbatches=config.microbatches)
  trace = profiling.StepTrace(workdir, config.profile_steps,
                              enabled=jax.process_index() == 0)
  lock = workdir_lib.lock_workdir(workdir)  # held until the process ends
  workdir_lib.check_workdir(workdir, config)
  if jax.process_index() == 0:
    print(f'Workdir: {workdir} (the same command resumes it).',
          file=sys.stderr)

  # The dataset: its batches, its size, its class names.
  with clock.input():
    dataset = data.prepare(config, platform.input_on_device)
  logging.info('Input prepared in %.1f s.', clock.input_s)
  workdir_lib.save_class_names(workdir, dataset.class_names)
  steps_per_epoch = dataset.steps_per_epoch
  num_steps = (config.num_train_steps if config.num_train_steps > 0
               else config.num_epochs * steps_per_epoch)

  # The state: fresh, or from the latest checkpoint.
  state = steps.create_train_state(
      config, model, dataset.image_shape,
      optim.for_training(config, steps_per_epoch), platform.loss_scaling)
  num_params = sum(x.size for x in jax.tree.leaves(state.params))
  logging.info('%s: %s parameters.', config.model, f'{num_params:,}')
  checkpoints = checkpointing.manager(workdir, config.checkpoints_to_keep)
  # A run resumed on another platform may gain or lose its loss scale.
  state = steps.with_loss_scaling(
      checkpointing.restore_latest(checkpoints, state, steps.fit_checkpoint),
      platform.loss_scaling)
  start_step = int(state.step)
  # Metrics of steps a stop left unlogged, merged into the first log.
  carried_metrics = checkpointing.unlogged_metrics(checkpoints, start_step)
  if start_step == 0 and config.init_from:
    state = _init_from_torchvision(config, state)
  # A time budget sizes the run at an early epoch's end; the length chosen
  # travels in the optimizer state, so a resumed run keeps it.
  sizing = time_budget.Sizing(config, steps_per_epoch)
  schedule_steps = None  # the schedule's length: config.num_epochs of steps
  if sizing.sized_before(start_step):
    num_steps = schedule_steps = optim.schedule_steps(state.opt_state)
    logging.info('Sized to %d epochs by the time budget.',
                 num_steps // steps_per_epoch)

  # TensorBoard, progress bars, signals.
  writer = summaries.create_writer(workdir, tensorflow=platform.tensorflow,
                                   just_logging=jax.process_index() > 0)
  if start_step == 0:
    writer.write_hparams(hparams.flat(config))
  logging.info('Training %s for %d steps (%d per epoch) from step %d on %d '
               'devices with %s, %d steps per dispatch.', config.model,
               num_steps, steps_per_epoch, start_step, par.num_devices,
               par.kind, platform.steps_per_dispatch)
  bars_mode = progress_bars if jax.process_index() == 0 else 'off'

  def for_length(length, schedule_length):
    """What follows the run's length in steps, made again when a time budget
    sizes it: the loop's events, the logged rates, the progress reports."""
    return (loop_policy.Intervals(length, steps_per_epoch,
                                  config.log_every_steps,
                                  config.checkpoint_every_steps),
            optim.learning_rate_schedule(config, steps_per_epoch,
                                         schedule_length),
            summaries.report_progress(length, writer,
                                      tensorflow=platform.tensorflow),
            progress.EpochBars(steps_per_epoch, length, config.batch_size,
                               mode=bars_mode))

  intervals, learning_rate_fn, report_progress, bars = for_length(
      num_steps, schedule_steps)
  hint = step_runner.alignment_hint(intervals, platform.steps_per_dispatch)
  if hint:
    logging.info(hint)
  stop = preemption.StopRequests(checkpoints)
  timer = preemption.CheckpointTimer(config.checkpoint_every_minutes)

  # The compiled steps, and the runner that dispatches them.
  clock.first_call_begins()
  compiled = step_runner.compile_input(dataset, par, train_step, start_step,
                                       config.seed)
  writer.write_images(start_step, {
      'augmented_train_images':
          summaries.image_grid(compiled.first_images)[None]})
  runner = step_runner.StepRunner(
      par, compiled.train_step, par.replicate(state), compiled.batches,
      step_runner.dispatch_sizes(start_step, num_steps,
                                 platform.steps_per_dispatch,
                                 intervals.every()),
      compiled.train_steps, carried_metrics)
  del state  # the runner's replicated copy is the one that trains
  last_finite = {}  # step and training loss of the last finite log
  if sizing.times_first_epoch(start_step):  # its validation compiled first
    with clock.setup():
      _prepare_validation(compiled.eval_step, runner.state,
                          dataset.eval_batches, par)

  try:
    step = start_step
    while step < num_steps:
      first = step + 1
      with jax.profiler.StepTraceAnnotation('train', step_num=first):
        step += runner.step()
      if first == start_step + 1:
        jax.block_until_ready(runner.state)
        logging.info('First train call, compilation included: %.1f s.',
                     clock.first_call_ended(step - start_step))
        trace.start(step, num_steps)
      trace.after(step, runner.state)
      report_progress(step)
      for dispatched in range(first, step + 1):
        bars.update(dispatched)

      todo = loop_policy.after_step(step, intervals,
                                    stop_requested=stop.reached(step))
      if todo.log:  # every step leaves metrics to log
        summary = {f'train_{k}': v for k, v in runner.pop_metrics().items()}
        summary['learning_rate'] = learning_rate_fn(step - 1)
        writer.write_scalars(step, summary)
        bars.show(summary)
        _check_finite(step, {'train_loss': summary['train_loss']},
                      last_finite, checkpoints)
      metrics = None
      if todo.validate:
        with clock.validation(), report_progress.timed('eval'):
          metrics = _validate_epoch(compiled.eval_step, runner.state,
                                    dataset.eval_batches, par,
                                    with_ema=config.ema.decay > 0)
        metrics['epoch'] = step / steps_per_epoch
        writer.write_scalars(step, metrics)
        logging.info('Step %d: %s (validation %.1f s)', step, metrics,
                     clock.last_validation_s())
        _check_finite(step, {'val_loss': metrics['val_loss']}, last_finite,
                      checkpoints)
        if step == sizing.step:  # size the run to the time budget
          num_steps = sizing.num_steps(clock, start_step)
          runner.state = runner.state.replace(
              opt_state=optim.with_schedule_steps(
                  runner.state.opt_state, par.replicate(np.int32(num_steps))))
          intervals, learning_rate_fn, report_progress, bars = for_length(
              num_steps, num_steps)
      unlogged = None
      if todo.stop and not todo.log:  # saved, for the resumed run's first log
        unlogged = runner.unlogged_metrics()
        _check_finite(step, {'train_loss': unlogged.compute()['loss']},
                      last_finite, checkpoints)
      if todo.save or (todo.save_if_due and timer.due()):
        checkpointing.save(checkpoints, step, par.unreplicate(runner.state),
                           metrics, unlogged)
        timer.saved()
      if todo.stop:
        checkpointing.wait(checkpoints)
        bars.close()
        message = (f'Stopped at step {step} of {num_steps}, checkpoint saved: '
                   'resume with the same command.')
        logging.warning(message)
        print(message, file=sys.stderr)
        break
    if step > start_step:
      clock.log_run(start_step, step, config.batch_size)
    if step >= num_steps and jax.process_index() == 0:
      print(f'Trained to step {step} of {num_steps}. Its report (curves, the '
            'most and least misclassified classes): python -m '
            f'tiny_flax.evaluate --workdir={workdir}', file=sys.stderr)
  finally:
    bars.close()  # and gives the log its stream back, before any error line
    trace.stop(step)
    stop.restore_handlers()
    writer.flush()
    try:
      checkpointing.wait(checkpoints)
    finally:
      checkpoints.close()
      lock.close()
  return stop.exit_code()


def _prepare_validation(eval_step, state, batches, par):
  """Compiles `eval_step` on the first batch and reads the others (which
  fills tf.data's cache of decoded images)."""
  batches = iter(batches)
  jax.block_until_ready(eval_step(state, par.shard_batch(next(batches))))
  for _ in batches:
    pass


def _validate_epoch(eval_step, state, batches, par, with_ema):
  """val_* metrics of the trained weights, and val_ema_* of their average."""
  metrics = {f'val_{k}': v
             for k, v in validate(eval_step, state, batches, par).items()}
  if with_ema:
    metrics.update({f'val_ema_{k}': v for k, v in validate(
        eval_step, steps.with_ema_weights(state), batches, par).items()})
  return metrics
