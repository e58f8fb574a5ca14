"""Example requests beside an export: `assets.extra/requests/`, ready to send as they are.

Per signature, built from the same PredictionLogs as the warmup file (so from the
validation samples), two files and one shared README.txt:

    <stem>.json    the REST body of POST /v1/models/<model>:predict (or :classify,
                   :regress), with "signature_name". Predict bodies use the row format
                   ("instances": one object per row) when every input shares dim 0, else
                   the columnar one ("inputs"); bytes are {"b64": ...}. Classify/Regress
                   bodies hold "examples" as feature dicts.
    <stem>.pbtxt   a PredictRequest, ClassificationRequest or RegressionRequest as a text
                   proto with model_spec name and signature_name; a `# proto-message:`
                   header names the type. `estimator-export query --request_file` sends it
                   over gRPC (or REST) by its type.
    README.txt     a curl line and a query line per signature.

<stem> is the signature name with every character outside [A-Za-z0-9._-] made '_'
('examples:classify' -> 'examples_classify'); the manifest maps signature -> files::

    files = write_example_requests(version_dir, logs)   # {'serving_default': {...}, ...}
    request = read_request_file(version_dir + '/assets.extra/requests/serving_default.pbtxt')
"""
import json
import os
import re
import urllib.parse
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import regression_pb2

from estimator_export import _saved_model as saved_model_lib
from estimator_export.client import _convert
from estimator_export.errors import ClientInputError, ValidationError

__all__ = ['REQUESTS_DIR', 'README_NAME', 'REQUEST_TYPES', 'examples_of', 'read_request_file',
           'request_text', 'rest_body', 'write_example_requests']

REQUESTS_DIR = 'requests'
README_NAME = 'README.txt'
REST_PORT, GRPC_PORT = 8501, 8500  # TF Serving's usual ports (its flags have no defaults).

# Message type -> (the REST verb / gRPC method, the .proto that defines it).
REQUEST_TYPES = {
    predict_pb2.PredictRequest: ('predict', 'tensorflow_serving/apis/predict.proto'),
    classification_pb2.ClassificationRequest: (
        'classify', 'tensorflow_serving/apis/classification.proto'),
    regression_pb2.RegressionRequest: ('regress', 'tensorflow_serving/apis/regression.proto'),
    inference_pb2.MultiInferenceRequest: (
        'multi_inference', 'tensorflow_serving/apis/inference.proto'),
}
_BY_NAME = {cls.DESCRIPTOR.full_name: cls for cls in REQUEST_TYPES}
_HEADER = re.compile(r'^\s*#\s*proto-message:\s*(\S+)', re.MULTILINE)
_UNSAFE = re.compile(r'[^A-Za-z0-9._-]')

# dtype -> the TensorProto field that holds its values one by one (text-proto readable).
_VALUE_FIELDS = {
    tf.float32: 'float_val', tf.float64: 'double_val', tf.int32: 'int_val',
    tf.int16: 'int_val', tf.int8: 'int_val', tf.uint8: 'int_val', tf.uint16: 'int_val',
    tf.int64: 'int64_val', tf.bool: 'bool_val', tf.uint32: 'uint32_val',
    tf.uint64: 'uint64_val',
}


def _request_of(log: prediction_log_pb2.PredictionLog) -> Any:
  """The request a warmup PredictionLog holds (Predict, Classification or Regression)."""
  kind = log.WhichOneof('log_type')
  if kind not in ('predict_log', 'classify_log', 'regress_log'):
    raise ValidationError('an example request must be a predict, classify or regress log',
                          value=kind, fix='build it with warmup.request_log_for_signature')
  return getattr(log, kind).request


# ----- REST JSON -----

def examples_of(request_input: Any) -> Tuple[List[tf.train.Example], Optional[Any]]:
  """(examples, context or None) of a tensorflow.serving.Input."""
  if request_input.WhichOneof('kind') == 'example_list_with_context':
    with_context = request_input.example_list_with_context
    return list(with_context.examples), with_context.context
  return list(request_input.example_list.examples), None


