"""TF Serving warmup requests: `assets.extra/tf_serving_warmup_requests`.

The file is a TFRecord of serialized `PredictionLog` protos. TF Serving replays
them when it loads a version, so the first real request does not pay for lazy
initialisation. Its rules (TF Serving 2.15): only regress_log, classify_log,
predict_log and multi_inference_log records; at most 1000 records; a record
that does not parse fails the load. This module writes, reads and replays the
file under the same rules::

    log = request_log_for_signature('serving_default', signature_def, {'x': [[1.0]]})
    path = write_warmup_requests(version_dir, [log])
    with Predictor.from_saved_model(version_dir) as predictor:
      replay_warmup(predictor, read_warmup_requests(version_dir))   # 1

A file that breaks these rules raises `ValidationError`; a request that does
not fit its signature raises `SignatureError`.
"""
import os
from typing import (Any, Callable, Dict, Iterable, List, Mapping, NamedTuple, Optional, Sequence,
                    Tuple)

import numpy as np
import tensorflow as tf
from google.protobuf import message as message_lib
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2

from estimator_export import _saved_model as saved_model_lib
from estimator_export import predictor as predictor_lib
from estimator_export.errors import ContractError, ExportError, SignatureError, ValidationError

__all__ = ['ALLOWED_LOG_TYPES', 'MAX_WARMUP_RECORDS', 'WARMUP_FILENAME', 'WarmupCall',
           'read_warmup_requests', 'replay', 'replay_warmup', 'request_log_for_signature',
           'warmup_path', 'warmup_requests', 'write_warmup_requests']

WARMUP_FILENAME = 'tf_serving_warmup_requests'
MAX_WARMUP_RECORDS = 1000
ASSETS_EXTRA = 'assets.extra'
# PredictionLog.log_type values TF Serving accepts in a warmup file.
ALLOWED_LOG_TYPES = ('regress_log', 'classify_log', 'predict_log', 'multi_inference_log')

_PREDICT = saved_model_lib.PREDICT_METHOD
_CLASSIFY = saved_model_lib.CLASSIFY_METHOD
_REGRESS = saved_model_lib.REGRESS_METHOD

PredictionLog = prediction_log_pb2.PredictionLog


def warmup_path(path_or_export_dir: str) -> str:
  """The warmup file of a SavedModel version directory, or the given file path.

  A SavedModel directory maps to <dir>/assets.extra/tf_serving_warmup_requests,
  an `assets.extra` directory to the file inside it; anything that is not a
  directory is taken as the file path itself.

  Raises:
    ContractError: a directory that is neither a SavedModel nor assets.extra.
  """
  path = os.fspath(path_or_export_dir)
  if not tf.io.gfile.isdir(path):
    return path
  if os.path.basename(os.path.normpath(path)) == ASSETS_EXTRA:
    return os.path.join(path, WARMUP_FILENAME)
  saved_model_lib.check_saved_model_dir(path)
  return os.path.join(path, ASSETS_EXTRA, WARMUP_FILENAME)


# ----- building requests -----

def request_log_for_signature(signature_name: str, signature_def: Any,
                              inputs: Mapping[str, Any],
                              model_name: str = 'default') -> PredictionLog:
  """A PredictionLog holding one request for a signature, chosen by its method.

  Args:
    signature_name: the signature the request names (model_spec.signature_name).
    signature_def: its SignatureDef proto.
    inputs: for Predict signatures, input key -> array-like of the signature's
      dtype and shape. For Classify/Regress signatures, {the single string
      input key: [serialized tf.Example bytes (or tf.train.Example), ...]}.
    model_name: model_spec.name.

  Returns:
    A PredictionLog with predict_log, classify_log or regress_log set.

  Raises:
    SignatureError: an unsupported method name, or inputs that do not fit the
      signature.
  """
  method = signature_def.method_name
  log = PredictionLog()
  if method == _PREDICT:
    request = log.predict_log.request
    _fill_predict_inputs(request, signature_name, signature_def, inputs)
  elif method in (_CLASSIFY, _REGRESS):
    request = (log.classify_log if method == _CLASSIFY else log.regress_log).request
    examples = _example_inputs(signature_name, signature_def, inputs)
    request.input.example_list.examples.extend(examples)
  else:
    raise SignatureError(f'signature {signature_name!r} has a method TF Serving cannot warm up',
                         value=method, fix=f'warm up signatures with method {_PREDICT!r}, '
                         f'{_CLASSIFY!r} or {_REGRESS!r}')
  request.model_spec.name = model_name
  request.model_spec.signature_name = signature_name
  return log


