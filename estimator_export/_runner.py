"""Running a graph in its own session: feeds checked, callables made once, tensors by name.

Private; shared by `predictor.Predictor` (a loaded SavedModel),
`freeze.FrozenPredictor` (an imported frozen .pb) and the embedded server's
`serving.servable.Servable` (which makes its callables its own way). Each owns a tf.Graph and a
tf.compat.v1.Session over it (a `GraphRunner`) and run named inputs to named
outputs through it (a `SignatureRunner`: a SignatureDef's keys, or a frozen
graph manifest's aliases).

A call checks the input keys, converts every value to its tensor's dtype and
checks it against the static shape before anything runs; then it runs a
callable made once per (feeds, fetches) with `Session.make_callable`.
`Session.run` and its callables are thread safe; the only shared mutable state,
the cache of callables, is guarded by a lock.
"""
import dataclasses
import threading
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from estimator_export.errors import EstimatorExportError, ExportError, SignatureError, did_you_mean

# A static shape: None for unknown rank, else a tuple with None for unknown dims.
Shape = Optional[Tuple[Optional[int], ...]]


@dataclasses.dataclass(frozen=True)
class InputSpec:
  """What a fed tensor accepts: numpy dtype (object for strings) and static shape."""
  dtype: np.dtype
  shape: Shape

  def as_tuple(self) -> Tuple[np.dtype, Shape]:
    return self.dtype, self.shape


def static_spec(tensor: tf.Tensor) -> InputSpec:
  """The InputSpec of a graph tensor: its dtype and static shape."""
  shape = tensor.shape
  dims = None if shape.rank is None else tuple(shape.as_list())
  return InputSpec(np.dtype(tensor.dtype.as_numpy_dtype), dims)


def as_names(names: Union[str, Sequence[str]]) -> List[str]:
  """'a' -> ['a']; a sequence of names -> a list of them."""
  return [names] if isinstance(names, str) else list(names)


def check_input_keys(signature_name: str, expected: Sequence[str], given: Iterable[str]):
  """Raises SignatureError unless `given` holds exactly the `expected` input keys."""
  given = set(given)
  unknown = sorted(given.difference(expected))
  if unknown:
    raise SignatureError(f'unknown input key for signature {signature_name!r}',
                         value=unknown[0], fix=f'the inputs are {sorted(expected)}.'
                         + did_you_mean(unknown[0], expected))
  missing = sorted(set(expected) - given)
  if missing:
    raise SignatureError(f'missing input(s) for signature {signature_name!r}', value=missing,
                         fix=f'pass every input: {sorted(expected)}')


def to_feed_array(value: Any, spec: InputSpec, what: str) -> np.ndarray:
  """Converts an array-like to spec.dtype and checks it against spec.shape.

  Args:
    value: a numpy array, (nested) list, python scalar, or bytes/str for strings.
    spec: the dtype and static shape the tensor accepts.
    what: names the input in errors, e.g. "input 'x' of signature 'serving_default'".

  Returns:
    A numpy array of dtype spec.dtype (an object array of bytes for strings).

  Raises:
    SignatureError: the value cannot be converted without loss, or its shape
      does not match spec.shape.
  """
  if spec.dtype == np.dtype(object):
    array = _as_bytes_array(value, what)
  else:
    array = _as_numeric_array(value, spec.dtype, what)
  _check_shape(array.shape, spec.shape, what)
  return array


def _as_bytes_array(value: Any, what: str) -> np.ndarray:
  array = np.array(value, dtype=object)
  flat = array.reshape(-1)
  for i, item in enumerate(flat):
    if isinstance(item, str):
      flat[i] = item.encode('utf-8')
    elif isinstance(item, bytes):  # Includes np.bytes_.
      flat[i] = bytes(item)
    else:
      raise SignatureError(f'{what} is a string tensor; element {i} is not bytes or str',
                           value=type(item).__name__,
                           fix='feed bytes (e.g. serialized tf.Examples) or str values')
  return array


