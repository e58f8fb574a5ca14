"""Server lifecycle through the Python API: estimator_export.serving.server.create_server.

Real servers on 127.0.0.1 ports chosen by the OS, driven with plain HTTP
(http.client) and the official gRPC stubs:

* ports bound with 0, REST disabled with None, stop() closing both ports;
* graceful stop: REST and gRPC requests in flight on a slow model finish;
  a REST request slower than rest_api_timeout_in_ms gets 504;
* warmup (contract section 8): an export of the trained toy Estimator (which
  carries assets.extra/tf_serving_warmup_requests) loads AVAILABLE; versions
  whose warmup file has more than 1000 records, a corrupt frame, an
  unparsable record, a refused log type or a failing request end in END;
* --model_config_file polling (section 7): the served models follow the file;
  an unparsable file keeps the previous models;
* Prometheus metrics at /monitoring/prometheus/metrics count requests;
* batching: 16 concurrent clients (REST and gRPC) get correct answers from
  batched runs, and a full batch queue answers 503 / UNAVAILABLE (section 4).

The slow model sleeps x[0] milliseconds per dataset read inside the graph
(tf.data's testing sleep), so a request is in flight without using the CPU.
TensorFlow runs those sleeps one at a time, and each request sleeps twice.
"""
import concurrent.futures
import dataclasses
import http.client
import json
import logging
import os
import re
import shutil
import socket
import tempfile
import threading
import time
from typing import Dict, List, Optional, Tuple

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.python.data.experimental.ops import testing as tf_data_testing
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_log_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

from estimator_export import precision
from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from tests import toy
from tests.serving_util import (JSON_TYPE, TIMEOUT, Reply, model_status, predict_request,
                                rest_request, save_tf1_model, self_signed_ssl_config,
                                wait_for)

Code = grpc.StatusCode
METRICS_PATH = '/monitoring/prometheus/metrics'
QUEUE_FULL = 'The batch scheduling queue to which this task was submitted is full'


# ----- clients -----

def rest_predict(port: int, model: str, instances, conn=None) -> Reply:
  return rest_request(port, 'POST', f'/v1/models/{model}:predict', {'instances': instances},
                      conn)


def grpc_predict(port: int, model: str, values) -> predict_pb2.PredictResponse:
  with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(predict_request(model, values), timeout=TIMEOUT)


def predicts(port: int, model: str, x: float) -> Optional[float]:
  """The model's single output for [x], or None when it does not answer 200."""
  reply = rest_predict(port, model, [x])
  if reply.status != 200:
    return None
  value = reply.json()['predictions'][0]
  return value[0] if isinstance(value, list) else value


def assert_refused(port: int):
  with pytest.raises(OSError):
    with socket.create_connection(('127.0.0.1', port), timeout=2.0):
      pass


def metric_samples(port: int, name: str) -> Dict[Tuple[Tuple[str, str], ...], float]:
  """{sorted label pairs: value} of one metric's samples on the Prometheus page."""
  reply = rest_request(port, 'GET', METRICS_PATH)
  assert reply.status == 200, reply.body[:300]
  assert reply.headers.get('Content-Type', '').startswith('text/plain'), reply.headers
  samples = {}
  pattern = re.compile(r'^%s(?:\{(.*)\})? (\S+)$' % re.escape(name))
  for line in reply.body.decode('utf-8').splitlines():
    match = pattern.match(line)
    if match:
      labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', match.group(1) or '')))
      samples[labels] = float(match.group(2))
  return samples


# ----- models -----

def slow_signatures() -> Dict:
  """y = x, after sleeping x[0] milliseconds (twice: one read, then end of sequence)."""
  x = tf.compat.v1.placeholder(tf.float32, [None], name='x')
  micros = tf.cast(x[0] * 1000.0, tf.int64)
  dataset = tf.data.Dataset.from_tensors(tf.constant(0, tf.int64))
  dataset = dataset.apply(tf_data_testing.sleep(micros))
  slept = dataset.reduce(tf.constant(0, tf.int64), lambda total, value: total + value)
  y = tf.identity(x + tf.cast(slept, tf.float32), name='y')
  return {'serving_default': tf.compat.v1.saved_model.predict_signature_def({'x': x},
                                                                            {'y': y})}


