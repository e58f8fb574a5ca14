"""Exports and serving on TensorFlow's file systems other than plain local paths.

The full path export -> retention -> load -> serve runs on TF's in-memory
`ram://` file system (which, like an object store, has no atomic directory
rename and no mtimes), on a `file://` URI and on a plain local path: a real
toy Estimator exported three times with keep=2, the newest version loaded by
Predictor and served by an embedded server on 127.0.0.1 answering real REST
and gRPC requests, its warmup file and manifest read back from the base.

`gs://` cannot be reached from a test (only loopback traffic is allowed, and
TF 2.15's GCS file system has its endpoints hard-coded to www.googleapis.com,
with no emulator override). So a subprocess runs with `https_proxy` pointing
at a loopback listener of this test, which records the CONNECT requests TF's
curl client sends and closes them: the export, the Predictor and the server
are shown to hand the gs:// path to TF's GCS file system (never making it a
local path under the working directory) and to fail with errors naming it.
"""
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import uuid

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

import estimator_export as ee
from estimator_export import _saved_model
from estimator_export import export as export_lib
from estimator_export import warmup
from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from tests import toy
from tests.serving_util import TIMEOUT, model_status, rest_request, wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _base(kind: str, tmp_path) -> str:
  if kind == 'ram':
    return f'ram://{uuid.uuid4().hex}/models/toy'
  if kind == 'file':
    return f'file://{tmp_path}/models/toy'
  return str(tmp_path / 'models' / 'toy')


def _our_local_staging():
  mine = f'-{os.getpid()}-'
  return [n for n in os.listdir(tempfile.gettempdir())
          if n.startswith(export_lib.STAGING_PREFIX) and mine in n]


def _grpc_predict(port: int, model: str, samples) -> predict_pb2.PredictResponse:
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.inputs['x'].CopyFrom(tf.make_tensor_proto(samples['x'], tf.float32))
  request.inputs['n'].CopyFrom(tf.make_tensor_proto(samples['n'], tf.int32))
  with grpc.insecure_channel(f'127.0.0.1:{port}') as channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    return stub.Predict(request, timeout=TIMEOUT)


@pytest.mark.parametrize('kind', ['ram', 'file', 'local'])
def test_export_retention_load_and_serve(trained_toy, tmp_path, kind, monkeypatch, caplog):
  model, estimator = trained_toy
  base = _base(kind, tmp_path)
  fsyncs = []
  real_fsync = os.fsync

  def recording_fsync(fd):
    fsyncs.append(fd)
    real_fsync(fd)

  monkeypatch.setattr(os, 'fsync', recording_fsync)
  results = [model.export_for_serving(estimator, base, samples=toy.SAMPLES, version=v, keep=2,
                                      metrics={'score': float(v)})
             for v in (1, 2, 3)]
  monkeypatch.undo()
  served = base if kind != 'file' else base[len('file://'):]  # file:// is a local path.
  assert [r.path for r in results] == [f'{served}/{v}' for v in (1, 2, 3)]
  assert [r.deleted_versions for r in results] == [(), (), (1,)]
  assert sorted(tf.io.gfile.listdir(base)) == ['2', '3']  # No staging left, 1 deleted.
  assert _our_local_staging() == []
  assert (len(fsyncs) > 0) == (kind != 'ram')  # Local (file:// too): fsynced; ram: nothing to.
  if kind == 'local':
    assert not any(n.startswith('gs:') or n.startswith('ram:') for n in os.listdir(tmp_path))
  newest = results[-1]
  manifest = _saved_model.read_manifest(newest.path)
  assert manifest['version'] == 3 and manifest['metrics'] == {'score': 3.0}
  assert json.loads(tf.io.gfile.GFile(newest.manifest_path).read())['version'] == 3
  logs = warmup.read_warmup_requests(newest.path)
  assert len(logs) == newest.warmup_records > 0

  expected = next(estimator.predict(
      lambda: tf.data.Dataset.from_tensor_slices(toy.SAMPLES).batch(2),
      yield_single_examples=False))
  with ee.Predictor.from_saved_model(f'{base}/3') as predictor:
    got = predictor(toy.SAMPLES)
  np.testing.assert_allclose(got['logits'], expected['logits'], rtol=1e-5)

  caplog.set_level(logging.INFO, logger='estimator_export.serving')
  server = server_lib.create_server(config_lib.ServerOptions(
      model_name='toy', model_base_path=base, port=0, rest_api_port=0))
  try:
    wait_for(lambda: model_status(server.rest_port, 'toy').get(3, {}).get('state') ==
             'AVAILABLE', TIMEOUT, 'version 3 AVAILABLE')
    reply = rest_request(server.rest_port, 'POST', '/v1/models/toy:predict', {
        'instances': [{'x': x.tolist(), 'n': int(n)}
                      for x, n in zip(toy.SAMPLES['x'], toy.SAMPLES['n'])]})
    assert reply.status == 200, reply.text
    logits = [p['logits'] for p in reply.json()['predictions']]
    np.testing.assert_allclose(logits, expected['logits'], rtol=1e-5)
    response = _grpc_predict(server.grpc_port, 'toy', toy.SAMPLES)
    assert response.model_spec.version.value == 3
    np.testing.assert_allclose(tf.make_ndarray(response.outputs['logits']),
                               expected['logits'], rtol=1e-5)
  finally:
    server.stop(grace=1.0)
  warmup_file = f'{base}/3/assets.extra/tf_serving_warmup_requests'
  assert (f'Finished reading warmup data for model at {warmup_file}. Number of warmup '
          f'records read: {newest.warmup_records}.') in caplog.text


