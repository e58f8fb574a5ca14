"""Reliability of the embedded model server: hot swaps under load, bad exports, hostile input.

Every test starts real servers (estimator_export.serving.server) on 127.0.0.1
ports chosen by the OS and talks to them with plain HTTP (http.client, raw
sockets) and the official gRPC stubs:

* hot swap: 16 clients (8 REST, 8 gRPC) predict without pause while three new
  versions are published atomically (copied to a hidden directory, then
  renamed). Versions compute y = x + version, so every answer names the
  version that computed it; no request may fail, each answer must come from a
  complete version, each client sees versions in order, and the newest serves
  at the end (contract section 7);
* a partial version (saved_model.pb without variables), a corrupt one
  (garbage saved_model.pb) and an empty one never serve: they end in END with
  their error while the old version keeps answering;
* fuzzing: over a thousand malformed REST requests (random bytes, truncated
  JSON, wrong types, huge numbers, deep nesting, random unicode, random
  methods and paths) and over a thousand malformed gRPC requests (random
  names, signatures, dtypes, shapes and tensor contents, empty requests, and
  random bytes sent through a generic channel), each answered with a 4xx /
  non-OK status and a message; the server serves correctly afterwards;
* oversized bodies and absurd nesting are refused with a JSON error and the
  process's peak memory stays bounded.

The only 5xx the contract allows here is 501 `Conversion of JSON Value ... to
type` (an input dtype JSON cannot express), and for gRPC the framework's
INTERNAL `Exception deserializing request!` for bytes that do not parse as the
request message. Every loop is bounded by a deadline.
"""
import concurrent.futures
import dataclasses
import http.client
import json
import os
import random
import re
import resource
import shutil
import socket
import string
import threading
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple
import urllib.parse
import uuid

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import message as protobuf_message
from tensorflow.core.framework import tensor_pb2
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2

from estimator_export.serving import config as config_lib
from estimator_export.serving import rest_service
from estimator_export.serving import server as server_lib
from estimator_export.serving.inference import InferenceService
from estimator_export.serving.manager import ModelManager
from tests.serving_util import (JSON_TYPE, TIMEOUT, Reply, exchange, model_status,
                                predict_request, rest_request, save_tf1_model, wait_for)

Code = grpc.StatusCode
MIB = 1024 * 1024
OFFSET_VERSIONS = (1, 2, 3, 4, 5)
# Codes that mean "the server broke", not "the request was bad".
SERVER_FAULTS = (Code.UNKNOWN, Code.INTERNAL, Code.DATA_LOSS)


# ----- models -----

def offset_signatures(offset: int) -> Callable[[], Dict]:
  """y = x + offset, with the offset in a variable (so the version has a variables/ dir)."""

  def build():
    x = tf.compat.v1.placeholder(tf.float32, [None], name='x')
    value = tf.compat.v1.get_variable('offset', initializer=tf.constant(float(offset)))
    y = tf.identity(x + value, name='y')
    return {'serving_default': tf.compat.v1.saved_model.predict_signature_def({'x': x},
                                                                                {'y': y})}
  return build


def mini_signatures() -> Dict:
  """A few dtypes and shapes for the fuzzers (half_plus_two covers classify/regress)."""
  predict = tf.compat.v1.saved_model.predict_signature_def
  placeholder = tf.compat.v1.placeholder
  signatures = {}
  for name in ('float', 'int32', 'int64', 'string', 'bool', 'half'):
    x = placeholder(tf.as_dtype(name), None, name=f'{name}_x')
    signatures[name] = predict({'x': x}, {'y': tf.identity(x)})
  a = placeholder(tf.float32, None, name='a')
  b = placeholder(tf.float32, None, name='b')
  signatures['two'] = predict({'a': a, 'b': b}, {'sum': a + b})
  matrix = placeholder(tf.float32, [None, 3], name='matrix')
  signatures['matmul'] = predict({'x': matrix}, {'y': tf.matmul(matrix, tf.ones([3, 1]))})
  signatures['serving_default'] = signatures['float']
  return signatures


@pytest.fixture(scope='module')
def offset_exports(tmp_path_factory) -> Dict[int, str]:
  """Complete exports of y = x + v, by version v (staging copies, never served directly)."""
  root = str(tmp_path_factory.mktemp('offset_exports'))
  paths = {}
  for version in OFFSET_VERSIONS:
    paths[version] = os.path.join(root, str(version))
    save_tf1_model(paths[version], offset_signatures(version))
  return paths


def publish(source: str, base: str, version: int):
  """Copies a version into a hidden directory of `base`, then renames it into place."""
  hidden = os.path.join(base, f'.incoming-{version}-{uuid.uuid4().hex}')
  shutil.copytree(source, hidden)
  os.rename(hidden, os.path.join(base, str(version)))


# ----- clients -----

def offset_of(port: int, model: str, x: float = 0.25) -> Optional[float]:
  reply = rest_request(port, 'POST', f'/v1/models/{model}:predict', {'instances': [x]})
  if reply.status != 200:
    return None
  return reply.json()['predictions'][0] - x


# ----- (a) hot swap under load -----