@pytest.fixture(scope='module')
def slow_model(tmp_path_factory) -> str:
  base = str(tmp_path_factory.mktemp('slow'))
  save_tf1_model(os.path.join(base, '1'), slow_signatures)
  return base


@pytest.fixture(scope='module')
def half_plus_two(tf_serving_testdata) -> str:
  return os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu')


def start(**options) -> server_lib.ModelServer:
  return server_lib.create_server(config_lib.ServerOptions(port=0, rest_api_port=0, **options))


# ----- ports and stop -----

def test_ports_bound_with_zero(half_plus_two):
  servers = [start(model_name='half_plus_two', model_base_path=half_plus_two)
             for _ in range(2)]
  try:
    ports = [p for s in servers for p in (s.grpc_port, s.rest_port)]
    assert all(isinstance(p, int) and p > 0 for p in ports)
    assert len(set(ports)) == 4
    for server in servers:
      reply = rest_predict(server.rest_port, 'half_plus_two', [1.0, 2.0, 5.0])
      assert reply.status == 200 and reply.json() == {'predictions': [2.5, 3.0, 4.5]}
      assert 'Access-Control-Allow-Origin' not in reply.headers  # CORS is off by default.
      response = grpc_predict(server.grpc_port, 'half_plus_two', [[2.0]])
      assert tf.make_ndarray(response.outputs['y']).tolist() == [[3.0]]
      assert response.model_spec.version.value == 123
  finally:
    for server in servers:
      server.stop(grace=1.0)
  for port in ports:
    assert_refused(port)
  servers[0].stop()  # A second stop is a no-op.


def test_mixed_precision_bfloat16_serves(half_plus_two, caplog):
  with caplog.at_level(logging.WARNING, logger='estimator_export'), \
      start(model_name='half_plus_two', model_base_path=half_plus_two,
            mixed_precision='bfloat16') as server:
    reply = rest_predict(server.rest_port, 'half_plus_two', [1.0, 2.0, 5.0])
    assert reply.status == 200
    np.testing.assert_allclose(reply.json()['predictions'], [2.5, 3.0, 4.5], rtol=1e-2)
  emulated = [r for r in caplog.records if 'mixed_precision=bfloat16 on a CPU' in r.message]
  assert bool(emulated) == (precision.native_bf16() is None)


def test_rest_port_none_serves_grpc_only(half_plus_two):
  with server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=None, model_name='half_plus_two',
      model_base_path=half_plus_two)) as server:
    assert server.rest_port is None
    response = grpc_predict(server.grpc_port, 'half_plus_two', [[1.0]])
    assert tf.make_ndarray(response.outputs['y']).tolist() == [[2.5]]
    port = server.grpc_port
  assert_refused(port)


@pytest.fixture
def short_dir():
  """A directory with a short path: a UNIX socket path may have at most 107 bytes."""
  path = tempfile.mkdtemp(prefix='ee-', dir='/tmp')
  yield path
  shutil.rmtree(path, ignore_errors=True)


def test_grpc_socket_path_and_channel_arguments(half_plus_two, short_dir):
  """--grpc_socket_path serves gRPC on unix:PATH too; --grpc_channel_arguments reach the server."""
  socket_path = os.path.join(short_dir, 'tf-serving.sock')
  options = config_lib.options_from_flags({
      'port': 0, 'model_name': 'half_plus_two', 'model_base_path': half_plus_two,
      'grpc_socket_path': socket_path,
      'grpc_channel_arguments': 'grpc.max_receive_message_length=64,grpc.primary_user_agent=t'})
  assert options.grpc_channel_arguments == (('grpc.max_receive_message_length', 64),
                                            ('grpc.primary_user_agent', 't'))
  with server_lib.create_server(options) as server:
    with grpc.insecure_channel(f'unix:{socket_path}') as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      response = stub.Predict(predict_request('half_plus_two', [[2.0]]), timeout=TIMEOUT)
      assert tf.make_ndarray(response.outputs['y']).tolist() == [[3.0]]
      with pytest.raises(grpc.RpcError) as info:  # Over the 64-byte limit set above.
        stub.Predict(predict_request('half_plus_two', [[2.0]] * 100), timeout=TIMEOUT)
      assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_predict(server.grpc_port, 'half_plus_two', [[1.0]]).outputs['y'].float_val


