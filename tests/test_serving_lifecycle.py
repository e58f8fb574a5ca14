"""The version lifecycle of the embedded server, against real servers and real clients.

Each test starts estimator_export.serving.server on 127.0.0.1 (ports chosen by
the OS, file system polled every second) over copies of TF Serving's
half_plus_two versions 00000123 / 00000124 (y = 0.5 x + 2; gRPC answers name
the version that computed them), and checks what an operator sees:

* rolling back by deleting the newest version, or by a `specific` policy,
  loads the older version again, under 16 concurrent clients, with no failed
  request;
* a half-written version is retried (--max_num_load_retries,
  --load_retry_interval_micros) and serves once complete; when the retries are
  spent it is END with its error until its directory changes;
* changing a model's base_path keeps answering, stops the old version's
  batch threads and releases its servable and session;
* END versions whose directory is gone disappear from the status;
* a reload is all or nothing; a bad --model_config_file keeps the previous
  config, with one ERROR line (and a counter when monitoring is on);
* --allow_model_reload=false refuses HandleReloadConfigRequest.

Every client loop is bounded by a deadline and a request count.
"""
import collections
import dataclasses
import gc
import http.client
import logging
import os
import shutil
import threading
import time
import uuid
import weakref
from typing import Dict, List, Optional, Tuple

import grpc
import pytest
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc

from estimator_export.serving import config as config_lib
from estimator_export.serving import grpc_service
from estimator_export.serving import server as server_lib
from tests.serving_util import TIMEOUT, exchange, predict_request, rest_request, wait_for

Code = grpc.StatusCode
CODE_NAMES = {code.value[0]: code.name for code in grpc.StatusCode}
POLL_SECONDS = 1
MAX_SECONDS = 60.0  # No client loop runs longer.
MAX_REQUESTS = 20000  # Per client.


# ----- models on disk -----

@pytest.fixture
def versions(tf_serving_testdata) -> Dict[int, str]:
  """The complete half_plus_two versions by number (sources; never served in place)."""
  root = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_2_versions')
  return {123: os.path.join(root, '00000123'), 124: os.path.join(root, '00000124')}


def publish(source: str, base: str, version: int, name: Optional[str] = None) -> str:
  """Copies a version in through a hidden directory and one rename (an atomic publish)."""
  os.makedirs(base, exist_ok=True)
  hidden = os.path.join(base, f'.incoming-{uuid.uuid4().hex}')
  shutil.copytree(source, hidden)
  target = os.path.join(base, name or f'{version:08d}')
  os.rename(hidden, target)
  return target


def publish_half(source: str, base: str, version: int) -> str:
  """A copy stopped half-way: saved_model.pb, no variables/ yet.

  The directory appears with saved_model.pb in it (hidden, then renamed), so
  every attempt sees the same half.
  """
  hidden = os.path.join(base, f'.half-{uuid.uuid4().hex}')
  os.makedirs(hidden)
  shutil.copy(os.path.join(source, 'saved_model.pb'), hidden)
  target = os.path.join(base, f'{version:08d}')
  os.rename(hidden, target)
  return target


def complete(source: str, target: str):
  """The rest of the copy publish_half started."""
  shutil.copytree(os.path.join(source, 'variables'), os.path.join(target, 'variables'))


# ----- servers and clients -----

def start(**options) -> server_lib.ModelServer:
  return server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, file_system_poll_wait_seconds=POLL_SECONDS, **options))


def status(server: server_lib.ModelServer, model: str) -> Dict[int, Tuple[str, str, str]]:
  """version -> (state, error code, error message) over gRPC GetModelStatus ({} if unknown)."""
  with grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}') as channel:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = model
    try:
      response = stub.GetModelStatus(request, timeout=TIMEOUT)
    except grpc.RpcError as e:
      if e.code() == Code.NOT_FOUND:
        return {}
      raise
  state_name = get_model_status_pb2.ModelVersionStatus.State.Name
  return {s.version: (state_name(s.state), CODE_NAMES[s.status.error_code],
                      s.status.error_message)
          for s in response.model_version_status}


