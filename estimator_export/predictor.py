"""A persistent, low-latency in-process predictor over a TF1-style SavedModel.

It does what `tf.contrib.predictor.from_saved_model` did, for TF 2.15: load a
SavedModel once into its own `tf.Graph` and `tf.compat.v1.Session` (restoring
variables and running the main_op / table initializers, as the loader does),
then run signatures through callables made once with `Session.make_callable`,
so a call does no graph lookups, only input checks and the run itself::

    with Predictor.from_saved_model('/models/half_plus_two/00000123') as predict:
      predict({'x': [[1.0], [2.0]]})      # {'y': float32 array of shape [2, 1]}
      predict(x=[[5.0]], outputs=['y'])
      predict.for_signature('regress_x_to_y')({'inputs': [example_bytes]})
      predict.run_tensors({'x:0': [[1.0]]}, ['y:0'])

Inputs are checked against the signature (keys, dtype, rank and known dims)
before anything runs. Requests that do not match the model (unknown signature,
input, output or tensor names, bad shapes or values) raise `SignatureError`;
a directory or MetaGraph that cannot be loaded raises `ContractError`.

Concurrent calls from several threads are safe: `Session.run` and its
callables are thread safe, the graph is finalized after loading, and the only
shared mutable state (the caches of callables and predictors) is guarded by a
lock.

Latency: in TF 2.15 a `make_callable` with a non-empty feed_list runs through
`Session.run` on every call, so a call costs about what `Session.run` costs
(about 0.2 ms for half_plus_two on 2 CPU cores). TF's faster C-level callables
(`CallableOptions`) are reachable only through a private Session method, which
this module does not use.
"""
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from estimator_export import precision
from estimator_export._op_libraries import register_serving_op_libraries
from estimator_export._runner import (GraphRunner, InputSpec, Shape, SignatureRunner, as_names,
                                      check_input_keys, to_feed_array)
from estimator_export._saved_model import DEFAULT_SIGNATURE, check_saved_model_dir
from estimator_export.errors import ContractError, ExportError, SignatureError, did_you_mean

__all__ = ['InputSpec', 'Predictor', 'check_input_keys', 'checks_session_config',
           'signature_input_specs', 'tensor_info_spec', 'to_feed_array']


def checks_session_config(base: Optional[tf.compat.v1.ConfigProto] = None
                          ) -> tf.compat.v1.ConfigProto:
  """A copy of `base` (default: empty) with grappler's meta-optimizer off.

  For sessions that run each (feeds, fetches) pair once or twice: export
  validation, warmup replay and the parity reference. Grappler optimises the
  graph again for every new pair; on a MiniLM-sized BERT that is about 0.4 s
  a pair, several times what running it costs, and an export's checks run 4
  or more pairs. Its rewrites keep what a graph computes (a fused kernel may
  round differently, well within the checks' tolerances), and the servers
  that load the export (TF Serving, the embedded one) optimise as usual.
  """
  config = tf.compat.v1.ConfigProto()
  if base is not None:
    config.CopyFrom(base)
  config.graph_options.rewrite_options.disable_meta_optimizer = True
  return config


def tensor_info_spec(info: Any, what: str) -> InputSpec:
  """The InputSpec of a dense TensorInfo proto; `what` names it in errors."""
  if info.WhichOneof('encoding') != 'name':
    raise ContractError(f'{what} is not a dense tensor', value=info.WhichOneof('encoding'),
                        fix='Predictor feeds and fetches dense tensors only; export the '
                        'signature with dense inputs and outputs')
  if info.tensor_shape.unknown_rank:
    shape = None
  else:
    shape = tuple(d.size if d.size >= 0 else None for d in info.tensor_shape.dim)
  return InputSpec(np.dtype(tf.as_dtype(info.dtype).as_numpy_dtype), shape)


def signature_input_specs(signature_def: Any, signature_name: str) -> Dict[str, InputSpec]:
  """Input key -> InputSpec for every input of a SignatureDef proto."""
  return {key: tensor_info_spec(info, f'input {key!r} of signature {signature_name!r}')
          for key, info in sorted(signature_def.inputs.items())}