class Traffic:
  """REST and gRPC clients that predict until stopped, checking every answer.

  y = x + version, so an answer is right when y - x is a published version;
  gRPC answers must also name that version in model_spec.
  """

  def __init__(self, rest_port: int, grpc_port: int, model: str, versions: Sequence[int]):
    self.rest_port = rest_port
    self.model = model
    self.versions = set(versions)
    self.channel = grpc.insecure_channel(f'127.0.0.1:{grpc_port}')
    self.stop = threading.Event()
    self.lock = threading.Lock()
    self.failures: List[str] = []
    self.answers = 0

  def _problem(self, text: str):
    with self.lock:
      self.failures.append(text)

  def _count(self):
    with self.lock:
      self.answers += 1

  def rest_client(self, index: int) -> List[int]:
    rng = random.Random(index)
    conn = http.client.HTTPConnection('127.0.0.1', self.rest_port, timeout=TIMEOUT)
    seen = []
    try:
      while not self.stop.is_set():
        x = rng.randint(0, 4000) / 4.0  # Exact in float32, so y - x is exact too.
        try:
          reply = exchange(conn, 'POST', f'/v1/models/{self.model}:predict', {'instances': [x]})
        except (OSError, http.client.HTTPException) as e:
          self._problem(f'REST client {index}: {type(e).__name__}: {e}')
          conn.close()
          continue
        if reply.status != 200:
          self._problem(f'REST client {index}: HTTP {reply.status} {reply.body[:200]!r}')
          continue
        version = reply.json()['predictions'][0] - x
        if version not in self.versions:
          self._problem(f'REST client {index}: x={x} gave y={version + x}')
          continue
        seen.append(int(version))
        self._count()
    finally:
      conn.close()
    return seen

  def grpc_client(self, index: int) -> List[int]:
    rng = random.Random(1000 + index)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    seen = []
    while not self.stop.is_set():
      x = rng.randint(0, 4000) / 4.0
      try:
        response = stub.Predict(predict_request(self.model, [x]), timeout=TIMEOUT)
      except grpc.RpcError as e:
        self._problem(f'gRPC client {index}: {e.code()}: {e.details()}')
        continue
      version = response.model_spec.version.value
      y = float(tf.make_ndarray(response.outputs['y'])[0])
      if version not in self.versions or y != x + version:
        self._problem(f'gRPC client {index}: version {version}, x={x}, y={y}')
        continue
      seen.append(version)
      self._count()
    return seen


def test_hot_swap_under_load_loses_no_request(offset_exports, tmp_path):
  base = str(tmp_path / 'swap')
  os.makedirs(base)
  publish(offset_exports[1], base, 1)
  server = server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, model_name='swap', model_base_path=base,
      file_system_poll_wait_seconds=1))
  traffic = Traffic(server.rest_port, server.grpc_port, 'swap', (1, 2, 3, 4))
  try:
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      futures = ([pool.submit(traffic.rest_client, i) for i in range(8)] +
                 [pool.submit(traffic.grpc_client, i) for i in range(8)])
      try:
        wait_for(lambda: traffic.answers >= 50, 20, 'the clients to get going')
        for version in (2, 3, 4):
          publish(offset_exports[version], base, version)
          wait_for(lambda v=version: offset_of(server.rest_port, 'swap') == v, 30,
                   f'version {version} to serve')
          answered = traffic.answers
          wait_for(lambda a=answered: traffic.answers >= a + 50, 20, 'traffic on the new version')
      finally:
        traffic.stop.set()
      sequences = [f.result(timeout=60) for f in futures]
    statuses = model_status(server.rest_port, 'swap')
  finally:
    traffic.channel.close()
    server.stop(grace=1.0)
  assert traffic.failures == []
  assert sum(len(s) for s in sequences) == traffic.answers
  for index, seen in enumerate(sequences):
    assert seen, f'client {index} got no answer'
    assert seen == sorted(seen), f'client {index} went back to an older version: {seen}'
  assert {v for seen in sequences for v in seen} >= {1, 4}
  assert statuses[4]['state'] == 'AVAILABLE'
  for version in (1, 2, 3):  # Unloaded after the next one became AVAILABLE.
    assert statuses[version]['state'] == 'END'
    assert statuses[version]['status']['error_code'] == 'OK'


# ----- (b) partial, corrupt and empty versions -----

def test_broken_versions_never_serve(offset_exports, tmp_path):
  base, staging = str(tmp_path / 'model'), str(tmp_path / 'staging')
  os.makedirs(base)
  publish(offset_exports[1], base, 1)
  partial = os.path.join(staging, 'partial')  # saved_model.pb, no variables/
  os.makedirs(partial)
  shutil.copy(os.path.join(offset_exports[2], 'saved_model.pb'), partial)
  corrupt = os.path.join(staging, 'corrupt')  # garbage saved_model.pb, real variables/
  shutil.copytree(offset_exports[3], corrupt)
  with open(os.path.join(corrupt, 'saved_model.pb'), 'wb') as f:
    f.write(bytes(random.Random(3).getrandbits(8) for _ in range(4096)))
  empty = os.path.join(staging, 'empty')
  os.makedirs(empty)

  server = server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, model_name='model', model_base_path=base,
      file_system_poll_wait_seconds=1, max_num_load_retries=0))  # No retries: END at once.
  traffic = Traffic(server.rest_port, server.grpc_port, 'model', (1, 5))
  try:
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      futures = [pool.submit(traffic.rest_client, 0), pool.submit(traffic.grpc_client, 0)]
      try:
        for version, source in ((2, partial), (3, corrupt), (4, empty)):
          publish(source, base, version)
          wait_for(lambda v=version: model_status(server.rest_port, 'model').get(v, {}).get(
              'state') == 'END', 30, f'version {version} to fail')
          statuses = model_status(server.rest_port, 'model')
          assert statuses[version]['status']['error_code'] != 'OK', statuses[version]
          assert statuses[version]['status']['error_message'], statuses[version]
          assert statuses[1]['state'] == 'AVAILABLE'
          assert offset_of(server.rest_port, 'model') == 1
        channel = traffic.channel
        stub = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = 'model'
        grpc_states = {s.version: s.state
                       for s in stub.GetModelStatus(request, timeout=TIMEOUT).model_version_status}
        end = get_model_status_pb2.ModelVersionStatus.END
        available = get_model_status_pb2.ModelVersionStatus.AVAILABLE
        assert grpc_states == {1: available, 2: end, 3: end, 4: end}
        publish(offset_exports[5], base, 5)  # A good version still replaces the old one.
        wait_for(lambda: offset_of(server.rest_port, 'model') == 5, 30, 'version 5 to serve')
      finally:
        traffic.stop.set()
      sequences = [f.result(timeout=60) for f in futures]
    statuses = model_status(server.rest_port, 'model')
  finally:
    traffic.channel.close()
    server.stop(grace=1.0)
  assert traffic.failures == []
  assert all(seen and seen == sorted(seen) for seen in sequences), sequences
  assert [v for v in sorted(statuses, reverse=True)] == [5, 4, 3, 2, 1]
  assert statuses[5]['state'] == 'AVAILABLE'
  assert statuses[1]['state'] == 'END' and statuses[1]['status']['error_code'] == 'OK'
  assert 'Could not find SavedModel .pb or .pbtxt' in statuses[4]['status']['error_message']


