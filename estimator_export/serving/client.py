"""Clients for TF Serving's gRPC and REST APIs (and this package's embedded server).

    with GrpcClient('127.0.0.1:8500') as client:
      client.predict('half_plus_two', {'x': [[1.0], [2.0]]})     # {'y': array([[2.5], [3.]])}
      client.classify('m', [{'x': 2.0}], signature_name='classify_x_to_y')  # [[('', 3.0)]]
    RestClient('http://127.0.0.1:8501').regress('m', [{'x': 80.0}], 'regress_x_to_y')

Both clients take numpy arrays, (nested) lists or scalars for Predict inputs,
and feature dicts, `tf.train.Example`s or serialized Examples for
Classify/Regress, and return numpy arrays and plain Python values. Every
failure, the server's and the connection's, raises `ServingClientError` with a
`grpc.StatusCode` and TF Serving's message. `add_query_arguments` and
`run_query` implement the `estimator-export query` command.
"""
import base64
import http.client
import json
import socket
import sys
import threading
import urllib.parse
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2
from tensorflow_serving.config import model_server_config_pb2

from estimator_export._saved_model import DEFAULT_SIGNATURE
from estimator_export.errors import EstimatorExportError

Code = grpc.StatusCode
INT32_MAX = 2**31 - 1
DEFAULT_GRPC_TARGET = '127.0.0.1:8500'
DEFAULT_REST_URL = 'http://127.0.0.1:8501'
CLASSIFY_METHOD = 'tensorflow/serving/classify'
REGRESS_METHOD = 'tensorflow/serving/regress'

Classifications = List[List[Tuple[str, float]]]

# HTTP status -> the closest gRPC code (TF Serving's REST mapping, inverted).
_CODE_FOR_HTTP = {
    400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND, 409: Code.ABORTED, 429: Code.RESOURCE_EXHAUSTED, 499: Code.CANCELLED,
    500: Code.INTERNAL, 501: Code.UNIMPLEMENTED, 503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}
# gRPC details that mean "no server there", not a server's own UNAVAILABLE.
_CONNECTION_FAILURES = ('failed to connect', 'connection refused', 'dns resolution',
                        'name resolution', 'socket closed', 'connection reset',
                        'no route to host', 'end of tcp stream', 'connect failed')


class ServingClientError(EstimatorExportError):
  """A failed request: the server's status, or a connection failure.

  Attributes:
    code: a grpc.StatusCode (for REST, the closest code to the HTTP status).
    message: TF Serving's message text (or the connection failure).
    http_status: the HTTP status for REST calls, else None.
  """

  def __init__(self, code: grpc.StatusCode, message: str, http_status: Optional[int] = None):
    super().__init__(f'{code.name}: {message}')
    self.code = code
    self.message = message
    self.http_status = http_status


def _not_reachable(target: str, detail: str, protocol: str) -> ServingClientError:
  return ServingClientError(
      Code.UNAVAILABLE,
      f'Cannot reach a model server at {target} over {protocol} ({detail}). Is one running? '
      'Start it with `estimator-export serve`, or check the host and port.')


def _both_version_and_label(version, label) -> ServingClientError:
  return ServingClientError(Code.INVALID_ARGUMENT,
                            f'Both model version ({version}) and model version label '
                            f'({label}) cannot be supplied.')


# ----- Python values -> protos -----

def _string_array(array: np.ndarray) -> np.ndarray:
  """str/bytes arrays -> object arrays of bytes (UTF-8 for str)."""
  flat = np.empty(array.size, dtype=object)
  for i, v in enumerate(array.ravel()):
    if isinstance(v, str):
      v = v.encode('utf-8')
    if not isinstance(v, bytes):
      raise TypeError(f'A string tensor holds only str or bytes; got {type(v).__name__}')
    flat[i] = v
  return flat.reshape(array.shape)


def to_ndarray(value: Any) -> np.ndarray:
  """Converts a Predict input to numpy: arrays keep their dtype; Python floats become float32."""
  if isinstance(value, tensor_pb2.TensorProto):
    return tf.make_ndarray(value)
  if isinstance(value, tf.Tensor):
    value = value.numpy()
  if isinstance(value, (np.ndarray, np.generic)):
    array = np.asarray(value)
    return _string_array(array) if array.dtype.kind in 'OSU' else array
  try:
    array = np.asarray(value)
  except ValueError as e:  # Ragged nested lists.
    raise ValueError(f'Cannot make a tensor from a ragged list: {e}') from e
  if array.dtype.kind == 'f':
    return array.astype(np.float32)
  if array.dtype.kind in 'iu':
    fits = array.size == 0 or (array.min() >= -2**31 and array.max() < 2**31)
    return array.astype(np.int32 if fits else np.int64)
  if array.dtype.kind in 'OSU':
    return _string_array(array)
  return array


