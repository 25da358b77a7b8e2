"""The compiled train step run the way training runs it.

Shared by the trainer and scripts/benchmark.py, so that the benchmark's
"resident" figure measures the trainer's own dispatch: steps queued back to
back, at most `preemption.StepsAhead` ahead of the device, their metrics kept
on the devices until a log step merges them in one call.
"""

from tiny_flax import preemption


class StepRunner:
  """Holds the replicated state and the metrics of the steps since the last log."""

  def __init__(self, par, train_step, state, batches):
    self.state = state
    self._par = par
    self._train_step = train_step
    self._batches = batches
    self._metrics = []
    self._steps_ahead = preemption.StepsAhead()

  def step(self):
    self.state, metrics = self._train_step(self.state, next(self._batches))
    self._metrics.append(metrics)
    self._steps_ahead.dispatched(metrics)

  @property
  def has_metrics(self):
    return bool(self._metrics)

  def pop_metrics(self):
    """The merged metrics of the steps since the last call (device arrays)."""
    merged = self._par.merge_metrics(self._metrics).compute()
    self._metrics.clear()
    return merged