def rest_body(request: Any) -> Dict[str, Any]:
  """The REST JSON body of a Predict, Classification or Regression request.

  Predict: {"signature_name", "instances": [{alias: value}, ...]} when every input
  has rank >= 1 and the same dim 0, else {"signature_name", "inputs": {alias: value}};
  DT_STRING values as {"b64": ...}. Classify/Regress: {"signature_name",
  "examples": [feature dict, ...]} (and "context").
  """
  name = request.model_spec.signature_name or saved_model_lib.DEFAULT_SIGNATURE
  if not isinstance(request, predict_pb2.PredictRequest):
    examples, context = examples_of(request.input)
    return _convert.examples_body(examples, name, context)
  arrays = {alias: tf.make_ndarray(request.inputs[alias]) for alias in sorted(request.inputs)}
  columns = {alias: _convert.jsonable(array) for alias, array in arrays.items()}
  rows = {array.shape[0] if array.ndim else None for array in arrays.values()}
  if len(rows) == 1 and None not in rows:
    count = rows.pop()
    return {'signature_name': name,
            'instances': [{alias: columns[alias][i] for alias in columns} for i in range(count)]}
  return {'signature_name': name, 'inputs': columns}


def _rest_path(request: Any) -> str:
  verb = REQUEST_TYPES[type(request)][0]
  return f'/v1/models/{urllib.parse.quote(request.model_spec.name, safe="")}:{verb}'


# ----- text proto -----

def _readable_tensor(proto: tensor_pb2.TensorProto) -> tensor_pb2.TensorProto:
  """The tensor with its values in typed fields (float_val, ...) instead of packed bytes."""
  field = _VALUE_FIELDS.get(tf.as_dtype(proto.dtype)) if proto.dtype else None
  if not proto.tensor_content or field is None:
    return proto
  readable = tensor_pb2.TensorProto(dtype=proto.dtype)
  readable.tensor_shape.CopyFrom(proto.tensor_shape)
  getattr(readable, field).extend(tf.make_ndarray(proto).ravel().tolist())
  return readable


def _readable_request(request: Any) -> Any:
  """A copy of the request whose Predict inputs hold their values in typed fields."""
  readable = type(request)()
  readable.CopyFrom(request)
  if isinstance(readable, predict_pb2.PredictRequest):
    for alias in readable.inputs:
      readable.inputs[alias].CopyFrom(_readable_tensor(readable.inputs[alias]))
  return readable


def _same(a: Any, b: Any) -> bool:
  """Equal requests, bit for bit (proto == would call NaN values different)."""
  return (type(a) is type(b) and
          _readable_request(a).SerializeToString(deterministic=True) ==
          _readable_request(b).SerializeToString(deterministic=True))


def request_text(request: Any) -> str:
  """The request as a text proto with `# proto-file:` and `# proto-message:` headers.

  Tensor values are written one by one (float_val: 1.0, ...) so the file can be edited.
  """
  readable = _readable_request(request)
  proto_file = REQUEST_TYPES[type(request)][1]
  return (f'# proto-file: {proto_file}\n'
          f'# proto-message: {request.DESCRIPTOR.full_name}\n'
          '# Send it: estimator-export query --request_file THIS_FILE [--server HOST:PORT]\n' +
          text_format.MessageToString(readable))


def read_request_file(path: str) -> Any:
  """Parses a request text proto: Predict, Classification, Regression or MultiInference.

  The type is the `# proto-message:` header's, or else the one type the text parses as.

  Raises:
    ClientInputError: the file cannot be read, names an unknown type, does not parse
      (the parser's line:column is given), or parses as several types and has no header.
  """
  try:
    with tf.io.gfile.GFile(path, 'rb') as f:
      data = f.read()
  except tf.errors.OpError as e:
    raise ClientInputError(f'cannot read the request file ({e.message.strip()})', value=path,
                           fix='give the path of a .pbtxt request, e.g. '
                           'VERSION_DIR/assets.extra/requests/serving_default.pbtxt') from None
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError:
    raise ClientInputError('the request file is not text (a text proto is UTF-8)', value=path,
                           fix='give a text-format request (.pbtxt), not a binary proto'
                           ) from None
  header = _HEADER.search(text)
  if header:
    cls = _BY_NAME.get(header.group(1))
    if cls is None:
      raise ClientInputError(f'request file {path!r} names a message type query cannot send',
                             value=header.group(1), fix=f'use one of {sorted(_BY_NAME)}')
    candidates = [cls]
  else:
    candidates = list(REQUEST_TYPES)
  parsed, errors = [], []
  for cls in candidates:
    try:
      parsed.append(text_format.Parse(text, cls()))
    except text_format.ParseError as e:
      errors.append(((e.GetLine() or 0, e.GetColumn() or 0), cls, e))
  if not parsed:  # Report the type the text went furthest as.
    _, cls, error = max(errors, key=lambda item: item[0])
    raise ClientInputError(f'request file {path!r} is not a {cls.DESCRIPTOR.name} text proto',
                           value=str(error)[:400],
                           fix='correct the line named; a request is a PredictRequest, '
                           'ClassificationRequest, RegressionRequest or MultiInferenceRequest '
                           "in text format (see an export's assets.extra/requests/*.pbtxt)")
  if len(parsed) > 1:
    raise ClientInputError(f'request file {path!r} parses as several request types',
                           value=[type(p).DESCRIPTOR.name for p in parsed],
                           fix='add a first line such as "# proto-message: '
                           'tensorflow.serving.PredictRequest"')
  return parsed[0]