def _fill_predict_inputs(request: predict_pb2.PredictRequest, signature_name: str,
                         signature_def: Any, inputs: Mapping[str, Any]):
  specs = predictor_lib.signature_input_specs(signature_def, signature_name)
  predictor_lib.check_input_keys(signature_name, list(specs), inputs)
  for key, spec in specs.items():
    array = predictor_lib.to_feed_array(inputs[key], spec,
                                        f'input {key!r} of signature {signature_name!r}')
    proto = tf.make_tensor_proto(array, dtype=signature_def.inputs[key].dtype)
    request.inputs[key].CopyFrom(proto)


def _example_inputs(signature_name: str, signature_def: Any,
                    inputs: Mapping[str, Any]) -> List[tf.train.Example]:
  """The tf.train.Examples given as the signature's single string input."""
  key = _single_string_input(signature_name, signature_def)
  predictor_lib.check_input_keys(signature_name, [key], inputs)
  values = inputs[key]
  if isinstance(values, (bytes, str, tf.train.Example)):
    values = [values]
  # dtype=object: a bytes ('S') array would drop the trailing NULs of a serialized Example.
  flat = np.array(values, dtype=object).reshape(-1)
  examples = [_as_example(v, i, signature_name) for i, v in enumerate(flat)]
  if not examples:
    raise SignatureError(f'no examples for signature {signature_name!r}', value=[],
                         fix='pass at least one serialized tf.Example')
  return examples


def _single_string_input(signature_name: str, signature_def: Any) -> str:
  """The key of a Classify/Regress signature's one DT_STRING input."""
  keys = list(signature_def.inputs)
  if len(keys) != 1 or signature_def.inputs[keys[0]].dtype != tf.string.as_datatype_enum:
    types = {k: tf.as_dtype(v.dtype).name for k, v in signature_def.inputs.items()}
    raise SignatureError(f'{signature_def.method_name} signature {signature_name!r} needs '
                         'exactly one string input (serialized tf.Examples)', value=types,
                         fix='export it on a serialized-Example receiver, or warm it up '
                         'as a predict signature')
  return keys[0]


def _as_example(value: Any, index: int, signature_name: str) -> tf.train.Example:
  if isinstance(value, tf.train.Example):
    return value
  if isinstance(value, bytes):
    try:
      return tf.train.Example.FromString(value)
    except message_lib.DecodeError as e:
      raise SignatureError(f'example {index} for signature {signature_name!r} is not a '
                           'serialized tf.Example', value=value[:40],
                           fix='pass tf.train.Example(...).SerializeToString()') from e
  raise SignatureError(f'example {index} for signature {signature_name!r} is not bytes',
                       value=type(value).__name__, fix='pass serialized tf.Example bytes')


# ----- the file -----

def write_warmup_requests(path_or_export_dir: str, logs: Iterable[PredictionLog]) -> str:
  """Writes logs as TF Serving's warmup file and returns its path.

  Args:
    path_or_export_dir: a SavedModel version directory (the file goes to
      <dir>/assets.extra/tf_serving_warmup_requests) or a file path.
    logs: 1 to MAX_WARMUP_RECORDS PredictionLogs of an allowed log type.

  Raises:
    ValidationError: no logs, too many, or a log TF Serving would refuse;
      nothing is written then.
  """
  logs = list(logs)
  path = warmup_path(path_or_export_dir)
  if not logs:
    raise ValidationError('no warmup requests to write', value=path,
                          fix='pass at least one PredictionLog, or skip the warmup file')
  if len(logs) > MAX_WARMUP_RECORDS:
    raise ValidationError(f'TF Serving loads at most {MAX_WARMUP_RECORDS} warmup records',
                          value=len(logs), fix='lower the number of warmup samples (e.g. '
                          'fewer records per signature)')
  for index, log in enumerate(logs):
    _check_log_type(log, index, path)
  tf.io.gfile.makedirs(os.path.dirname(path) or '.')
  staging = path + '.tmp'
  with tf.io.TFRecordWriter(staging) as writer:
    for log in logs:
      writer.write(log.SerializeToString())
  tf.io.gfile.rename(staging, path, overwrite=True)
  return path


