"""REST conformance: TF Serving 2.15's HTTP/JSON API over real loopback ports.

One embedded server per module (estimator_export.serving.server, CORS on)
serves, from a models.config written with `write_models_config`:

* the half_plus_two fixture family: `half_plus_two` and `default` (both
  saved_model_half_plus_two_cpu), `half_plus_three`, the 2_versions model
  (policy all, labels stable=123 / canary=124), the TF2 model and
  matrix_half_plus_two;
* `half plus two`: the same model under a name that must be percent-encoded;
* `kitchen`: a TF1 SavedModel built here, with an identity signature per
  JSON dtype, two inputs / two outputs, string outputs with and without the
  `_bytes` suffix, outputs of inconsistent batch size, a MatMul, and
  classify / regress signatures over int64, bytes and float-list features;
* `toy`: the trained toy Estimator, exported by this project.

Requests are plain HTTP/1.1 (http.client). Expected messages are TF
Serving's (spec/tf_serving_contract.md sections 1-5 and 9), matched as
substrings. When `tensorflow_model_server` is on PATH, every conformance case
also runs against it with the same models.config. With
ESTIMATOR_EXPORT_TEST_REST=http://HOST:PORT they run against that server only
(see tests/wire_models.py), and tests needing their own server skip.
"""
import base64
import concurrent.futures
import dataclasses
import http.client
import json
import math
import os
import re
import shutil
import socket
import subprocess
import threading
import time
from typing import Any, List, Optional, Sequence
import urllib.parse

import numpy as np
import pytest
import tensorflow as tf

from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from tests import toy
from tests import wire_models
from tests.serving_util import JSON_TYPE, TIMEOUT, Reply, exchange, save_tf1_model

BINARY = 'tensorflow_model_server'
SERVER_KINDS = ('embedded', BINARY)
EXTERNAL = wire_models.external_rest()  # (host, port) of ESTIMATOR_EXPORT_TEST_REST, or None.
NOT_ON_PATH = 'tensorflow_model_server not on PATH'
CORS_HEADERS = {
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Allow-Methods': 'POST, GET',
    'Access-Control-Allow-Headers': 'Content-Type',
}
# json_format.MessageToJson(response, including_default_value_fields=True, indent=1).
HALF_PLUS_TWO_STATUS = (
    '{\n'
    ' "model_version_status": [\n'
    '  {\n'
    '   "version": "123",\n'
    '   "state": "AVAILABLE",\n'
    '   "status": {\n'
    '    "error_code": "OK",\n'
    '    "error_message": ""\n'
    '   }\n'
    '  }\n'
    ' ]\n'
    '}')
IDENTITY_DTYPES = ('float', 'double', 'int8', 'uint8', 'int16', 'int32', 'int64', 'uint32',
                   'uint64', 'bool', 'string', 'half')
TWO_VERSIONS = 'saved_model_half_plus_two_2_versions'


# ----- HTTP -----

@dataclasses.dataclass
class Endpoint:
  """A REST server under test: which kind, and its port (on 127.0.0.1 unless external)."""
  kind: str
  port: int
  host: str = '127.0.0.1'

  def connect(self) -> http.client.HTTPConnection:
    return http.client.HTTPConnection(self.host, self.port, timeout=TIMEOUT)

  def request(self, method: str, path: str, body=None, headers=None) -> Reply:
    conn = self.connect()
    try:
      return exchange(conn, method, path, body, headers)
    finally:
      conn.close()

  def post(self, path: str, body) -> Reply:
    return self.request('POST', path, body)

  def get(self, path: str) -> Reply:
    return self.request('GET', path)


def assert_ok(reply: Reply) -> Any:
  assert reply.status == 200, (reply.status, reply.body[:2000])
  assert reply.content_type == JSON_TYPE, reply.headers
  return reply.json()


def assert_error(reply: Reply, status: int, message: str) -> str:
  """An `{"error": ...}` reply with this HTTP status whose message contains `message`."""
  assert reply.status == status, (reply.status, reply.body[:2000])
  assert reply.content_type == JSON_TYPE, reply.headers
  body = reply.json()
  assert list(body) == ['error'], body
  assert message in body['error'], body['error']
  return body['error']


def number_tokens(text: str, key: str) -> List[str]:
  """The raw number tokens of the 1-D list under `key` in a response body."""
  match = re.search(r'"%s": \[(.*?)\]' % re.escape(key), text, re.DOTALL)
  assert match, text
  return [token.strip() for token in match.group(1).split(',')]


def same_json(actual: Any, expected: Any) -> bool:
  """Structural equality with NaN == NaN and 1e-6 relative tolerance for floats."""
  if isinstance(expected, float) or isinstance(actual, float):
    if isinstance(actual, bool) or isinstance(expected, bool):
      return False
    if math.isnan(expected):
      return math.isnan(actual)
    return math.isclose(actual, expected, rel_tol=1e-6, abs_tol=0.0)
  if isinstance(expected, dict):
    return (isinstance(actual, dict) and actual.keys() == expected.keys() and
            all(same_json(actual[k], expected[k]) for k in expected))
  if isinstance(expected, list):
    return (isinstance(actual, list) and len(actual) == len(expected) and
            all(same_json(a, e) for a, e in zip(actual, expected)))
  return type(actual) is type(expected) and actual == expected


def b64(data: bytes) -> str:
  return base64.b64encode(data).decode('ascii')


# ----- models -----

def kitchen_signatures():
  """Signatures that reach every JSON codec path (see the module docstring)."""
  predict = tf.compat.v1.saved_model.predict_signature_def
  regress = tf.compat.v1.saved_model.regression_signature_def
  placeholder = tf.compat.v1.placeholder
  signatures = {}
  for name in IDENTITY_DTYPES:  # Unknown rank: any shape, scalars included.
    x = placeholder(tf.as_dtype(name), None, name=f'{name}_x')
    signatures[name] = predict({'x': x}, {'y': tf.identity(x, name=f'{name}_y')})
  a = placeholder(tf.float32, None, name='a')
  b = placeholder(tf.float32, None, name='b')
  signatures['two'] = predict({'a': a, 'b': b}, {'sum': a + b, 'diff': a - b})
  row = placeholder(tf.float32, [None], name='row')
  signatures['inconsistent'] = predict(
      {'x': row}, {'y': tf.identity(row), 'z': tf.constant([1.0, 2.0, 3.0])})
  signatures['scalar_out'] = predict({'x': row}, {'total': tf.reduce_sum(row)})
  text = placeholder(tf.string, None, name='text')
  signatures['strings'] = predict({'x': text},
                                  {'y': tf.identity(text), 'y_bytes': tf.identity(text)})
  signatures['bytes_only'] = predict({'x': text}, {'out_bytes': tf.identity(text)})
  matrix = placeholder(tf.float32, [None, 3], name='matrix')
  signatures['matmul'] = predict({'x': matrix}, {'y': tf.matmul(matrix, tf.ones([3, 1]))})
  examples = placeholder(tf.string, [None], name='examples')
  classes = tf.tile(tf.constant([['a', 'b']]), tf.stack([tf.shape(examples)[0], 1]))
  signatures['classes_only'] = tf.compat.v1.saved_model.classification_signature_def(
      examples, classes, None)

  def parse(spec):
    return tf.io.parse_example(examples, spec)

  ints = parse({'k': tf.io.FixedLenFeature([1], tf.int64)})['k']
  signatures['regress_int'] = regress(examples, tf.cast(ints, tf.float32))
  strings = parse({'s': tf.io.FixedLenFeature([1], tf.string)})['s']
  signatures['regress_len'] = regress(examples,
                                      tf.cast(tf.strings.length(strings), tf.float32))
  floats = parse({'v': tf.io.FixedLenFeature([3], tf.float32)})['v']
  signatures['regress_sum'] = regress(examples, tf.reduce_sum(floats, axis=1))
  signatures['serving_default'] = signatures['float']
  return signatures