def test_too_long_socket_path_says_so(half_plus_two, short_dir):
  socket_path = os.path.join(short_dir, 'x' * 120, 'tf-serving.sock')
  options = config_lib.options_from_flags({
      'port': 0, 'model_name': 'half_plus_two', 'model_base_path': half_plus_two,
      'grpc_socket_path': socket_path})
  with pytest.raises(OSError, match=r'may have at most 107: use a shorter one'):
    server_lib.create_server(options)


@pytest.mark.skipif(not shutil.which('openssl'), reason='needs openssl to make a certificate')
def test_ssl_config_file_serves_grpc_over_tls(half_plus_two, tmp_path):
  ssl_config, cert = self_signed_ssl_config(tmp_path)
  with server_lib.create_server(config_lib.ServerOptions(
      port=0, model_name='half_plus_two', model_base_path=half_plus_two,
      ssl_config_file=ssl_config)) as server:
    credentials = grpc.ssl_channel_credentials(root_certificates=cert)
    with grpc.secure_channel(f'127.0.0.1:{server.grpc_port}', credentials,
                             options=[('grpc.ssl_target_name_override', 'localhost')]) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      response = stub.Predict(predict_request('half_plus_two', [[2.0]]), timeout=TIMEOUT)
    assert tf.make_ndarray(response.outputs['y']).tolist() == [[3.0]]
    with pytest.raises(grpc.RpcError):  # Plain text is refused.
      grpc_predict(server.grpc_port, 'half_plus_two', [[2.0]])


def _openssl(*args):
  import subprocess  # pylint: disable=g-import-not-at-top
  subprocess.run(['openssl', *map(str, args)], check=True, capture_output=True, timeout=60)


def _signed_pair(tmp_path, name, ca_key, ca_cert, subject_alt_name=None):
  """A key and a certificate for `name` signed by the test CA."""
  key, csr, cert = (tmp_path / f'{name}.{ext}' for ext in ('key', 'csr', 'crt'))
  _openssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', f'/CN={name}', '-keyout', key,
           '-out', csr)
  extra = []
  if subject_alt_name:
    ext = tmp_path / f'{name}.ext'
    ext.write_text(f'subjectAltName={subject_alt_name}\n')
    extra = ['-extfile', ext]
  _openssl('x509', '-req', '-in', csr, '-CA', ca_cert, '-CAkey', ca_key, '-CAcreateserial',
           '-days', '1', '-out', cert, *extra)
  return key.read_bytes(), cert.read_bytes()


@pytest.mark.skipif(not shutil.which('openssl'), reason='needs openssl to make certificates')
def test_ssl_client_verify_admits_only_clients_with_a_certificate_of_the_ca(half_plus_two,
                                                                          tmp_path):
  ca_key, ca_cert = tmp_path / 'ca.key', tmp_path / 'ca.crt'
  _openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=test-ca',
           '-keyout', ca_key, '-out', ca_cert)
  server_key, server_cert = _signed_pair(tmp_path, 'localhost', ca_key, ca_cert,
                                         'DNS:localhost')
  client_key, client_cert = _signed_pair(tmp_path, 'client', ca_key, ca_cert)
  other = tmp_path / 'other'
  other.mkdir()
  other_ca_key, other_ca_cert = other / 'ca.key', other / 'ca.crt'
  _openssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1', '-subj', '/CN=other',
           '-keyout', other_ca_key, '-out', other_ca_cert)
  stranger_key, stranger_cert = _signed_pair(other, 'stranger', other_ca_key, other_ca_cert)
  ssl_config = tmp_path / 'ssl.config'
  ssl_config.write_text(f'server_key: {json.dumps(server_key.decode())}\n'
                        f'server_cert: {json.dumps(server_cert.decode())}\n'
                        f'custom_ca: {json.dumps(ca_cert.read_text())}\n'
                        'client_verify: true\n')

  def predict_with(port, key=None, cert=None):
    credentials = grpc.ssl_channel_credentials(root_certificates=ca_cert.read_bytes(),
                                               private_key=key, certificate_chain=cert)
    with grpc.secure_channel(f'127.0.0.1:{port}', credentials,
                             options=[('grpc.ssl_target_name_override', 'localhost')]) as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      response = stub.Predict(predict_request('half_plus_two', [[2.0]]), timeout=TIMEOUT)
    return tf.make_ndarray(response.outputs['y']).tolist()

  with server_lib.create_server(config_lib.ServerOptions(
      port=0, model_name='half_plus_two', model_base_path=half_plus_two,
      ssl_config_file=str(ssl_config))) as server:
    assert predict_with(server.grpc_port, client_key, client_cert) == [[3.0]]
    with pytest.raises(grpc.RpcError) as info:  # No client certificate.
      predict_with(server.grpc_port)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError) as info:  # A certificate from another CA.
      predict_with(server.grpc_port, stranger_key, stranger_cert)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert predict_with(server.grpc_port, client_key, client_cert) == [[3.0]]


