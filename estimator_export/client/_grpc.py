"""GrpcClient: TF Serving's PredictionService and ModelService through the official stubs.

One client may spread its calls over several servers with gRPC's own
round_robin load balancing: a list of IP addresses ('10.0.0.5:8500,10.0.0.6:8500',
gRPC's ipv4:/ipv6: resolvers) or one DNS name resolving to several addresses
('dns:///serving.ns.svc.cluster.local:8500', e.g. a Kubernetes headless Service).
"""
import ipaddress
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import grpc
import numpy as np
import tensorflow as tf
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

from estimator_export._saved_model import DEFAULT_SIGNATURE
from estimator_export.client._convert import fill_input
from estimator_export.client._convert import to_model_server_config
from estimator_export.client._convert import to_tensor_proto
from estimator_export.client._status import Classifications
from estimator_export.client._status import Code
from estimator_export.client._status import DEFAULT_GRPC_TARGET
from estimator_export.client._status import INT32_MAX
from estimator_export.client._status import ServingClientError
from estimator_export.client._status import both_version_and_label
from estimator_export.client._status import not_reachable
from estimator_export.client._status import task_method
from estimator_export.errors import ClientInputError

# gRPC details that mean "no server there", not a server's own UNAVAILABLE.
_CONNECTION_FAILURES = ('failed to connect', 'connection refused', 'dns resolution',
                        'name resolution', 'socket closed', 'connection reset',
                        'no route to host', 'end of tcp stream', 'connect failed')

# Target schemes gRPC resolves itself (passed through unchanged).
_SCHEMES = ('dns:', 'ipv4:', 'ipv6:', 'unix:', 'unix-abstract:', 'vsock:', 'xds:')
LOAD_BALANCING = ('round_robin', 'pick_first')
_LIST_FIX = ("list IP addresses of one family ('10.0.0.5:8500,10.0.0.6:8500' or "
             "'[fd00::5]:8500,[fd00::6]:8500'), or give one DNS name that resolves to every "
             "server ('dns:///serving.default.svc.cluster.local:8500', e.g. a Kubernetes "
             'headless Service)')


def _list_address(address: str, target: str) -> Tuple[str, str]:
  """One 'ip:port' of an address list -> (resolver scheme, address as gRPC spells it)."""
  host, sep, port = address.rpartition(':')
  if not sep or not port.isdigit() or not 0 < int(port) < 65536 or not host:
    raise ClientInputError(f'each address of the gRPC address list {target!r} must be IP:PORT',
                           value=address, fix=_LIST_FIX)
  bracketed = host.startswith('[') and host.endswith(']')
  try:
    ip = ipaddress.ip_address(host[1:-1] if bracketed else host)
  except ValueError:
    raise ClientInputError(
        f"the gRPC address list {target!r} may hold IP addresses only (gRPC's ipv4:/ipv6: "
        'resolvers do not look up host names)', value=address, fix=_LIST_FIX) from None
  if ip.version == 6 and not bracketed:
    raise ClientInputError(f'an IPv6 address in the gRPC address list {target!r} needs '
                           'brackets', value=address, fix=f"write '[{host}]:{port}'")
  return f'ipv{ip.version}', f'{host}:{port}'


def channel_target(target: Union[str, Sequence[str]]) -> str:
  """The gRPC target for one address, a list of IP addresses, or a resolver URI.

  'host:port' and URIs gRPC resolves ('dns:///name:port', 'ipv4:a:p,b:p',
  'unix:path', ...) pass unchanged; 'ip:port,ip:port' or a list of them become
  'ipv4:ip:port,ip:port' (or ipv6:), so round_robin spreads calls over them.
  """
  if isinstance(target, str):
    text = target.strip()
    if text.lower().startswith(_SCHEMES):
      return text
    addresses = [a.strip() for a in text.split(',')]
  elif isinstance(target, Sequence) and target and all(isinstance(a, str) for a in target):
    text = ','.join(target)
    addresses = [a.strip() for a in target]
  else:
    raise ClientInputError('a gRPC target must be a string or a non-empty list of strings',
                           value=target, fix="pass e.g. '127.0.0.1:8500' or "
                           "['10.0.0.5:8500', '10.0.0.6:8500']")
  if len(addresses) == 1 and addresses[0]:
    return addresses[0]
  if not all(addresses):
    raise ClientInputError('a gRPC address list has an empty entry', value=text,
                           fix='separate the addresses by single commas: '
                           "'127.0.0.1:8500,127.0.0.1:8501'")
  parsed = [_list_address(a, text) for a in addresses]
  schemes = sorted({scheme for scheme, _ in parsed})
  if len(schemes) > 1:
    raise ClientInputError('a gRPC address list mixes IPv4 and IPv6 addresses', value=text,
                           fix=_LIST_FIX)
  return f'{schemes[0]}:' + ','.join(address for _, address in parsed)


def _fill_spec(spec, model: str, signature_name: str = '', version: Optional[int] = None,
               version_label: Optional[str] = None):
  if version is not None and version_label:
    raise both_version_and_label(version, version_label)
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


class GrpcClient:
  """TF Serving's gRPC API through the official stubs.

  Calls are spread over every address the target resolves to (gRPC's
  round_robin policy): a list of IP addresses, or a DNS name with several
  addresses, e.g. a Kubernetes headless Service. gRPC looks the name up again
  when a connection is lost, so servers that come and go are followed.

  Args:
    target: the server(s): 'host:port'; 'ip:port,ip:port' or a list of
      'ip:port' strings; or a gRPC URI such as 'dns:///name:port' or
      'ipv4:10.0.0.5:8500,10.0.0.6:8500'.
    timeout: seconds per call.
    max_message_bytes: the largest request/response (grpcio's default receive
      limit is 4 MB; TF Serving's server limit is INT32_MAX).
    load_balancing: 'round_robin' (each call to the next ready address) or
      'pick_first' (gRPC's default: one address at a time).
  """

  def __init__(self, target: Union[str, Sequence[str]] = DEFAULT_GRPC_TARGET,
               timeout: float = 10.0, max_message_bytes: int = INT32_MAX,
               load_balancing: str = 'round_robin'):
    if load_balancing not in LOAD_BALANCING:
      raise ClientInputError('unknown gRPC load balancing policy', value=load_balancing,
                             fix="pass 'round_robin' or 'pick_first'")
    self.channel_target = channel_target(target)
    self.target = target if isinstance(target, str) else ','.join(target)
    self.timeout = timeout
    service_config = {'loadBalancingConfig': [{load_balancing: {}}]}
    self._channel = grpc.insecure_channel(self.channel_target, options=[
        ('grpc.max_send_message_length', max_message_bytes),
        ('grpc.max_receive_message_length', max_message_bytes),
        ('grpc.service_config', json.dumps(service_config))])
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
        raise not_reachable(self.target, details, 'gRPC') from None
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
    fill_input(request.input, examples, context)
    return _classifications(self._call(self._prediction.Classify, request).result)

  def regress(self, model: str, examples: Sequence[Any], signature_name: str = '',
              context: Any = None, version: Optional[int] = None,
              version_label: Optional[str] = None) -> np.ndarray:
    """Regress: one float32 value per example."""
    request = regression_pb2.RegressionRequest()
    _fill_spec(request.model_spec, model, signature_name, version, version_label)
    fill_input(request.input, examples, context)
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
      task.method_name = task_method(method)
    fill_input(request.input, examples, context)
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