@dataclasses.dataclass
class Models:
  config_path: Optional[str]  # None: an external server serves them.
  names: Sequence[str]
  toy_path: Optional[str]
  why_no_toy: str = ''


@pytest.fixture(scope='module')
def models(request, tf_serving_testdata, tmp_path_factory) -> Models:
  if EXTERNAL:
    toy_path, why = wire_models.external_toy_path()
    return Models(None, wire_models.MODEL_NAMES, toy_path, why)
  root = str(tmp_path_factory.mktemp('rest_models'))
  save_tf1_model(os.path.join(root, 'kitchen', '1'), kitchen_signatures)
  model, estimator = request.getfixturevalue('trained_toy')
  export = model.export_for_serving(estimator, os.path.join(root, 'toy'), samples=toy.SAMPLES)

  def fixture(name):
    return os.path.join(tf_serving_testdata, name)

  half_plus_two = fixture('saved_model_half_plus_two_cpu')
  model_config = config_lib.ModelConfig
  configs = [
      model_config('half_plus_two', half_plus_two),
      model_config('default', half_plus_two),
      model_config('half plus two', half_plus_two),
      model_config('half_plus_three', fixture('saved_model_half_plus_three')),
      model_config(TWO_VERSIONS, fixture(TWO_VERSIONS), version_policy=config_lib.All(),
                   version_labels={'stable': 123, 'canary': 124}),
      model_config('saved_model_half_plus_two_tf2_cpu',
                   fixture('saved_model_half_plus_two_tf2_cpu')),
      model_config('matrix_half_plus_two', fixture('matrix_half_plus_two')),
      model_config('kitchen', os.path.join(root, 'kitchen')),
      model_config('toy', os.path.join(root, 'toy')),
  ]
  path = os.path.join(root, 'models.config')
  config_lib.write_models_config(configs, path)
  return Models(path, [c.name for c in configs], export.path)


# ----- servers -----

def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def wait_until_available(endpoint: Endpoint, names: Sequence[str],
                         proc: Optional[subprocess.Popen] = None, timeout: float = 120.0):
  """Polls GET /v1/models/NAME until every version of every model is AVAILABLE."""
  deadline = time.monotonic() + timeout
  pending = list(names)
  while pending:
    if proc is not None and proc.poll() is not None:
      raise RuntimeError(f'{BINARY} exited with {proc.returncode}')
    try:
      reply = endpoint.get('/v1/models/' + urllib.parse.quote(pending[0]))
      states = [v['state'] for v in reply.json().get('model_version_status', [])]
      if reply.status == 200 and states and all(s == 'AVAILABLE' for s in states):
        pending.pop(0)
        continue
    except (OSError, ValueError, http.client.HTTPException):
      pass
    if time.monotonic() > deadline:
      raise TimeoutError(f'models not AVAILABLE after {timeout} s: {pending}')
    time.sleep(0.2)


@pytest.fixture(scope='module')
def embedded_server(models):
  if EXTERNAL:
    pytest.skip(wire_models.needs_own_server(wire_models.ENV_REST))
  server = server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, model_config_file=models.config_path,
      rest_api_enable_cors_support=True))
  try:
    wait_until_available(Endpoint('embedded', server.rest_port), models.names, timeout=10)
    yield server
  finally:
    server.stop(grace=1.0)


@pytest.fixture(scope='module')
def binary_server(models, tmp_path_factory):
  """The real tensorflow_model_server on the same models.config."""
  if EXTERNAL:
    pytest.skip(wire_models.needs_own_server(wire_models.ENV_REST))
  if shutil.which(BINARY) is None:
    pytest.skip(NOT_ON_PATH)
  workdir = str(tmp_path_factory.mktemp('tensorflow_model_server'))
  rest_port = free_port()
  with open(os.path.join(workdir, 'server.log'), 'wb') as log:
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [BINARY, f'--port={free_port()}', f'--rest_api_port={rest_port}',
         f'--model_config_file={models.config_path}', '--rest_api_enable_cors_support=true',
         '--allow_version_labels_for_unavailable_models=true'],
        stdout=log, stderr=subprocess.STDOUT)
    endpoint = Endpoint(BINARY, rest_port)
    try:
      wait_until_available(endpoint, models.names, proc)
      yield endpoint
    finally:
      proc.terminate()
      try:
        proc.wait(timeout=30)
      except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@pytest.fixture(scope='module', params=('external',) if EXTERNAL else SERVER_KINDS)
def server(request) -> Endpoint:
  if request.param == 'external':
    # Usually the real TF Serving: its documented quirks (kind BINARY) are allowed.
    endpoint = Endpoint(BINARY, EXTERNAL[1], EXTERNAL[0])
    wait_until_available(endpoint, wire_models.MODEL_NAMES, timeout=30)
    return endpoint
  if request.param == 'embedded':
    return Endpoint('embedded', request.getfixturevalue('embedded_server').rest_port)
  return request.getfixturevalue('binary_server')


@pytest.fixture(scope='module')
def embedded(embedded_server) -> Endpoint:
  """The embedded server only: for behaviour the contract leaves to this implementation."""
  return Endpoint('embedded', embedded_server.rest_port)


# ----- section 1: routing -----

