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
    Scaffold.finalize, restore the           session_config (grappler off: see
                                              checks_session_config); the Saver that finalize
    checkpoint with the Scaffold's saver,     takes (SAVERS collection, else
    run its local_init_op, check that no      Saver(sharded=True, allow_empty=True))
    variable is uninitialized                 restores the checkpoint; the local_init_op
                                              it takes (LOCAL_INIT_OP collection, else
                                              Scaffold.default_local_init_op) runs
  run the predictions                        run the predictions (graph finalized)

The readiness check is left out: one Saver restoring every global variable
(a variable missing from the checkpoint fails the restore) and the local init
op leave report_uninitialized_variables nothing to report.

The export's own graph (`ExportGraph`, `predict_in_export_graph`): building
the model_fn's graph is most of the cost (0.8 s of 1.2 on a MiniLM-sized BERT,
all of it Python, so it also slows the validation running beside it), and
`tf.estimator`'s export has just built that graph: model_fn(features, None,
PREDICT, config) under the config's seed, features from the receiver. When the
receiver's features are dense tensors of exactly the dtypes and static shapes
the placeholders above would have, the model_fn saw what estimator.predict
gives it, so its graph computes what estimator.predict computes. The
reference then runs that graph fed the features directly (the receiver
skipped), its variables restored from the checkpoint, not from the
SavedModel's variables/: by the export's own restore op (named in the SaverDef
the export wrote; tf.estimator built that Saver as estimator.predict would, a
sharded Saver of every variable), or by a new Saver as above when the graph
has Savers of its own. It needs the model_fn's predictions, which only
`ServingModelMixin.model_fn` records (`record_predictions`); any other case,
or any error on this path, falls back to the rebuild above.

Everything else goes through `estimator.predict` itself: an Estimator whose
predict is overridden (TPUEstimator), a model_fn whose spec has
prediction_hooks, a Scaffold given its own ops, init_fn or saver, several
Savers (or a tf.train.Checkpoint) in the SAVERS collection, or predictions that
are not a dict.
"""
import logging
import weakref
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import tensorflow as tf

from estimator_export._saved_model import read_saved_model
from estimator_export.predictor import checks_session_config

logger = logging.getLogger('estimator_export')

ModeKeys = tf.estimator.ModeKeys
_SCAFFOLD_PARTS = ('init_op', 'init_feed_dict', 'init_fn', 'ready_op', 'ready_for_local_init_op',
                   'local_init_op', 'local_init_feed_dict', 'summary_op', 'saver')


# tf.Graph -> {prediction key: tensor name} of a mixin model_fn's PREDICT call in it.
# Names, not tensors: a tensor refers to its graph and would keep the key alive.
_PREDICTIONS: 'weakref.WeakKeyDictionary[tf.Graph, Dict[str, str]]' = weakref.WeakKeyDictionary()


def record_predictions(predictions: Mapping[str, Any]):
  """Records a PREDICT-mode model_fn's predictions in the default graph (mixins call it)."""
  if all(isinstance(t, tf.Tensor) for t in predictions.values()):
    _PREDICTIONS[tf.compat.v1.get_default_graph()] = {k: t.name for k, t in predictions.items()}


class ExportGraph:
  """A serving receiver fn that remembers the graph and features it was last built with.

  Pass it to `export_saved_model` in place of `receiver_fn`; after the export,
  `graph` is the graph tf.estimator built (and let go of) and `features` the
  receiver's features in it.
  """

  def __init__(self, receiver_fn):
    self.receiver_fn = receiver_fn
    self.graph: Optional[tf.Graph] = None
    self.features: Any = None
    self.export_dir: Optional[str] = None  # Where it wrote the SavedModel, once known.

  def __call__(self):
    receiver = self.receiver_fn()
    self.graph, self.features = tf.compat.v1.get_default_graph(), receiver.features
    return receiver

  def feature_names(self) -> List[str]:
    """The names of the feature tensors (composites as their components); [] before a call."""
    if self.graph is None:
      return []
    return [t.name for t in tf.nest.flatten(self.features, expand_composites=True)]