# ----- (c) fuzzing -----

@pytest.fixture(scope='module')
def fuzz_server(tf_serving_testdata, tmp_path_factory):
  root = str(tmp_path_factory.mktemp('fuzz_models'))
  save_tf1_model(os.path.join(root, 'mini', '1'), mini_signatures)
  configs = [
      config_lib.ModelConfig('half_plus_two',
                             os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu')),
      config_lib.ModelConfig('mini', os.path.join(root, 'mini')),
  ]
  path = os.path.join(root, 'models.config')
  config_lib.write_models_config(configs, path)
  server = server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, model_config_file=path))
  yield server
  server.stop(grace=1.0)


def assert_still_serving(server):
  """REST and gRPC answer the contract's half_plus_two pairs, and the models are AVAILABLE."""
  reply = rest_request(server.rest_port, 'POST', '/v1/models/half_plus_two:predict',
                       {'instances': [1.0, 2.0, 5.0]})
  assert reply.status == 200 and reply.json() == {'predictions': [2.5, 3.0, 4.5]}
  reply = rest_request(server.rest_port, 'POST', '/v1/models/half_plus_two:regress',
                       {'signature_name': 'regress_x_to_y', 'examples': [{'x': 80.0}]})
  assert reply.status == 200 and reply.json() == {'results': [42.0]}
  with grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}') as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request('half_plus_two', [2.0]), timeout=TIMEOUT)
    assert tf.make_ndarray(response.outputs['y']).tolist() == [3.0]
    assert response.model_spec.version.value == 123
  for model in ('half_plus_two', 'mini'):
    assert [s['state'] for s in model_status(server.rest_port, model).values()] == ['AVAILABLE']


# Random text: ASCII, Latin-1, CJK, emoji, combining marks, controls, JSON metacharacters.
_ALPHABET = ('abcxyzABC019_-.:/%?#[]{}"\\\' \t\n\r\x00\x01\x7f' + 'éßøñ' + '中文字' +
             '😀🚀' + '\u0301\u200b\ufeff\uffff')


def random_text(rng: random.Random, low: int = 1, high: int = 24) -> str:
  return ''.join(rng.choice(_ALPHABET) for _ in range(rng.randint(low, high)))


def random_name(rng: random.Random, avoid: Sequence[str] = ()) -> str:
  while True:
    name = random_text(rng)
    if name not in avoid:
      return name


def path_segment(rng: random.Random, avoid: Sequence[str] = ()) -> str:
  """A random name, percent-encoded for a URL path.

  Without newlines: an encoded %0A in the path bypasses the REST handler (a
  known bug, see test_serving_rest.py's test_percent_encoded_newline_in_a_name).
  """
  return urllib.parse.quote(random_name(rng, avoid).replace('\n', ' '), safe='')


def random_json(rng: random.Random, depth: int = 0):
  """Any JSON value (numbers included); depth-limited."""
  kind = rng.randrange(7 if depth < 3 else 5)
  if kind == 0:
    return None
  if kind == 1:
    return rng.choice([True, False])
  if kind == 2:
    return rng.choice([rng.randint(-10**6, 10**6), rng.uniform(-1e6, 1e6)])
  if kind == 3:
    return random_text(rng, 0, 12)
  if kind == 4:
    return {'b64': rng.choice(['', 'AA==', '!!', random_text(rng, 0, 8)])}
  if kind == 5:
    return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))]
  return {random_text(rng, 1, 6): random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))}


def non_number(rng: random.Random):
  """A JSON value that no float input accepts."""
  return rng.choice([None, True, False, random_text(rng, 0, 8), {'b64': 'AA=='},
                     {random_text(rng, 1, 4): 1.0}, {}])


@dataclasses.dataclass
class RestCase:
  kind: str
  method: str
  path: str
  body: Optional[bytes]
  chunked: bool = False


HPT = '/v1/models/half_plus_two'
MINI = '/v1/models/mini'
VALID_BODIES = [
    (HPT + ':predict', '{"instances": [1.0, 2.0, 5.0]}'),
    (HPT + ':predict', '{"signature_name": "serving_default", "inputs": {"x": [[1.0], [2.0]]}}'),
    (HPT + ':regress', '{"signature_name": "regress_x_to_y", "examples": [{"x": 80.0}]}'),
    (HPT + ':classify', '{"signature_name": "classify_x_to_y", "context": {"x": 1.0}, '
                        '"examples": [{"x": 20.0}, {}]}'),
    (MINI + ':predict', '{"signature_name": "two", "instances": [{"a": 1.0, "b": [2.0]}]}'),
    (MINI + ':predict', '{"signature_name": "string", "inputs": [{"b64": "aGk="}, "x"]}'),
]
ACTIONS = (HPT + ':predict', HPT + ':classify', HPT + ':regress', MINI + ':predict')


def _number_too_wide(rng: random.Random) -> str:
  """A JSON number no float/int32 input takes: lossy, out of range, or beyond a double."""
  return rng.choice([
      f'{rng.choice(["", "-"])}1e{rng.randint(39, 400)}',
      f'{rng.choice(["", "-"])}{rng.randint(2**24 + 1, 2**63 - 1)}',
      f'{rng.randint(2**63, 2**64 - 1)}',
      rng.choice(['1' * rng.randint(40, 400), '9' * 310, '-' + '9' * 500]),
      f'0.{"1" * rng.randint(1, 20)}e{rng.randint(310, 999)}',
  ])