class TestRouting:

  @pytest.mark.parametrize('method,path', [
      ('GET', '/'),
      ('GET', '/v1'),
      ('GET', '/v2/models/half_plus_two'),
      ('POST', '/v2/models/half_plus_two:predict'),
      ('GET', '/models/half_plus_two'),
      ('POST', '/api/v1/models/half_plus_two:predict'),
      ('GET', '/v1x/models/half_plus_two'),
      ('PUT', '/healthz'),
  ])
  def test_paths_outside_v1_are_a_plain_404(self, server, method, path):
    reply = server.request(method, path, body='{"instances": [1.0]}' if method != 'GET' else None)
    assert reply.status == 404
    assert b'"error"' not in reply.body

  @pytest.mark.parametrize('method,path', [
      ('PUT', '/v1/models/half_plus_two:predict'),
      ('DELETE', '/v1/models/half_plus_two'),
      ('PATCH', '/v1/models/half_plus_two:predict'),
      ('OPTIONS', '/v1/models/half_plus_two:predict'),
      ('POST', '/v1/models/half_plus_two:PREDICT'),
      ('POST', '/v1/models/half_plus_two:Classify'),
      ('POST', '/v1/models/half_plus_two:explain'),
      ('POST', '/v1/models/half_plus_two'),
      ('POST', '/v1/models/half_plus_two/metadata'),
      ('GET', '/v1/models/half_plus_two:predict'),
      ('GET', '/v1/models/half_plus_two/versions/HELLO'),
      ('GET', '/v1/models/half_plus_two/versions/-1'),
      ('GET', '/v1/models/half_plus_two/versions/123/labels/stable'),
      ('POST', '/v1/models/half_plus_two/versions/HELLO:predict'),
      ('POST', '/v1/models/half_plus_two/versions/123/labels/stable:predict'),
      ('GET', '/v1/models/half_plus_two/status'),
      ('GET', '/v1/'),
  ])
  def test_malformed_requests_under_v1(self, server, method, path):
    body = '{"instances": [1.0]}' if method in ('POST', 'PUT', 'PATCH') else None
    reply = server.request(method, path, body=body)
    assert_error(reply, 400, f'Malformed request: {method} {path}')

  def test_get_models_without_a_name(self, server):
    assert_error(server.get('/v1/models'), 400, 'Missing model name in request.')

  @pytest.mark.parametrize('method,path', [
      ('POST', '/v1/models/half_plus_two/versions/9223372036854775808:predict'),
      ('POST', '/v1/models/half_plus_two/versions/99999999999999999999999:regress'),
      ('GET', '/v1/models/half_plus_two/versions/9223372036854775808'),
      ('GET', '/v1/models/half_plus_two/versions/9223372036854775808/metadata'),
  ])
  def test_version_beyond_int64(self, server, method, path):
    version = path.split('/versions/')[1].split(':')[0].split('/')[0]
    reply = server.request(method, path, body='{"instances": [1.0]}' if method == 'POST' else None)
    message = f'Failed to convert version: {version} to numeric.'
    if server.kind == BINARY and reply.status == 400 and not reply.body:
      return  # ParseModelInfo returns before the error body is written.
    assert_error(reply, 400, message)

  def test_largest_int64_version_is_just_unknown(self, server):
    top = 2**63 - 1
    assert_error(server.post(f'/v1/models/half_plus_two/versions/{top}:predict',
                             {'instances': [1.0]}),
                 404, f'Servable not found for request: Specific(half_plus_two, {top})')
    assert_error(server.get(f'/v1/models/half_plus_two/versions/{top}'),
                 404, f'Could not find version {top} of model half_plus_two')

  def test_leading_zeros_in_the_version(self, server):
    reply = server.post('/v1/models/half_plus_two/versions/00000123:predict',
                        {'instances': [1.0, 2.0]})
    assert assert_ok(reply) == {'predictions': [2.5, 3.0]}
    metadata = assert_ok(server.get(f'/v1/models/{TWO_VERSIONS}/versions/0124/metadata'))
    assert metadata['model_spec']['version'] == '124'

  @pytest.mark.parametrize('path', [
      '/V1/MODELS/half_plus_two:predict',
      '/v1/Models/half_plus_two/VERSIONS/123:predict',
      '/v1/models/half_plus_two/Versions/123:predict',
  ])
  def test_prefix_and_keywords_are_case_insensitive(self, server, path):
    assert assert_ok(server.post(path, {'instances': [1.0]})) == {'predictions': [2.5]}

  def test_names_and_labels_are_percent_decoded(self, server):
    assert assert_ok(server.post('/v1/models/half%5Fplus%5Ftwo:predict',
                                 {'instances': [1.0]})) == {'predictions': [2.5]}
    assert assert_ok(server.post('/v1/models/half%20plus%20two:predict',
                                 {'instances': [5.0]})) == {'predictions': [4.5]}
    assert server.get('/v1/models/half%20plus%20two').text == HALF_PLUS_TWO_STATUS
    assert_error(server.post('/v1/models/f%6F%6f:predict', {'instances': [1.0]}),
                 404, 'Servable not found for request: Latest(foo)')
    metadata = assert_ok(server.get(f'/v1/models/{TWO_VERSIONS}/labels/c%61nary/metadata'))
    assert metadata['model_spec']['version'] == '124'

  def test_get_with_an_upper_case_metadata_segment_is_a_status_request(self, server, request):
    # TF Serving 2.15 (http_rest_api_handler.cc): the (?i) GET regex captures
    # "METADATA", and anything but the exact "metadata" is a status request.
    reply = server.get('/v1/models/half_plus_two/METADATA')
    assert reply.status == 200 and reply.text.rstrip('\n') == HALF_PLUS_TWO_STATUS

  @pytest.mark.parametrize('method,path,message', [
      ('POST', '/v1/models/a%0Ab:predict', 'Servable not found for request: Latest(a\nb)'),
      ('GET', '/v1/models/a%0Ab', 'Could not find any versions of model a\nb'),
      ('POST', '/v1/models/half_plus_two/labels/x%0Ay:predict',
       'Unrecognized servable version label: x\ny'),
  ])
  def test_percent_encoded_newline_in_a_name(self, server, request, method, path, message):
    # TF Serving matches (?i)/v1/.* on the raw path, then decodes the name.
    reply = server.request(method, path, body='{"instances": [1.0]}' if method == 'POST' else None)
    status = 400 if '/labels/' in path else 404
    assert_error(reply, status, message)

  @pytest.mark.parametrize('method,path,body', [
      ('POST', '/v1/models/half_plus_two:predict', '{"instances": [1.0]}'),
      ('GET', '/v1/models/half_plus_two', None),
      ('GET', '/v1/models/half_plus_two/metadata', None),
      ('POST', '/v1/models/half_plus_two:regress',
       '{"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}'),
      ('POST', '/v1/models/half_plus_two:predict', '{"instances": ["a"]}'),
      ('POST', '/v1/models/foo:predict', '{"instances": [1.0]}'),
      ('GET', '/v1/models/foo', None),
      ('POST', '/v1/models/half_plus_two:predict', ''),
      ('PUT', '/v1/models/half_plus_two', '{}'),
      ('POST', '/v1/models/kitchen:predict', '{"signature_name": "half", "inputs": [1.0]}'),
  ])
  def test_every_v1_response_is_json_with_cors_headers(self, server, method, path, body):
    reply = server.request(method, path, body=body)
    assert reply.content_type == JSON_TYPE, (reply.status, reply.headers)
    json.loads(reply.body)  # Errors too are JSON documents.
    for name, value in CORS_HEADERS.items():
      assert reply.headers.get(name) == value, (name, reply.headers)


# ----- section 4: the error catalogue (and section 2/3 refusals) -----

