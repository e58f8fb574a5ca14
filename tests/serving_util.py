"""Helpers shared by the serving test modules: HTTP exchanges, requests, tiny models."""
import dataclasses
import http.client
import json
import subprocess
import time
import urllib.parse
from typing import Any, Callable, Dict, Optional

import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

TIMEOUT = 30.0
JSON_TYPE = 'application/json'



# ----- stand-ins for serving.config's ModelConfig and policies -----
# ModelManager reads configs duck-typed (name, base_path, version_policy by class
# name, version_labels), so manager tests need no real config validation.

@dataclasses.dataclass(frozen=True)
class Latest:
  num_versions: int = 1


@dataclasses.dataclass(frozen=True)
class All:
  pass


@dataclasses.dataclass(frozen=True)
class Specific:
  versions: frozenset = frozenset()


@dataclasses.dataclass(frozen=True)
class Config:
  """What ModelManager reads of a model config."""
  name: str
  base_path: str
  version_policy: object = Latest()
  version_labels: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class Reply:
  """One HTTP response."""
  status: int
  headers: http.client.HTTPMessage
  body: bytes

  @property
  def text(self) -> str:
    return self.body.decode('utf-8')

  def json(self) -> Any:
    return json.loads(self.body)

  @property
  def content_type(self) -> str:
    return (self.headers.get('Content-Type') or '').split(';')[0].strip()


def exchange(conn: http.client.HTTPConnection, method: str, path: str, body=None,
             headers=None, chunked: bool = False) -> Reply:
  """One request on an open connection; dict/list bodies are sent as JSON."""
  if isinstance(body, (dict, list)):
    body = json.dumps(body)
  if isinstance(body, str):
    body = body.encode('utf-8')
  if chunked:
    data = body or b''
    conn.request(method, path, body=iter([data[:len(data) // 2], data[len(data) // 2:]]),
                 headers=dict(headers or {}), encode_chunked=True)
  else:
    conn.request(method, path, body=body, headers=dict(headers or {}))
  response = conn.getresponse()
  return Reply(response.status, response.msg, response.read())


def rest_request(port: int, method: str, path: str, body=None,
                 conn: Optional[http.client.HTTPConnection] = None) -> Reply:
  """One request; on `conn` if given (kept open), else on a new connection."""
  if conn is not None:
    return exchange(conn, method, path, body)
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
  try:
    return exchange(conn, method, path, body)
  finally:
    conn.close()


def predict_request(model: str, values, dtype=tf.float32, signature: str = '',
                    alias: str = 'x') -> predict_pb2.PredictRequest:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  if signature:
    request.model_spec.signature_name = signature
  request.inputs[alias].CopyFrom(tf.make_tensor_proto(values, dtype))
  return request


def model_status(port: int, model: str) -> Dict[int, dict]:
  """version -> {'state', 'status'} from REST GET /v1/models/NAME ({} when unknown)."""
  reply = rest_request(port, 'GET', '/v1/models/' + urllib.parse.quote(model))
  if reply.status != 200:
    return {}
  return {int(v['version']): v for v in reply.json()['model_version_status']}


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05):
  deadline = time.monotonic() + timeout
  while not condition():
    if time.monotonic() > deadline:
      raise AssertionError(f'timed out after {timeout} s waiting for {what}')
    time.sleep(interval)


def save_tf1_model(export_dir: str, build: Callable[[], Dict]):
  """Saves the graph `build()` makes (it returns {name: SignatureDef}) with tag serve."""
  graph = tf.Graph()
  with graph.as_default():
    signatures = build()
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING],
                                           signature_def_map=signatures)
      builder.save()


def self_signed_ssl_config(directory) -> tuple:
  """A self-signed certificate for localhost (openssl) and a text SSLConfig serving it.

  Returns:
    (path of DIRECTORY/ssl.config, the certificate's PEM bytes).
  """
  key, cert = directory / 'server.key', directory / 'server.crt'
  subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
                  '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost',
                  '-keyout', str(key), '-out', str(cert)], check=True, capture_output=True,
                 timeout=60)
  path = directory / 'ssl.config'
  path.write_text(f'server_key: {json.dumps(key.read_text())}\n'
                  f'server_cert: {json.dumps(cert.read_text())}\n')
  return str(path), cert.read_bytes()
