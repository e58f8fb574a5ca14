"""The reference side of the parity check: the Estimator's model_fn run once on a checkpoint.

    predictions = predict_once(estimator, checkpoint_path, features)

returns what

    next(estimator.predict(input_fn, checkpoint_path=checkpoint_path,
                           yield_single_examples=False))

returns for an input_fn giving `features` as one batch, computed the way
`Estimator.predict` computes it, minus what one in-memory batch does not need
(about 50 ms of 150 on a toy model, 0.2-0.3 s of 1.7 on a MiniLM-sized BERT):

  Estimator.predict                          predict_once
  -----------------------------------------  -----------------------------------------
  a new tf.Graph, the config's tf_random_seed  the same
  the global step created                    the same (create_global_step)
  features from the input_fn's tf.data       a placeholder per feature of its dtype and
    pipeline: [None, ...] static shapes        static shape [None, ...] (what .batch gives)
  model_fn(features, None, PREDICT, config)  the same call, through the public
    with the estimator's params                `estimator.model_fn` (params bound)
  MonitoredSession + ChiefSessionCreator:    a Session on the same master and
    Scaffold.finalize, restore the           session_config; the Saver that finalize
    checkpoint with the Scaffold's saver,     takes (SAVERS collection, else
    run its local_init_op, check that no      Saver(sharded=True, allow_empty=True))
    variable is uninitialized                 restores the checkpoint; the local_init_op
                                              it takes (LOCAL_INIT_OP collection, else
                                              Scaffold.default_local_init_op) runs
  run the predictions                        run the predictions (graph finalized)

The readiness check is left out: one Saver restoring every global variable
(a variable missing from the checkpoint fails the restore) and the local init
op leave report_uninitialized_variables nothing to report.

Everything else goes through `estimator.predict` itself: an Estimator whose
predict is overridden (TPUEstimator), a model_fn whose spec has
prediction_hooks, a Scaffold given its own ops, init_fn or saver, several
Savers (or a tf.train.Checkpoint) in the SAVERS collection, or predictions that
are not a dict.
"""
import logging
from typing import Any, Dict, Mapping

import numpy as np
import tensorflow as tf

logger = logging.getLogger('estimator_export')

ModeKeys = tf.estimator.ModeKeys
_SCAFFOLD_PARTS = ('init_op', 'init_feed_dict', 'init_fn', 'ready_op', 'ready_for_local_init_op',
                   'local_init_op', 'local_init_feed_dict', 'summary_op', 'saver')


def predict_once(estimator: tf.estimator.Estimator, checkpoint_path: str,
                 features: Mapping[str, np.ndarray]) -> Dict[str, Any]:
  """The estimator's predictions for one batch of features, from `checkpoint_path`.

  Args:
    estimator: a tf.estimator.Estimator (any subclass).
    checkpoint_path: the checkpoint prefix to restore.
    features: feature name -> array [batch, ...] (strings as object arrays).

  Returns:
    What estimator.predict(..., yield_single_examples=False) yields first:
    prediction key -> array [batch, ...] (or the bare array of a non-dict).
  """
  if type(estimator).predict is not tf.compat.v1.estimator.Estimator.predict:
    return _estimator_predict(estimator, checkpoint_path, features)
  config = estimator.config
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.random.set_random_seed(config.tf_random_seed)
    tf.compat.v1.train.create_global_step(graph)
    placeholders = {name: tf.compat.v1.placeholder(
        tf.dtypes.as_dtype(value.dtype) if value.dtype != object else tf.string,
        [None] + list(value.shape[1:]), name=name) for name, value in features.items()}
    spec = estimator.model_fn(placeholders, None, ModeKeys.PREDICT, config)
    saver, local_init_op = _restore_ops(spec)
    if saver is None:
      logger.debug('parity: %s needs Estimator.predict itself', type(estimator).__name__)
      return _estimator_predict(estimator, checkpoint_path, features)
    graph.finalize()
  with tf.compat.v1.Session(target=config.master, graph=graph,
                            config=config.session_config) as session:
    saver.restore(session, checkpoint_path)
    session.run(local_init_op)
    return session.run(spec.predictions, {placeholders[k]: v for k, v in features.items()})


def _restore_ops(spec):
  """(saver, local_init_op) as Scaffold.finalize would pick them; (None, None): not default."""
  scaffold = spec.scaffold
  if (spec.prediction_hooks or not isinstance(spec.predictions, Mapping) or
      any(getattr(scaffold, part, None) is not None for part in _SCAFFOLD_PARTS)):
    return None, None
  savers = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SAVERS)
  if len(savers) > 1 or (savers and not isinstance(savers[0], tf.compat.v1.train.Saver)):
    return None, None
  if savers:
    saver = savers[0]
    saver.build()
  else:
    saver = tf.compat.v1.train.Saver(sharded=True, allow_empty=True)
  local_init_op = tf.compat.v1.train.Scaffold.get_or_default(
      'local_init_op', tf.compat.v1.GraphKeys.LOCAL_INIT_OP,
      tf.compat.v1.train.Scaffold.default_local_init_op)
  return saver, local_init_op


def _estimator_predict(estimator, checkpoint_path: str, features: Mapping[str, np.ndarray]):
  rows = len(next(iter(features.values())))

  def input_fn(params=None):
    del params
    return tf.data.Dataset.from_tensor_slices(dict(features)).batch(rows)

  return next(estimator.predict(input_fn, checkpoint_path=checkpoint_path,
                                yield_single_examples=False))