HPT = '/v1/models/half_plus_two'
KITCHEN = '/v1/models/kitchen'
ERROR_CASES = [
    # (id, method, path, body, HTTP status, message substring)
    ('unknown_model', 'POST', '/v1/models/foo:predict', '{"instances": [1.0]}', 404,
     'Servable not found for request: Latest(foo)'),
    ('unknown_model_classify', 'POST', '/v1/models/foo:classify', '{"examples": [{"x": 1.0}]}',
     404, 'Servable not found for request: Latest(foo)'),
    ('unknown_model_regress', 'POST', '/v1/models/foo:regress', '{"examples": [{"x": 1.0}]}',
     404, 'Servable not found for request: Latest(foo)'),
    ('unknown_model_metadata', 'GET', '/v1/models/foo/metadata', None, 404,
     'Servable not found for request: Latest(foo)'),
    ('unknown_version', 'POST', HPT + '/versions/7:predict', '{"instances": [1.0]}', 404,
     'Servable not found for request: Specific(half_plus_two, 7)'),
    ('unknown_version_regress', 'POST', HPT + '/versions/7:regress',
     '{"signature_name": "regress_x_to_y", "examples": [{"x": 1.0}]}', 404,
     'Servable not found for request: Specific(half_plus_two, 7)'),
    ('unknown_version_metadata', 'GET', HPT + '/versions/7/metadata', None, 404,
     'Servable not found for request: Specific(half_plus_two, 7)'),
    ('status_unknown_model', 'GET', '/v1/models/foo', None, 404,
     'Could not find any versions of model foo'),
    ('status_unknown_version_of_unknown_model', 'GET', '/v1/models/foo/versions/7', None, 404,
     'Could not find version 7 of model foo'),
    ('status_unknown_version', 'GET', HPT + '/versions/7', None, 404,
     'Could not find version 7 of model half_plus_two'),
    ('unknown_label', 'POST', HPT + '/labels/canary:predict', '{"instances": [1.0]}', 400,
     'Unrecognized servable version label: canary'),
    ('unknown_label_of_labelled_model', 'POST', f'/v1/models/{TWO_VERSIONS}/labels/beta:predict',
     '{"instances": [1.0]}', 400, 'Unrecognized servable version label: beta'),
    ('unknown_label_metadata', 'GET', HPT + '/labels/canary/metadata', None, 400,
     'Unrecognized servable version label: canary'),
    ('unknown_signature_predict', 'POST', HPT + ':predict',
     '{"signature_name": "nope", "instances": [1.0]}', 400,
     'Serving signature name: "nope" not found in signature def'),
    ('unknown_signature_classify', 'POST', HPT + ':classify',
     '{"signature_name": "nope", "examples": [{"x": 1.0}]}', 400,
     'No signature was found with the name: nope'),
    ('unknown_signature_regress', 'POST', HPT + ':regress',
     '{"signature_name": "nope", "examples": [{"x": 1.0}]}', 400,
     'No signature was found with the name: nope'),
    ('regress_on_a_predict_signature', 'POST', HPT + ':regress', '{"examples": [{"x": 1.0}]}',
     400, 'No regression inputs found in SignatureDef: '),
    ('classify_on_a_predict_signature', 'POST', HPT + ':classify', '{"examples": [{"x": 1.0}]}',
     400, 'No classification inputs found in SignatureDef: '),
    ('signature_name_not_a_string', 'POST', HPT + ':predict',
     '{"signature_name": 1, "instances": [1.0]}', 400,
     "not formatted correctly. 'signature_name' key must be a string value."),
    ('signature_name_not_a_string_classify', 'POST', HPT + ':classify',
     '{"signature_name": ["x"], "examples": [{"x": 1.0}]}', 400,
     "'signature_name' key must be a string value."),
    ('empty_body', 'POST', HPT + ':predict', '', 400, 'JSON Parse error: The document is empty'),
    ('empty_body_regress', 'POST', HPT + ':regress', '', 400,
     'JSON Parse error: The document is empty'),
    ('malformed_json', 'POST', HPT + ':predict', 'garbage', 400,
     'JSON Parse error: Invalid value. at offset: 0'),
    ('missing_comma', 'POST', HPT + ':predict', '{"instances": [1.0 2.0]}', 400,
     "JSON Parse error: Missing a comma or ']' after an array element. at offset: 19"),
    ('trailing_garbage', 'POST', HPT + ':predict', '{"instances": [1.0]} x', 400,
     'JSON Parse error: The document root must not be followed by other values. at offset: 21'),
    ('number_too_big', 'POST', HPT + ':predict', '{"instances": [1e400]}', 400,
     'JSON Parse error: Number too big to be stored in double. at offset: 15'),
    ('top_level_number', 'POST', HPT + ':predict', '1', 400, 'JSON Value: 1 Is not object'),
    ('top_level_string', 'POST', HPT + ':predict', '"s"', 400, 'JSON Value: "s" Is not object'),
    ('top_level_array', 'POST', HPT + ':regress', '[1.0]', 400, 'Is not object'),
    ('both_instances_and_inputs', 'POST', HPT + ':predict',
     '{"instances": [1.0], "inputs": [1.0]}', 400,
     "Not formatted correctly expecting only one of 'inputs' or 'instances' keys to exist "),
    ('neither_instances_nor_inputs', 'POST', HPT + ':predict',
     '{"signature_name": "serving_default"}', 400, "Missing 'inputs' or 'instances' key"),
    ('instances_not_a_list', 'POST', HPT + ':predict', '{"instances": 1.0}', 400,
     "'instances' to be an list/array"),  # TF Serving spells it "Excepting".
    ('instances_empty', 'POST', HPT + ':predict', '{"instances": []}', 400,
     "No values in 'instances' array"),
    ('row_element_lacks_a_key', 'POST', KITCHEN + ':predict',
     '{"signature_name": "two", "instances": [{"a": 1.0}]}', 400,
     "Failed to process element: 0 of 'instances' list. JSON object: "),
    ('row_element_lacks_a_key_names_the_keys', 'POST', KITCHEN + ':predict',
     '{"signature_name": "two", "instances": [{"a": 1.0, "b": 1.0}, {"b": 2.0}]}', 400,
     'keys must be equal to: a,b'),
    ('row_unknown_key', 'POST', KITCHEN + ':predict',
     '{"signature_name": "two", "instances": [{"a": 1.0, "b": 2.0, "z": 3.0}]}', 400,
     'JSON object: does not have named input: z'),
    ('row_plain_list_for_several_inputs', 'POST', KITCHEN + ':predict',
     '{"signature_name": "two", "instances": [1.0]}', 400,
     'instances is a plain list, but expecting list of objects as multiple input tensors '
     'required as per tensorinfo_map'),
    ('row_mixes_objects_and_values', 'POST', KITCHEN + ':predict',
     '{"signature_name": "two", "instances": [{"a": 1.0, "b": 2.0}, 3.0]}', 400,
     'Expecting object but got list at item 1 of input list'),
    ('columnar_input_missing', 'POST', HPT + ':predict', '{"inputs": {"z": [1.0]}}', 400,
     "Missing named input: x in 'inputs' object."),
    ('columnar_input_missing_of_two', 'POST', KITCHEN + ':predict',
     '{"signature_name": "two", "inputs": {"a": [1.0]}}', 400,
     "Missing named input: b in 'inputs' object."),
    ('columnar_plain_value_for_several_inputs', 'POST', KITCHEN + ':predict',
     '{"signature_name": "two", "inputs": [1.0]}', 400,
     'inputs is a plain value/list, but expecting an object as multiple input tensors required '
     'as per tensorinfo_map'),
    ('wrong_dtype_columnar', 'POST', HPT + ':predict', '{"inputs": ["a"]}', 400,
     'JSON Value: "a" Type: String is not of expected type: float'),
    ('wrong_dtype_row', 'POST', HPT + ':predict', '{"instances": ["a"]}', 400,
     "Failed to process element: 0 of 'instances' list. Error: INVALID_ARGUMENT: "
     'JSON Value: "a" Type: String is not of expected type: float'),
    ('ragged_instances_size', 'POST', HPT + ':predict', '{"instances": [[1.0, 2.0], [3.0]]}',
     400, 'Expecting tensor size: 2 but got: 1'),
    ('ragged_instances_shape', 'POST', HPT + ':predict',
     '{"instances": [[1.0, 2.0], [[3.0, 4.0]]]}', 400, 'Expecting shape [2] but got: [1,2]'),
    ('ragged_tensor', 'POST', HPT + ':predict', '{"inputs": [[1.0, 2.0], [3.0]]}', 400,
     'Encountered list at unexpected size: 1 at level: 1 expected size: 2'),
    ('leaf_above_rank', 'POST', HPT + ':predict', '{"inputs": [[1.0], 2.0]}', 400,
     'JSON Value: 2.0 found at incorrect level: 2 in the JSON DOM. Expected at level: 2'),
    ('list_below_rank', 'POST', HPT + ':predict', '{"inputs": [1.0, [2.0]]}', 400,
     'Encountered list at unexpected level: 1 expected < 1'),
    ('regress_without_examples', 'POST', HPT + ':regress', '{"signature_name": "regress_x_to_y"}',
     400, "When method is classify, key 'examples' is expected and was not found"),
    ('classify_without_examples', 'POST', HPT + ':classify',
     '{"signature_name": "classify_x_to_y"}', 400,
     "When method is classify, key 'examples' is expected and was not found"),
    ('examples_not_a_list', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": {"x": 1.0}}', 400,
     "Expecting 'examples' value to be an list/array"),
    ('examples_empty', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": []}', 400,
     "'examples' value is an empty array"),
    ('example_not_an_object', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": [1]}', 400,
     'Example must be JSON object but got JSON Number'),
    ('feature_null', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": [{"x": null}]}', 400,
     'Feature: x has element with unexpected JSON type: Null'),
    ('feature_nested_list', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": [{"x": [[1.0]]}]}', 400,
     'Feature: x has element with unexpected JSON type: Array'),
    ('feature_mixed_kinds', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": [{"x": [1.0, "a"]}]}', 400,
     'Unexpected element type in feature: x expecting type: float'),
    ('feature_uint64', 'POST', KITCHEN + ':regress',
     '{"signature_name": "regress_int", "examples": [{"k": 18446744073709551615}]}', 400,
     'Feature: k has uint64 element. Only int64 is supported.'),
    ('missing_example_feature', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": [{"z": 1.0}]}', 400,
     'Feature: x (data type: float) is required but could not be found.'),
    ('integer_for_a_float_feature', 'POST', HPT + ':regress',
     '{"signature_name": "regress_x_to_y", "examples": [{"x": 2}]}', 400,
     "Data types don't match. Data type: int64 but expected type: float"),
    ('float_for_an_int64_feature', 'POST', KITCHEN + ':regress',
     '{"signature_name": "regress_int", "examples": [{"k": 2.0}]}', 400,
     "Data types don't match. Data type: float but expected type: int64"),
    ('string_for_an_int64_feature', 'POST', KITCHEN + ':regress',
     '{"signature_name": "regress_int", "examples": [{"k": "2"}]}', 400,
     "Data types don't match. Data type: string but expected type: int64"),
    ('op_rejects_a_fed_shape', 'POST', KITCHEN + ':predict',
     '{"signature_name": "matmul", "inputs": [[1.0, 2.0], [3.0, 4.0]]}', 400,
     'Matrix size-incompatible: In[0]: [2,2], In[1]: [3,1]'),
    ('inconsistent_output_batch', 'POST', KITCHEN + ':predict',
     '{"signature_name": "inconsistent", "instances": [1.0, 2.0]}', 400,
     'has inconsistent batch size: '),
    ('row_output_without_batch_dim', 'POST', KITCHEN + ':predict',
     '{"signature_name": "scalar_out", "instances": [1.0, 2.0]}', 400,
     'Tensor name: total has no shape information'),
]