def test_copy_writes_saved_model_pb_last(tf_serving_testdata, monkeypatch):
  src = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu', '00000123')
  dst = f'ram://{uuid.uuid4().hex}/m/7'
  seen = []
  real_copy = tf.io.gfile.copy

  def observing_copy(source, target, overwrite=False):
    seen.append((target, tf.io.gfile.exists(f'{dst}/saved_model.pb')))
    real_copy(source, target, overwrite)

  monkeypatch.setattr(tf.io.gfile, 'copy', observing_copy)
  count = _saved_model.copy_tree(src, dst)
  monkeypatch.undo()
  files = [os.path.join(d, f) for d, _, names in os.walk(src) for f in names]
  assert count == len(seen) == len(files) >= 3
  assert seen[-1] == (f'{dst}/saved_model.pb', False)
  assert not any(pb_seen for _, pb_seen in seen)  # Nobody could load it before the end.
  assert _saved_model.saved_model_file(dst) == f'{dst}/saved_model.pb'
  with ee.Predictor.from_saved_model(dst) as predictor:
    assert predictor({'x': np.array([[2.0]], np.float32)})['y'].tolist() == [[3.0]]
  assert _saved_model.remove_version_dir(dst) and not tf.io.gfile.exists(dst)
  assert not _saved_model.remove_version_dir(dst)


def _half_plus_two(testdata):
  return os.path.join(testdata, 'saved_model_half_plus_two_cpu', '00000123')


def test_retention_on_ram_skips_a_partial_version(tf_serving_testdata):
  base = f'ram://{uuid.uuid4().hex}/m'
  for v in (1, 2, 3):
    _saved_model.copy_tree(_half_plus_two(tf_serving_testdata), f'{base}/{v}')
  _saved_model.copy_tree(os.path.join(_half_plus_two(tf_serving_testdata), 'variables'),
                         f'{base}/9/variables')  # A copy still under way (or that died).
  assert export_lib.apply_retention(base, 2, protect=3) == [1]
  assert sorted(tf.io.gfile.listdir(base)) == ['2', '3', '9']
  assert export_lib.clean_partial_versions(base) == []  # ram:// has no mtimes: kept.


def test_server_retries_a_version_until_its_saved_model_pb_arrives(tf_serving_testdata):
  base = f'ram://{uuid.uuid4().hex}/m'
  src = _half_plus_two(tf_serving_testdata)
  _saved_model.copy_tree(os.path.join(src, 'variables'), f'{base}/1/variables')
  server = server_lib.create_server(config_lib.ServerOptions(
      model_name='hp2', model_base_path=base, port=0, rest_api_port=0,
      file_system_poll_wait_seconds=1, max_num_load_retries=200,
      load_retry_interval_micros=50_000))
  try:
    assert model_status(server.rest_port, 'hp2')[1]['state'] == 'LOADING'  # Retrying.
    tf.io.gfile.copy(os.path.join(src, 'saved_model.pb'), f'{base}/1/saved_model.pb')
    wait_for(lambda: model_status(server.rest_port, 'hp2')[1]['state'] == 'AVAILABLE',
             TIMEOUT, 'version 1 AVAILABLE once saved_model.pb is there')
    reply = rest_request(server.rest_port, 'POST', '/v1/models/hp2:predict',
                         {'instances': [1.0, 2.0]})
    assert reply.status == 200 and reply.json() == {'predictions': [2.5, 3.0]}
  finally:
    server.stop(grace=1.0)