def states(server, model: str) -> Dict[int, str]:
  return {v: s[0] for v, s in status(server, model).items()}


def served_version(server, model: str, label: str = '') -> int:
  """The version a Latest (or labelled) Predict runs on; checks y = 0.5 x + 2."""
  request = predict_request(model, [1.0])
  if label:
    request.model_spec.version_label = label
  with grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}') as channel:
    response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
        request, timeout=TIMEOUT)
  assert tf.make_ndarray(response.outputs['y']).ravel().tolist() == [2.5]
  return response.model_spec.version.value


def reload(server, configs: List[config_lib.ModelConfig]):
  """HandleReloadConfigRequest over gRPC; raises grpc.RpcError when it fails."""
  request = model_management_pb2.ReloadConfigRequest()
  request.config.model_config_list.config.extend(c.to_proto() for c in configs)
  with grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}') as channel:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    response = stub.HandleReloadConfigRequest(request, timeout=TIMEOUT)
  assert response.status.error_code == 0


@dataclasses.dataclass
class Answer:
  sent: float  # time.monotonic() when the request was sent
  version: int  # 0 for REST (its answers do not name the version)
  error: str = ''


class Clients:
  """gRPC (and optionally REST) clients predicting without pause, every answer recorded."""

  def __init__(self, server, model: str, grpc_clients: int, rest_clients: int = 0):
    self.server, self.model = server, model
    self.channel = grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}')
    self.stop = threading.Event()
    self.lock = threading.Lock()
    self.answers: List[Answer] = []
    self.deadline = time.monotonic() + MAX_SECONDS
    self.threads = ([threading.Thread(target=self._grpc) for _ in range(grpc_clients)] +
                    [threading.Thread(target=self._rest) for _ in range(rest_clients)])

  def __enter__(self) -> 'Clients':
    for thread in self.threads:
      thread.start()
    return self

  def __exit__(self, *exc_info):
    self.stop.set()
    for thread in self.threads:
      thread.join(timeout=TIMEOUT + 5)
    self.channel.close()
    assert not any(t.is_alive() for t in self.threads)

  def _going(self, count: int) -> bool:
    return not self.stop.is_set() and count < MAX_REQUESTS and time.monotonic() < self.deadline

  def _record(self, sent: float, version: int, error: str = ''):
    with self.lock:
      self.answers.append(Answer(sent, version, error))

  def _grpc(self):
    stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    count = 0
    while self._going(count):
      count += 1
      sent = time.monotonic()
      try:
        response = stub.Predict(predict_request(self.model, [1.0]), timeout=TIMEOUT)
      except grpc.RpcError as e:
        self._record(sent, 0, f'gRPC {e.code().name}: {e.details()}')
        continue
      y = tf.make_ndarray(response.outputs['y']).ravel().tolist()
      self._record(sent, response.model_spec.version.value, '' if y == [2.5] else f'y={y}')

  def _rest(self):
    conn = http.client.HTTPConnection('127.0.0.1', self.server.rest_port, timeout=TIMEOUT)
    count = 0
    try:
      while self._going(count):
        count += 1
        sent = time.monotonic()
        try:
          reply = exchange(conn, 'POST', f'/v1/models/{self.model}:predict',
                           {'instances': [1.0]})
        except (OSError, http.client.HTTPException) as e:
          conn.close()
          self._record(sent, 0, f'REST {type(e).__name__}: {e}')
          continue
        ok = reply.status == 200 and reply.json()['predictions'] == [2.5]
        self._record(sent, 0, '' if ok else f'REST {reply.status}: {reply.body[:200]!r}')
    finally:
      conn.close()

  def count(self) -> int:
    with self.lock:
      return len(self.answers)

  def wait_for_more(self, n: int, what: str):
    start = self.count()
    wait_for(lambda: self.count() >= start + n, 30, what)

  def errors(self, since: float = 0.0) -> List[Answer]:
    """Failed requests sent at or after `since`."""
    with self.lock:
      return [a for a in self.answers if a.error and a.sent >= since]

  def versions(self, since: float = 0.0, until: float = float('inf')) -> set:
    """Versions that answered the requests sent in [since, until) (gRPC names them)."""
    with self.lock:
      return {a.version for a in self.answers if a.version and since <= a.sent < until}