def to_tensor_proto(value: Any) -> tensor_pb2.TensorProto:
  """A Predict input (array, list, scalar, tf.Tensor, TensorProto) -> TensorProto."""
  if isinstance(value, tensor_pb2.TensorProto):
    return value
  return tf.make_tensor_proto(to_ndarray(value))


def _feature(value: Any) -> tf.train.Feature:
  """One feature value or list -> float_list, int64_list or bytes_list."""
  if isinstance(value, tf.train.Feature):
    return value
  if isinstance(value, np.ndarray):
    items = value.ravel().tolist()
  elif isinstance(value, (list, tuple)):
    items = [v.item() if isinstance(v, np.generic) else v for v in value]
  else:
    items = [value.item() if isinstance(value, np.generic) else value]
  feature = tf.train.Feature()
  if not items:
    return feature
  if all(isinstance(v, (str, bytes)) for v in items):
    feature.bytes_list.value.extend(v.encode('utf-8') if isinstance(v, str) else v
                                    for v in items)
  elif all(isinstance(v, (bool, int)) for v in items):
    feature.int64_list.value.extend(int(v) for v in items)
  elif all(isinstance(v, (bool, int, float)) for v in items):
    feature.float_list.value.extend(float(v) for v in items)
  else:
    kinds = sorted({type(v).__name__ for v in items})
    raise TypeError(f'Feature values must be all numbers or all str/bytes; got {kinds}')
  return feature


def to_example(value: Any) -> tf.train.Example:
  """A feature dict, tf.train.Example or serialized Example -> tf.train.Example."""
  if isinstance(value, tf.train.Example):
    return value
  if isinstance(value, (bytes, bytearray)):
    return tf.train.Example.FromString(bytes(value))
  if isinstance(value, Mapping):
    example = tf.train.Example()
    for name, feature in value.items():
      example.features.feature[name].CopyFrom(_feature(feature))
    return example
  raise TypeError('An example must be a dict of features, a tf.train.Example or serialized '
                  f'bytes; got {type(value).__name__}')


def _fill_input(input_proto, examples: Iterable, context: Any = None):
  """Fills a tensorflow.serving.Input (example_list, or example_list_with_context)."""
  converted = [to_example(e) for e in examples]
  if context is None:
    input_proto.example_list.examples.extend(converted)
  else:
    input_proto.example_list_with_context.examples.extend(converted)
    input_proto.example_list_with_context.context.CopyFrom(to_example(context))


def _fill_spec(spec, model: str, signature_name: str = '', version: Optional[int] = None,
               version_label: Optional[str] = None):
  if version is not None and version_label:
    raise _both_version_and_label(version, version_label)
  spec.name = model
  if signature_name:
    spec.signature_name = signature_name
  if version is not None:
    spec.version.value = int(version)
  elif version_label:
    spec.version_label = version_label


def _classifications(result) -> Classifications:
  return [[(c.label, c.score) for c in entry.classes] for entry in result.classifications]


def _status_code(value: int) -> grpc.StatusCode:
  """tensorflow.error.Code (same numbers as gRPC's) -> grpc.StatusCode."""
  for code in Code:
    if code.value[0] == value:
      return code
  return Code.UNKNOWN


def _task_method(method: str) -> str:
  full = {'classify': CLASSIFY_METHOD, 'regress': REGRESS_METHOD}.get(method, method)
  if full not in (CLASSIFY_METHOD, REGRESS_METHOD):
    raise ValueError(f"A task's method must be 'classify' or 'regress'; got {method!r}")
  return full


def _policy_proto(policy, proto):
  """A Latest/All/Specific instance (or 'latest'/'all') -> ServableVersionPolicy."""
  kind = policy.lower() if isinstance(policy, str) else type(policy).__name__.lower()
  if kind == 'all':
    proto.all.SetInParent()
  elif kind == 'specific':
    proto.specific.versions.extend(sorted(int(v) for v in policy.versions))
  else:
    proto.latest.num_versions = int(getattr(policy, 'num_versions', 1) or 1)