def make_rest_cases(rng: random.Random, per_kind: int) -> List[RestCase]:
  cases = []

  def add(kind, method, path, body, chunked=False):
    if isinstance(body, str):
      body = body.encode('utf-8', 'surrogatepass')
    cases.append(RestCase(kind, method, path, body, chunked))

  for _ in range(per_kind):  # Random bytes.
    body = bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 300)))
    add('random_bytes', 'POST', rng.choice(ACTIONS), body)
  for _ in range(per_kind):  # Truncated valid JSON.
    path, body = rng.choice(VALID_BODIES)
    add('truncated_json', 'POST', path, body[:rng.randrange(len(body))])
  for _ in range(per_kind):  # Wrong types.
    choice = rng.randrange(8)
    if choice == 0:
      body = {'instances': non_number(rng)}
    elif choice == 1:
      body = {'instances': [1.0] * rng.randint(0, 3) + [non_number(rng)]}
    elif choice == 2:
      body = {'inputs': [[non_number(rng)] for _ in range(rng.randint(1, 3))]}
    elif choice == 3:
      body = {'signature_name': rng.choice([1, 2.5, True, None, [], {}, ['x']]),
              'instances': [1.0]}
    elif choice == 4:
      body = {'signature_name': 'regress_x_to_y',
              'examples': rng.choice([{}, 1, 'x', None, [], [1], [[]], [{'x': non_number(rng)}],
                                      [{'x': [1.0, non_number(rng)]}], [{'x': [[1.0]]}]])}
    elif choice == 5:
      body = {'signature_name': 'int32',
              'inputs': [rng.choice([1.5, -0.5, 'x', True, None, 2**31, -2**31 - 1])]}
    elif choice == 6:
      keys = rng.sample(['a', 'b', 'c', random_text(rng, 1, 4)], rng.randint(0, 3))
      if sorted(keys) == ['a', 'b']:
        keys.append('z')
      body = {'signature_name': 'two', 'instances': [{k: 1.0 for k in keys}]}
    else:
      sizes = [rng.randint(1, 4) for _ in range(rng.randint(2, 5))]
      if len(set(sizes)) == 1:
        sizes[-1] += 1
      body = {rng.choice(['instances', 'inputs']): [[1.0] * n for n in sizes]}
    path = MINI + ':predict' if choice in (5, 6) else (
        HPT + ':regress' if choice == 4 else HPT + ':predict')
    add('wrong_types', 'POST', path, json.dumps(body))
  for _ in range(per_kind):  # Huge numbers.
    number = _number_too_wide(rng)
    path, template = rng.choice([
        (HPT + ':predict', '{"instances": [%s]}'),
        (HPT + ':predict', '{"inputs": [[1.0], [%s]]}'),
        (MINI + ':predict', '{"signature_name": "int32", "inputs": [%s]}'),
        (HPT + ':regress', '{"signature_name": "regress_x_to_y", "examples": [{"x": %s}]}'),
    ])
    if 'examples' in template and not re.search(r'e\d', number):
      number = f'1e{rng.randint(39, 400)}'  # Integral numbers would be an int64 feature.
    add('huge_numbers', 'POST', path, template % number)
  for _ in range(per_kind):  # Deep nesting.
    depth = rng.randint(300, 20000)
    path, body = rng.choice([
        (HPT + ':predict', '{"instances": ' + '[' * depth + '1.0' + ']' * depth + '}'),
        (HPT + ':predict', '{"inputs": ' + '[' * depth + '}'),
        (HPT + ':predict', '[' * depth + ']' * depth),
        (HPT + ':predict', '{"instances": [' + '{"a": ' * depth + '1' + '}' * depth + ']}'),
        (HPT + ':regress', '{"examples": [{"x": ' + '[' * depth + ']' * depth + '}]}'),
        (HPT + ':classify', '{"context": ' + '{"c": ' * depth + '}'),
    ])
    add('deep_nesting', 'POST', path, body)
  for _ in range(per_kind):  # Random unicode in names, keys, values and paths.
    choice = rng.randrange(6)
    if choice == 0:
      add('unicode', 'POST', HPT + ':predict',
          json.dumps({'signature_name': random_name(rng, ['serving_default', '']),
                      'instances': [1.0]}, ensure_ascii=rng.random() < 0.5))
    elif choice == 1:
      add('unicode', 'POST', HPT + ':predict',
          json.dumps({'instances': [random_text(rng)]}, ensure_ascii=rng.random() < 0.5))
    elif choice == 2:
      add('unicode', 'POST', MINI + ':predict',
          json.dumps({'signature_name': 'two', 'instances': [{random_name(rng, ['a', 'b']): 1.0}]},
                     ensure_ascii=False))
    elif choice == 3:
      name = path_segment(rng, ['half_plus_two', 'mini'])
      add('unicode', rng.choice(['GET', 'POST']),
          f'/v1/models/{name}' + rng.choice([':predict', ':classify', ':regress', '/metadata']),
          '{"instances": [1.0]}')
    elif choice == 4:
      label = path_segment(rng)
      add('unicode', 'POST', f'{HPT}/labels/{label}:predict', '{"instances": [1.0]}')
    else:  # Raw bytes inside a JSON string (invalid UTF-8 included).
      raw = bytes(rng.choice([0xc3, 0xa9, 0xff, 0xfe, 0xe4, 0xb8, 0xad, 0x41])
                  for _ in range(rng.randint(1, 12)))
      add('unicode', 'POST', HPT + ':predict', b'{"instances": ["' + raw + b'"]}')
  for _ in range(per_kind):  # Random methods and routes.
    method = rng.choice(['GET', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS'])
    name = rng.choice(['half_plus_two', 'mini', path_segment(rng, ['half_plus_two', 'mini'])])
    served = name in ('half_plus_two', 'mini')
    suffix = rng.choice([
        ':PREDICT', ':Regress', ':explain', '/extra', '/versions/abc', '/versions/1.5',
        '/versions/-3', '/versions/', '/labels/', '/metadata/x', ':predict/x',
        f'/versions/{rng.randint(1, 99)}/labels/x', ':', '//'] + ([] if served else [
            '', ':predict', ':classify', ':regress', '/metadata',
            f'/versions/{rng.randint(1, 10**20)}', '/labels/x']))
    prefix = rng.choice(['/v1/models/', '/V1/models/', '/v2/models/', '/', '/v1/', '/v1/model/'])
    body = None if method in ('GET', 'DELETE', 'OPTIONS') else bytes(
        rng.getrandbits(8) for _ in range(rng.randint(0, 40)))
    add('routes', method, prefix + name + suffix, body)
  for _ in range(max(1, per_kind // 4)):  # Chunked transfer encoding.
    path, body = rng.choice(VALID_BODIES)
    add('chunked', 'POST', path, body[:rng.randrange(len(body))], chunked=True)
  return cases


def rest_problem(case: RestCase, reply: Reply) -> Optional[str]:
  """Why this reply breaks the contract for a malformed request, or None."""
  if not re.match(r'(?i)/v1/', case.path):
    return None if reply.status == 404 else f'HTTP {reply.status} outside /v1'
  if reply.content_type != JSON_TYPE:
    return f'HTTP {reply.status} with Content-Type {reply.content_type!r}'
  try:
    message = reply.json().get('error')
  except (ValueError, AttributeError):
    return f'HTTP {reply.status} with a body that is not a JSON object'
  if not isinstance(message, str) or not message:
    return f'HTTP {reply.status} without an error message: {reply.body[:200]!r}'
  if reply.status == 501 and message.startswith('Conversion of JSON Value'):
    return None  # The contract's UNIMPLEMENTED for a dtype JSON cannot express.
  if not 400 <= reply.status < 500:
    return f'HTTP {reply.status}: {message[:200]}'
  return None


def test_fuzz_rest(fuzz_server):
  rng = random.Random(20240615)
  cases = make_rest_cases(rng, per_kind=150)
  assert len(cases) >= 1000
  deadline = time.monotonic() + 60
  port = fuzz_server.rest_port
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
  problems, statuses = [], {}
  try:
    for index, case in enumerate(cases):
      assert time.monotonic() < deadline, f'fuzzing took too long (at case {index})'
      try:
        reply = exchange(conn, case.method, case.path, case.body, chunked=case.chunked)
      except (OSError, http.client.HTTPException) as e:
        problems.append(f'{case.kind} #{index} {case.method} {case.path[:80]}: '
                        f'{type(e).__name__}: {e}')
        conn.close()
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
        continue
      statuses[reply.status] = statuses.get(reply.status, 0) + 1
      problem = rest_problem(case, reply)
      if problem:
        problems.append(f'{case.kind} #{index} {case.method} {case.path[:80]} '
                        f'{(case.body or b"")[:80]!r}: {problem}')
      if reply.headers.get('Connection', '').lower() == 'close':
        conn.close()
        conn = http.client.HTTPConnection('127.0.0.1', port, timeout=TIMEOUT)
  finally:
    conn.close()
  assert problems == [], f'{len(problems)} bad answers, e.g. {problems[:10]}'
  assert set(statuses) <= {400, 404, 501}, statuses
  assert_still_serving(fuzz_server)


def _raw(channel: grpc.Channel, method: str):
  return channel.unary_unary(method, request_serializer=None, response_deserializer=None)


@dataclasses.dataclass
class GrpcCase:
  kind: str
  method: str  # Full method path.
  request: bytes
  expected: Optional[Tuple[grpc.StatusCode, ...]] = None  # None: any non-fault code.


PREDICTION = '/tensorflow.serving.PredictionService/'
MODEL_SERVICE = '/tensorflow.serving.ModelService/'
REQUEST_TYPES = {
    PREDICTION + 'Predict': predict_pb2.PredictRequest,
    PREDICTION + 'Classify': classification_pb2.ClassificationRequest,
    PREDICTION + 'Regress': regression_pb2.RegressionRequest,
    PREDICTION + 'MultiInference': inference_pb2.MultiInferenceRequest,
    PREDICTION + 'GetModelMetadata': get_model_metadata_pb2.GetModelMetadataRequest,
    MODEL_SERVICE + 'GetModelStatus': get_model_status_pb2.GetModelStatusRequest,
}
NUMPY_OF = {types_pb2.DT_INT32: np.int32, types_pb2.DT_INT64: np.int64,
            types_pb2.DT_DOUBLE: np.float64, types_pb2.DT_BOOL: np.bool_,
            types_pb2.DT_UINT8: np.uint8, types_pb2.DT_INT8: np.int8,
            types_pb2.DT_INT16: np.int16, types_pb2.DT_HALF: np.float16,
            types_pb2.DT_COMPLEX64: np.complex64, types_pb2.DT_UINT32: np.uint32,
            types_pb2.DT_UINT64: np.uint64}


def _example(features: Dict[str, tf.train.Feature]) -> tf.train.Example:
  return tf.train.Example(features=tf.train.Features(feature=features))


def _bad_x_feature(rng: random.Random) -> Dict[str, tf.train.Feature]:
  """Features for which half_plus_two's ParseExample (x: float [1], required) fails."""
  choice = rng.randrange(4)
  if choice == 0:
    return {random_name(rng, ['x', 'x2']): tf.train.Feature(
        float_list=tf.train.FloatList(value=[1.0]))}
  if choice == 1:
    return {'x': tf.train.Feature(int64_list=tf.train.Int64List(value=[rng.randint(-9, 9)]))}
  if choice == 2:
    return {'x': tf.train.Feature(bytes_list=tf.train.BytesList(value=[b'1.0']))}
  return {'x': tf.train.Feature(float_list=tf.train.FloatList(
      value=[1.0] * rng.choice([0, 2, 3])))}


def make_grpc_cases(rng: random.Random, per_kind: int) -> List[GrpcCase]:
  cases = []
  not_found, invalid = (Code.NOT_FOUND,), (Code.INVALID_ARGUMENT,)

  def add(kind, method, request, expected=None):
    cases.append(GrpcCase(kind, method, request.SerializeToString(), expected))

  for _ in range(per_kind):  # Unknown models.
    add('model_name', PREDICTION + 'Predict',
        predict_request(random_name(rng, ['half_plus_two', 'mini']), [1.0]), not_found)
  for _ in range(per_kind):  # Unknown signatures.
    add('signature', PREDICTION + 'Predict',
        predict_request('half_plus_two', [1.0],
                        signature=random_name(rng, ['serving_default'])),
        (Code.FAILED_PRECONDITION,))
  for _ in range(per_kind):  # Unknown input aliases, output filters, versions and labels.
    choice = rng.randrange(4)
    request = predict_request('half_plus_two', [1.0])
    if choice == 0:
      request = predict_request('half_plus_two', [1.0], alias=random_name(rng, ['x']))
    elif choice == 1:
      request.output_filter.append(random_name(rng, ['y']))
    elif choice == 2:
      request.model_spec.version.value = rng.choice([0, -1, 122, 124, 2**63 - 1, -2**63])
    else:
      request.model_spec.version_label = random_name(rng)
    add('spec', PREDICTION + 'Predict', request,
        not_found if choice == 2 else invalid)
  for _ in range(per_kind):  # Dtypes the signature does not take.
    dtype = rng.choice(sorted(NUMPY_OF))
    values = np.array([rng.randint(0, 5) for _ in range(rng.randint(1, 4))]).astype(
        NUMPY_OF[dtype])
    model, signature = rng.choice([('half_plus_two', ''), ('mini', 'float'), ('mini', 'two')])
    alias = 'a' if signature == 'two' else 'x'
    request = predict_request(model, values, dtype=tf.as_dtype(dtype), signature=signature,
                              alias=alias)
    if signature == 'two':
      request.inputs['b'].CopyFrom(tf.make_tensor_proto([1.0], tf.float32))
    add('dtype', PREDICTION + 'Predict', request, invalid)
  for _ in range(per_kind):  # String and bool tensors for numeric inputs, and vice versa.
    model, signature, value, dtype = rng.choice([
        ('mini', 'int32', [random_text(rng).encode('utf-8')], tf.string),
        ('mini', 'string', [1.5], tf.float32),
        ('mini', 'bool', [1], tf.int32),
        ('mini', 'int64', [True], tf.bool),
        ('half_plus_two', '', [b'1.0'], tf.string),
    ])
    add('dtype', PREDICTION + 'Predict',
        predict_request(model, value, dtype=dtype, signature=signature), invalid)
  for _ in range(per_kind):  # Tensor protos that do not decode.
    proto = tensor_pb2.TensorProto()
    choice = rng.randrange(4)
    dims = [rng.randint(1, 4) for _ in range(rng.randint(1, 3))]
    count = int(np.prod(dims))
    proto.dtype = types_pb2.DT_FLOAT
    if choice == 0:  # tensor_content not a whole number of floats
      proto.tensor_content = bytes(rng.getrandbits(8) for _ in range(4 * count + rng.randint(1, 3)))
    elif choice == 1:  # tensor_content of the wrong size for the shape
      extra = rng.choice([-1, 1, 2]) if count > 1 else rng.choice([1, 2])
      proto.tensor_content = np.zeros(count + extra, np.float32).tobytes()
    elif choice == 2:  # no such DataType
      proto.dtype = rng.choice([0, 24, 31, 99, 1000, 2**20])
      proto.float_val.extend([1.0] * count)
    else:  # a reference dtype
      proto.dtype = rng.choice([101, 102, 103])
      proto.float_val.extend([1.0] * count)
    for dim in dims:
      proto.tensor_shape.dim.add(size=dim)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'half_plus_two'
    request.inputs['x'].CopyFrom(proto)
    add('tensor_proto', PREDICTION + 'Predict', request, invalid)
  for _ in range(per_kind):  # Shapes an op refuses.
    columns = rng.choice([1, 2, 4, 5, 7])
    rows = rng.randint(1, 3)
    add('shape', PREDICTION + 'Predict',
        predict_request('mini', np.ones((rows, columns), np.float32), signature='matmul'),
        invalid)
  for _ in range(per_kind):  # Classify / Regress / MultiInference.
    choice = rng.randrange(6)
    kind = rng.choice(['Classify', 'Regress'])
    request = (classification_pb2.ClassificationRequest() if kind == 'Classify'
               else regression_pb2.RegressionRequest())
    request.model_spec.name = 'half_plus_two'
    request.model_spec.signature_name = (
        'classify_x_to_y' if kind == 'Classify' else 'regress_x_to_y')
    expected = invalid
    if choice == 0:
      request.model_spec.signature_name = random_name(rng, ['classify_x_to_y', 'regress_x_to_y'])
    elif choice == 1:  # no examples at all
      pass
    elif choice in (2, 3):
      examples = request.input.example_list.examples
      for _ in range(rng.randint(1, 3)):
        examples.add().CopyFrom(_example(_bad_x_feature(rng)))
    elif choice == 4:
      request.model_spec.name = random_name(rng, ['half_plus_two', 'mini'])
      request.input.example_list.examples.add().CopyFrom(_example({
          'x': tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
      expected = not_found
    else:
      request.input.example_list_with_context.context.CopyFrom(_example(_bad_x_feature(rng)))
      request.input.example_list_with_context.examples.add()
    add('examples', PREDICTION + kind, request, expected)
  for _ in range(max(1, per_kind // 2)):  # MultiInference.
    request = inference_pb2.MultiInferenceRequest()
    choice = rng.randrange(4)
    request.input.example_list.examples.add().CopyFrom(_example({
        'x': tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
    if choice >= 1:
      task = request.tasks.add()
      task.model_spec.name = 'half_plus_two'
      task.model_spec.signature_name = 'regress_x_to_y'
      task.method_name = 'tensorflow/serving/regress'
      other = request.tasks.add()
      other.CopyFrom(task)
      if choice == 1:
        other.model_spec.name = random_name(rng, ['half_plus_two'])
      elif choice == 2:
        other.method_name = random_name(rng)
      else:
        other.model_spec.signature_name = random_name(rng, ['regress_x_to_y',
                                                            'classify_x_to_y'])
    add('multi_inference', PREDICTION + 'MultiInference', request)
  for _ in range(per_kind):  # Metadata and status.
    choice = rng.randrange(5)
    if choice < 3:
      request = get_model_metadata_pb2.GetModelMetadataRequest()
      request.model_spec.name = 'half_plus_two'
      if choice == 0:
        pass  # no metadata_field
      elif choice == 1:
        request.metadata_field.append(random_name(rng, ['signature_def']))
      else:
        request.metadata_field.append('signature_def')
        request.model_spec.name = random_name(rng, ['half_plus_two', 'mini'])
      add('metadata', PREDICTION + 'GetModelMetadata', request,
          not_found if choice == 2 else invalid)
    else:
      request = get_model_status_pb2.GetModelStatusRequest()
      if choice == 3:
        request.model_spec.name = random_name(rng, ['half_plus_two', 'mini'])
      else:
        request.model_spec.name = 'half_plus_two'
        request.model_spec.version.value = rng.choice([1, 122, 124, 2**62])
      add('status', MODEL_SERVICE + 'GetModelStatus', request, not_found)
  for method, request_type in REQUEST_TYPES.items():  # Empty requests.
    add('empty', method, request_type(), invalid)
  seeds = {}  # Serialized requests for a model that does not exist, to mutate.
  for method, request_type in REQUEST_TYPES.items():
    request = request_type()
    if method.endswith('Predict'):
      request = predict_request('zz_unknown_model', [1.0, 2.0])
    elif method.endswith('MultiInference'):
      task = request.tasks.add()
      task.model_spec.name = 'zz_unknown_model'
      task.method_name = 'tensorflow/serving/regress'
    else:
      request.model_spec.name = 'zz_unknown_model'
    if hasattr(request, 'input'):
      request.input.example_list.examples.add().CopyFrom(_example({
          'x': tf.train.Feature(float_list=tf.train.FloatList(value=[1.0]))}))
    if method.endswith('GetModelMetadata'):
      request.metadata_field.append('signature_def')
    seeds[method] = request.SerializeToString()
  for index in range(per_kind * 2):  # Random or mutated bytes as the serialized request.
    method = rng.choice(sorted(REQUEST_TYPES))
    if index % 2:
      data = bytearray(seeds[method])
      for _ in range(rng.randint(1, 4)):
        data[rng.randrange(len(data))] = rng.getrandbits(8)
      if rng.random() < 0.3:
        data = data[:rng.randint(1, len(data))]
      data = bytes(data)
    else:
      data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200)))
    try:
      REQUEST_TYPES[method].FromString(data)
    except protobuf_message.DecodeError:
      expected = (Code.INTERNAL,)  # grpcio: 'Exception deserializing request!'
    else:
      expected = None
    cases.append(GrpcCase('random_bytes', method, data, expected))
  for _ in range(max(1, per_kind // 4)):  # Methods that do not exist.
    name = ''.join(rng.choice(string.ascii_letters) for _ in range(rng.randint(1, 12)))
    if name not in ('Predict', 'Classify', 'Regress', 'MultiInference', 'GetModelMetadata',
                    'GetModelStatus', 'HandleReloadConfigRequest'):
      cases.append(GrpcCase('no_method', rng.choice([PREDICTION, MODEL_SERVICE]) + name, b'',
                            (Code.UNIMPLEMENTED,)))
  return cases


def test_fuzz_grpc(fuzz_server):
  rng = random.Random(77)
  cases = make_grpc_cases(rng, per_kind=100)
  assert len(cases) >= 1000
  deadline = time.monotonic() + 60
  problems, codes = [], {}
  with grpc.insecure_channel(f'127.0.0.1:{fuzz_server.grpc_port}') as channel:
    callables = {}
    for index, case in enumerate(cases):
      assert time.monotonic() < deadline, f'fuzzing took too long (at case {index})'
      call = callables.get(case.method)
      if call is None:
        call = callables[case.method] = _raw(channel, case.method)
      try:
        call(case.request, timeout=TIMEOUT)
      except grpc.RpcError as e:
        code, details = e.code(), e.details() or ''
      else:
        code, details = Code.OK, ''
      codes[code] = codes.get(code, 0) + 1
      where = f'{case.kind} #{index} {case.method.rsplit("/", 1)[1]}'
      if code == Code.OK:
        problems.append(f'{where}: accepted {case.request[:80]!r}')
      elif not details:
        problems.append(f'{where}: {code.name} without a message')
      elif case.expected is not None and code not in case.expected:
        problems.append(f'{where}: {code.name} (expected {[c.name for c in case.expected]}): '
                        f'{details[:200]}')
      elif case.expected is None and code in SERVER_FAULTS:
        problems.append(f'{where}: {code.name}: {details[:200]}')
  assert problems == [], f'{len(problems)} bad answers, e.g. {problems[:10]}'
  assert Code.OK not in codes
  assert_still_serving(fuzz_server)



@pytest.mark.parametrize('dims,unknown_rank,content', [
    pytest.param([-1], False, True, id='-1'),
    pytest.param([2, -1], False, True, id='2x-1'),
    pytest.param([-4], False, True, id='-4'),
    pytest.param([], True, False, id='unknown_rank_float_val'),
    pytest.param([], True, True, id='unknown_rank_content'),
    pytest.param([-2, -2], False, True, id='-2x-2'),
    pytest.param([-3], False, False, id='-3_float_val'),
])
def test_tensor_proto_with_an_invalid_shape_is_refused(fuzz_server, dims, unknown_rank, content):
  proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT)
  if content:
    proto.tensor_content = np.ones(4, np.float32).tobytes()
  else:
    proto.float_val.append(1.0)
  proto.tensor_shape.unknown_rank = unknown_rank
  for dim in dims:
    proto.tensor_shape.dim.add(size=dim)
  request = predict_pb2.PredictRequest()
  request.model_spec.name = 'half_plus_two'
  request.inputs['x'].CopyFrom(proto)
  with grpc.insecure_channel(f'127.0.0.1:{fuzz_server.grpc_port}') as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    with pytest.raises(grpc.RpcError) as raised:
      stub.Predict(request, timeout=TIMEOUT)
  assert raised.value.code() == Code.INVALID_ARGUMENT


# ----- (d) oversized bodies and absurd nesting -----

def send_streamed(port: int, path: str, size: int, chunk: bytes = b' ' * MIB,
                  timeout: float = 60.0) -> Reply:
  """POSTs `size` body bytes in chunks without holding the body in memory."""
  sock = socket.create_connection(('127.0.0.1', port), timeout=timeout)
  try:
    sock.sendall((f'POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n'
                  f'Content-Type: application/json\r\nContent-Length: {size}\r\n\r\n').encode())
    sent = 0
    try:
      while sent < size:
        part = chunk[:min(len(chunk), size - sent)]
        sock.sendall(part)
        sent += len(part)
    except OSError:
      pass  # The server may answer and stop reading early; read its answer anyway.
    response = http.client.HTTPResponse(sock)
    response.begin()
    return Reply(response.status, response.msg, response.read())
  finally:
    sock.close()


def max_rss_mb() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class SmallLimitRestServer:
  """rest_service.start_rest_server with a small max_body_bytes, on its own event loop."""

  def __init__(self, model_dir: str, max_body_bytes: int):
    import asyncio  # pylint: disable=g-import-not-at-top
    self._asyncio = asyncio
    self.manager = ModelManager([config_lib.ModelConfig('half_plus_two', model_dir)],
                                poll_seconds=0)
    self.manager.start()
    service = InferenceService(self.manager)
    options = config_lib.ServerOptions(port=0, rest_api_port=0)
    self.loop = asyncio.new_event_loop()
    started = concurrent.futures.Future()

    def run():
      asyncio.set_event_loop(self.loop)
      try:
        started.set_result(self.loop.run_until_complete(rest_service.start_rest_server(
            service, self.manager, options, max_body_bytes=max_body_bytes)))
      except Exception as e:  # pylint: disable=broad-except
        started.set_exception(e)
        return
      self.loop.run_forever()

    self.thread = threading.Thread(target=run, daemon=True, name='small-limit-rest')
    self.thread.start()
    self.rest = started.result(timeout=TIMEOUT)
    self.port = self.rest.port

  def close(self):
    future = self._asyncio.run_coroutine_threadsafe(self.rest.stop(1.0), self.loop)
    future.result(timeout=TIMEOUT)
    self.loop.call_soon_threadsafe(self.loop.stop)
    self.thread.join(timeout=TIMEOUT)
    self.manager.stop()


@pytest.fixture
def small_limit_server(tf_serving_testdata):
  server = SmallLimitRestServer(
      os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu'), 64 * 1024)
  yield server
  server.close()


@pytest.mark.parametrize('where', ['small_limit', 'default_limit'])
def test_oversized_body_is_refused_with_a_json_error(request, where):
  if where == 'small_limit':
    port, size = request.getfixturevalue('small_limit_server').port, 64 * 1024 + 1
  else:
    port = request.getfixturevalue('fuzz_server').rest_port
    size = config_lib.ServerOptions().rest_api_max_body_bytes + 1  # --rest_api_max_body_bytes
  reply = send_streamed(port, '/v1/models/half_plus_two:predict', size)
  assert reply.status == 413, (reply.status, reply.body[:300])
  assert reply.content_type == JSON_TYPE
  assert 'larger than the limit' in reply.json()['error']


def test_small_limit_still_takes_bodies_under_it(small_limit_server):
  body = json.dumps({'instances': [1.0] * 5000}).encode()
  assert 20000 < len(body) < 64 * 1024
  reply = rest_request(small_limit_server.port, 'POST', '/v1/models/half_plus_two:predict', body)
  assert reply.status == 200
  assert reply.json() == {'predictions': [2.5] * 5000}


def test_oversized_and_deeply_nested_bodies_keep_memory_bounded(fuzz_server):
  port = fuzz_server.rest_port
  before = max_rss_mb()
  deadline = time.monotonic() + 60
  for size in (64 * MIB + 1, 64 * MIB + 1, 80 * MIB):
    try:
      reply = send_streamed(port, '/v1/models/half_plus_two:predict', size)
    except ConnectionResetError:
      pass  # Refused by closing the connection before the whole body arrived.
    else:
      assert reply.status >= 400, reply.status  # Refused (413), never run.
    assert time.monotonic() < deadline
  depth = 100000
  nested = [
      '{"instances": ' + '[' * depth + '1.0' + ']' * depth + '}',
      '{"instances": ' + '[' * depth + '}',
      '[' * depth,
      '{"inputs": ' + '{"a": ' * depth + '1' + '}' * depth + '}',
      '{"signature_name": "regress_x_to_y", "examples": [{"x": ' + '[' * depth + ']' * depth +
      '}]}',
  ]
  for body in nested:
    action = ':regress' if 'examples' in body else ':predict'
    reply = rest_request(port, 'POST', f'/v1/models/half_plus_two{action}', body)
    assert 400 <= reply.status < 500, (reply.status, reply.body[:300])
    assert reply.content_type == JSON_TYPE
    message = reply.json()['error']
    assert message and len(message) < 100000, message[:300]
    assert time.monotonic() < deadline
  growth = max_rss_mb() - before
  assert growth < 500, f'peak RSS grew by {growth:.0f} MB'
  assert_still_serving(fuzz_server)