def test_graceful_stop_lets_in_flight_requests_finish(slow_model):
  server = start(model_name='slow', model_base_path=slow_model)
  ports = (server.rest_port, server.grpc_port)
  assert predicts(server.rest_port, 'slow', 1.0) == 1.0  # Builds the callable.
  results, sent = {}, threading.Event()

  def rest_call():
    conn = http.client.HTTPConnection('127.0.0.1', server.rest_port, timeout=TIMEOUT)
    try:
      conn.request('POST', '/v1/models/slow:predict', body=json.dumps({'instances': [500.0]}))
      sent.set()
      response = conn.getresponse()
      results['rest'] = (response.status, json.loads(response.read()))
    finally:
      conn.close()

  channel = grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}')
  thread = threading.Thread(target=rest_call)
  try:
    grpc.channel_ready_future(channel).result(timeout=TIMEOUT)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    thread.start()
    assert sent.wait(timeout=TIMEOUT)
    pending = stub.Predict.future(predict_request('slow', [500.0]), timeout=TIMEOUT)
    time.sleep(0.3)  # Both are now in the model, which sleeps 1 s per request, in turn.
    assert not results and not pending.done(), 'a request ended before stop() was called'
    began = time.monotonic()
    server.stop(grace=20.0)
    stopping = time.monotonic() - began
    thread.join(timeout=TIMEOUT)
    response = pending.result(timeout=TIMEOUT)
  finally:
    server.stop(grace=1.0)
    channel.close()
    thread.join(timeout=TIMEOUT)
  assert results == {'rest': (200, {'predictions': [500.0]})}
  assert tf.make_ndarray(response.outputs['y']).tolist() == [500.0]
  assert response.model_spec.version.value == 1
  assert stopping > 0.5, f'stop() returned after {stopping:.2f} s, before the requests ended'
  for port in ports:
    assert_refused(port)


def test_rest_request_past_the_timeout_is_504(slow_model):
  server = start(model_name='slow', model_base_path=slow_model, rest_api_timeout_in_ms=200)
  try:
    wait_for(lambda: predicts(server.rest_port, 'slow', 1.0) == 1.0, 20,
             'a fast request to answer within the timeout')
    began = time.monotonic()
    reply = rest_predict(server.rest_port, 'slow', [1500.0])  # Runs for 3 s.
    took = time.monotonic() - began
    assert reply.status == 504, reply.body
    assert reply.content_type == JSON_TYPE and reply.json()['error']
    assert took < 2.5, f'the 200 ms timeout answered after {took:.2f} s'
    wait_for(lambda: predicts(server.rest_port, 'slow', 1.0) == 1.0, 20,
             'the server to answer again once the slow run ended')
  finally:
    server.stop(grace=5.0)


# ----- warmup -----

def test_warmup_of_an_exported_model(trained_toy, tmp_path, caplog):
  model, estimator = trained_toy
  base = str(tmp_path / 'toy')
  export = model.export_for_serving(estimator, base, samples=toy.SAMPLES)
  warmup_file = os.path.join(export.path, 'assets.extra', 'tf_serving_warmup_requests')
  assert os.path.isfile(warmup_file) and export.warmup_records > 0
  caplog.set_level(logging.INFO, logger='estimator_export.serving')
  server = start(model_name='toy', model_base_path=base, num_request_iterations_for_warmup=2)
  try:
    status = model_status(server.rest_port, 'toy')
    assert status == {export.version: {
        'version': str(export.version), 'state': 'AVAILABLE',
        'status': {'error_code': 'OK', 'error_message': ''}}}
    reply = rest_request(server.rest_port, 'POST', '/v1/models/toy:predict', {
        'instances': [{'x': [1.0, 2.0, 3.0], 'n': 1}]})
    assert reply.status == 200
    assert set(reply.json()['predictions'][0]) == {'class_ids', 'logits', 'probabilities'}
  finally:
    server.stop(grace=1.0)
  assert (f'Finished reading warmup data for model at {warmup_file}. Number of warmup '
          f'records read: {export.warmup_records}.') in caplog.text


