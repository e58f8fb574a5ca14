"""Run a frozen `.pb`: import_graph_def once, then call it by alias or tensor name.

Private to the estimator_export.freeze package (re-exported there as FrozenPredictor).
"""
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from estimator_export import precision
from estimator_export._op_libraries import register_serving_op_libraries
from estimator_export._runner import GraphRunner, InputSpec, SignatureRunner
from estimator_export._saved_model import normalize_path
from estimator_export._saved_model import read_bytes
from estimator_export.errors import FreezeError


def _manifest_path(graph_path: str) -> str:
  return os.path.splitext(graph_path)[0] + '.manifest.json'


def read_frozen_manifest(graph_path: str) -> Dict[str, Any]:
  """The manifest JSON written beside a frozen .pb by FrozenGraph.save."""
  path = _manifest_path(os.fspath(graph_path))
  if not tf.io.gfile.exists(path):
    raise FreezeError('no manifest beside the frozen graph', value=path,
                      fix='freeze with estimator_export (it writes <name>.manifest.json), or '
                      'pass manifest=False and run it by tensor names')
  with tf.io.gfile.GFile(path, 'r') as f:
    return json.load(f)


# The frozen graph is already pruned and folded; these two grappler passes keep the
# steady-state speed (remap fuses MatMul+BiasAdd and similar) without the rest of the
# default meta-optimizer, which only costs time on the first run.
GRAPPLER_OPTIMIZERS = ('remap', 'arithmetic')

# Constants at least this large are imported as variables (see import_lifting_constants).
LIFT_MIN_BYTES = 1 << 16
LIFTED_SCOPE = 'frozen_constants'


def default_session_config() -> tf.compat.v1.ConfigProto:
  """The ConfigProto FrozenPredictor uses when given none (see GRAPPLER_OPTIMIZERS)."""
  config = tf.compat.v1.ConfigProto()
  config.graph_options.rewrite_options.optimizers.extend(GRAPPLER_OPTIMIZERS)
  return config


def import_lifting_constants(graph: tf.Graph, graph_def) -> Tuple[Any, Dict[Any, np.ndarray]]:
  """Imports graph_def into graph with its large constants held in variables.

  A frozen MiniLM-sized BERT carries ~90 MB of weights in Const nodes. Imported
  as they are, that payload is serialised again for the C++ importer, copied
  into the graph, then copied by grappler and by every Const kernel on the first
  run: about 1 s, three times the SavedModel's restore. Here each Const whose
  tensor_content is at least LIFT_MIN_BYTES is imported as a 0-d stub mapped
  (input_map) to a resource variable of the same dtype and shape, which the
  returned initializer fills from the file's own bytes. The values, the graph's
  nodes and every consumer's input are unchanged; only where the bytes live.

  Returns:
    (initializer op or None, {placeholder: value} to feed it).
  """
  light = tf.compat.v1.GraphDef()
  light.versions.CopyFrom(graph_def.versions)
  light.library.CopyFrom(graph_def.library)
  lifted = []
  for node in graph_def.node:
    tensor = node.attr['value'].tensor if node.op == 'Const' else None
    content = tensor.tensor_content if tensor is not None else b''  # Read (copied) once.
    if len(content) < LIFT_MIN_BYTES:
      light.node.append(node)
      continue
    dtype = tf.as_dtype(tensor.dtype)
    stub = light.node.add(name=node.name, op='Const')
    stub.attr['dtype'].type = tensor.dtype
    stub.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(dtype.as_numpy_dtype(0), dtype))
    shape = [d.size for d in tensor.tensor_shape.dim]
    value = np.frombuffer(content, dtype.as_numpy_dtype).reshape(shape)
    lifted.append((node.name, dtype, value))
  if not lifted:
    with graph.as_default():
      tf.compat.v1.import_graph_def(graph_def, name='')
    return None, {}
  feeds, input_map, initializers = {}, {}, []
  with graph.as_default():
    with tf.compat.v1.name_scope(LIFTED_SCOPE):
      for name, dtype, value in lifted:
        source = tf.compat.v1.placeholder(dtype, value.shape)
        variable = tf.compat.v1.Variable(source, trainable=False, use_resource=True,
                                         collections=[])
        feeds[source] = value
        initializers.append(variable.initializer)
        input_map[f'{name}:0'] = variable.read_value()
      init = tf.group(*initializers)
    tf.compat.v1.import_graph_def(light, input_map=input_map, name='')
  return init, feeds


def _spec(entry: Mapping[str, Any]) -> InputSpec:
  shape = entry.get('shape')
  dims = None if shape is None else tuple(None if d < 0 else d for d in shape)
  return InputSpec(np.dtype(tf.as_dtype(entry['dtype']).as_numpy_dtype), dims)


class _FrozenRunner(GraphRunner):
  """The graph and session of one FrozenPredictor."""
  GRAPH = 'the frozen graph'
  TENSOR_FORM = "use '<node name>:<output index>'."

  def closed_error(self) -> FreezeError:
    return FreezeError('the frozen predictor is closed', value=None,
                       fix='create a new one with FrozenPredictor.from_frozen_graph')