# ----- the folder -----

def _stems(names: Iterable[str]) -> Dict[str, str]:
  """Signature name -> a file-name stem, unique even on case-insensitive file systems."""
  stems, taken = {}, set()
  for name in sorted(names):
    stem = _UNSAFE.sub('_', name).strip('.') or 'signature'
    candidate, n = stem, 1
    while candidate.lower() in taken:
      n += 1
      candidate = f'{stem}_{n}'
    taken.add(candidate.lower())
    stems[name] = candidate
  return stems


def _readme(entries: Mapping[str, Mapping[str, str]]) -> str:
  lines = ['Example requests for this export, one per signature, built from its validation',
           'samples. Send them as they are (run the commands in this folder; change the host,',
           'port or model name if your server differs). Bytes go as {"b64": "..."}; a plain',
           'JSON string also works for UTF-8 text.', '']
  for name, entry in sorted(entries.items()):
    lines += [f'{name}:',
              f"  curl -X POST -H 'Content-Type: application/json' -d @{entry['rest']} "
              f"http://localhost:{REST_PORT}{entry['rest_path']}",
              f"  estimator-export query --server localhost:{GRPC_PORT} "
              f"--request_file {entry['grpc']}", '']
  return '\n'.join(lines)


def write_example_requests(export_dir: str,
                           logs: Iterable[prediction_log_pb2.PredictionLog]
                           ) -> Dict[str, Dict[str, str]]:
  """Writes assets.extra/requests/ from the first log of each signature.

  Args:
    export_dir: the SavedModel version directory (any tf.io.gfile path).
    logs: PredictionLogs as warmup.request_log_for_signature builds them; the first
      one per signature is used.

  Returns:
    signature name -> {'rest': '<stem>.json', 'rest_path': '/v1/models/M:VERB',
    'grpc': '<stem>.pbtxt'}, paths relative to assets.extra/requests.

  Raises:
    ValidationError: a log is not a predict/classify/regress log, or a written text
      proto does not read back as the same request.
  """
  requests = {}
  for log in logs:
    request = _request_of(log)
    requests.setdefault(request.model_spec.signature_name, request)
  folder = os.path.join(export_dir, saved_model_lib.ASSETS_EXTRA, REQUESTS_DIR)
  tf.io.gfile.makedirs(folder)
  entries = {}
  for name, stem in _stems(requests).items():
    request = requests[name]
    text = request_text(request)
    grpc_path = os.path.join(folder, stem + '.pbtxt')
    with tf.io.gfile.GFile(grpc_path, 'w') as f:
      f.write(text)
    if not _same(read_request_file(grpc_path), request):  # What query sends is what we built.
      raise ValidationError(f'the example request of signature {name!r} does not read back',
                            value=grpc_path, fix='report this as a bug of estimator_export')
    with tf.io.gfile.GFile(os.path.join(folder, stem + '.json'), 'w') as f:
      f.write(json.dumps(rest_body(request)) + '\n')
    entries[name] = {'rest': stem + '.json', 'rest_path': _rest_path(request),
                     'grpc': stem + '.pbtxt'}
  with tf.io.gfile.GFile(os.path.join(folder, README_NAME), 'w') as f:
    f.write(_readme(entries))
  return entries