def warmup_predict_log(x: float = 1.0, signature: str = '') -> bytes:
  log = prediction_log_pb2.PredictionLog()
  request = log.predict_log.request
  request.model_spec.name = 'half_plus_two'
  request.model_spec.signature_name = signature
  request.inputs['x'].CopyFrom(tf.make_tensor_proto([[x]], tf.float32))
  return log.SerializeToString()


def warmup_example_logs() -> List[bytes]:
  example = tf.train.Example(features=tf.train.Features(feature={
      'x': tf.train.Feature(float_list=tf.train.FloatList(value=[2.0]))}))
  regress = prediction_log_pb2.PredictionLog()
  regress.regress_log.request.model_spec.signature_name = 'regress_x_to_y'
  regress.regress_log.request.input.example_list.examples.add().CopyFrom(example)
  classify = prediction_log_pb2.PredictionLog()
  classify.classify_log.request.model_spec.signature_name = 'classify_x_to_y'
  classify.classify_log.request.input.example_list.examples.add().CopyFrom(example)
  return [regress.SerializeToString(), classify.SerializeToString()]


def session_run_log() -> bytes:
  log = prediction_log_pb2.PredictionLog()
  log.session_run_log.request.feed.add()  # A log type TF Serving does not replay.
  return log.SerializeToString()


WARMUP_CASES = {
    # name: (records, or raw file bytes)
    'warm_ok': [warmup_predict_log(float(i)) for i in range(3)],
    'warm_1000': [warmup_predict_log()] * 1000,
    'warm_1001': [warmup_predict_log()] * 1001,
    'warm_unparsable': [b'\xff\xff\xff\xff'],
    'warm_corrupt_frame': b'this is not a TFRecord file at all',
    'warm_failing_request': [warmup_predict_log(signature='nope')],
    'warm_session_run_log': [session_run_log()],
}


@dataclasses.dataclass
class WarmupServer:
  server: server_lib.ModelServer
  files: Dict[str, str]  # model -> its warmup file

  def status(self, model: str) -> dict:
    versions = model_status(self.server.rest_port, model)
    assert list(versions) == [123], versions
    return versions[123]


@pytest.fixture(scope='module')
def warmup_server(half_plus_two, tmp_path_factory):
  """One model per WARMUP_CASES entry: half_plus_two's 00000123 with that warmup file."""
  root = str(tmp_path_factory.mktemp('warmup'))
  configs, files = [], {}
  for name, content in {**WARMUP_CASES, 'warm_ok_examples': None}.items():
    version_dir = os.path.join(root, name, '00000123')
    shutil.copytree(os.path.join(half_plus_two, '00000123'), version_dir)
    os.makedirs(os.path.join(version_dir, 'assets.extra'))
    files[name] = os.path.join(version_dir, 'assets.extra', 'tf_serving_warmup_requests')
    if content is None:
      content = warmup_example_logs() + [warmup_predict_log()]
    if isinstance(content, bytes):
      with open(files[name], 'wb') as f:
        f.write(content)
    else:
      with tf.io.TFRecordWriter(files[name]) as writer:
        for record in content:
          writer.write(record)
    configs.append(config_lib.ModelConfig(name, os.path.join(root, name)))
  path = os.path.join(root, 'models.config')
  config_lib.write_models_config(configs, path)
  server = start(model_config_file=path, max_num_load_retries=0)  # Fail at once: END.
  yield WarmupServer(server, files)
  server.stop(grace=1.0)


@pytest.mark.parametrize('model', ['warm_ok', 'warm_ok_examples', 'warm_1000'])
def test_good_warmup_files_load(warmup_server, model):
  assert warmup_server.status(model) == {
      'version': '123', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}
  assert predicts(warmup_server.server.rest_port, model, 2.0) == 3.0