def to_model_server_config(configs: Any) -> model_server_config_pb2.ModelServerConfig:
  """ModelServerConfig / ModelConfigList / text proto / list of configs -> ModelServerConfig.

  List items may be ModelConfig protos, dicts (name, base_path, model_platform,
  version_labels) or objects with name, base_path, version_policy (a
  Latest/All/Specific instance) and version_labels.
  """
  if isinstance(configs, model_server_config_pb2.ModelServerConfig):
    return configs
  server_config = model_server_config_pb2.ModelServerConfig()
  if isinstance(configs, str):
    return text_format.Parse(configs, server_config)
  if isinstance(configs, model_server_config_pb2.ModelConfigList):
    server_config.model_config_list.CopyFrom(configs)
    return server_config
  target = server_config.model_config_list
  target.SetInParent()
  for item in configs:
    entry = target.config.add()
    if isinstance(item, model_server_config_pb2.ModelConfig):
      entry.CopyFrom(item)
      continue
    get = item.get if isinstance(item, Mapping) else lambda k, d=None, o=item: getattr(o, k, d)
    entry.name = get('name')
    entry.base_path = get('base_path')
    entry.model_platform = get('model_platform', None) or 'tensorflow'
    policy = get('version_policy', None)
    if policy is not None:
      _policy_proto(policy, entry.model_version_policy)
    for label, version in (get('version_labels', None) or {}).items():
      entry.version_labels[label] = int(version)
  return server_config


# ----- gRPC -----