class TestErrorCatalogue:

  @pytest.mark.parametrize('method,path,body,status,message',
                           [case[1:] for case in ERROR_CASES],
                           ids=[case[0] for case in ERROR_CASES])
  def test_error(self, server, method, path, body, status, message):
    assert_error(server.request(method, path, body=body), status, message)

  def test_inconsistent_batch_message_names_both_sizes(self, server):
    message = assert_error(server.post(KITCHEN + ':predict', {
        'signature_name': 'inconsistent', 'instances': [1.0, 2.0]}), 400, 'Tensor name: ')
    # Map order is unspecified: either output may be the one that disagrees.
    assert message in ('Tensor name: z has inconsistent batch size: 3 expecting: 2',
                       'Tensor name: y has inconsistent batch size: 2 expecting: 3')


# ----- section 9: documented pairs -----

DOCUMENTED_PAIRS = [
    ('/v1/models/half_plus_two:predict', {'instances': [1.0, 2.0, 5.0]},
     {'predictions': [2.5, 3.0, 4.5]}),
    (f'/v1/models/{TWO_VERSIONS}:predict', {'instances': [[1.0, 2.0], [3.0, 4.0]]},
     {'predictions': [[2.5, 3.0], [3.5, 4.0]]}),
    ('/v1/models/half_plus_two/versions/123:predict', {'instances': [1.0, 2.0]},
     {'predictions': [2.5, 3.0]}),
    (f'/v1/models/{TWO_VERSIONS}/versions/123:predict', {'instances': [1.0, 2.0]},
     {'predictions': [2.5, 3.0]}),
    ('/v1/models/half_plus_two:predict', {'signature_name': 'serving_default',
                                          'inputs': [3.0, 4.0]},
     {'outputs': [3.5, 4.0]}),
    ('/v1/models/half_plus_two:regress', {'signature_name': 'regress_x_to_y',
                                          'examples': [{'x': 80.0}]},
     {'results': [42.0]}),
    ('/v1/models/half_plus_two:classify', {'signature_name': 'classify_x_to_y',
                                           'examples': [{'x': 20.0}]},
     {'results': [[['', 12.0]]]}),
    ('/v1/models/half_plus_three:regress', {'signature_name': 'tensorflow/serving/regress',
                                            'examples': [{'x': 1.0}, {'x': 2.0}]},
     {'results': [3.5, 4.0]}),
    ('/v1/models/matrix_half_plus_two:predict',
     {'instances': [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]},
     {'predictions': [[[2.5, 3.0, 3.5], [4.0, 4.5, 5.0], [5.5, 6.0, 6.5]]]}),
    ('/v1/models/matrix_half_plus_two:predict',
     {'inputs': [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]},
     {'outputs': [[[2.5, 3.0, 3.5], [4.0, 4.5, 5.0], [5.5, 6.0, 6.5]]]}),
    # The same requests against the TF2-written model (method-name check off).
    ('/v1/models/saved_model_half_plus_two_tf2_cpu:predict', {'instances': [1.0, 2.0, 5.0]},
     {'predictions': [2.5, 3.0, 4.5]}),
    ('/v1/models/saved_model_half_plus_two_tf2_cpu:regress',
     {'signature_name': 'regress_x_to_y', 'examples': [{'x': 80.0}]}, {'results': [42.0]}),
    ('/v1/models/saved_model_half_plus_two_tf2_cpu:classify',
     {'signature_name': 'classify_x_to_y', 'examples': [{'x': 20.0}]},
     {'results': [[['', 12.0]]]}),
]


class TestDocumentedPairs:

  @pytest.mark.parametrize('path,body,expected', DOCUMENTED_PAIRS,
                           ids=[f'{p.split("/")[3]}{i}' for i, (p, _, _) in
                                enumerate(DOCUMENTED_PAIRS)])
  def test_pair(self, server, path, body, expected):
    assert assert_ok(server.post(path, body)) == expected

  def test_empty_signature_name_means_serving_default(self, server):
    assert assert_ok(server.post(HPT + ':predict', {'signature_name': '', 'instances': [1.0]})
                    ) == {'predictions': [2.5]}


# ----- section 2: predict encoding -----

