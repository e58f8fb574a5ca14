"""tf.estimator.Exporter for `train_and_evaluate`, on the same export core.

    exporter = ServingExporter.best('best', receiver_fn, metric='loss',
                                    higher_is_better=False, keep=3)
    tf.estimator.train_and_evaluate(
        estimator, train_spec, tf.estimator.EvalSpec(input_fn, exporters=[exporter]))

Exports land in `<model_dir>/export/<name>/<global_step>`, with the same
layout, manifest, validation, warmup and retention as `export_for_serving`.
The evaluation metrics are written into each manifest; the best exporter
reads them back on restart, so "best so far" survives a restarted job.
`keep` follows ExportOptions.keep: keep=1 keeps a fallback version too unless
`options` has allow_single_version=True.
"""
import dataclasses
import logging
import math
import os
from typing import Any, Mapping, Optional, Sequence

import tensorflow as tf

from estimator_export import _saved_model as saved_model_lib
from estimator_export import export as export_lib
from estimator_export.errors import ExportError, did_you_mean

logger = logging.getLogger('estimator_export')

LATEST, BEST, FINAL = 'latest', 'best', 'final'


class ServingExporter(tf.estimator.Exporter):
  """Exports on evaluations: every one (latest), improving ones (best), or the last."""

  def __init__(self, name: str, serving_input_receiver_fn, *, strategy: str = LATEST,
               metric: Optional[str] = None, higher_is_better: Optional[bool] = None,
               keep: Optional[int] = 5, samples: Optional[Mapping[str, Any]] = None,
               label_vocabulary: Optional[Sequence[str]] = None,
               options: Optional[export_lib.ExportOptions] = None):
    if strategy not in (LATEST, BEST, FINAL):
      raise ExportError('unknown exporter strategy', value=strategy,
                        fix="use 'latest', 'best' or 'final'" +
                        did_you_mean(strategy, (LATEST, BEST, FINAL)))
    if strategy == BEST and (metric is None or higher_is_better is None):
      raise ExportError('the best exporter needs an explicit metric and direction',
                        value={'metric': metric, 'higher_is_better': higher_is_better},
                        fix="e.g. metric='loss', higher_is_better=False")
    self._name = name
    self._receiver_fn = serving_input_receiver_fn
    self._strategy = strategy
    self._metric = metric
    self._higher = higher_is_better
    self._samples = samples
    self._vocab = label_vocabulary
    ranked = strategy == BEST and keep is not None
    self._options = dataclasses.replace(
        options or export_lib.ExportOptions(), version='step', keep=keep,
        keep_best_by=metric if ranked else None,
        higher_is_better=bool(higher_is_better) if ranked else True)
    self._best: Optional[float] = None
    self._best_loaded = False

  @classmethod
  def latest(cls, name, receiver_fn, **kwargs) -> 'ServingExporter':
    return cls(name, receiver_fn, strategy=LATEST, **kwargs)

  @classmethod
  def best(cls, name, receiver_fn, *, metric: str, higher_is_better: bool, **kwargs
          ) -> 'ServingExporter':
    return cls(name, receiver_fn, strategy=BEST, metric=metric,
               higher_is_better=higher_is_better, **kwargs)

  @classmethod
  def final(cls, name, receiver_fn, **kwargs) -> 'ServingExporter':
    return cls(name, receiver_fn, strategy=FINAL, **kwargs)

  @property
  def name(self) -> str:
    return self._name

  def export(self, estimator, export_path, checkpoint_path, eval_result,
             is_the_final_export):
    """Called by tf.estimator after each evaluation; returns the export path or None."""
    if self._strategy == FINAL and not is_the_final_export:
      return None
    metrics = {k: float(v) for k, v in (eval_result or {}).items() if _is_scalar(v)}
    if self._strategy == BEST and not self._improves(export_path, metrics):
      return None
    step = saved_model_lib.checkpoint_step(checkpoint_path)
    if tf.io.gfile.isdir(os.path.join(export_path, str(step))):
      logger.info('exporter %s: step %d is already exported', self._name, step)
      return None
    result = export_lib.export_for_serving(
        estimator, export_path, self._receiver_fn, checkpoint_path=checkpoint_path,
        samples=self._samples, label_vocabulary=self._vocab, metrics=metrics,
        options=self._options)
    if self._strategy == BEST:
      self._best = metrics[self._metric]
    return result.path.encode()

  def _improves(self, export_path: str, metrics: Mapping[str, float]) -> bool:
    if self._metric not in metrics:
      raise ExportError('evaluation has no metric for the best exporter', value=self._metric,
                        fix=f'available metrics: {sorted(metrics)}' +
                        did_you_mean(self._metric, metrics))
    if not self._best_loaded:
      self._best = self._best_on_disk(export_path)
      self._best_loaded = True
    value = metrics[self._metric]
    if math.isnan(value):
      return False
    if self._best is None:
      return True
    return value > self._best if self._higher else value < self._best

  def _best_on_disk(self, export_path: str) -> Optional[float]:
    values = []
    for v in saved_model_lib.numeric_versions(export_path):
      metric = saved_model_lib.read_manifest(os.path.join(export_path, str(v))).get(
          'metrics', {}).get(self._metric)
      if metric is not None:
        values.append(metric)
    if not values:
      return None
    return max(values) if self._higher else min(values)


def _is_scalar(value) -> bool:
  try:
    float(value)
    return True
  except (TypeError, ValueError):
    return False