class GrpcClient:
  """TF Serving's gRPC API through the official stubs.

  Args:
    target: host:port of the server.
    timeout: seconds per call.
    max_message_bytes: the largest request/response (grpcio's default receive
      limit is 4 MB; TF Serving's server limit is INT32_MAX).
  """

  def __init__(self, target: str = DEFAULT_GRPC_TARGET, timeout: float = 10.0,
               max_message_bytes: int = INT32_MAX):
    self.target = target
    self.timeout = timeout
    self._channel = grpc.insecure_channel(target, options=[
        ('grpc.max_send_message_length', max_message_bytes),
        ('grpc.max_receive_message_length', max_message_bytes)])
    self._prediction = prediction_service_pb2_grpc.PredictionServiceStub(self._channel)
    self._models = model_service_pb2_grpc.ModelServiceStub(self._channel)
    self._single_inputs: Dict[tuple, str] = {}  # (model, version, label, signature) -> alias

  def close(self):
    self._channel.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def _call(self, method, request, timeout: Optional[float] = None):
    try:
      return method(request, timeout=timeout or self.timeout)
    except grpc.RpcError as e:
      code, details = e.code(), e.details() or ''
      if code == Code.UNAVAILABLE and any(s in details.lower() for s in _CONNECTION_FAILURES):
        raise _not_reachable(self.target, details, 'gRPC') from None
      raise ServingClientError(code, details) from None

  def predict(self, model: str, inputs: Any, signature_name: str = '',
              version: Optional[int] = None, version_label: Optional[str] = None,
              output_filter: Sequence[str] = ()) -> Dict[str, np.ndarray]:
    """Predict. `inputs`: alias -> value; a bare value for a single-input signature."""
    request = predict_pb2.PredictRequest()
    _fill_spec(request.model_spec, model, signature_name, version, version_label)
    if not isinstance(inputs, Mapping):
      inputs = {self._single_input(model, signature_name, version, version_label): inputs}
    for alias, value in inputs.items():
      request.inputs[alias].CopyFrom(to_tensor_proto(value))
    request.output_filter.extend(output_filter)
    response = self._call(self._prediction.Predict, request)
    return {alias: tf.make_ndarray(response.outputs[alias]) for alias in sorted(response.outputs)}

  def _single_input(self, model, signature_name, version, version_label) -> str:
    """The alias of a single-input signature (from the metadata, cached)."""
    key = (model, version, version_label, signature_name or DEFAULT_SIGNATURE)
    if key not in self._single_inputs:
      signature = self.signature(model, signature_name, version, version_label)
      if len(signature.inputs) != 1:
        raise ServingClientError(
            Code.INVALID_ARGUMENT,
            'inputs is a plain value/list, but expecting an object as multiple input tensors '
            f'required as per tensorinfo_map: {",".join(sorted(signature.inputs))}')
      self._single_inputs[key] = next(iter(signature.inputs))
    return self._single_inputs[key]

  def classify(self, model: str, examples: Sequence[Any], signature_name: str = '',
               context: Any = None, version: Optional[int] = None,
               version_label: Optional[str] = None) -> Classifications:
    """Classify: per example, a list of (label, score)."""
    request = classification_pb2.ClassificationRequest()
    _fill_spec(request.model_spec, model, signature_name, version, version_label)
    _fill_input(request.input, examples, context)
    return _classifications(self._call(self._prediction.Classify, request).result)

  def regress(self, model: str, examples: Sequence[Any], signature_name: str = '',
              context: Any = None, version: Optional[int] = None,
              version_label: Optional[str] = None) -> np.ndarray:
    """Regress: one float32 value per example."""
    request = regression_pb2.RegressionRequest()
    _fill_spec(request.model_spec, model, signature_name, version, version_label)
    _fill_input(request.input, examples, context)
    result = self._call(self._prediction.Regress, request).result
    return np.array([r.value for r in result.regressions], np.float32)

  def multi_inference(self, model: str, tasks: Sequence[Tuple[str, str]],
                      examples: Sequence[Any], context: Any = None,
                      version: Optional[int] = None,
                      version_label: Optional[str] = None) -> List[Any]:
    """MultiInference: tasks are (signature_name, 'classify' | 'regress'), run in order.

    Returns one result per task: classifications for classify, an array for regress.
    """
    request = inference_pb2.MultiInferenceRequest()
    for signature_name, method in tasks:
      task = request.tasks.add()
      _fill_spec(task.model_spec, model, signature_name, version, version_label)
      task.method_name = _task_method(method)
    _fill_input(request.input, examples, context)
    response = self._call(self._prediction.MultiInference, request)
    results = []
    for result in response.results:
      if result.WhichOneof('result') == 'classification_result':
        results.append(_classifications(result.classification_result))
      else:
        results.append(np.array([r.value for r in result.regression_result.regressions],
                                np.float32))
    return results

  def metadata(self, model: str, version: Optional[int] = None,
               version_label: Optional[str] = None) -> Dict[str, meta_graph_pb2.SignatureDef]:
    """GetModelMetadata: signature name -> SignatureDef."""
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    _fill_spec(request.model_spec, model, '', version, version_label)
    request.metadata_field.append('signature_def')
    response = self._call(self._prediction.GetModelMetadata, request)
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(signature_map)
    return {name: signature_map.signature_def[name] for name in sorted(signature_map.signature_def)}

  def signature(self, model: str, signature_name: str = '', version: Optional[int] = None,
                version_label: Optional[str] = None) -> meta_graph_pb2.SignatureDef:
    """One SignatureDef from the metadata, with TF Serving's Predict error when it is missing."""
    name = signature_name or DEFAULT_SIGNATURE
    signatures = self.metadata(model, version, version_label)
    if name not in signatures:
      raise ServingClientError(Code.FAILED_PRECONDITION,
                               f'Serving signature key "{name}" not found.')
    return signatures[name]

  def status(self, model: str, version: Optional[int] = None) -> List[Dict[str, Any]]:
    """GetModelStatus: [{version, state, error_code, error_message}], newest first."""
    request = get_model_status_pb2.GetModelStatusRequest()
    _fill_spec(request.model_spec, model, '', version)
    response = self._call(self._models.GetModelStatus, request)
    state_name = get_model_status_pb2.ModelVersionStatus.State.Name
    return [{'version': s.version, 'state': state_name(s.state),
             'error_code': _status_code(s.status.error_code).name,
             'error_message': s.status.error_message}
            for s in response.model_version_status]

  def reload_config(self, configs: Any, timeout: Optional[float] = None) -> None:
    """HandleReloadConfigRequest: replaces the served models (see to_model_server_config).

    The call returns once new models are loaded; `timeout` (default: the
    client's) may need to cover loading them.
    """
    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(to_model_server_config(configs))
    response = self._call(self._models.HandleReloadConfigRequest, request, timeout)
    if response.status.error_code:
      raise ServingClientError(_status_code(response.status.error_code),
                               response.status.error_message)


# ----- REST -----