# ----- 1. rollbacks -----

def test_rollback_by_deletion_serves_the_older_version_again(versions, tmp_path):
  base = str(tmp_path / 'm')
  publish(versions[123], base, 123)
  publish(versions[124], base, 124)
  server = start(model_name='m', model_base_path=base)
  try:
    assert states(server, 'm') == {124: 'AVAILABLE'}  # 123 was never loaded.
    with Clients(server, 'm', grpc_clients=8, rest_clients=8) as clients:
      clients.wait_for_more(200, 'the clients to get going')
      assert clients.versions() == {124}
      deleted_at = time.monotonic()
      shutil.rmtree(os.path.join(base, '00000124'))
      wait_for(lambda: states(server, 'm') == {123: 'AVAILABLE'}, 10,
               '123 to serve again and 124 to be forgotten')
      settled_at = time.monotonic()
      clients.wait_for_more(200, 'traffic on version 123')
    assert settled_at - deleted_at < 2 * POLL_SECONDS + 3  # One poll, one load.
    assert clients.errors(since=deleted_at + POLL_SECONDS) == []
    assert clients.errors() == []  # Not even during the swap.
    assert clients.versions(since=settled_at) == {123}
    assert status(server, 'm')[123] == ('AVAILABLE', 'OK', '')
    assert served_version(server, 'm') == 123
  finally:
    server.stop(grace=1.0)


def test_specific_policy_goes_back_to_an_older_version(versions, tmp_path):
  base = str(tmp_path / 'm')
  publish(versions[123], base, 123)
  publish(versions[124], base, 124)
  server = start(model_name='m', model_base_path=base)
  try:
    assert served_version(server, 'm') == 124
    with Clients(server, 'm', grpc_clients=8) as clients:
      clients.wait_for_more(100, 'the clients to get going')
      reload(server, [config_lib.ModelConfig('m', base,
                                             version_policy=config_lib.Specific({123}))])
      back_at = time.monotonic()
      assert states(server, 'm') == {124: 'END', 123: 'AVAILABLE'}
      assert status(server, 'm')[124] == ('END', 'OK', '')
      clients.wait_for_more(100, 'traffic on version 123')
      forward_from = time.monotonic()
      reload(server, [config_lib.ModelConfig('m', base)])  # Latest again: 124 loads again.
      forward_at = time.monotonic()
      assert states(server, 'm') == {124: 'AVAILABLE', 123: 'END'}
      clients.wait_for_more(100, 'traffic on version 124')
    assert clients.errors() == []
    # A reload returns once in force: every request sent after it (and before the next
    # reload starts) gets the new version.
    assert clients.versions(back_at, forward_from) == {123}
    assert clients.versions(forward_at) == {124}
  finally:
    server.stop(grace=1.0)


# ----- 2. retries -----

def load_failures(caplog, version: int) -> List[logging.LogRecord]:
  return [r for r in caplog.records if r.levelno == logging.ERROR and
          f'version: {version}}} load failure' in r.getMessage()]