def read_warmup_requests(path_or_export_dir: str) -> List[PredictionLog]:
  """Reads a warmup file (or a SavedModel's) as TF Serving would.

  Raises:
    ContractError: there is no warmup file.
    ValidationError: more than MAX_WARMUP_RECORDS records, a record that is
      corrupt or does not parse, or a log type TF Serving refuses.
  """
  path = warmup_path(path_or_export_dir)
  if not tf.io.gfile.exists(path):
    raise ContractError('no warmup file', value=path,
                        fix='write one with write_warmup_requests')
  logs = []
  for index, record in _records(path):
    if index >= MAX_WARMUP_RECORDS:
      raise ValidationError(f'Number of warmup records exceeds the maximum '
                            f'({MAX_WARMUP_RECORDS}) at {path}', value=index + 1,
                            fix='rewrite the file with fewer warmup samples')
    logs.append(_parse_record(record, index, path))
  return logs


def _records(path: str) -> Iterable[Any]:
  """(index, serialized record) pairs; ValidationError on a corrupt TFRecord frame."""
  index = 0
  records = iter(tf.compat.v1.io.tf_record_iterator(path))
  while True:
    try:
      record = next(records)
    except StopIteration:
      return
    except tf.errors.OpError as e:  # DataLossError: bad length or checksum.
      raise ValidationError(f'Failed to parse warmup record {index} of {path}: the TFRecord '
                            'is corrupt', value=e.message,
                            fix='rewrite the file with write_warmup_requests') from e
    yield index, record
    index += 1


def _parse_record(record: bytes, index: int, path: str) -> PredictionLog:
  try:
    log = PredictionLog.FromString(record)
  except message_lib.DecodeError as e:
    raise ValidationError(f'Failed to parse warmup record: {record[:64]!r} from {path}',
                          value=f'record {index} is not a PredictionLog',
                          fix='rewrite the file with write_warmup_requests') from e
  _check_log_type(log, index, path)
  return log


def _check_log_type(log: Any, index: int, where: str) -> str:
  """The log type of a PredictionLog; ValidationError unless TF Serving allows it."""
  kind = log.WhichOneof('log_type') if isinstance(log, PredictionLog) else type(log).__name__
  if kind not in ALLOWED_LOG_TYPES:
    raise ValidationError(f'warmup record {index} of {where} has a log type TF Serving '
                          'refuses', value=kind,
                          fix=f'use PredictionLogs with one of {list(ALLOWED_LOG_TYPES)} set')
  return kind


# ----- replay -----

class WarmupCall(NamedTuple):
  """One request of a warmup record, decoded once for every replayer.

  Attributes:
    index: the record's position in the file.
    kind: the record's log type, e.g. 'predict_log'.
    method: the method constant ('tensorflow/serving/predict', .../classify or
      .../regress; for a MultiInference task, the task's method_name).
    signature_name: as the request names it ('' means the default signature).
    inputs: Predict only: input alias -> numpy array.
    output_filter: Predict only: the requested output aliases.
    examples: Classify/Regress: the serialized tf.Examples (context merged in).
  """
  index: int
  kind: str
  method: str
  signature_name: str
  inputs: Optional[Mapping[str, np.ndarray]] = None
  output_filter: Sequence[str] = ()
  examples: Optional[np.ndarray] = None


def replay(logs: Iterable[PredictionLog], run: Callable[[WarmupCall], Any],
           iterations: int = 1) -> int:
  """Calls `run` for every request of every log, `iterations` times; returns the records run.

  The one replayer of warmup files: `replay_warmup` runs the calls on a
  Predictor, the embedded server on its InferenceService. A MultiInference
  record makes one call per task. Whatever `run` raises propagates.

  Raises:
    ValidationError: a log type TF Serving refuses in a warmup file.
  """
  logs = list(logs)
  count = 0
  for _ in range(max(1, iterations)):
    for index, log in enumerate(logs):
      for call in _calls_of(log, index, _check_log_type(log, index, 'the replayed logs')):
        run(call)
      count += 1
  return count