def _jsonable(value: Any) -> Any:
  """Arrays, numpy scalars and bytes -> JSON values; bytes become {"b64": ...}."""
  if isinstance(value, tensor_pb2.TensorProto):
    value = tf.make_ndarray(value)
  if isinstance(value, tf.Tensor):
    value = value.numpy()
  if isinstance(value, np.ndarray):
    if value.dtype.kind not in 'OSU':
      return value.tolist()
    value = value.tolist()
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, (bytes, bytearray)):
    return {'b64': base64.b64encode(bytes(value)).decode('ascii')}
  if isinstance(value, (list, tuple)):
    return [_jsonable(v) for v in value]
  return value


def _is_b64(value: Any) -> bool:
  return isinstance(value, dict) and len(value) == 1 and 'b64' in value


def _decode_strings(value: Any) -> Any:
  if _is_b64(value):
    return base64.b64decode(value['b64'])
  if isinstance(value, str):
    return value.encode('utf-8')
  if isinstance(value, list):
    return [_decode_strings(v) for v in value]
  return value


def _output_array(value: Any, tensor_info=None) -> np.ndarray:
  """A JSON output tensor -> numpy, with the signature's dtype when known."""
  dtype = tf.as_dtype(tensor_info.dtype) if tensor_info is not None else None
  if dtype == tf.string or (dtype is None and _holds_strings(value)):
    decoded = _decode_strings(value)
    if isinstance(decoded, list):
      return _object_fill(decoded)
    scalar = np.empty((), dtype=object)
    scalar[()] = decoded
    return scalar
  if dtype is not None and dtype.is_numpy_compatible:
    return np.asarray(value, dtype=dtype.as_numpy_dtype)
  return np.asarray(value)


def _object_fill(nested: list) -> np.ndarray:
  shape = np.shape(nested)
  flat = np.empty(int(np.prod(shape)), dtype=object)
  flat[:] = list(_flatten(nested))
  return flat.reshape(shape)


def _flatten(nested):
  for item in nested:
    if isinstance(item, list):
      yield from _flatten(item)
    else:
      yield item


def _holds_strings(value: Any) -> bool:
  while isinstance(value, list) and value:
    value = value[0]
  return isinstance(value, str) or _is_b64(value)


def _example_json(example: tf.train.Example) -> Dict[str, Any]:
  """A tf.train.Example -> REST's feature dict (floats keep a '.', bytes as b64 if needed)."""
  features = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof('kind')
    if kind == 'float_list':
      features[name] = [float(v) for v in feature.float_list.value]
    elif kind == 'int64_list':
      features[name] = [int(v) for v in feature.int64_list.value]
    elif kind == 'bytes_list':
      features[name] = [_bytes_json(v) for v in feature.bytes_list.value]
    else:
      features[name] = []
  return features


def _bytes_json(value: bytes) -> Any:
  try:
    return value.decode('utf-8')
  except UnicodeDecodeError:
    return {'b64': base64.b64encode(value).decode('ascii')}


def _code_for_http(status: int) -> grpc.StatusCode:
  if status in _CODE_FOR_HTTP:
    return _CODE_FOR_HTTP[status]
  return Code.INVALID_ARGUMENT if 400 <= status < 500 else Code.UNKNOWN