def _as_numeric_array(value: Any, dtype: np.dtype, what: str) -> np.ndarray:
  try:
    source = np.asarray(value)
  except ValueError as e:  # Ragged nested lists.
    raise SignatureError(f'{what} is not a rectangular array', value=str(e),
                         fix='feed lists of equal lengths or a numpy array') from e
  if source.dtype == dtype:
    return source
  if source.dtype.kind not in 'biuf':
    raise SignatureError(f'{what} expects {dtype.name} values', value=source.dtype.name,
                         fix=f'feed numbers convertible to {dtype.name}')
  array = source.astype(dtype)
  if dtype.kind in 'biu' and not np.array_equal(array, source):
    raise SignatureError(f'{what} expects {dtype.name} values; converting would change them',
                         value=source.reshape(-1)[:5].tolist(),
                         fix=f'feed whole numbers in the range of {dtype.name}')
  return array


def _check_shape(got: Tuple[int, ...], expected: Shape, what: str):
  if expected is None:
    return
  if len(got) == len(expected) and all(e is None or e == g for g, e in zip(got, expected)):
    return
  wanted = ', '.join('-1' if d is None else str(d) for d in expected)
  raise SignatureError(f'{what} expects shape {expected} (None: any size)', value=got,
                       fix=f'feed an array of rank {len(expected)} and shape [{wanted}]')


class GraphRunner:
  """A graph and the session over it: tensors by name, cached callables, closing.

  Subclasses name what they run in errors (GRAPH, TENSOR_FORM) and say how to
  get a new one once closed (closed_error).
  """
  GRAPH = 'the graph'
  TENSOR_FORM = "use a tensor name of the form '<op name>:<output index>'."

  def __init__(self, graph: tf.Graph, session: tf.compat.v1.Session):
    self.graph = graph
    self.session = session
    self.closed = False
    # Reentrant: a subclass may build runners for signatures while holding it.
    self._lock = threading.RLock()
    self._callables: Dict[Tuple[Tuple[str, ...], Tuple[str, ...]], Callable[..., Any]] = {}

  def closed_error(self) -> EstimatorExportError:
    """The error a call on a closed runner raises."""
    return ExportError('the session is closed', value=None, fix='load the model again')

  def check_open(self):
    if self.closed:
      raise self.closed_error()

  def tensor(self, name: str) -> tf.Tensor:
    """The graph tensor called `name` ('op:0'); SignatureError naming close ops."""
    try:
      return self.graph.get_tensor_by_name(name)
    except (KeyError, ValueError) as e:
      ops = [op.name for op in self.graph.get_operations()]
      raise SignatureError(f'no such tensor in {self.GRAPH}', value=name,
                           fix=self.TENSOR_FORM + did_you_mean(name.split(':', 1)[0], ops)
                           ) from e

  def callable_for(self, feeds: Sequence[tf.Tensor], fetches: Sequence[tf.Tensor]
                  ) -> Callable[..., List[np.ndarray]]:
    """A cached callable: positional feed values in `feeds` order -> fetched arrays."""
    return self.callable_for_names(tuple(t.name for t in feeds), tuple(t.name for t in fetches))

  def callable_for_names(self, feed_names: Tuple[str, ...], fetch_names: Tuple[str, ...]
                        ) -> Callable[..., List[np.ndarray]]:
    """`callable_for` by tensor names: a cache hit looks up no tensor (the hot path)."""
    key = (feed_names, fetch_names)
    fn = self._callables.get(key)  # Lock-free once made: dict reads are atomic.
    if fn is None:
      with self._lock:
        fn = self._callables.get(key)
        if fn is None:
          fn = self.make_callable([self.tensor(n) for n in feed_names],
                                  [self.tensor(n) for n in fetch_names])
          self._callables[key] = fn
    return fn

  def make_callable(self, feeds: Sequence[tf.Tensor], fetches: Sequence[tf.Tensor]
                   ) -> Callable[..., List[np.ndarray]]:
    """Builds the callable `callable_for` caches; a subclass may take another session path."""
    return self.session.make_callable(list(fetches), feed_list=list(feeds))

  def run_tensors(self, feeds: Mapping[str, Any],
                  fetches: Union[str, Sequence[str]]) -> List[np.ndarray]:
    """Runs by tensor names: values converted to each fed tensor's dtype, shapes checked."""
    self.check_open()
    feed_tensors = [self.tensor(name) for name in feeds]
    fetch_tensors = [self.tensor(name) for name in as_names(fetches)]
    values = [to_feed_array(value, static_spec(t), f'tensor {t.name!r}')
              for t, value in zip(feed_tensors, feeds.values())]
    return self.callable_for(feed_tensors, fetch_tensors)(*values)

  def close(self):
    if not self.closed:
      self.closed = True
      self.session.close()


