"""One loaded version of a model: its own graph and session, run by signature.

Like TF Serving's SavedModelBundle: loaded with the TF1 SavedModel loader
(the MetaGraph whose tags equal --saved_model_tags, by default {serve};
main_op / table initializers run), then run by tensor names.
Fed shapes are not checked against the signature (TF Serving does not either;
ops fail instead), but fed dtypes are, with TF's message.

Runs go through `Session._make_callable_from_options` with a CallableOptions
proto: the C++ callable path TF Serving itself uses. `Session.run` (the only
public alternative) rejects a fed shape that differs from the placeholder's
static shape in Python, which TF Serving accepts (half_plus_two answers
`{"instances": [1.0, 2.0, 5.0]}` on an x of shape [-1, 1]), and costs several
times more per call. If the method is missing, `Session.run` is used.
"""
from typing import Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.protobuf import config_pb2

from estimator_export import _saved_model as saved_model_lib
from estimator_export._op_libraries import register_serving_op_libraries
from estimator_export._runner import GraphRunner
from estimator_export.serving.status import Code, ServingError, from_tf_error, tf_type_name

SERVE_TAG = 'serve'
DEFAULT_TAGS: Tuple[str, ...] = (SERVE_TAG,)


class Servable(GraphRunner):
  """A loaded SavedModel version. Thread-safe: concurrent `run` calls are fine."""

  def __init__(self, name: str, version: int, path: str, graph: tf.Graph,
               session: tf.compat.v1.Session, meta_graph):
    super().__init__(graph, session)
    self.name = name
    self.version = version
    self.path = path
    self.meta_graph = meta_graph
    self.signature_defs = dict(meta_graph.signature_def)
    self.batcher = None  # Set by the manager when batching is on.

  @classmethod
  def load(cls, name: str, version: int, path: str,
           session_config: Optional[tf.compat.v1.ConfigProto] = None,
           tags: Sequence[str] = DEFAULT_TAGS) -> 'Servable':
    """Loads `path` (a version directory). Raises ServingError on failure.

    Args:
      tags: the MetaGraph's tags (--saved_model_tags split on ','); the
        MetaGraph whose tag set equals them as a set is loaded, as TF's
        FindMetaGraphDef matches. Without one: NOT_FOUND, worded as TF Serving's.
    """
    if saved_model_lib.saved_model_file(path) is None:
      raise ServingError(Code.NOT_FOUND,
                         f'Could not find SavedModel .pb or .pbtxt at supplied export '
                         f'directory path: {path}')
    register_serving_op_libraries()  # TF Text ops, as tensorflow_model_server links them.
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=session_config)
    try:
      with graph.as_default():
        meta_graph = tf.compat.v1.saved_model.loader.load(session, list(tags), path)
    except Exception as e:  # pylint: disable=broad-except
      session.close()
      if isinstance(e, tf.errors.OpError):
        raise from_tf_error(e) from e
      if isinstance(e, RuntimeError) and not _has_meta_graph(path, tags):
        raise ServingError(Code.NOT_FOUND, missing_tags_message(tags)) from e
      raise ServingError(Code.INVALID_ARGUMENT, f'Failed to load {path}: {e}') from e
    graph.finalize()
    return cls(name, version, path, graph, session, meta_graph)

  def tensor(self, name: str) -> tf.Tensor:
    """The graph tensor `name`; KeyError for an unknown name (a broken signature)."""
    return self.graph.get_tensor_by_name(name)

  def run(self, signature_def, inputs: Mapping[str, np.ndarray],
          output_aliases: Sequence[str], check_dtypes: bool = True) -> Dict[str, np.ndarray]:
    """Runs a signature: inputs by alias (numpy), outputs by alias.

    Classify/Regress pass check_dtypes=False: TF Serving feeds their serialized
    Examples by tensor name whatever dtype the signature declares.

    Raises:
      ServingError: INVALID_ARGUMENT for a dtype mismatch, or the TF error.
    """
    feed_names, feed_values = [], []
    for index, (alias, value) in enumerate(inputs.items()):
      info = signature_def.inputs[alias]
      expected = tf.dtypes.as_dtype(info.dtype)
      got = _dtype_of(value)
      if check_dtypes and got != expected:
        raise ServingError(Code.INVALID_ARGUMENT,
                           f'Expects arg[{index}] to be {tf_type_name(info.dtype)} but '
                           f'{tf_type_name(got.as_datatype_enum)} is provided')
      feed_names.append(info.name)
      feed_values.append(value)
    fetch_names = tuple(signature_def.outputs[a].name for a in output_aliases)
    run = self.callable_for_names(tuple(feed_names), fetch_names)  # KeyError: unknown name.
    try:
      values = run(*feed_values)
    except tf.errors.OpError as e:
      raise from_tf_error(e) from e
    return dict(zip(output_aliases, values))

  def make_callable(self, feeds: Sequence[tf.Tensor], fetches: Sequence[tf.Tensor]):
    """A callable on TF Serving's own C++ path (see the module docstring)."""
    make = getattr(self.session, '_make_callable_from_options', None)
    if make is None:
      return lambda *values: self.session.run(list(fetches), dict(zip(feeds, values)))
    options = config_pb2.CallableOptions(feed=[t.name for t in feeds],
                                         fetch=[t.name for t in fetches])
    return make(options)

  def __repr__(self):
    return f'Servable({self.name!r}, version={self.version})'


def missing_tags_message(tags: Sequence[str]) -> str:
  """TF's FindMetaGraphDef error (tensorflow/cc/saved_model/reader.cc), as TF Serving reports it.

  TF joins an unordered_set, so the real server's tag order may differ; this
  keeps the order of --saved_model_tags.
  """
  joined = ' '.join(dict.fromkeys(tags))
  return (f'Could not find meta graph def matching supplied tags: {{ {joined} }}. To inspect '
          'available tag-sets in the SavedModel, please use the SavedModel CLI: '
          '`saved_model_cli`')


def _has_meta_graph(path: str, tags: Sequence[str]) -> bool:
  """Whether a MetaGraph's tags equal `tags` as a set (read only after a failed load)."""
  try:
    saved_model = saved_model_lib.read_saved_model(path)
  except Exception:  # pylint: disable=broad-except
    return True  # Unreadable: let the loader's own error stand.
  return any(set(mg.meta_info_def.tags) == set(tags) for mg in saved_model.meta_graphs)


def _dtype_of(value: np.ndarray) -> tf.DType:
  if value.dtype.kind in 'OSU':
    return tf.string
  return tf.dtypes.as_dtype(value.dtype)