class TestPredictEncoding:

  @pytest.mark.parametrize('dtype,inputs,expected', [
      ('float', [1, 2.5, -0.0], [1.0, 2.5, -0.0]),
      ('double', [1, 2.5], [1.0, 2.5]),
      ('int8', [1, -128, 127], [1, -128, 127]),
      ('uint8', [0, 255], [0, 255]),
      ('int16', [-32768, 32767], [-32768, 32767]),
      ('int32', [2147483647, -2147483648], [2147483647, -2147483648]),
      ('int64', [9223372036854775807, -9223372036854775808],
       [9223372036854775807, -9223372036854775808]),
      ('uint32', [0, 4294967295], [0, 4294967295]),
      ('uint64', [18446744073709551615], [18446744073709551615]),
      ('bool', [True, False], [True, False]),
      ('string', ['a', {'b64': 'Yg=='}, 'wörld'], ['a', 'b', 'wörld']),
      # int8/int16/uint8 travel as int32 and are C-cast by the tensor proto.
      ('uint8', [300, -1], [44, 255]),
      ('int8', [200], [-56]),
  ])
  def test_dtype_accepts(self, server, dtype, inputs, expected):
    body = assert_ok(server.post(KITCHEN + ':predict', {'signature_name': dtype,
                                                        'inputs': inputs}))
    assert same_json(body, {'outputs': expected}), body

  @pytest.mark.parametrize('dtype,inputs,status,message', [
      ('int32', '[1.0]', 400, 'JSON Value: 1.0 Type: Number is not of expected type: int32'),
      ('int8', '[1.5]', 400, 'JSON Value: 1.5 Type: Number is not of expected type: int8'),
      ('uint8', '[2.0]', 400, 'JSON Value: 2.0 Type: Number is not of expected type: uint8'),
      ('int16', '[true]', 400, 'JSON Value: true Type: True is not of expected type: int16'),
      ('int32', '[2147483648]', 400,
       'JSON Value: 2147483648 Type: Number is not of expected type: int32'),
      ('int64', '[1.0]', 400, 'JSON Value: 1.0 Type: Number is not of expected type: int64'),
      ('int64', '[9223372036854775808]', 400,
       'JSON Value: 9223372036854775808 Type: Number is not of expected type: int64'),
      ('uint32', '[-1]', 400, 'JSON Value: -1 Type: Number is not of expected type: uint32'),
      ('uint64', '[-1]', 400, 'JSON Value: -1 Type: Number is not of expected type: uint64'),
      ('bool', '[1]', 400, 'JSON Value: 1 Type: Number is not of expected type: bool'),
      ('bool', '["true"]', 400, 'JSON Value: "true" Type: String is not of expected type: bool'),
      ('string', '[1]', 400, 'JSON Value: 1 Type: Number is not of expected type: string'),
      ('string', '[null]', 400, 'JSON Value: null Type: Null is not of expected type: string'),
      ('string', '[{"b64": "YQ==", "x": 1}]', 400, 'not formatted correctly for base64 data'),
      ('string', '[{"b64": 1}]', 400, 'not formatted correctly for base64 data'),
      ('string', '[{"b64": "!!!!"}]', 400, 'Unable to base64 decode'),
      ('float', '["1.0"]', 400, 'JSON Value: "1.0" Type: String is not of expected type: float'),
      ('float', '[null]', 400, 'JSON Value: null Type: Null is not of expected type: float'),
      ('float', '[false]', 400, 'JSON Value: false Type: False is not of expected type: float'),
      ('float', '[{"b64": "AA=="}]', 400, 'Type: Object is not of expected type: float'),
      ('double', '[[1.0], ["x"]]', 400,
       'JSON Value: "x" Type: String is not of expected type: double'),
      # TF Serving's IsLosslessDecimal (json_tensor.cc) refuses these; the contract's
      # "out-of-range -> +-inf" wording is looser than the code.
      ('float', '[1e39]', 400,
       'Cannot convert JSON value: 1e+39 to float without loss of precision.'),
      ('float', '[16777217]', 400,
       'Cannot convert JSON value: 16777217 to float without loss of precision.'),
      ('half', '[1.0]', 501, 'Conversion of JSON Value: 1.0 to type: half'),
  ])
  def test_dtype_refuses(self, server, dtype, inputs, status, message):
    body = f'{{"signature_name": "{dtype}", "inputs": {inputs}}}'
    assert_error(server.post(KITCHEN + ':predict', body), status, message)

  def test_nan_and_infinities_are_numbers(self, server):
    reply = server.post(HPT + ':predict', '{"instances": [NaN, Infinity, -Infinity]}')
    assert reply.status == 200, reply.text
    assert number_tokens(reply.text, 'predictions') == ['NaN', 'Infinity', '-Infinity']

  @pytest.mark.parametrize('dtype,inputs,tokens', [
      ('float', '[3, 9000000, 0.1, 0.00003, 0.3333333432674408, 1234567.0, 123456.0, 16777215, '
                '100000, 1000000, -2.5, NaN, Infinity, -Infinity]',
       ['3.0', '9e+06', '0.1', '3e-05', '0.333333343', '1234567.0', '123456.0', '16777215.0',
        '100000.0', '1e+06', '-2.5', 'NaN', 'Infinity', '-Infinity']),
      ('double', '[0.1, 0.3333333333333333, 3, 1e300, 123456789, 1e-7]',
       ['0.1', '0.33333333333333331', '3.0', '1e+300', '123456789.0', '1e-07']),
      ('int32', '[3, -7]', ['3', '-7']),
      ('bool', '[true, false]', ['true', 'false']),
  ])
  def test_number_formatting(self, server, dtype, inputs, tokens):
    body = f'{{"signature_name": "{dtype}", "inputs": {inputs}}}'
    reply = server.post(KITCHEN + ':predict', body)
    assert reply.status == 200, reply.text
    assert number_tokens(reply.text, 'outputs') == tokens

  def test_row_format_several_outputs_are_objects(self, server):
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'two', 'instances': [{'a': 1.0, 'b': 2.0}, {'a': 3.0, 'b': 5.0}]}))
    assert body == {'predictions': [{'sum': 3.0, 'diff': -1.0}, {'sum': 8.0, 'diff': -2.0}]}

  def test_row_elements_may_be_lists(self, server):
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'two', 'instances': [{'a': [1.0, 2.0], 'b': [1.0, 1.0]}]}))
    assert body == {'predictions': [{'sum': [2.0, 3.0], 'diff': [0.0, 1.0]}]}

  def test_columnar_several_inputs_ignores_extra_keys(self, server):
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'two', 'inputs': {'a': [1.0, 3.0], 'b': [2.0, 5.0], 'extra': 'x'}}))
    assert body == {'outputs': {'sum': [3.0, 8.0], 'diff': [-1.0, -2.0]}}

  def test_columnar_one_output_is_a_nested_list(self, server):
    body = assert_ok(server.post(HPT + ':predict', {'inputs': [[1.0], [2.0]]}))
    assert body == {'outputs': [[2.5], [3.0]]}

  def test_columnar_scalars(self, server):
    assert assert_ok(server.post(KITCHEN + ':predict', {'signature_name': 'float',
                                                        'inputs': 5.0})) == {'outputs': 5.0}
    assert assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'scalar_out', 'inputs': [1.0, 2.0]})) == {'outputs': 3.0}

  def test_consistent_batch_with_several_outputs(self, server):
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'inconsistent', 'instances': [4.0, 5.0, 6.0]}))
    assert body == {'predictions': [{'y': 4.0, 'z': 1.0}, {'y': 5.0, 'z': 2.0},
                                    {'y': 6.0, 'z': 3.0}]}
    body = assert_ok(server.post(KITCHEN + ':predict', {'signature_name': 'inconsistent',
                                                        'inputs': [4.0, 5.0]}))
    assert body == {'outputs': {'y': [4.0, 5.0], 'z': [1.0, 2.0, 3.0]}}

  def test_instances_share_one_shape(self, server):
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'float', 'instances': [[[1.0, 2.0]], [[3.0, 4.0]]]}))
    assert body == {'predictions': [[[1.0, 2.0]], [[3.0, 4.0]]]}

  def test_strings_raw_and_bytes_outputs(self, server):
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'strings', 'instances': ['hello', {'b64': b64(b'hi')}, 'wörld']}))
    assert body == {'predictions': [
        {'y': 'hello', 'y_bytes': {'b64': b64(b'hello')}},
        {'y': 'hi', 'y_bytes': {'b64': b64(b'hi')}},
        {'y': 'wörld', 'y_bytes': {'b64': b64('wörld'.encode('utf-8'))}},
    ]}

  def test_b64_value_alone_is_a_columnar_value(self, server):
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'strings', 'inputs': {'b64': b64(b'hi')}}))
    assert body == {'outputs': {'y': 'hi', 'y_bytes': {'b64': b64(b'hi')}}}

  def test_binary_bytes_round_trip_through_a_bytes_output(self, server):
    data = [bytes(range(256)), b'\x00\x01\xff', b'']
    body = assert_ok(server.post(KITCHEN + ':predict', {
        'signature_name': 'bytes_only', 'instances': [{'b64': b64(d)} for d in data]}))
    assert [base64.b64decode(p['b64']) for p in body['predictions']] == data

  def test_b64_with_another_key_is_an_element_object(self, server):
    assert_error(server.post(KITCHEN + ':predict', {
        'signature_name': 'strings', 'instances': [{'b64': 'aGk=', 'x': 1}]}),
                 400, 'does not have named input: b64')

  def test_shape_comes_from_the_first_element(self, server):
    # TF Serving does not check fed shapes against the signature (x is [-1, 1]).
    assert assert_ok(server.post(HPT + ':predict', {'instances': [[1.0, 2.0], [3.0, 4.0]]})
                    ) == {'predictions': [[2.5, 3.0], [3.5, 4.0]]}
    assert assert_ok(server.post(HPT + ':predict', {'inputs': 2.0})) == {'outputs': 3.0}