def test_more_than_1000_warmup_records_fail_the_load(warmup_server):
  status = warmup_server.status('warm_1001')
  assert status['state'] == 'END'
  assert status['status'] == {
      'error_code': 'INVALID_ARGUMENT',
      'error_message': ('Number of warmup records exceeds the maximum (1000) at '
                        f'{warmup_server.files["warm_1001"]}')}
  reply = rest_predict(warmup_server.server.rest_port, 'warm_1001', [1.0])
  assert reply.status == 404
  assert reply.json() == {'error': 'Servable not found for request: Latest(warm_1001)'}


@pytest.mark.parametrize('model,message', [
    ('warm_unparsable', 'warmup record'),
    ('warm_corrupt_frame', 'warmup record'),
    ('warm_failing_request', 'nope'),
    ('warm_session_run_log', 'session_run_log'),
])
def test_bad_warmup_files_fail_the_load(warmup_server, model, message):
  status = warmup_server.status(model)
  assert status['state'] == 'END'
  assert status['status']['error_code'] != 'OK'
  assert message in status['status']['error_message'], status
  assert predicts(warmup_server.server.rest_port, model, 1.0) is None


def test_unparsable_warmup_record_message(warmup_server):
  status = warmup_server.status('warm_unparsable')
  message = status['status']['error_message']
  assert message.startswith('Failed to parse warmup record: ')
  assert message.endswith(f' from {warmup_server.files["warm_unparsable"]}')
  assert status['status']['error_code'] == 'INVALID_ARGUMENT'


# ----- model config file polling -----

def test_model_config_file_polling_switches_models(tf_serving_testdata, half_plus_two, tmp_path):
  half_plus_three = os.path.join(tf_serving_testdata, 'saved_model_half_plus_three')
  two_versions = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_2_versions')
  path = str(tmp_path / 'models.config')
  model_config = config_lib.ModelConfig
  config_lib.write_models_config([model_config('alpha', half_plus_two)], path)
  server = start(model_config_file=path, model_config_file_poll_wait_seconds=1)
  port = server.rest_port
  try:
    assert predicts(port, 'alpha', 1.0) == 2.5
    assert predicts(port, 'beta', 1.0) is None

    config_lib.write_models_config([model_config('beta', half_plus_three)], path)
    wait_for(lambda: predicts(port, 'beta', 1.0) == 3.5, 20, 'beta to be served')
    wait_for(lambda: predicts(port, 'alpha', 1.0) is None, 20, 'alpha to go away')
    reply = rest_predict(port, 'alpha', [1.0])
    assert reply.status == 404
    assert reply.json() == {'error': 'Servable not found for request: Latest(alpha)'}
    reply = rest_request(port, 'GET', '/v1/models/alpha')
    assert reply.status == 404
    assert reply.json() == {'error': 'Could not find any versions of model alpha'}

    config_lib.write_models_config([model_config('beta', half_plus_three),
                                    model_config('alpha', half_plus_two)], path)
    wait_for(lambda: predicts(port, 'alpha', 1.0) == 2.5, 20, 'alpha to come back')
    assert predicts(port, 'beta', 1.0) == 3.5

    with open(os.path.join(tf_serving_testdata, 'bad_model_config.txt')) as f:
      bad = f.read()
    with open(path, 'w') as f:
      f.write(bad)
    time.sleep(2.5)  # Two polls: the unparsable file is logged and ignored.
    assert predicts(port, 'alpha', 1.0) == 2.5 and predicts(port, 'beta', 1.0) == 3.5

    config_lib.write_models_config([model_config(
        'gamma', two_versions, version_policy=config_lib.All(),
        version_labels={'stable': 123})], path)
    wait_for(lambda: [v['state'] for v in model_status(port, 'gamma').values()] ==
             ['AVAILABLE', 'AVAILABLE'], 20, 'both versions of gamma to be served')
    wait_for(lambda: not model_status(port, 'alpha') and not model_status(port, 'beta'), 20,
             'alpha and beta to go away')
    assert predicts(port, 'gamma', 1.0) == 2.5
    wait_for(lambda: rest_request(port, 'GET', '/v1/models/gamma/labels/stable/metadata').status
             == 200, 20, 'the label once version 123 is AVAILABLE')
    reply = rest_request(port, 'GET', '/v1/models/gamma/labels/stable/metadata')
    assert reply.json()['model_spec']['version'] == '123'
  finally:
    server.stop(grace=1.0)


# ----- monitoring -----