# ----- gs:// without the network -----

_GS_SCRIPT = r'''
import logging, sys
logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
import estimator_export as ee
from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from tests import toy
base = 'gs://nonexistent-bucket-xyz/m'
model = toy.ToyClassifier()
estimator = model.make_estimator(sys.argv[1], params={'learning_rate': 0.05})
for what, call in [
    ('EXPORT', lambda: model.export_for_serving(estimator, base, samples=toy.SAMPLES)),
    ('PREDICTOR', lambda: ee.Predictor.from_saved_model(base + '/1'))]:
  try:
    call()
    print(what, 'no error')
  except ee.EstimatorExportError as e:
    print(what, type(e).__name__, str(e).replace('\n', ' '))
server = server_lib.create_server(config_lib.ServerOptions(
    model_name='m', model_base_path=base, port=0, rest_api_port=0))
server.stop(grace=0.5)
print('DONE')
'''


class _ClosingProxy:
  """A loopback listener that records the first bytes of each connection, then closes it."""

  def __init__(self):
    self.sock = socket.socket()
    self.sock.bind(('127.0.0.1', 0))
    self.sock.listen(16)
    self.port = self.sock.getsockname()[1]
    self.requests = []
    self.thread = threading.Thread(target=self._serve, daemon=True)
    self.thread.start()

  def _serve(self):
    while True:
      try:
        conn, _ = self.sock.accept()
      except OSError:
        return
      with conn:
        conn.settimeout(5)
        try:
          self.requests.append(conn.recv(512))
        except OSError:
          pass

  def close(self):
    self.sock.close()
    self.thread.join(timeout=10)


def test_gs_base_goes_to_tf_gcs_file_system_and_errors_name_it(trained_toy, tmp_path):
  _, estimator = trained_toy
  proxy = _ClosingProxy()
  try:
    env = {k: v for k, v in os.environ.items() if 'proxy' not in k.lower()}
    loopback = f'http://127.0.0.1:{proxy.port}'
    env.update({'https_proxy': loopback, 'http_proxy': loopback, 'HTTPS_PROXY': loopback,
                'NO_GCE_CHECK': 'true', 'GCE_METADATA_HOST': f'127.0.0.1:{proxy.port}',
                'GCS_RETRY_CONFIG_MAX_RETRIES': '0', 'GCS_REQUEST_CONNECTION_TIMEOUT_SECS': '5',
                'PYTHONPATH': ROOT, 'TF_CPP_MIN_LOG_LEVEL': '2'})
    env.pop('GOOGLE_APPLICATION_CREDENTIALS', None)
    run = subprocess.run([sys.executable, '-c', _GS_SCRIPT, estimator.model_dir], cwd=tmp_path,
                         env=env, capture_output=True, text=True, timeout=120, check=False)
  finally:
    proxy.close()
  out = run.stdout
  assert run.returncode == 0 and 'DONE' in out, run.stderr[-3000:]
  lines = {l.split(' ', 1)[0]: l for l in out.splitlines()}
  assert lines['EXPORT'].startswith('EXPORT ExportDirError')
  assert "'gs://nonexistent-bucket-xyz/m'" in lines['EXPORT']
  assert lines['PREDICTOR'].startswith('PREDICTOR ContractError')
  assert "'gs://nonexistent-bucket-xyz/m/1'" in lines['PREDICTOR']
  assert ('Could not find base path gs://nonexistent-bucket-xyz/m for servable m (or it '
          'cannot be listed: ') in run.stderr
  assert os.listdir(tmp_path) == []  # Never made into <cwd>/gs:/nonexistent-bucket-xyz/m.
  assert proxy.requests and all(r.startswith(b'CONNECT www.googleapis.com:443 ')
                                for r in proxy.requests if r)