def test_half_written_version_serves_once_complete(versions, tmp_path, caplog):
  caplog.set_level(logging.INFO, logger='estimator_export.serving')
  base = str(tmp_path / 'm')
  publish(versions[123], base, 123)
  server = start(model_name='m', model_base_path=base, max_num_load_retries=100,
                 load_retry_interval_micros=200_000)
  try:
    half = publish_half(versions[124], base, 124)
    wait_for(lambda: len(load_failures(caplog, 124)) >= 2, 10, 'two failed attempts at 124')
    # Retrying, as in TF Serving: LOADING with an OK status; 123 keeps serving.
    assert status(server, 'm') == {124: ('LOADING', 'OK', ''), 123: ('AVAILABLE', 'OK', '')}
    assert served_version(server, 'm') == 123
    assert 'Retry 1 of 100 in 0.2 s' in load_failures(caplog, 124)[0].getMessage()
    complete(versions[124], half)
    wait_for(lambda: states(server, 'm') == {124: 'AVAILABLE', 123: 'END'}, 10,
             '124 to load once complete')
    assert served_version(server, 'm') == 124
  finally:
    server.stop(grace=1.0)


def test_spent_retries_end_with_the_error_until_the_directory_changes(versions, tmp_path,
                                                                       caplog):
  caplog.set_level(logging.INFO, logger='estimator_export.serving')
  base = str(tmp_path / 'm')
  publish(versions[123], base, 123)
  server = start(model_name='m', model_base_path=base, max_num_load_retries=2,
                 load_retry_interval_micros=200_000)
  try:
    half = publish_half(versions[124], base, 124)
    wait_for(lambda: states(server, 'm').get(124) == 'END', 15, '124 to give up')
    state, code, message = status(server, 'm')[124]
    assert code != 'OK' and message, (code, message)
    assert len(load_failures(caplog, 124)) == 3  # The first attempt and two retries.
    assert 'Gave up after 3 attempt(s)' in load_failures(caplog, 124)[-1].getMessage()
    time.sleep(2 * POLL_SECONDS + 0.5)  # Polls without a change: no more attempts.
    assert len(load_failures(caplog, 124)) == 3
    assert status(server, 'm')[124] == (state, code, message)
    assert served_version(server, 'm') == 123

    os.utime(os.path.join(half, 'saved_model.pb'))  # A change: a fresh budget of retries...
    wait_for(lambda: len(load_failures(caplog, 124)) >= 6, 15, 'three more attempts')
    wait_for(lambda: states(server, 'm').get(124) == 'END', 15, '124 to give up again')
    complete(versions[124], half)  # ...and once complete, it loads.
    wait_for(lambda: states(server, 'm') == {124: 'AVAILABLE', 123: 'END'}, 10,
             '124 to load once complete')
    assert served_version(server, 'm') == 124
  finally:
    server.stop(grace=1.0)


# ----- 3. base_path changes -----

def batch_threads() -> int:
  return sum(1 for t in threading.enumerate() if t.name.startswith('batch-m-'))


def other_threads() -> List[str]:
  """Names of the live threads outside gRPC server pools (which grow on demand)."""
  return sorted(t.name for t in threading.enumerate() if not t.name.startswith('grpc-serving'))


def test_base_path_change_keeps_serving_and_stops_old_threads(versions, tmp_path):
  bases = {123: str(tmp_path / 'a'), 124: str(tmp_path / 'b')}
  for version, base in bases.items():
    publish(versions[version], base, version)
  parameters = tmp_path / 'batching.config'
  parameters.write_text('max_batch_size { value: 8 }\nbatch_timeout_micros { value: 1000 }\n'
                        'num_batch_threads { value: 3 }\n')
  server = start(model_name='m', model_base_path=bases[123], enable_batching=True,
                 batching_parameters_file=str(parameters))
  try:
    with Clients(server, 'm', grpc_clients=16) as warmup:
      warmup.wait_for_more(300, 'warm-up traffic')
    assert warmup.errors() == []
    baseline = other_threads()
    assert batch_threads() == 3
    first = server.manager.resolve('m')
    released = [weakref.ref(first), weakref.ref(first.session)]
    del first
    switched = []  # (reload started, reload returned, version)
    with Clients(server, 'm', grpc_clients=8) as clients:
      for version in (124, 123, 124):
        clients.wait_for_more(100, 'traffic before the reload')
        started = time.monotonic()
        reload(server, [config_lib.ModelConfig('m', bases[version])])
        switched.append((started, time.monotonic(), version))
        assert batch_threads() == 3  # The old version's threads are stopped and joined.
        assert states(server, 'm') == {version: 'AVAILABLE'}
        clients.wait_for_more(100, f'traffic on version {version}')
    assert clients.errors() == []
    ends = [started for started, _, _ in switched[1:]] + [time.monotonic()]
    for (_, returned, version), until in zip(switched, ends):
      assert clients.versions(returned, until) == {version}
    left = collections.Counter(other_threads()) - collections.Counter(baseline)
    assert not left, f'threads left behind by the reloads: {left}'
    gc.collect()  # The first servable and its session are gone once no request holds them.
    assert [ref() for ref in released] == [None, None]
  finally:
    server.stop(grace=1.0)
  assert batch_threads() == 0