# ----- section 3: classify / regress -----

class TestClassifyRegress:

  def test_feature_kinds(self, server):
    body = assert_ok(server.post(KITCHEN + ':regress', {
        'signature_name': 'regress_int',
        'examples': [{'k': 7}, {'k': True}, {'k': False}, {'k': [3]}, {'k': -9}]}))
    assert body == {'results': [7.0, 1.0, 0.0, 3.0, -9.0]}
    body = assert_ok(server.post(KITCHEN + ':regress', {
        'signature_name': 'regress_len',
        'examples': [{'s': 'abc'}, {'s': {'b64': b64(b'\x00\x01\x02\xff')}}, {'s': ['é']}]}))
    assert body == {'results': [3.0, 4.0, 2.0]}
    body = assert_ok(server.post(KITCHEN + ':regress', {
        'signature_name': 'regress_sum', 'examples': [{'v': [1.0, 2.0, 3.5]}]}))
    assert body == {'results': [6.5]}

  def test_exponent_makes_a_float_feature(self, server):
    body = assert_ok(server.post(HPT + ':regress', '{"signature_name": "regress_x_to_y", '
                                                  '"examples": [{"x": 8e1}, {"x": 2E0}]}'))
    assert body == {'results': [42.0, 3.0]}

  def test_context_is_merged_and_the_example_wins(self, server):
    body = assert_ok(server.post(HPT + ':regress', {
        'signature_name': 'regress_x_to_y', 'context': {'x': 1.0},
        'examples': [{'x': 2.0}, {}]}))
    assert body == {'results': [3.0, 2.5]}
    body = assert_ok(server.post(KITCHEN + ':regress', {
        'signature_name': 'regress_sum', 'context': {'v': [1.0, 1.0, 1.0]},
        'examples': [{}, {'v': [2.0, 2.0, 2.0]}]}))
    assert body == {'results': [3.0, 6.0]}

  def test_classify_with_scores_only_has_empty_labels(self, server):
    body = assert_ok(server.post(HPT + ':classify', {
        'signature_name': 'classify_x_to_y', 'examples': [{'x': 2.0}, {'x': 4.0}]}))
    assert body == {'results': [[['', 3.0]], [['', 4.0]]]}

  def test_classify_with_classes_only_has_zero_scores(self, server):
    body = assert_ok(server.post(KITCHEN + ':classify', {
        'signature_name': 'classes_only', 'examples': [{}, {'unused': 'x'}]}))
    assert body == {'results': [[['a', 0.0], ['b', 0.0]], [['a', 0.0], ['b', 0.0]]]}

  def test_regress_output_of_shape_batch_by_one(self, server):
    body = assert_ok(server.post(HPT + ':regress', {
        'signature_name': 'regress_x_to_y2', 'examples': [{'x': 1.0}, {'x': 2.0}]}))
    assert body == {'results': [3.5, 4.0]}


# ----- section 5: status and metadata -----