class RestClient:
  """TF Serving's REST API over one keep-alive HTTP connection per thread.

  Args:
    base_url: e.g. 'http://127.0.0.1:8501' (a bare host:port means http).
    timeout: seconds per socket operation.
  """

  def __init__(self, base_url: str = DEFAULT_REST_URL, timeout: float = 10.0):
    if '://' not in base_url:
      base_url = 'http://' + base_url
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ('http', 'https'):
      raise ValueError(f'base_url must be http:// or https://; got {base_url!r}')
    self.base_url = base_url.rstrip('/')
    self.timeout = timeout
    self._https = parts.scheme == 'https'
    self._host = parts.hostname or '127.0.0.1'
    self._port = parts.port or (443 if self._https else 80)
    self._prefix = parts.path.rstrip('/')
    self._local = threading.local()
    self._signatures: Dict[tuple, Dict[str, meta_graph_pb2.SignatureDef]] = {}

  def close(self):
    conn = getattr(self._local, 'conn', None)
    if conn is not None:
      conn.close()
      self._local.conn = None

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()

  def _connection(self) -> http.client.HTTPConnection:
    conn = getattr(self._local, 'conn', None)
    if conn is None:
      cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
      conn = cls(self._host, self._port, timeout=self.timeout)
      self._local.conn = conn
    return conn

  def _request(self, method: str, path: str, body: Optional[dict] = None) -> Any:
    """Sends one request; returns the parsed JSON body or raises ServingClientError."""
    payload = None if body is None else json.dumps(body).encode('utf-8')
    headers = {'Content-Type': 'application/json'} if payload is not None else {}
    for attempt in (0, 1):
      conn = self._connection()
      reused = conn.sock is not None
      try:
        conn.request(method, self._prefix + path, body=payload, headers=headers)
        response = conn.getresponse()
        data = response.read()
        break
      except socket.timeout:
        self.close()
        raise ServingClientError(
            Code.DEADLINE_EXCEEDED,
            f'No answer from {self.base_url} within {self.timeout} s') from None
      except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError) as e:
        self.close()  # A kept-alive connection the server closed: retry once on a new one.
        if not reused or attempt:
          raise _not_reachable(self.base_url, str(e) or type(e).__name__, 'REST') from None
      except (OSError, http.client.HTTPException) as e:
        self.close()
        raise _not_reachable(self.base_url, str(e) or type(e).__name__, 'REST') from None
    text = data.decode('utf-8', 'replace')
    try:
      parsed = json.loads(text) if text.strip() else None
    except ValueError:
      parsed = None
    if response.status == 200 and parsed is not None:
      return parsed
    message = parsed.get('error') if isinstance(parsed, dict) else None
    if message is None:
      message = text.strip() or f'HTTP {response.status} {response.reason}'
    raise ServingClientError(_code_for_http(response.status), message,
                             http_status=response.status)

  @staticmethod
  def _model_path(model: str, version: Optional[int] = None,
                  version_label: Optional[str] = None) -> str:
    if version is not None and version_label:
      raise _both_version_and_label(version, version_label)
    path = '/v1/models/' + urllib.parse.quote(model, safe='')
    if version is not None:
      path += f'/versions/{int(version)}'
    elif version_label:
      path += '/labels/' + urllib.parse.quote(version_label, safe='')
    return path

  def predict(self, model: str, inputs: Any, signature_name: str = '',
              version: Optional[int] = None, version_label: Optional[str] = None,
              output_filter: Sequence[str] = (), request_format: str = 'columnar'
             ) -> Dict[str, np.ndarray]:
    """Predict in the columnar ('inputs') or row ('instances') format.

    REST returns every output; output_filter is applied here, with gRPC's
    error for an unknown alias. Output dtypes and the name of a single output
    come from the model's metadata (fetched once per model/version/signature).
    """
    if request_format not in ('columnar', 'row'):
      raise ValueError(f"request_format must be 'columnar' or 'row'; got {request_format!r}")
    body: Dict[str, Any] = {}
    if signature_name:
      body['signature_name'] = signature_name
    if request_format == 'columnar':
      body['inputs'] = ({k: _jsonable(v) for k, v in inputs.items()}
                        if isinstance(inputs, Mapping) else _jsonable(inputs))
    else:
      body['instances'] = self._instances(inputs)
    path = self._model_path(model, version, version_label) + ':predict'
    answer = self._request('POST', path, body)
    signature = self._signature(model, signature_name, version, version_label)
    outputs = self._named_outputs(answer.get('outputs', answer.get('predictions')),
                                  'predictions' in answer, signature)
    if output_filter:
      known = sorted(outputs)
      for alias in output_filter:
        if alias not in outputs:
          raise ServingClientError(
              Code.INVALID_ARGUMENT, f'output tensor alias not found in signature: {alias} '
              f'Outputs expected to be in the set {{{",".join(known)}}}.')
      outputs = {alias: outputs[alias] for alias in output_filter}
    return outputs

  @staticmethod
  def _instances(inputs: Any) -> list:
    if not isinstance(inputs, Mapping):
      return _jsonable(inputs)
    columns = {alias: _jsonable(value) for alias, value in inputs.items()}
    if len(columns) == 1:
      return next(iter(columns.values()))
    sizes = {alias: len(value) if isinstance(value, list) else None
             for alias, value in columns.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
      raise ValueError(f'The row format needs every input to have the same dim 0; got {sizes}')
    count = next(iter(sizes.values()))
    return [{alias: value[i] for alias, value in columns.items()} for i in range(count)]

  def _signature(self, model, signature_name, version, version_label):
    """The SignatureDef (or None when the metadata is unavailable), cached."""
    key = (model, version, version_label)
    if key not in self._signatures:
      try:
        self._signatures[key] = self.metadata(model, version, version_label)
      except ServingClientError:
        return None
    return self._signatures[key].get(signature_name or DEFAULT_SIGNATURE)

  @staticmethod
  def _named_outputs(value: Any, rows: bool, signature) -> Dict[str, np.ndarray]:
    infos = dict(signature.outputs) if signature is not None else {}
    keyed = (isinstance(value, list) and value and isinstance(value[0], dict) and
             not _is_b64(value[0])) if rows else (isinstance(value, dict) and not _is_b64(value))
    if not keyed:
      alias = next(iter(infos)) if len(infos) == 1 else 'outputs'
      return {alias: _output_array(value, infos.get(alias))}
    if rows:
      value = {alias: [row[alias] for row in value] for alias in value[0]}
    return {alias: _output_array(value[alias], infos.get(alias)) for alias in sorted(value)}

  def _examples_body(self, examples, signature_name, context) -> Dict[str, Any]:
    body: Dict[str, Any] = {'examples': [_example_json(to_example(e)) for e in examples]}
    if signature_name:
      body['signature_name'] = signature_name
    if context is not None:
      body['context'] = _example_json(to_example(context))
    return body

  def classify(self, model: str, examples: Sequence[Any], signature_name: str = '',
               context: Any = None, version: Optional[int] = None,
               version_label: Optional[str] = None) -> Classifications:
    """Classify: per example, a list of (label, score)."""
    path = self._model_path(model, version, version_label) + ':classify'
    answer = self._request('POST', path, self._examples_body(examples, signature_name, context))
    return [[(label, float(score)) for label, score in entry] for entry in answer['results']]

  def regress(self, model: str, examples: Sequence[Any], signature_name: str = '',
              context: Any = None, version: Optional[int] = None,
              version_label: Optional[str] = None) -> np.ndarray:
    """Regress: one float32 value per example."""
    path = self._model_path(model, version, version_label) + ':regress'
    answer = self._request('POST', path, self._examples_body(examples, signature_name, context))
    return np.asarray(answer['results'], np.float32)

  def multi_inference(self, model: str, tasks: Sequence[Tuple[str, str]],
                      examples: Sequence[Any], context: Any = None,
                      version: Optional[int] = None,
                      version_label: Optional[str] = None) -> List[Any]:
    """REST has no MultiInference: runs one classify/regress request per task, in order."""
    results = []
    for signature_name, method in tasks:
      call = self.classify if _task_method(method) == CLASSIFY_METHOD else self.regress
      results.append(call(model, examples, signature_name, context, version, version_label))
    return results

  def metadata(self, model: str, version: Optional[int] = None,
               version_label: Optional[str] = None) -> Dict[str, meta_graph_pb2.SignatureDef]:
    """GET .../metadata: signature name -> SignatureDef."""
    answer = self._request('GET', self._model_path(model, version, version_label) + '/metadata')
    defs = answer.get('metadata', {}).get('signature_def', {}).get('signature_def', {})
    return {name: json_format.ParseDict(defs[name], meta_graph_pb2.SignatureDef(),
                                        ignore_unknown_fields=True) for name in sorted(defs)}

  def status(self, model: str, version: Optional[int] = None) -> List[Dict[str, Any]]:
    """GET /v1/models/NAME[/versions/N]: [{version, state, error_code, error_message}]."""
    answer = self._request('GET', self._model_path(model, version))
    return [{'version': int(s.get('version', 0)), 'state': s.get('state', 'UNKNOWN'),
             'error_code': s.get('status', {}).get('error_code', 'OK'),
             'error_message': s.get('status', {}).get('error_message', '')}
            for s in answer.get('model_version_status', [])]

  def reload_config(self, configs: Any, timeout: Optional[float] = None) -> None:
    """Not available over REST: raises UNIMPLEMENTED."""
    del configs, timeout
    raise ServingClientError(Code.UNIMPLEMENTED,
                             'TF Serving has no REST endpoint for HandleReloadConfigRequest; '
                             'use GrpcClient.reload_config')


# ----- `estimator-export query` -----

def _load_json(text: str, flag: str) -> Any:
  if text.startswith('@'):
    with open(text[1:]) as f:
      text = f.read()
  try:
    return json.loads(text)
  except ValueError as e:
    raise ValueError(f'--{flag} is not valid JSON: {e}') from e


def _from_json(value: Any) -> Any:
  """{"b64": ...} -> bytes, recursively."""
  if _is_b64(value):
    return base64.b64decode(value['b64'])
  if isinstance(value, list):
    return [_from_json(v) for v in value]
  if isinstance(value, dict):
    return {k: _from_json(v) for k, v in value.items()}
  return value


def _print_value(value: Any, alias: str = '') -> Any:
  """Results -> JSON-printable values (float32 printed shortest, bytes as text or b64)."""
  if isinstance(value, np.ndarray):
    if value.dtype == np.float32:
      flat = np.array([float(str(v)) for v in value.ravel()], dtype=object)
      return flat.reshape(value.shape).tolist()
    value = value.tolist()
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, bytes):
    if alias.endswith('_bytes'):
      return {'b64': base64.b64encode(value).decode('ascii')}
    return _bytes_json(value)
  if isinstance(value, (list, tuple)):
    return [_print_value(v, alias) for v in value]
  if isinstance(value, dict):
    return {k: _print_value(v, k) for k, v in value.items()}
  return value


