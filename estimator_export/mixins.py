"""The classes users subclass in Estimator code.

A model class declares its features once and builds its predictions; the
mixin supplies the model_fn (with a PREDICT branch carrying checked
export_outputs), the receivers and `export_for_serving`::

    class Regressor(ServingModelMixin):
      feature_spec = FeatureSpec([Feature('x', 'float32', (3,)),
                                  Feature('y', 'float32', training_only=True)])

      def predictions(self, features, mode, params):
        w = tf.compat.v1.get_variable('w', [3, 1])
        return {'value': tf.reshape(tf.matmul(features['x'], w), [-1])}

      def regress_head(self, predictions):
        return regress_output(predictions['value'])

      def loss(self, predictions, labels, features, mode, params):
        return tf.compat.v1.losses.mean_squared_error(features['y'], predictions['value'])

    model = Regressor()
    estimator = model.make_estimator('/tmp/model')
    estimator.train(input_fn, max_steps=100)
    model.export_for_serving(estimator, '/tmp/exports')

The same class works under `tf.compat.v1.estimator.tpu.TPUEstimator` with
`use_tpu=False` (see `make_tpu_estimator`): its model_fn returns a
TPUEstimatorSpec, and export uses the public `export_to_tpu=False` argument.
"""
import warnings
from typing import Any, Dict, Mapping, Optional, Sequence

import tensorflow as tf

from estimator_export import _reference
from estimator_export import custom_receiver
from estimator_export import outputs as outputs_lib
from estimator_export import receivers as receivers_lib
from estimator_export.errors import FeatureError, did_you_mean
from estimator_export.features import FeatureSpec

ModeKeys = tf.estimator.ModeKeys


class UnreadFeatureWarning(UserWarning):
  """A serving receiver provides a feature the model never reads."""


class _TrackedFeatures(dict):
  """A features dict that records reads and names a missing feature clearly."""

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self.read = set()

  def __getitem__(self, key):
    if key not in self:
      raise FeatureError(
          'the model reads a feature the input does not provide', value=key,
          fix=f'the input provides {sorted(self)}; declare {key!r} in feature_spec '
          '(serving features are what every receiver provides)' + did_you_mean(key, self))
    self.read.add(key)
    return super().__getitem__(key)

  def get(self, key, default=None):
    if key in self:
      self.read.add(key)
    return super().get(key, default)


