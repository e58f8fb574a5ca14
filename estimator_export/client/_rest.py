"""RestClient: TF Serving's /v1/models REST API over keep-alive HTTP connections."""
import http.client
import json
import socket
import threading
import urllib.parse
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow.core.protobuf import meta_graph_pb2

from estimator_export._saved_model import DEFAULT_SIGNATURE
from estimator_export.client._convert import examples_body
from estimator_export.client._convert import is_b64
from estimator_export.client._convert import jsonable
from estimator_export.client._convert import output_array
from estimator_export.client._status import CLASSIFY_METHOD
from estimator_export.client._status import Classifications
from estimator_export.client._status import Code
from estimator_export.client._status import DEFAULT_REST_URL
from estimator_export.client._status import ServingClientError
from estimator_export.client._status import both_version_and_label
from estimator_export.client._status import not_reachable
from estimator_export.client._status import task_method
from estimator_export.errors import ClientInputError

# HTTP status -> the closest gRPC code (TF Serving's REST mapping, inverted).
_CODE_FOR_HTTP = {
    400: Code.INVALID_ARGUMENT, 401: Code.UNAUTHENTICATED, 403: Code.PERMISSION_DENIED,
    404: Code.NOT_FOUND, 409: Code.ABORTED, 429: Code.RESOURCE_EXHAUSTED, 499: Code.CANCELLED,
    500: Code.INTERNAL, 501: Code.UNIMPLEMENTED, 503: Code.UNAVAILABLE,
    504: Code.DEADLINE_EXCEEDED,
}


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
      raise ClientInputError('a REST base_url must be http:// or https://', value=base_url,
                             fix="pass e.g. 'http://127.0.0.1:8501' (or a bare host:port)")
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
          raise not_reachable(self.base_url, str(e) or type(e).__name__, 'REST') from None
      except (OSError, http.client.HTTPException) as e:
        self.close()
        raise not_reachable(self.base_url, str(e) or type(e).__name__, 'REST') from None
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
      raise both_version_and_label(version, version_label)
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
      raise ClientInputError("request_format must be 'columnar' or 'row'", value=request_format,
                             fix="pass request_format='columnar' (\"inputs\") or 'row' "
                             '("instances")')
    body: Dict[str, Any] = {}
    if signature_name:
      body['signature_name'] = signature_name
    if request_format == 'columnar':
      body['inputs'] = ({k: jsonable(v) for k, v in inputs.items()}
                        if isinstance(inputs, Mapping) else jsonable(inputs))
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
      return jsonable(inputs)
    columns = {alias: jsonable(value) for alias, value in inputs.items()}
    if len(columns) == 1:
      return next(iter(columns.values()))
    sizes = {alias: len(value) if isinstance(value, list) else None
             for alias, value in columns.items()}
    if None in sizes.values() or len(set(sizes.values())) != 1:
      raise ClientInputError('the row format needs every input to be a list of the same '
                             'length (dim 0)', value=sizes,
                             fix="give the inputs equal dim 0, or use request_format='columnar'")
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
             not is_b64(value[0])) if rows else (isinstance(value, dict) and not is_b64(value))
    if not keyed:
      alias = next(iter(infos)) if len(infos) == 1 else 'outputs'
      return {alias: output_array(value, infos.get(alias))}
    if rows:
      value = {alias: [row[alias] for row in value] for alias in value[0]}
    return {alias: output_array(value[alias], infos.get(alias)) for alias in sorted(value)}

  def classify(self, model: str, examples: Sequence[Any], signature_name: str = '',
               context: Any = None, version: Optional[int] = None,
               version_label: Optional[str] = None) -> Classifications:
    """Classify: per example, a list of (label, score)."""
    path = self._model_path(model, version, version_label) + ':classify'
    answer = self._request('POST', path, examples_body(examples, signature_name, context))
    return [[(label, float(score)) for label, score in entry] for entry in answer['results']]

  def regress(self, model: str, examples: Sequence[Any], signature_name: str = '',
              context: Any = None, version: Optional[int] = None,
              version_label: Optional[str] = None) -> np.ndarray:
    """Regress: one float32 value per example."""
    path = self._model_path(model, version, version_label) + ':regress'
    answer = self._request('POST', path, examples_body(examples, signature_name, context))
    return np.asarray(answer['results'], np.float32)

  def multi_inference(self, model: str, tasks: Sequence[Tuple[str, str]],
                      examples: Sequence[Any], context: Any = None,
                      version: Optional[int] = None,
                      version_label: Optional[str] = None) -> List[Any]:
    """REST has no MultiInference: runs one classify/regress request per task, in order."""
    results = []
    for signature_name, method in tasks:
      call = self.classify if task_method(method) == CLASSIFY_METHOD else self.regress
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