def _typed_inputs(client: GrpcClient, args, inputs: Any) -> Any:
  """JSON inputs cast to the signature's dtypes (as TF Serving's REST API does)."""
  try:
    signature = client.signature(args.model, args.signature_name, args.version,
                                 args.version_label)
  except ServingClientError:
    return inputs  # Predict reports the error itself.
  if not isinstance(inputs, Mapping):
    if len(signature.inputs) != 1:
      return inputs
    inputs = {next(iter(signature.inputs)): inputs}
  typed = {}
  for alias, value in inputs.items():
    info = signature.inputs.get(alias)
    dtype = tf.as_dtype(info.dtype) if info is not None else None
    if dtype is None or dtype == tf.string or not dtype.is_numpy_compatible:
      typed[alias] = value
    else:
      typed[alias] = np.asarray(value, dtype=dtype.as_numpy_dtype)
  return typed


def _query(client, args) -> Any:
  method = args.method
  if method == 'status':
    return client.status(args.model, args.version)
  if method == 'metadata':
    signatures = client.metadata(args.model, args.version, args.version_label)
    return {name: json_format.MessageToDict(sig, preserving_proto_field_name=True)
            for name, sig in signatures.items()}
  if method == 'predict':
    if args.inputs is None:
      raise ValueError('--method=predict needs --inputs')
    inputs = _from_json(_load_json(args.inputs, 'inputs'))
    output_filter = [a for a in args.output_filter.split(',') if a]
    if isinstance(client, GrpcClient):
      inputs = _typed_inputs(client, args, inputs)
      return client.predict(args.model, inputs, args.signature_name, args.version,
                            args.version_label, output_filter)
    return client.predict(args.model, inputs, args.signature_name, args.version,
                          args.version_label, output_filter, request_format=args.rest_format)
  if args.examples is None:
    raise ValueError(f'--method={method} needs --examples')
  examples = _from_json(_load_json(args.examples, 'examples'))
  if not isinstance(examples, list):
    raise ValueError('--examples must be a JSON list of feature dicts')
  context = _from_json(_load_json(args.context, 'context')) if args.context else None
  call = client.classify if method == 'classify' else client.regress
  result = call(args.model, examples, args.signature_name, context, args.version,
                args.version_label)
  if method == 'regress':
    return result
  return [[[label, float(str(np.float32(score)))] for label, score in entry] for entry in result]


def run_query(args) -> int:
  """Runs `estimator-export query` from parsed arguments; prints JSON. Returns the exit code."""
  if args.protocol == 'grpc':
    client = GrpcClient(args.server or DEFAULT_GRPC_TARGET, timeout=args.timeout)
  else:
    client = RestClient(args.server or DEFAULT_REST_URL, timeout=args.timeout)
  try:
    with client:
      result = _query(client, args)
  except ServingClientError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  except (ValueError, TypeError, OSError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  indent = 1 if args.method in ('metadata', 'status') else None
  print(json.dumps(_print_value(result), indent=indent))
  return 0