@pytest.fixture
def monitored_server(tf_serving_testdata, half_plus_two):
  server = start(model_name='half_plus_two', model_base_path=half_plus_two,
                 monitoring_config_file=os.path.join(tf_serving_testdata,
                                                     'monitoring_config.txt'))
  yield server
  server.stop(grace=1.0)


REQUEST_COUNT = ':tensorflow:serving:request_count'
REQUEST_LATENCY_COUNT = ':tensorflow:serving:request_latency_count'


def test_prometheus_metrics_count_requests(monitored_server):
  port = monitored_server.rest_port
  before = metric_samples(port, REQUEST_COUNT)
  assert before == {}
  for x in (1.0, 2.0, 3.0):
    assert predicts(port, 'half_plus_two', x) == 0.5 * x + 2.0
  reply = rest_request(port, 'POST', '/v1/models/half_plus_two:regress', {
      'signature_name': 'regress_x_to_y', 'examples': [{'x': 2.0}]})
  assert reply.status == 200
  for x in (4.0, 5.0):
    grpc_predict(monitored_server.grpc_port, 'half_plus_two', [[x]])
  bad = predict_request('half_plus_two', [[1.0]])
  bad.inputs['x'].CopyFrom(tf.make_tensor_proto([[b'1.0']], tf.string))
  with grpc.insecure_channel(f'127.0.0.1:{monitored_server.grpc_port}') as channel:
    with pytest.raises(grpc.RpcError) as raised:
      prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(bad, timeout=TIMEOUT)
  assert raised.value.code() == Code.INVALID_ARGUMENT  # Expects arg[0] to be float ...
  counts = metric_samples(port, REQUEST_COUNT)
  assert counts == {
      (('model_name', 'half_plus_two'), ('status', 'OK')): 6.0,
      (('model_name', 'half_plus_two'), ('status', 'INVALID_ARGUMENT')): 1.0,
  }
  latency = metric_samples(port, REQUEST_LATENCY_COUNT)
  by_api = {}
  for labels, value in latency.items():
    api = dict(labels)['API']
    by_api[api] = by_api.get(api, 0) + value
  assert by_api == {'Predict': 5.0, 'Regress': 1.0}  # Successful requests only.
  reply = rest_request(port, 'GET', '/v1/models/half_plus_two')
  assert reply.status == 200 and reply.content_type == JSON_TYPE


def test_grpc_request_latency_is_labelled_grpc(monitored_server):
  grpc_predict(monitored_server.grpc_port, 'half_plus_two', [[1.0]])
  latency = metric_samples(monitored_server.rest_port, REQUEST_LATENCY_COUNT)
  assert {dict(labels)['entrypoint'] for labels in latency} == {'GRPC'}


def test_requests_for_unknown_models_are_counted(monitored_server):
  with pytest.raises(grpc.RpcError):
    grpc_predict(monitored_server.grpc_port, 'foo', [[1.0]])
  counts = metric_samples(monitored_server.rest_port, REQUEST_COUNT)
  # A name that is not served is counted under one label value, never as its own series.
  assert counts.get((('model_name', '<unknown>'), ('status', 'NOT_FOUND'))) == 1.0
  assert not any(dict(labels).get('model_name') == 'foo' for labels in counts)


# ----- batching -----

def write_batching_parameters(path: str, max_batch_size: int, batch_timeout_micros: int,
                              max_enqueued_batches: int, num_batch_threads: int) -> str:
  with open(path, 'w') as f:
    f.write(f'max_batch_size {{ value: {max_batch_size} }}\n'
            f'batch_timeout_micros {{ value: {batch_timeout_micros} }}\n'
            f'max_enqueued_batches {{ value: {max_enqueued_batches} }}\n'
            f'num_batch_threads {{ value: {num_batch_threads} }}\n')
  return path