class _Loaded(GraphRunner):
  """One loaded SavedModel: graph, session, MetaGraph, callables and predictors.

  Shared by every Predictor made from the same load (see for_signature).
  """

  def __init__(self, export_dir: str, graph: tf.Graph, session: tf.compat.v1.Session,
               meta_graph: Any):
    super().__init__(graph, session)
    self.export_dir = export_dir
    self.meta_graph = meta_graph
    self._predictors: Dict[str, 'Predictor'] = {}

  def predictor(self, signature_name: str) -> 'Predictor':
    """The one Predictor of this load for a signature (made on first use)."""
    with self._lock:
      if signature_name not in self._predictors:
        self._predictors[signature_name] = Predictor(self, signature_name)
      return self._predictors[signature_name]

  def closed_error(self) -> ExportError:
    return ExportError('the predictor is closed', value=self.export_dir,
                       fix='create a new one with Predictor.from_saved_model')


class Predictor:
  """Runs one signature of a loaded SavedModel; call it with a dict of inputs.

  Make it with `Predictor.from_saved_model`; `for_signature` gives predictors
  for other signatures that share the same graph and session.
  """

  def __init__(self, loaded: _Loaded, signature_name: str):
    """Private: use Predictor.from_saved_model or for_signature.

    Raises:
      SignatureError: the MetaGraph has no such signature.
      ContractError: the signature names a non-dense tensor, or a tensor whose
        dtype is not the declared one.
    """
    signature_defs = loaded.meta_graph.signature_def
    if signature_name not in signature_defs:
      raise SignatureError('no such signature in the SavedModel', value=signature_name,
                           fix=f'use one of {sorted(signature_defs)}.'
                           + did_you_mean(signature_name, signature_defs))
    self._loaded = loaded
    self._signature_name = signature_name
    self._signature_def = signature_defs[signature_name]
    inputs, outputs = self._signature_def.inputs, self._signature_def.outputs
    specs = signature_input_specs(self._signature_def, signature_name)
    self._run = SignatureRunner(
        loaded, signature_name,
        {k: (self._signature_tensor('input', k, inputs[k]), spec) for k, spec in specs.items()},
        {k: self._signature_tensor('output', k, outputs[k]) for k in outputs},
        input_what={k: f'input {k!r} of signature {signature_name!r}' for k in specs},
        unknown_output=f'no such output in signature {signature_name!r}')

  @classmethod
  def from_saved_model(cls, export_dir: str, signature_name: str = DEFAULT_SIGNATURE,
                       tags: Union[str, Sequence[str]] = (tf.saved_model.SERVING,),
                       config: Optional[tf.compat.v1.ConfigProto] = None,
                       mixed_precision: Optional[str] = None) -> 'Predictor':
    """Loads a SavedModel once and returns a predictor for one of its signatures.

    Args:
      export_dir: a SavedModel version directory (holding saved_model.pb).
      signature_name: the signature to run; others via for_signature.
      tags: the tag set of the MetaGraph to load.
      config: an optional tf.compat.v1.ConfigProto for the session.
      mixed_precision: 'bfloat16' runs it as TF Serving's --mixed_precision=bfloat16
        does (estimator_export.precision); None: float32.

    Raises:
      ContractError: export_dir is not a SavedModel, or has no MetaGraph with
        these tags.
      SignatureError: the MetaGraph has no such signature.
    """
    export_dir = os.fspath(export_dir)
    check_saved_model_dir(export_dir)
    tags = as_names(tags)
    config = precision.session_config(mixed_precision, config)
    graph = tf.Graph()
    session = tf.compat.v1.Session(graph=graph, config=config)
    try:
      with graph.as_default():
        meta_graph = _load(session, tags, export_dir)
      graph.finalize()
      return _Loaded(export_dir, graph, session, meta_graph).predictor(signature_name)
    except BaseException:
      session.close()
      raise

  # ----- properties -----

  @property
  def signature_name(self) -> str:
    return self._signature_name

  @property
  def signature_def(self) -> Any:
    """The SignatureDef proto this predictor runs."""
    return self._signature_def

  @property
  def signatures(self) -> Dict[str, Any]:
    """Signature name -> SignatureDef proto, for every signature of the MetaGraph."""
    return dict(self._loaded.meta_graph.signature_def)

  @property
  def input_keys(self) -> Tuple[str, ...]:
    return self._run.input_keys

  @property
  def output_keys(self) -> Tuple[str, ...]:
    return self._run.output_keys

  @property
  def input_specs(self) -> Dict[str, Tuple[np.dtype, Shape]]:
    """Input key -> (numpy dtype, shape tuple with None dims, or None if rank unknown)."""
    return {k: spec.as_tuple() for k, spec in self._run.input_specs.items()}

  @property
  def graph(self) -> tf.Graph:
    return self._loaded.graph

  @property
  def session(self) -> tf.compat.v1.Session:
    return self._loaded.session

  @property
  def export_dir(self) -> str:
    return self._loaded.export_dir

  # ----- running -----

  def __call__(self, inputs: Optional[Mapping[str, Any]] = None, *,
               outputs: Optional[Union[str, Sequence[str]]] = None,
               **kwargs: Any) -> Dict[str, np.ndarray]:
    """Runs the signature.

    Args:
      inputs: input key -> array-like, for every input of the signature.
        A non-mapping is taken as the value of an input called 'inputs'
        (the usual key of Classify/Regress signatures).
      outputs: output keys to fetch (TF Serving's output_filter); all if None.
      **kwargs: more inputs by key.

    Returns:
      Output key -> numpy array (object arrays of bytes for strings).

    Raises:
      SignatureError: missing or unknown input or output keys, or a value that
        does not match its input's dtype or shape. Nothing has run.
    """
    self._loaded.check_open()
    return self._run(self._merge_inputs(inputs, kwargs), outputs)

  def run_tensors(self, feeds: Mapping[str, Any],
                  fetches: Union[str, Sequence[str]]) -> List[np.ndarray]:
    """Runs the graph by raw tensor names, e.g. run_tensors({'x:0': [[1.]]}, ['y:0']).

    Values are converted to each fed tensor's dtype and checked against its
    static shape. Returns one numpy array per fetch, in order.
    """
    return self._loaded.run_tensors(feeds, fetches)

  def for_signature(self, signature_name: str) -> 'Predictor':
    """The predictor for another signature, sharing this graph and session.

    Each signature gets one Predictor per load; asking again returns it.
    """
    return self._loaded.predictor(signature_name)

  # ----- lifetime -----

  def close(self):
    """Closes the session shared by every predictor of this load."""
    self._loaded.close()

  @property
  def closed(self) -> bool:
    return self._loaded.closed

  def __enter__(self) -> 'Predictor':
    return self

  def __exit__(self, *exc_info):
    self.close()

  def __repr__(self) -> str:
    state = ', closed' if self.closed else ''
    return (f'Predictor({self.export_dir!r}, signature={self._signature_name!r}, '
            f'method={self._signature_def.method_name!r}, inputs={list(self.input_keys)}, '
            f'outputs={list(self.output_keys)}{state})')

  # ----- helpers -----

  def _signature_tensor(self, kind: str, key: str, info: Any) -> tf.Tensor:
    """The graph tensor of a dense TensorInfo; its dtype must be the declared one."""
    what = f'{kind} {key!r} of signature {self._signature_name!r}'
    tensor_info_spec(info, what)  # Raises unless dense.
    tensor = self._loaded.tensor(info.name)
    if tensor.dtype != tf.as_dtype(info.dtype):
      raise ContractError(f'{what} declares {tf.as_dtype(info.dtype).name} but its tensor '
                          f'{info.name!r} is {tensor.dtype.name}', value=info.name,
                          fix='re-export the model so the signature matches the graph')
    return tensor

  def _merge_inputs(self, inputs: Any, kwargs: Mapping[str, Any]) -> Dict[str, Any]:
    if inputs is None:
      return dict(kwargs)
    if not isinstance(inputs, Mapping):
      if 'inputs' not in self._run.input_keys:
        raise SignatureError('inputs must be a dict keyed by input name',
                             value=type(inputs).__name__,
                             fix=f'pass {{key: value}} for the keys {list(self.input_keys)}')
      inputs = {'inputs': inputs}
    both = sorted(set(inputs) & set(kwargs))
    if both:
      raise SignatureError('inputs given both in the dict and as keywords', value=both,
                           fix='pass each input once')
    return {**inputs, **kwargs}



def _load(session: tf.compat.v1.Session, tags: List[str], export_dir: str) -> Any:
  """tf.compat.v1 loader: restores variables and runs the main_op / init op."""
  register_serving_op_libraries()
  try:
    return tf.compat.v1.saved_model.loader.load(session, tags, export_dir)
  except RuntimeError as e:  # The loader's "MetaGraphDef associated with tags ...".
    raise ContractError(f'SavedModel {export_dir!r} has no MetaGraph with these tags',
                        value=tags, fix='pass the tags of one of its MetaGraphs '
                        f'(saved_model_cli show --dir {export_dir}); loader said: {e}') from e