# ----- 4. status -----

def test_end_versions_whose_directory_is_gone_are_forgotten(versions, tmp_path):
  base = str(tmp_path / 'm')
  publish(versions[123], base, 123)
  server = start(model_name='m', model_base_path=base, max_num_load_retries=0)
  try:
    publish(versions[124], base, 124)
    wait_for(lambda: status(server, 'm') == {124: ('AVAILABLE', 'OK', ''),
                                             123: ('END', 'OK', '')}, 10, '124 to replace 123')
    shutil.rmtree(os.path.join(base, '00000123'))  # Unloaded, then deleted.
    wait_for(lambda: states(server, 'm') == {124: 'AVAILABLE'}, 10, '123 to be forgotten')

    publish_half(versions[124], base, 125)  # Fails (no retries): END with its error.
    wait_for(lambda: states(server, 'm').get(125) == 'END', 10, '125 to fail')
    assert status(server, 'm')[125][1] != 'OK'
    shutil.rmtree(os.path.join(base, '00000125'))
    wait_for(lambda: states(server, 'm') == {124: 'AVAILABLE'}, 10, '125 to be forgotten')
    assert served_version(server, 'm') == 124
  finally:
    server.stop(grace=1.0)


# ----- 5. reloads -----

LABEL_ERROR = ('Request to assign label to version 999 of model a, which is not currently '
               'available for inference')


def test_reload_is_all_or_nothing(versions, tf_serving_testdata, tmp_path):
  base = str(tmp_path / 'a')
  publish(versions[123], base, 123)
  publish(versions[124], base, 124)
  path = str(tmp_path / 'models.config')
  config_lib.write_models_config([config_lib.ModelConfig('a', base,
                                                         version_labels={'stable': 124})], path)
  server = start(model_config_file=path)
  half_plus_three = os.path.join(tf_serving_testdata, 'saved_model_half_plus_three')
  try:
    before = status(server, 'a')
    assert before == {124: ('AVAILABLE', 'OK', '')}
    bad = [config_lib.ModelConfig('a', base, version_policy=config_lib.All(),
                                  version_labels={'stable': 124, 'canary': 999}),
           config_lib.ModelConfig('b', half_plus_three)]
    with pytest.raises(grpc.RpcError) as info:
      reload(server, bad)
    assert (info.value.code(), info.value.details()) == (Code.FAILED_PRECONDITION, LABEL_ERROR)
    # The previous config is in effect: a's policy and labels, and no model b.
    assert status(server, 'a') == before
    assert status(server, 'b') == {}
    assert served_version(server, 'a', label='stable') == 124
    with pytest.raises(grpc.RpcError) as info:
      served_version(server, 'a', label='canary')
    assert info.value.code() == Code.INVALID_ARGUMENT
    reply = rest_request(server.rest_port, 'POST', '/v1/models/b:predict', {'instances': [1.0]})
    assert reply.status == 404
    assert reply.json() == {'error': 'Servable not found for request: Latest(b)'}

    good = [dataclasses.replace(bad[0], version_labels={'stable': 124, 'canary': 123}), bad[1]]
    reload(server, good)
    assert states(server, 'a') == {124: 'AVAILABLE', 123: 'AVAILABLE'}
    assert served_version(server, 'a', label='canary') == 123
    reply = rest_request(server.rest_port, 'POST', '/v1/models/b:predict', {'instances': [1.0]})
    assert (reply.status, reply.json()) == (200, {'predictions': [3.5]})
  finally:
    server.stop(grace=1.0)