@pytest.mark.parametrize('parameters', ['fixture', 'timeout_20ms'])
def test_batching_with_16_concurrent_clients(tf_serving_testdata, half_plus_two, tmp_path,
                                             parameters):
  if parameters == 'fixture':
    parameters_file = os.path.join(tf_serving_testdata, 'batching_config.txt')
  else:
    parameters_file = write_batching_parameters(str(tmp_path / 'batching.config'), 16, 20000,
                                                100, 2)
  server = start(model_name='half_plus_two', model_base_path=half_plus_two,
                 enable_batching=True, batching_parameters_file=parameters_file,
                 monitoring_config_file=os.path.join(tf_serving_testdata,
                                                     'monitoring_config.txt'))
  clients, rounds = 16, 12
  barrier = threading.Barrier(clients)

  def rest_client(index: int) -> List[str]:
    problems = []
    conn = http.client.HTTPConnection('127.0.0.1', server.rest_port, timeout=TIMEOUT)
    barrier.wait(timeout=TIMEOUT)
    try:
      for step in range(rounds):
        rows = [[float(index * 1000 + step * 10 + r)] for r in range(1 + step % 3)]
        reply = rest_predict(server.rest_port, 'half_plus_two', rows, conn)
        expected = {'predictions': [[0.5 * row[0] + 2.0] for row in rows]}
        if reply.status != 200 or reply.json() != expected:
          problems.append(f'REST {index}/{step}: {reply.status} {reply.body[:200]!r}')
    finally:
      conn.close()
    return problems

  def grpc_client(index: int) -> List[str]:
    problems = []
    with grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}') as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      barrier.wait(timeout=TIMEOUT)
      for step in range(rounds):
        rows = np.array([[index * 1000 + step * 10 + r] for r in range(1 + step % 3)],
                        np.float32)
        try:
          response = stub.Predict(predict_request('half_plus_two', rows), timeout=TIMEOUT)
        except grpc.RpcError as e:
          problems.append(f'gRPC {index}/{step}: {e.code()} {e.details()}')
          continue
        got = tf.make_ndarray(response.outputs['y'])
        if got.shape != rows.shape or not np.array_equal(got, 0.5 * rows + 2.0):
          problems.append(f'gRPC {index}/{step}: {got.tolist()} for {rows.tolist()}')
    return problems

  try:
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
      futures = ([pool.submit(rest_client, i) for i in range(clients // 2)] +
                 [pool.submit(grpc_client, i) for i in range(clients // 2, clients)])
      problems = [p for f in futures for p in f.result(timeout=120)]
    tasks = metric_samples(server.rest_port,
                           ':tensorflow:serving:batching_session:input_batch_size_count')
    batches = metric_samples(server.rest_port,
                             ':tensorflow:serving:batching_session:processed_batch_size_count')
  finally:
    server.stop(grace=1.0)
  assert problems == []
  assert sum(tasks.values()) == clients * rounds
  if parameters == 'timeout_20ms':  # Requests waited for each other: fewer runs than requests.
    assert 0 < sum(batches.values()) < clients * rounds, (batches, tasks)


def test_full_batch_queue_is_503_and_unavailable(slow_model, tmp_path):
  parameters_file = write_batching_parameters(str(tmp_path / 'batching.config'), 1, 0, 1, 1)
  server = start(model_name='slow', model_base_path=slow_model, enable_batching=True,
                 batching_parameters_file=parameters_file)
  results = {}

  def slow_call(key: str):
    reply = rest_predict(server.rest_port, 'slow', [750.0])
    results[key] = (reply.status, reply.json())

  threads = [threading.Thread(target=slow_call, args=(key,)) for key in ('running', 'queued')]
  try:
    assert predicts(server.rest_port, 'slow', 1.0) == 1.0
    batcher = server.manager.resolve('slow').batcher
    threads[0].start()  # Takes the only batch thread for 1.5 s.
    time.sleep(0.1)
    threads[1].start()  # Waits in the only batch the queue may hold.
    wait_for(lambda: batcher.num_enqueued_tasks() == 1, 10, 'a task to be queued')
    assert 'running' not in results
    reply = rest_predict(server.rest_port, 'slow', [1.0])
    assert reply.status == 503, reply.body
    assert reply.content_type == JSON_TYPE
    assert QUEUE_FULL in reply.json()['error']
    with pytest.raises(grpc.RpcError) as raised:
      grpc_predict(server.grpc_port, 'slow', [1.0])
    assert raised.value.code() == Code.UNAVAILABLE
    assert QUEUE_FULL in raised.value.details()
    for thread in threads:
      thread.join(timeout=TIMEOUT)
    assert results == {'running': (200, {'predictions': [750.0]}),
                       'queued': (200, {'predictions': [750.0]})}
    assert predicts(server.rest_port, 'slow', 1.0) == 1.0
  finally:
    server.stop(grace=5.0)
    for thread in threads:
      if thread.is_alive():
        thread.join(timeout=TIMEOUT)