class TestStatusAndMetadata:

  def test_status_body_is_exact(self, server):
    reply = server.get('/v1/models/half_plus_two')
    assert reply.status == 200 and reply.content_type == JSON_TYPE
    if server.kind == BINARY:  # The C++ printer may end the document with a newline.
      assert reply.text.rstrip('\n') == HALF_PLUS_TWO_STATUS
    else:
      assert reply.text == HALF_PLUS_TWO_STATUS

  def test_status_of_one_version(self, server):
    assert server.get('/v1/models/half_plus_two/versions/123').text.rstrip(
        '\n') == HALF_PLUS_TWO_STATUS

  def test_status_lists_versions_newest_first(self, server):
    available = {'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}
    expected = {'model_version_status': [dict(version='124', **available),
                                         dict(version='123', **available)]}
    assert assert_ok(server.get(f'/v1/models/{TWO_VERSIONS}')) == expected
    assert assert_ok(server.get(f'/v1/models/{TWO_VERSIONS}/versions/123')) == {
        'model_version_status': [dict(version='123', **available)]}

  @pytest.mark.parametrize('label', ['stable', 'canary', 'no_such_label'])
  def test_status_ignores_labels(self, server, label):
    assert server.get(f'/v1/models/{TWO_VERSIONS}/labels/{label}').text == server.get(
        f'/v1/models/{TWO_VERSIONS}').text

  def test_metadata_of_default_matches_the_fixture(self, server, tf_serving_testdata):
    with open(os.path.join(tf_serving_testdata, 'half_plus_two_model_metadata.json')) as f:
      expected = json.load(f)
    assert assert_ok(server.get('/v1/models/default/metadata')) == expected
    assert assert_ok(server.get('/v1/models/default/versions/123/metadata')) == expected

  def test_metadata_of_two_versions_matches_the_fixture(self, server, tf_serving_testdata):
    path = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_2_versions_metadata.json')
    with open(path) as f:
      expected = json.load(f)
    assert assert_ok(server.get(f'/v1/models/{TWO_VERSIONS}/versions/123/metadata')) == expected
    assert assert_ok(server.get(f'/v1/models/{TWO_VERSIONS}/labels/stable/metadata')) == expected

  def test_metadata_model_spec_follows_the_resolved_version(self, server):
    for path, version in ((f'/v1/models/{TWO_VERSIONS}/metadata', '124'),
                          (f'/v1/models/{TWO_VERSIONS}/labels/canary/metadata', '124'),
                          (f'/v1/models/{TWO_VERSIONS}/versions/123/metadata', '123')):
      spec = assert_ok(server.get(path))['model_spec']
      assert spec == {'name': TWO_VERSIONS, 'signature_name': '', 'version': version}, path

  def test_labels_route_predictions(self, server):
    for label in ('stable', 'canary'):
      assert assert_ok(server.post(f'/v1/models/{TWO_VERSIONS}/labels/{label}:predict',
                                   {'instances': [1.0, 2.0]})) == {'predictions': [2.5, 3.0]}
      assert assert_ok(server.post(f'/v1/models/{TWO_VERSIONS}/labels/{label}:regress', {
          'signature_name': 'regress_x_to_y', 'examples': [{'x': 2.0}]})) == {'results': [3.0]}


# ----- connections -----

class TestConnections:

  def test_keep_alive_serves_many_requests_on_one_connection(self, server):
    conn = server.connect()
    try:
      conn.connect()
      sock = conn.sock
      for i in range(25):
        kind = i % 5
        if kind == 0:
          reply = exchange(conn, 'POST', HPT + ':predict', {'instances': [float(i)]})
          assert assert_ok(reply) == {'predictions': [0.5 * i + 2.0]}
        elif kind == 1:
          assert exchange(conn, 'GET', HPT).text.rstrip('\n') == HALF_PLUS_TWO_STATUS
        elif kind == 2:
          assert_error(exchange(conn, 'POST', HPT + ':predict', '{"instances": '), 400,
                       'JSON Parse error')
        elif kind == 3:
          assert_error(exchange(conn, 'POST', '/v1/models/foo:predict', {'instances': [1.0]}),
                       404, 'Latest(foo)')
        else:
          assert_error(exchange(conn, 'GET', HPT + ':predict'), 400, 'Malformed request')
        assert conn.sock is sock, f'connection was re-opened before request {i}'
    finally:
      conn.close()

  def test_concurrent_clients(self, server):
    clients, rounds = 32, 8
    start = threading.Barrier(clients)

    def client(index: int) -> List[str]:
      problems = []
      start.wait(timeout=TIMEOUT)
      conn = server.connect()
      try:
        for step in range(rounds):
          x = float(index * 100 + step)
          if step % 2:
            reply = exchange(conn, 'POST', KITCHEN + ':predict', {
                'signature_name': 'two', 'instances': [{'a': x, 'b': 1.0}]})
            expected = {'predictions': [{'sum': x + 1.0, 'diff': x - 1.0}]}
          else:
            reply = exchange(conn, 'POST', HPT + ':predict', {'instances': [x]})
            expected = {'predictions': [0.5 * x + 2.0]}
          if reply.status != 200 or reply.json() != expected:
            problems.append(f'client {index} step {step}: {reply.status} {reply.body[:200]}')
      finally:
        conn.close()
      return problems

    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
      results = list(pool.map(client, range(clients), timeout=120))
    assert [p for problems in results for p in problems] == []


# ----- a model exported by this project -----

@pytest.fixture(scope='module')
def toy_reference(models):
  """serving_default outputs for toy.SAMPLES, computed by TensorFlow directly."""
  if models.toy_path is None:
    pytest.skip(models.why_no_toy)
  loaded = tf.saved_model.load(models.toy_path)
  outputs = loaded.signatures['serving_default'](x=tf.constant(toy.SAMPLES['x']),
                                                 n=tf.constant(toy.SAMPLES['n']))
  return {alias: value.numpy() for alias, value in outputs.items()}


def toy_examples() -> List[dict]:
  return [{'x': [float(v) for v in row], 'n': int(n)}
          for row, n in zip(toy.SAMPLES['x'], toy.SAMPLES['n'])]


class TestExportedModel:

  def test_predict_row(self, server, toy_reference):
    instances = [{'x': row.tolist(), 'n': int(n)}
                 for row, n in zip(toy.SAMPLES['x'], toy.SAMPLES['n'])]
    body = assert_ok(server.post('/v1/models/toy:predict', {'instances': instances}))
    predictions = body['predictions']
    assert len(predictions) == 2
    for i, row in enumerate(predictions):
      assert set(row) == {'class_ids', 'logits', 'probabilities'}
      assert row['class_ids'] == int(toy_reference['class_ids'][i])
      np.testing.assert_allclose(row['probabilities'], toy_reference['probabilities'][i],
                                 rtol=1e-6)
      np.testing.assert_allclose(row['logits'], toy_reference['logits'][i], rtol=1e-6)

  def test_predict_columnar(self, server, toy_reference):
    body = assert_ok(server.post('/v1/models/toy:predict', {'inputs': {
        'x': toy.SAMPLES['x'].tolist(), 'n': toy.SAMPLES['n'].tolist()}}))
    outputs = body['outputs']
    assert outputs['class_ids'] == toy_reference['class_ids'].tolist()
    np.testing.assert_allclose(outputs['probabilities'], toy_reference['probabilities'],
                               rtol=1e-6)

  def test_predict_on_serialized_examples(self, server, toy_reference):
    instances = []
    for row, n in zip(toy.SAMPLES['x'], toy.SAMPLES['n']):
      example = tf.train.Example(features=tf.train.Features(feature={
          'x': tf.train.Feature(float_list=tf.train.FloatList(value=row)),
          'n': tf.train.Feature(int64_list=tf.train.Int64List(value=[int(n)]))}))
      instances.append({'b64': b64(example.SerializeToString())})
    body = assert_ok(server.post('/v1/models/toy:predict', {
        'signature_name': 'examples:predict', 'instances': instances}))
    np.testing.assert_allclose([p['probabilities'] for p in body['predictions']],
                               toy_reference['probabilities'], rtol=1e-6)

  def test_classify_labels_are_class_names(self, server, toy_reference):
    body = assert_ok(server.post('/v1/models/toy:classify', {
        'signature_name': 'examples:classify', 'examples': toy_examples()}))
    results = body['results']
    assert len(results) == 2
    for i, classes in enumerate(results):
      assert [label for label, _ in classes] == ['neg', 'pos']
      np.testing.assert_allclose([score for _, score in classes],
                                 toy_reference['probabilities'][i], rtol=1e-6)

  def test_regress(self, server, toy_reference):
    body = assert_ok(server.post('/v1/models/toy:regress', {
        'signature_name': 'examples:regress', 'examples': toy_examples()}))
    np.testing.assert_allclose(body['results'], toy_reference['probabilities'][:, 1], rtol=1e-6)

  def test_regress_with_context(self, server, toy_reference):
    examples = toy_examples()
    body = assert_ok(server.post('/v1/models/toy:regress', {
        'signature_name': 'examples:regress', 'context': {'n': examples[0]['n']},
        'examples': [{'x': examples[0]['x']}]}))
    np.testing.assert_allclose(body['results'], toy_reference['probabilities'][:1, 1],
                               rtol=1e-6)


# ----- what the contract leaves to the implementation -----

class TestEmbeddedOnly:

  def test_error_bodies_are_valid_json_with_quotes_and_newlines(self, embedded):
    reply = embedded.post(HPT + ':regress', {'examples': [{'x': 1.0}]})
    message = assert_error(reply, 400, 'No regression inputs found in SignatureDef: ')
    assert 'name: "x:0"' in message and '\n' in message

  def test_the_plain_404_has_no_body_and_no_cors_headers(self, embedded):
    reply = embedded.get('/nope')
    assert reply.status == 404 and reply.body == b''
    assert 'Access-Control-Allow-Origin' not in reply.headers
