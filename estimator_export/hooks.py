"""Progress for long jobs: training steps (ProgressHook) and export stages."""
import logging
import sys
import time
from typing import Callable, Optional

import tensorflow as tf


class ProgressHook(tf.estimator.SessionRunHook):
  """Prints `step N/total  loss L  (S steps/s)` every `every_n_steps` steps.

  Pass it to `estimator.train(..., hooks=[ProgressHook(100, total_steps=1000)])`.
  Works with Estimator and TPUEstimator(use_tpu=False).
  """

  def __init__(self, every_n_steps: int = 100, total_steps: Optional[int] = None,
               print_fn: Callable[[str], None] = print, prefix: str = ''):
    if every_n_steps < 1:
      raise ValueError(f'every_n_steps must be >= 1, got {every_n_steps}')
    self._every = every_n_steps
    self._total = total_steps
    self._print = print_fn
    self._prefix = prefix
    self._last_time = None
    self._last_step = None

  def begin(self):
    self._step = tf.compat.v1.train.get_global_step()
    losses = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.LOSSES)
    self._loss = tf.compat.v1.losses.get_total_loss() if losses else None

  def before_run(self, run_context):
    fetches = {'step': self._step}
    if self._loss is not None:
      fetches['loss'] = self._loss
    return tf.estimator.SessionRunArgs(fetches)

  def after_create_session(self, session, coord):
    del coord
    self._count = int(session.run(self._step))

  def after_run(self, run_context, run_values):
    # The global step fetched beside the train op may be read before or after this run's
    # increment (no ordering between them), so this process counts its own steps, and
    # jumps ahead only when other workers moved the global step further than that race can.
    fetched = int(run_values.results['step']) + 1
    step = self._count + 1
    if fetched > step + 1:
      step = fetched
    self._count = step
    now = time.time()
    if self._last_step is None:
      self._last_step, self._last_time = step - 1, now
    if step % self._every and step != self._total:
      return
    rate = (step - self._last_step) / max(now - self._last_time, 1e-9)
    total = f'/{self._total}' if self._total else ''
    loss = run_values.results.get('loss')
    loss_text = f'  loss {loss:.4f}' if loss is not None else ''
    self._print(f'{self._prefix}step {step}{total}{loss_text}  ({rate:.1f} steps/s)')
    self._last_step, self._last_time = step, now


def show_export_progress(stream=None, indent: str = '      '):
  """Prints the export stages (logger 'estimator_export') to `stream` (stdout)."""
  logger = logging.getLogger('estimator_export')
  if any(getattr(h, '_estimator_export_progress', False) for h in logger.handlers):
    return
  handler = logging.StreamHandler(stream or sys.stdout)
  handler.setFormatter(logging.Formatter(indent + '%(message)s'))
  handler._estimator_export_progress = True  # pylint: disable=protected-access
  logger.addHandler(handler)
  logger.setLevel(logging.INFO)
  logger.propagate = False