class FrozenPredictor:
  """A frozen GraphDef loaded into its own graph and session, run by alias or tensor name.

  Example:
    with FrozenPredictor.from_frozen_graph('/tmp/frozen.pb') as predict:
      predict({'x': [[1.0, 2.0, 3.0]]})          # {'probabilities': float32 [1, 2], ...}
      predict.run_tensors({'x:0': [[1., 2., 3.]]}, ['probabilities:0'])
  """

  def __init__(self, graph_def: Any, manifest: Optional[Mapping[str, Any]] = None,
               base_dir: str = '.', config: Optional[tf.compat.v1.ConfigProto] = None,
               mixed_precision: Optional[str] = None):
    """Imports graph_def (no name prefix) and runs the manifest's init_op.

    Args:
      graph_def: a frozen GraphDef proto.
      manifest: the manifest dict (aliases, init_op, assets), or None to run
        by tensor names only.
      base_dir: directory that the manifest's asset paths are relative to.
      config: optional tf.compat.v1.ConfigProto; if None, default_session_config().
      mixed_precision: 'bfloat16' (estimator_export.precision) applied to that
        config; None: the manifest's (FreezeOptions.mixed_precision), if any.
    """
    register_serving_op_libraries()
    self._manifest = dict(manifest or {})
    graph = tf.Graph()
    lifted_init, lifted_values = import_lifting_constants(graph, graph_def)
    if mixed_precision is None:
      mixed_precision = (self._manifest.get('mixed_precision') or {}).get('mode')
    config = precision.session_config(mixed_precision, config or default_session_config())
    self._runner = _FrozenRunner(graph, tf.compat.v1.Session(graph=graph, config=config))
    try:
      if lifted_init is not None:
        self.session.run(lifted_init, feed_dict=lifted_values)
      init_op = self._manifest.get('init_op')
      if init_op:
        assets = {name: os.path.join(base_dir, path)
                  for name, path in self._manifest.get('assets', {}).items()}
        self.session.run(graph.get_operation_by_name(init_op),
                         feed_dict={self._runner.tensor(k): v for k, v in assets.items()}
                         or None)
      graph.finalize()
      inputs = self._manifest.get('inputs', {})
      self._run = SignatureRunner(
          self._runner, 'frozen graph',
          {k: (self._runner.tensor(v['name']), _spec(v)) for k, v in inputs.items()},
          {k: self._runner.tensor(v['name'])
           for k, v in self._manifest.get('outputs', {}).items()},
          input_what={k: f'input {k!r}' for k in inputs},
          unknown_output='no such output of the frozen graph')
    except BaseException:
      self._runner.close()
      raise

  @classmethod
  def from_frozen_graph(cls, graph_path: str, manifest: Union[bool, Mapping[str, Any]] = True,
                        config: Optional[tf.compat.v1.ConfigProto] = None,
                        mixed_precision: Optional[str] = None) -> 'FrozenPredictor':
    """Loads a frozen .pb (and, by default, the manifest beside it).

    Args:
      graph_path: the binary GraphDef file.
      manifest: True: read <stem>.manifest.json (FreezeError if missing);
        False: none (tensor names only); or a manifest dict.
      config: optional tf.compat.v1.ConfigProto.
      mixed_precision: 'bfloat16', or None for the manifest's (see __init__).
    """
    graph_path = os.fspath(graph_path)
    if not tf.io.gfile.exists(graph_path):
      raise FreezeError('frozen graph not found', value=graph_path,
                        fix='pass the .pb written by freeze (FrozenGraph.save)')
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString(read_bytes(graph_path))
    if manifest is True:
      manifest = read_frozen_manifest(graph_path)
    elif manifest is False:
      manifest = None
    return cls(graph_def, manifest, os.path.dirname(normalize_path(graph_path)), config,
               mixed_precision)

  @property
  def graph(self) -> tf.Graph:
    return self._runner.graph

  @property
  def session(self) -> tf.compat.v1.Session:
    return self._runner.session

  @property
  def manifest(self) -> Dict[str, Any]:
    return dict(self._manifest)

  @property
  def input_keys(self) -> Tuple[str, ...]:
    return self._run.input_keys

  @property
  def output_keys(self) -> Tuple[str, ...]:
    return self._run.output_keys

  def __call__(self, inputs: Optional[Mapping[str, Any]] = None, *,
               outputs: Optional[Union[str, Sequence[str]]] = None,
               **kwargs: Any) -> Dict[str, np.ndarray]:
    """Runs the graph by the manifest's aliases.

    Args:
      inputs: alias -> array-like for every input.
      outputs: aliases to fetch; all if None.
      **kwargs: more inputs by alias.

    Returns:
      alias -> numpy array.
    """
    if not self._run.output_keys:
      raise FreezeError('this frozen graph has no manifest aliases', value=None,
                        fix='use run_tensors(feeds by tensor name, fetches by tensor name)')
    return self._run({**(inputs or {}), **kwargs}, outputs)

  def run_tensors(self, feeds: Mapping[str, Any],
                  fetches: Union[str, Sequence[str]]) -> List[np.ndarray]:
    """Runs by tensor names: run_tensors({'x:0': [[1.]]}, ['y:0']) -> [array]."""
    return self._runner.run_tensors(feeds, fetches)

  def close(self):
    self._runner.close()

  def __enter__(self) -> 'FrozenPredictor':
    return self

  def __exit__(self, *exc_info):
    self.close()