def metric(server, name: str) -> Optional[float]:
  reply = rest_request(server.rest_port, 'GET', '/monitoring/prometheus/metrics')
  assert reply.status == 200
  for line in reply.text.splitlines():
    if line.startswith(name + ' '):
      return float(line.split()[1])
  return None


def test_bad_config_file_keeps_serving_and_says_so(versions, tf_serving_testdata, tmp_path,
                                                   caplog):
  caplog.set_level(logging.INFO, logger='estimator_export.serving')
  base = str(tmp_path / 'alpha')
  publish(versions[123], base, 123)
  path = str(tmp_path / 'models.config')
  config_lib.write_models_config([config_lib.ModelConfig('alpha', base)], path)
  server = start(model_config_file=path, model_config_file_poll_wait_seconds=1,
                 monitoring_config_file=os.path.join(tf_serving_testdata,
                                                     'monitoring_config.txt'))
  failures = server_lib.CONFIG_RELOAD_FAILURES + '_total'

  def reports() -> List[logging.LogRecord]:
    return [r for r in caplog.records
            if r.levelno == logging.ERROR and r.getMessage().startswith('Model config file')]

  try:
    assert metric(server, failures) == 0.0
    with open(path, 'w') as f:
      f.write('model_config_list { config { name: "alpha" base_path: ')  # Truncated.
    wait_for(lambda: reports(), 10, 'the bad file to be reported')
    time.sleep(2.5)  # Two more polls of the unchanged file: reported once.
    (record,) = reports()
    message = record.getMessage()
    assert message.startswith(f'Model config file {path} was not applied: ')
    assert 'Invalid protobuf file' in message and 'still serving the previous config' in message
    assert 'Fix the file' in message
    assert record.exc_info is None and 'Traceback' not in message
    assert metric(server, failures) == 1.0
    assert served_version(server, 'alpha') == 123

    # Parses, but does not apply: the label names a version that is not there.
    config_lib.write_models_config([config_lib.ModelConfig(
        'alpha', base, version_labels={'stable': 999})], path)
    wait_for(lambda: len(reports()) == 2, 10, 'the unappliable file to be reported')
    assert ('FAILED_PRECONDITION: Request to assign label to version 999 of model alpha'
            in reports()[1].getMessage())
    assert metric(server, failures) == 2.0
    assert served_version(server, 'alpha') == 123

    config_lib.write_models_config([config_lib.ModelConfig('alpha', base),
                                    config_lib.ModelConfig('beta', base)], path)
    wait_for(lambda: states(server, 'beta') == {123: 'AVAILABLE'}, 10, 'the fixed file')
    assert served_version(server, 'beta') == 123 and len(reports()) == 2
  finally:
    server.stop(grace=1.0)


@pytest.mark.parametrize('allow', [False, True])
def test_allow_model_reload(versions, tmp_path, allow):
  base = str(tmp_path / 'm')
  publish(versions[123], base, 123)
  server = start(model_name='m', model_base_path=base, allow_model_reload=allow)
  other = config_lib.ModelConfig('other', base)
  try:
    if allow:
      reload(server, [other])
      assert states(server, 'other') == {123: 'AVAILABLE'}
      assert status(server, 'm') == {}
    else:
      with pytest.raises(grpc.RpcError) as info:
        reload(server, [other])
      assert info.value.code() == Code.PERMISSION_DENIED
      assert info.value.details() == grpc_service.RELOAD_REFUSED
      assert status(server, 'other') == {}
      assert states(server, 'm') == {123: 'AVAILABLE'}
      assert served_version(server, 'm') == 123
  finally:
    server.stop(grace=1.0)
