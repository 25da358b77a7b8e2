"""TensorBoard writers and progress reports, with or without TensorFlow, and
the grid that shows a batch's images there.

Where TensorFlow is installed, clu's writers and ReportProgress (which import
it). Elsewhere the same calls go to the `tensorboard` package's own event
file writer: scalars, images, texts and hyperparameters reach TensorBoard in
the same format, so an accelerator host needs no TensorFlow to be watched.
This module alone decides which.
"""

import collections
import contextlib
import io
import os
import time

from absl import logging
import numpy as np
from PIL import Image
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.summary.writer import event_file_writer
from tensorboard.util import tensor_util


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


def create_writer(workdir, *, tensorflow, just_logging=False):
  """A clu MetricWriter where `tensorflow` (installed), else `EventWriter`.

  `just_logging`: log the values, write no event file (processes > 0).
  """
  if tensorflow:
    from clu import metric_writers  # pylint: disable=g-import-not-at-top
    return metric_writers.create_default_writer(workdir,
                                                just_logging=just_logging)
  return EventWriter(None if just_logging else workdir)


def report_progress(num_train_steps, writer, *, tensorflow):
  """clu's ReportProgress where `tensorflow` (installed), else `ReportProgress`."""
  if tensorflow:
    from clu import periodic_actions  # pylint: disable=g-import-not-at-top
    return periodic_actions.ReportProgress(num_train_steps=num_train_steps,
                                           writer=writer)
  return ReportProgress(num_train_steps, writer)


def _scalar(tag, value):
  return summary_pb2.Summary.Value(
      tag=tag, tensor=tensor_util.make_tensor_proto(np.float32(value)),
      metadata=summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(
              plugin_name='scalars')))


def _image(tag, image):
  """An image summary of one [H, W, C] image (uint8, or floats in [0, 1])."""
  pixels = np.asarray(image)
  if pixels.dtype != np.uint8:
    pixels = np.clip(pixels.astype(np.float32) * 255 + 0.5, 0, 255).astype(
        np.uint8)
  if pixels.shape[-1] == 1:
    pixels = pixels[..., 0]
  encoded = io.BytesIO()
  Image.fromarray(pixels).save(encoded, format='PNG')
  height, width = image.shape[:2]
  return summary_pb2.Summary.Value(tag=tag, image=summary_pb2.Summary.Image(
      height=height, width=width,
      colorspace=1 if pixels.ndim == 2 else image.shape[-1],
      encoded_image_string=encoded.getvalue()))


def _text(tag, text):
  return summary_pb2.Summary.Value(
      tag=tag, tensor=tensor_util.make_tensor_proto(np.array(text.encode())),
      metadata=summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(
              plugin_name='text')))


class EventWriter:
  """clu's MetricWriter calls, written with the tensorboard package alone.

  Every value is logged as clu's LoggingWriter logs it; with a `logdir`, it
  also goes to an event file there.
  """

  def __init__(self, logdir):
    self._events = None
    if logdir:
      os.makedirs(logdir, exist_ok=True)
      self._events = event_file_writer.EventFileWriter(
          logdir, filename_suffix='.v2')

  def _write(self, step, values):
    if self._events is not None:
      self._events.add_event(event_pb2.Event(
          wall_time=time.time(), step=int(step),
          summary=summary_pb2.Summary(value=values)))

  def write_scalars(self, step, scalars):
    logging.info('[%d] %s', step, ', '.join(
        f'{k}={float(v):.6g}' for k, v in sorted(scalars.items())))
    self._write(step, [_scalar(k, v) for k, v in scalars.items()])

  def write_images(self, step, images):
    """{tag: [N, H, W, C] in [0, 1]}; the first image of each tag is written."""
    logging.info('[%d] Got images: %s.', step,
                 {k: np.shape(v) for k, v in images.items()})
    self._write(step, [_image(k, v[0]) for k, v in images.items()])

  def write_texts(self, step, texts):
    logging.info('[%d] Got texts: %s.', step, texts)
    self._write(step, [_text(k, v) for k, v in texts.items()])

  def write_hparams(self, hparams):
    logging.info('[Hyperparameters] %s', hparams)
    if self._events is not None:
      self._events.add_event(event_pb2.Event(
          wall_time=time.time(), step=0,
          summary=hparams_summary.hparams_pb(dict(hparams))))

  def flush(self):
    if self._events is not None:
      self._events.flush()

  def close(self):
    if self._events is not None:
      self._events.close()


class ReportProgress:
  """clu's ReportProgress without TensorFlow: steps/s and ETA once a minute.

  `timed(name)` adds a block's wall time to the share of time it reports.
  """

  def __init__(self, num_train_steps, writer, every_secs=60.0):
    self._num_train_steps = num_train_steps
    self._writer = writer
    self._every_secs = every_secs
    self._start = self._previous_time = time.monotonic()
    self._previous_step = None
    self._time_per_part = collections.defaultdict(float)

  def __call__(self, step):
    now = time.monotonic()
    if self._previous_step is None:
      self._previous_step, self._previous_time = step, now
      return
    if (now - self._previous_time < self._every_secs
        and step != self._num_train_steps) or step == self._previous_step:
      return
    steps_per_sec = (step - self._previous_step) / (now - self._previous_time)
    message = (f'{steps_per_sec:.1f} steps/s, '
               f'{100 * step / self._num_train_steps:.1f}% '
               f'({step}/{self._num_train_steps})')
    total = now - self._start
    if self._time_per_part:
      message += ' ({:.0f} s : {})'.format(total, ', '.join(
          f'{100 * dt / total:.1f}% {name}'
          for name, dt in sorted(self._time_per_part.items())))
    logging.info('Progress: %s', message)
    self._writer.write_scalars(step, {'steps_per_sec': steps_per_sec,
                                      'uptime': total})
    self._previous_step, self._previous_time = step, now

  @contextlib.contextmanager
  def timed(self, name):
    start = time.monotonic()
    yield
    self._time_per_part[name] += time.monotonic() - start