class ServingModelMixin:
  """Base for model classes: declare `feature_spec`, implement `predictions` and `loss`.

  Class attributes:
    feature_spec: FeatureSpec of every input, training-only ones marked.
    label_vocabulary: class names for classify signatures (optional).
    default_signature: which export output serving_default is: 'predict',
      'classify' or 'regress'.
  """
  feature_spec: FeatureSpec = None
  label_vocabulary: Optional[Sequence[str]] = None
  default_signature: str = 'predict'

  # ----- what subclasses implement -----
  def predictions(self, features: Mapping[str, tf.Tensor], mode: str,
                  params: Mapping[str, Any]) -> Dict[str, tf.Tensor]:
    """Builds the model; returns the prediction tensors (each [batch, ...])."""
    raise NotImplementedError('subclasses implement predictions(features, mode, params)')

  def loss(self, predictions, labels, features, mode, params) -> tf.Tensor:
    """Scalar training loss (TRAIN and EVAL)."""
    raise NotImplementedError('subclasses implement loss(...) to train or evaluate')

  def classify_head(self, predictions) -> Optional[outputs_lib.ClassificationOutput]:
    """Optional Classify output. By default: 'probabilities' + label_vocabulary."""
    if self.label_vocabulary and 'probabilities' in predictions:
      return outputs_lib.classify_output(scores=predictions['probabilities'],
                                         label_vocabulary=self.label_vocabulary)
    return None

  def regress_head(self, predictions) -> Optional[outputs_lib.RegressionOutput]:
    """Optional Regress output (float32 [batch] or [batch, 1])."""
    return None

  def train_op(self, loss: tf.Tensor, params: Mapping[str, Any]) -> tf.Operation:
    """Default optimiser: Adam with params['learning_rate'] (1e-3)."""
    optimizer = tf.compat.v1.train.AdamOptimizer(params.get('learning_rate', 1e-3))
    return optimizer.minimize(loss, global_step=tf.compat.v1.train.get_or_create_global_step())

  def eval_metric_ops(self, predictions, labels, features, params) -> Dict[str, Any]:
    """Metrics for EVAL (tf.compat.v1.metrics pairs)."""
    return {}

  # ----- what the mixin supplies -----
  def _spec(self) -> FeatureSpec:
    spec = self.feature_spec
    if not isinstance(spec, FeatureSpec):
      raise FeatureError(f'{type(self).__name__}.feature_spec is not a FeatureSpec',
                         value=type(spec).__name__,
                         fix='set feature_spec = FeatureSpec([Feature(...), ...])')
    return spec

  def export_outputs(self, predictions: Mapping[str, tf.Tensor]
                    ) -> Dict[str, outputs_lib.ExportOutput]:
    """predict + optional classify/regress heads, with serving_default."""
    return outputs_lib.build_export_outputs(
        predictions=predictions, classify=self.classify_head(predictions),
        regress=self.regress_head(predictions), default=self.default_signature)

  def _build(self, features, mode, params):
    spec = self._spec()
    if not isinstance(features, Mapping):
      raise FeatureError('the model_fn expects a dict of features',
                         value=type(features).__name__,
                         fix='return a features dict from the input_fn / receiver')
    tracked = _TrackedFeatures(features)
    preds = self.predictions(tracked, mode, dict(params or {}))
    if not isinstance(preds, Mapping) or not preds:
      raise FeatureError('predictions() must return a non-empty dict of tensors',
                         value=type(preds).__name__, fix="return {'logits': ..., ...}")
    if mode == ModeKeys.PREDICT:
      unread = sorted(set(features) - tracked.read)
      if unread:
        warnings.warn(UnreadFeatureWarning(
            f'the serving input provides feature(s) {unread} that '
            f'{type(self).__name__}.predictions never reads; requests must still send '
            'them. Remove them from feature_spec or mark them training_only=True.'))
      declared_missing = [n for n in spec.serving_names if n not in features]
      if declared_missing:
        raise FeatureError('the serving input lacks declared feature(s)',
                           value=declared_missing,
                           fix=f'build receivers from {type(self).__name__}.feature_spec')
    return tracked, preds

  def model_fn(self, features, labels, mode, params=None, config=None):
    """An Estimator model_fn: pass `model_fn=model.model_fn`."""
    del config
    params = dict(params or {})
    features, preds = self._build(features, mode, params)
    if mode == ModeKeys.PREDICT:
      _reference.record_predictions(preds)  # The parity check may reuse this graph.
      return tf.estimator.EstimatorSpec(mode, predictions=preds,
                                        export_outputs=self.export_outputs(preds))
    loss = self.loss(preds, labels, features, mode, params)
    if mode == ModeKeys.TRAIN:
      return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=self.train_op(loss, params))
    return tf.estimator.EstimatorSpec(
        mode, loss=loss, eval_metric_ops=self.eval_metric_ops(preds, labels, features, params))

  def tpu_model_fn(self, features, labels, mode, params):
    """A TPUEstimator model_fn (use_tpu=False runs it on CPU)."""
    params = dict(params or {})
    features, preds = self._build(features, mode, params)
    spec_cls = tf.compat.v1.estimator.tpu.TPUEstimatorSpec
    if mode == ModeKeys.PREDICT:
      return spec_cls(mode, predictions=preds, export_outputs=self.export_outputs(preds))
    loss = self.loss(preds, labels, features, mode, params)
    if mode == ModeKeys.TRAIN:
      return spec_cls(mode, loss=loss, train_op=self.train_op(loss, params))
    return spec_cls(mode, loss=loss)

  def make_estimator(self, model_dir: str, params: Optional[Mapping[str, Any]] = None,
                     config: Optional[tf.estimator.RunConfig] = None,
                     warm_start_from=None) -> tf.estimator.Estimator:
    return tf.estimator.Estimator(self.model_fn, model_dir=model_dir, config=config,
                                  params=dict(params or {}), warm_start_from=warm_start_from)

  def make_tpu_estimator(self, model_dir: str, train_batch_size: int,
                         eval_batch_size: Optional[int] = None,
                         predict_batch_size: Optional[int] = None,
                         params: Optional[Mapping[str, Any]] = None,
                         save_checkpoints_steps: int = 100):
    """A TPUEstimator running on CPU (use_tpu=False) that exports CPU graphs."""
    run_config = tf.compat.v1.estimator.tpu.RunConfig(
        model_dir=model_dir, save_checkpoints_steps=save_checkpoints_steps)
    return tf.compat.v1.estimator.tpu.TPUEstimator(
        model_fn=self.tpu_model_fn, use_tpu=False, config=run_config,
        params=dict(params or {}), train_batch_size=train_batch_size,
        eval_batch_size=eval_batch_size or train_batch_size,
        predict_batch_size=predict_batch_size or train_batch_size,
        export_to_tpu=False)

  def serving_input_receiver_fn(self, kind: str = 'combined', **kwargs
                               ) -> receivers_lib.ServingReceiverFn:
    """'raw', 'example', or 'combined' (raw primary + 'examples' alternative)."""
    spec = self._spec()
    if kind == 'raw':
      return receivers_lib.build_raw_receiver_fn(spec, **kwargs)
    if kind == 'example':
      return receivers_lib.build_example_receiver_fn(spec, **kwargs)
    if kind == 'combined':
      return receivers_lib.build_combined_receiver_fn(
          receivers_lib.build_raw_receiver_fn(spec, **kwargs),
          {'examples': receivers_lib.build_example_receiver_fn(spec)})
    raise FeatureError('unknown receiver kind', value=kind,
                       fix="use 'raw', 'example' or 'combined', or build one with "
                       'estimator_export.receivers and pass it to export_for_serving' +
                       did_you_mean(kind, ('raw', 'example', 'combined')))

  def export_for_serving(self, estimator, export_dir_base: str, receiver_fn=None,
                         **kwargs):
    """Exports through `estimator_export.export.export_for_serving`.

    The receiver defaults to 'combined' (raw tensors + tf.Examples), so
    Predict, Classify and Regress all work; label_vocabulary is recorded. A
    hand-written receiver_fn must produce the serving features of
    `feature_spec` (see `custom_receiver.adapt_receiver_fn`).
    """
    from estimator_export import export as export_lib  # pylint: disable=g-import-not-at-top
    if receiver_fn is None:
      receiver_fn = self.serving_input_receiver_fn('combined')
    else:  # A hand-written receiver fn is checked against feature_spec.
      receiver_fn = custom_receiver.adapt_receiver_fn(receiver_fn, features=self._spec())
    kwargs.setdefault('label_vocabulary', self.label_vocabulary)
    return export_lib.export_for_serving(estimator, export_dir_base, receiver_fn, **kwargs)