def predict_once(estimator: tf.estimator.Estimator, checkpoint_path: str,
                 features: Mapping[str, np.ndarray],
                 export_graph: Optional[ExportGraph] = None) -> Dict[str, Any]:
  """The estimator's predictions for one batch of features, from `checkpoint_path`.

  Args:
    estimator: a tf.estimator.Estimator (any subclass).
    checkpoint_path: the checkpoint prefix to restore.
    features: feature name -> array [batch, ...] (strings as object arrays).
    export_graph: the receiver fn of an export of `estimator` from
      `checkpoint_path`, called by it: its graph is reused when it can be
      (module docstring).

  Returns:
    What estimator.predict(..., yield_single_examples=False) yields first:
    prediction key -> array [batch, ...] (or the bare array of a non-dict).
  """
  if type(estimator).predict is not tf.compat.v1.estimator.Estimator.predict:
    return _estimator_predict(estimator, checkpoint_path, features)
  if export_graph is not None:
    try:
      predictions = predict_in_export_graph(estimator, checkpoint_path, features, export_graph)
    except Exception as e:  # pylint: disable=broad-except
      logger.debug('parity: the export graph does not serve (%s); rebuilding the model_fn', e)
      predictions = None
    if predictions is not None:
      return predictions
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
                            config=checks_session_config(config.session_config)) as session:
    saver.restore(session, checkpoint_path)
    session.run(local_init_op)
    return session.run(spec.predictions, {placeholders[k]: v for k, v in features.items()})


def predict_in_export_graph(estimator: tf.estimator.Estimator, checkpoint_path: str,
                            features: Mapping[str, np.ndarray], export_graph: ExportGraph
                           ) -> Optional[Dict[str, Any]]:
  """predict_once's answer from the export's graph; None when that graph cannot give it."""
  graph, received = export_graph.graph, export_graph.features
  names = _PREDICTIONS.get(graph) if graph is not None else None
  if names is None or not isinstance(received, Mapping) or set(received) != set(features):
    return None
  for name, value in features.items():
    tensor = received[name]
    dtype = tf.string if value.dtype == object else tf.dtypes.as_dtype(value.dtype)
    if (not isinstance(tensor, tf.Tensor) or tensor.dtype != dtype or
        tensor.shape.rank is None or tensor.shape.as_list() != [None] + list(value.shape[1:])):
      return None  # The model_fn saw other features than estimator.predict gives it.
  # The SaverDef the export wrote: its restore op is in `graph` and restores every variable
  # the export saved, as tf.estimator restored them from the checkpoint.
  saver_def = (read_saved_model(export_graph.export_dir).meta_graphs[0].saver_def
               if export_graph.export_dir else None)
  with graph.as_default():
    if saver_def is not None and not tf.compat.v1.get_collection(
        tf.compat.v1.GraphKeys.SAVERS):  # The Saver estimator.predict would build: the export's.
      saver, local_init_op = None, _local_init_op()
    else:
      saver, local_init_op = _graph_restore_ops()
      if saver is None:
        return None
    predictions = {k: graph.get_tensor_by_name(n) for k, n in names.items()}
    graph.finalize()
  with tf.compat.v1.Session(target=estimator.config.master, graph=graph,
                            config=checks_session_config(estimator.config.session_config)
                           ) as session:
    if saver is None:  # What Saver.restore runs.
      session.run(saver_def.restore_op_name, {saver_def.filename_tensor_name: checkpoint_path})
    else:
      saver.restore(session, checkpoint_path)
    session.run(local_init_op)
    return session.run(predictions, {received[k]: v for k, v in features.items()})


def _restore_ops(spec):
  """(saver, local_init_op) as Scaffold.finalize would pick them; (None, None): not default."""
  scaffold = spec.scaffold
  if (spec.prediction_hooks or not isinstance(spec.predictions, Mapping) or
      any(getattr(scaffold, part, None) is not None for part in _SCAFFOLD_PARTS)):
    return None, None
  return _graph_restore_ops()


def _graph_restore_ops():
  """_restore_ops for a spec with the default Scaffold, in the default graph."""
  savers = tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.SAVERS)
  if len(savers) > 1 or (savers and not isinstance(savers[0], tf.compat.v1.train.Saver)):
    return None, None
  if savers:
    saver = savers[0]
    saver.build()
  else:
    saver = tf.compat.v1.train.Saver(sharded=True, allow_empty=True)
  return saver, _local_init_op()


def _local_init_op():
  """The local_init_op Scaffold.finalize takes, in the default graph."""
  return tf.compat.v1.train.Scaffold.get_or_default(
      'local_init_op', tf.compat.v1.GraphKeys.LOCAL_INIT_OP,
      tf.compat.v1.train.Scaffold.default_local_init_op)


def _estimator_predict(estimator, checkpoint_path: str, features: Mapping[str, np.ndarray]):
  rows = len(next(iter(features.values())))

  def input_fn(params=None):
    del params
    return tf.data.Dataset.from_tensor_slices(dict(features)).batch(rows)

  return next(estimator.predict(input_fn, checkpoint_path=checkpoint_path,
                                yield_single_examples=False))