class SignatureRunner:
  """Runs keyed inputs to keyed outputs of a GraphRunner (a signature or a manifest).

  Args:
    runner: the graph and session.
    name: the signature's name, as errors give it.
    inputs: input key -> (fed tensor, the InputSpec its values are checked against).
    outputs: output key -> fetched tensor.
    input_what: input key -> how errors name that input.
    unknown_output: the message of the error for an output key that does not exist.
  """

  def __init__(self, runner: GraphRunner, name: str,
               inputs: Mapping[str, Tuple[tf.Tensor, InputSpec]],
               outputs: Mapping[str, tf.Tensor], input_what: Mapping[str, str],
               unknown_output: str):
    self._runner = runner
    self._name = name
    self.input_keys = tuple(sorted(inputs))
    self.output_keys = tuple(sorted(outputs))
    self.input_specs = {k: inputs[k][1] for k in self.input_keys}
    self._input_key_set = frozenset(self.input_keys)
    self._feeds = tuple(inputs[k][0] for k in self.input_keys)
    self._outputs = dict(outputs)
    self._input_what = {k: input_what[k] for k in self.input_keys}
    self._unknown_output = unknown_output
    # The callable of a call without `outputs`, made now when there are outputs to fetch.
    self._run_all: Optional[Tuple[Tuple[str, ...], Callable[..., List[np.ndarray]]]] = (
        self.fetcher(self.output_keys) if self.output_keys else None)

  def __call__(self, feeds: Mapping[str, Any],
               outputs: Optional[Union[str, Sequence[str]]] = None) -> Dict[str, np.ndarray]:
    """Checks the inputs (keys, dtypes, shapes), then runs; output key -> numpy array."""
    self._runner.check_open()
    if feeds.keys() != self._input_key_set:
      check_input_keys(self._name, self.input_keys, feeds)
    values = [to_feed_array(feeds[k], self.input_specs[k], self._input_what[k])
              for k in self.input_keys]
    if outputs is not None:
      keys, run = self.fetcher(as_names(outputs))
    else:
      if self._run_all is None:
        self._run_all = self.fetcher(self.output_keys)
      keys, run = self._run_all
    return dict(zip(keys, run(*values)))

  def fetcher(self, output_keys: Sequence[str]
             ) -> Tuple[Tuple[str, ...], Callable[..., List[np.ndarray]]]:
    """(output keys, callable) fetching those outputs; one fetch per distinct tensor."""
    for key in output_keys:
      if key not in self._outputs:
        raise SignatureError(self._unknown_output, value=key,
                             fix=f'use some of {list(self.output_keys)}.'
                             + did_you_mean(key, self.output_keys))
    keys = tuple(output_keys)
    tensors = [self._outputs[k] for k in keys]
    distinct = list(dict.fromkeys(tensors))  # Two outputs may name one tensor.
    fetch = self._runner.callable_for(self._feeds, distinct)
    if len(distinct) == len(tensors):
      return keys, fetch
    index = [distinct.index(t) for t in tensors]

    def run(*values):
      fetched = fetch(*values)
      return [fetched[i] for i in index]

    return keys, run
