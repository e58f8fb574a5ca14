"""What one REST/gRPC client can cost the embedded server: memory of a 32 MiB body, rank limits.

The server runs as its own process (so its peak RSS, VmHWM in /proc/PID/status, is its own)
on a copy of TF Serving's half_plus_two (float input "x", shape [-1]), reached by
http.client and the tensorflow-serving-api gRPC stub on 127.0.0.1.
"""
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HALF_PLUS_TWO = os.path.join(os.path.dirname(REPO), 'shared', 'fixtures', 'tf_serving_testdata',
                             'saved_model_half_plus_two_cpu')
MAX_GROWTH = 1 << 30
_SERVE = '''
import sys, time
from estimator_export.serving import config, server
srv = server.create_server(config.ServerOptions(
    port=0, rest_api_port=0, model_name='half_plus_two', model_base_path=sys.argv[1]))
print('PORTS', srv.grpc_port, srv.rest_port, flush=True)
time.sleep(600)
'''


def _peak_rss(pid: int) -> int:
  with open(f'/proc/{pid}/status', encoding='ascii') as f:
    return int(re.search(r'VmHWM:\s+(\d+) kB', f.read()).group(1)) * 1024


def _post(port: int, body: bytes, timeout: float = 60.0):
  conn = http.client.HTTPConnection('127.0.0.1', port, timeout=timeout)
  try:
    conn.request('POST', '/v1/models/half_plus_two:predict', body,
                 {'Content-Type': 'application/json'})
    response = conn.getresponse()
    return response.status, response.read()
  finally:
    conn.close()


@pytest.fixture(scope='module')
def server(tmp_path_factory):
  """(pid, grpc port, rest port) of a server process on a copy of half_plus_two."""
  base = tmp_path_factory.mktemp('memory') / 'half_plus_two'
  shutil.copytree(HALF_PLUS_TWO, base)
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.Popen(  # pylint: disable=consider-using-with
      [sys.executable, '-c', _SERVE, str(base)], stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL, env=env, text=True)
  try:
    line = proc.stdout.readline()
    assert line.startswith('PORTS'), f'server did not start: {line!r}'
    grpc_port, rest_port = map(int, line.split()[1:])
    deadline = time.monotonic() + 30
    while _post(rest_port, b'{"instances": [1.0]}')[0] != 200:  # the version is loading
      assert time.monotonic() < deadline, 'half_plus_two not AVAILABLE after 30 s'
      time.sleep(0.05)
    yield proc.pid, grpc_port, rest_port
  finally:
    proc.kill()
    proc.wait(timeout=30)


def test_a_32_mib_flat_list_costs_less_than_1_gib(server):
  pid, _, port = server
  count = ((32 << 20) - 20) // 5  # "1.5, " per number
  body = b'{"instances": [' + b'1.5, ' * (count - 1) + b'-2]}'
  assert len(body) <= 32 << 20
  before = _peak_rss(pid)
  started = time.monotonic()
  status, reply = _post(port, body)
  seconds = time.monotonic() - started
  growth = _peak_rss(pid) - before
  print(f'\n32 MiB body ({count} numbers): peak RSS +{growth >> 20} MiB, {seconds:.2f} s')
  assert status == 200, reply[:300]
  predictions = json.loads(reply)['predictions']
  assert len(predictions) == count
  assert predictions[0] == 2.75 and predictions[-1] == 1.0
  assert growth < MAX_GROWTH


@pytest.mark.parametrize('key', ['instances', 'inputs'])
def test_rank_33_over_rest_is_invalid_argument_naming_the_limit(server, key):
  _, _, port = server
  def body(rank):  # for 'instances' the outer list is the batch dimension
    return ('{"%s": ' % key + '[' * rank + '1.0' + ']' * rank + '}').encode()

  status, reply = _post(port, body(33))
  assert status == 400
  assert json.loads(reply) == {'error': (
      "Tensor of rank 33 is not supported: at most 32 dimensions (numpy's limit). Fix: send "
      'the tensor with fewer dimensions')}
  status, reply = _post(port, body(32))  # rank 32 is served
  assert status == 200, reply
  assert np.array(json.loads(reply)['predictions' if key == 'instances' else 'outputs']
                  ).shape == (1,) * 32


def test_rank_33_over_grpc_is_invalid_argument_naming_the_limit(server):
  _, port, _ = server
  with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'half_plus_two'
    tensor = request.inputs['x']  # numpy cannot build it: the proto by hand
    tensor.dtype = tf.float32.as_datatype_enum
    for _ in range(33):
      tensor.tensor_shape.dim.add(size=1)
    tensor.float_val.append(1.0)
    with pytest.raises(grpc.RpcError) as info:
      stub.Predict(request, timeout=30)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details() == (
        "tensor parsing error: x: Tensor of rank 33 is not supported: at most 32 dimensions "
        "(numpy's limit). Fix: send the tensor with fewer dimensions")
    request.inputs['x'].CopyFrom(tf.make_tensor_proto(np.ones((1,) * 32, np.float32)))
    reply = stub.Predict(request, timeout=30)
    assert tf.make_ndarray(reply.outputs['y']).shape == (1,) * 32