def replay_warmup(predictor: predictor_lib.Predictor, logs: Iterable[PredictionLog]) -> int:
  """Runs each warmup request against a Predictor; returns how many ran.

  Predict requests feed their TensorProtos (and honour output_filter);
  Classify/Regress requests feed their Examples, serialized, to the
  signature's single string input; a MultiInference request runs each task.

  Raises:
    ValidationError: a request failed (names its index and signature).
  """
  def run(call: WarmupCall):
    try:
      signature = predictor.for_signature(call.signature_name
                                          or saved_model_lib.DEFAULT_SIGNATURE)
      if call.method == _PREDICT:
        signature(dict(call.inputs), outputs=list(call.output_filter) or None)
      else:
        _run_examples(signature, call.examples, call.method)
    except Exception as e:  # TF runtime errors and ExportErrors alike: say which record.
      raise ValidationError(f'warmup record {call.index} ({call.kind}, signature '
                            f'{call.signature_name!r}) failed to replay', value=str(e)[:500],
                            fix='rebuild the warmup requests from the exported signatures'
                            ) from e

  return replay(logs, run)


def warmup_requests(predictor: predictor_lib.Predictor, logs: Iterable[PredictionLog]
                   ) -> List[Tuple[str, Dict[str, Any]]]:
  """(signature name, inputs) of each request `replay_warmup` would run, as far as it can
  tell without running them (for `_shared_runs.SharedRuns.prefetch`); others are left out."""
  requests: List[Tuple[str, Dict[str, Any]]] = []

  def add(call: WarmupCall):
    name = call.signature_name or saved_model_lib.DEFAULT_SIGNATURE
    if call.method == _PREDICT:
      requests.append((name, dict(call.inputs)))
      return
    try:
      signature_def = predictor.for_signature(name).signature_def
      requests.append((name, {_single_string_input(name, signature_def): call.examples}))
    except ExportError:
      pass  # replay_warmup says why.

  try:
    replay(logs, add)
  except ValidationError:
    pass  # A log type TF Serving refuses: replay_warmup says so.
  return requests


def _calls_of(log: PredictionLog, index: int, kind: str) -> List[WarmupCall]:
  """The request(s) of one log as WarmupCalls."""
  if kind == 'predict_log':
    request = log.predict_log.request
    inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
    return [WarmupCall(index, kind, _PREDICT, request.model_spec.signature_name,
                       inputs=inputs, output_filter=tuple(request.output_filter))]
  if kind in ('classify_log', 'regress_log'):
    request = getattr(log, kind).request
    method = _CLASSIFY if kind == 'classify_log' else _REGRESS
    return [WarmupCall(index, kind, method, request.model_spec.signature_name,
                       examples=_serialized_examples(request.input))]
  request = log.multi_inference_log.request  # The last allowed log type.
  serialized = _serialized_examples(request.input)
  return [WarmupCall(index, kind, task.method_name, task.model_spec.signature_name,
                     examples=serialized) for task in request.tasks]


def _serialized_examples(request_input: Any) -> np.ndarray:
  """Object array of serialized tf.Examples, context merged in (as TF Serving does)."""
  if request_input.WhichOneof('kind') == 'example_list_with_context':
    with_context = request_input.example_list_with_context
    examples = []
    for example in with_context.examples:
      merged = tf.train.Example()
      merged.CopyFrom(with_context.context)
      merged.MergeFrom(example)
      examples.append(merged)
  else:
    examples = request_input.example_list.examples
  return np.array([e.SerializeToString() for e in examples], dtype=object)


def _run_examples(predictor: predictor_lib.Predictor, serialized: np.ndarray, method: str):
  """Feeds examples to a Classify/Regress signature and checks TF Serving's output rules."""
  signature_def = predictor.signature_def
  if signature_def.method_name != method:
    raise SignatureError(f'signature {predictor.signature_name!r} is not a {method} signature',
                         value=signature_def.method_name,
                         fix=f'send {method} requests to a signature with that method')
  key = _single_string_input(predictor.signature_name, signature_def)
  outputs = predictor({key: serialized})
  n = len(serialized)
  for name, value in outputs.items():
    ok = value.shape[:1] == (n,)
    if method == _REGRESS:
      ok = ok and (value.ndim == 1 or value.shape[1:] == (1,))
    if not ok:
      raise SignatureError(f'output {name!r} of {method} signature '
                           f'{predictor.signature_name!r} has shape {value.shape} for {n} '
                           'example(s)', value=value.shape,
                           fix=f'TF Serving needs [{n}] or [{n}, 1] for Regress and a '
                           f'leading batch dimension of {n} for Classify')
