"""The embedded server's bounds (issue #11): metric labels, body size, in-flight bytes, timeouts.

Real servers on 127.0.0.1 (in-process, or a child process where peak memory is
measured), real clients (raw sockets, http.client, gRPC stubs).
"""
import concurrent.futures
import http.client
import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
import time

import grpc
import pytest
from prometheus_client.parser import text_string_to_metric_families
from tensorflow_serving.apis import prediction_service_pb2_grpc

from estimator_export.serving import config as config_lib
from estimator_export.serving import monitoring
from estimator_export.serving import server as server_lib
from estimator_export.serving.monitoring import ServingMetrics
from estimator_export.serving.status import Code, internal_error
from tests.serving_util import JSON_TYPE, TIMEOUT, Reply, exchange, predict_request, rest_request
from tests.serving_util import wait_for

MODEL = 'half_plus_two'
METRICS_PATH = '/monitoring/prometheus/metrics'
PREDICT = f'/v1/models/{MODEL}:predict'


@pytest.fixture(scope='module')
def model_dir(tf_serving_testdata) -> str:
  return os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu')


@pytest.fixture(scope='module')
def config_files(tmp_path_factory):
  base = tmp_path_factory.mktemp('bounds_config')
  monitoring_file = base / 'monitoring.config'
  monitoring_file.write_text(f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')
  batching_file = base / 'batching.config'
  batching_file.write_text('max_batch_size { value: 8 }\nbatch_timeout_micros { value: 0 }\n'
                           'num_batch_threads { value: 1 }\n')
  return str(monitoring_file), str(batching_file)


def start(model_dir, **options) -> server_lib.ModelServer:
  return server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, model_name=MODEL, model_base_path=model_dir, **options))


def metric_families(port: int):
  reply = rest_request(port, 'GET', METRICS_PATH)
  assert reply.status == 200
  return reply, {f.name: f for f in text_string_to_metric_families(reply.body.decode())}


def sample_value(families, family: str, sample: str, **labels) -> float:
  wanted = set(labels.items())
  return sum(s.value for s in families[family].samples
             if s.name == sample and wanted <= set(s.labels.items()))


def request_count(port: int, status: str, model: str = MODEL) -> float:
  _, families = metric_families(port)
  return sample_value(families, monitoring.REQUEST_COUNT, monitoring.REQUEST_COUNT,
                      model_name=model, status=status)


def batch_runs(port: int) -> float:
  _, families = metric_families(port)
  return sample_value(families, monitoring.PROCESSED_BATCH_SIZE,
                      monitoring.PROCESSED_BATCH_SIZE + '_count')


def body_for(instances) -> bytes:
  return json.dumps({'instances': instances}).encode()


# ----- 4. client-chosen names never become metric labels -----

def test_made_up_model_and_signature_names_keep_the_metrics_small(model_dir, config_files):
  server = start(model_dir, monitoring_config_file=config_files[0])
  conn = http.client.HTTPConnection('127.0.0.1', server.rest_port, timeout=TIMEOUT)
  channel = grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}')
  try:
    deadline = time.monotonic() + 120
    for i in range(10_000):
      model = f'no_such_model_{i}' if i % 2 == 0 else MODEL
      body = {'signature_name': f'no_such_signature_{i}', 'instances': [1.0]}
      conn.request('POST', f'/v1/models/{model}:predict', body=json.dumps(body))
      response = conn.getresponse()
      response.read()
      assert response.status in (400, 404), response.status
      assert time.monotonic() < deadline, f'only {i} requests in 120 s'
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    for i in range(200):
      with pytest.raises(grpc.RpcError):
        stub.Predict(predict_request(f'grpc_model_{i}', [1.0], signature=f'sig_{i}'),
                     timeout=TIMEOUT)
    reply, families = metric_families(server.rest_port)
    size = len(reply.body)
    print(f'metrics body after 10,200 made-up names: {size} bytes')
    assert size < 200 * 1024, size
    count = families[monitoring.REQUEST_COUNT]
    assert sample_value(families, monitoring.REQUEST_COUNT, monitoring.REQUEST_COUNT,
                        model_name='<unknown>', status='NOT_FOUND') == 5000 + 200
    assert sample_value(families, monitoring.REQUEST_COUNT, monitoring.REQUEST_COUNT,
                        model_name=MODEL, status='INVALID_ARGUMENT') == 5000
    assert {s.labels['model_name'] for s in count.samples} == {'<unknown>', MODEL}
    signatures = {s.labels['signature_name'] for s in families[monitoring.SIGNATURE_LATENCY]
                  .samples}
    assert signatures == {'<unknown>'}
  finally:
    conn.close()
    channel.close()
    server.stop(grace=1.0)


def test_series_per_metric_are_capped_with_an_overflow_set(caplog):
  metrics = ServingMetrics(max_series=50)
  for i in range(5000):
    metrics.observe(f'model_{i}', 'predict', f'signature_{i}', 0.001, True, entrypoint='REST')
  body, _ = metrics.render()
  families = {f.name: f for f in text_string_to_metric_families(body.decode())}
  counts = families[monitoring.REQUEST_COUNT].samples
  assert len(counts) == 51
  overflow = [s for s in counts if s.labels['model_name'] == monitoring.OVERFLOW_LABEL]
  assert len(overflow) == 1 and overflow[0].value == 5000 - 50
  latency = {tuple(sorted(s.labels.items())) for s in families[monitoring.SIGNATURE_LATENCY]
             .samples if s.name.endswith('_count')}
  assert len(latency) == 51
  assert sum(1 for r in caplog.records if 'label sets' in r.getMessage()) == 3  # Once each.
  # The default cap (1000) keeps any body under a fixed size, whatever the names.
  metrics = ServingMetrics()
  for i in range(5000):
    metrics.observe(f'model_{i}', 'predict', 'serving_default', 0.001, i % 2 == 0,
                    code=Code.NOT_FOUND, entrypoint='GRPC')
  body, _ = metrics.render()
  assert len(list(text_string_to_metric_families(body.decode()))) == 8
  assert body.count(b'model_name="model_') <= 3 * 1000 * 35


# ----- 5. body size and the in-flight budget -----

def test_oversized_body_is_refused_from_its_content_length(model_dir):
  server = start(model_dir, rest_api_max_body_bytes=4096)
  try:
    sock = socket.create_connection(('127.0.0.1', server.rest_port), timeout=TIMEOUT)
    try:  # Headers only: the server answers without waiting for the 1 MB it announced.
      sock.sendall(f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n'
                   .encode())
      response = http.client.HTTPResponse(sock)
      response.begin()
      reply = Reply(response.status, response.msg, response.read())
    finally:
      sock.close()
    assert reply.status == 413 and reply.content_type == JSON_TYPE
    assert reply.json()['error'] == (
        'Request body is larger than the limit of 4096 bytes (--rest_api_max_body_bytes); '
        'send smaller batches or raise the limit')
    conn = http.client.HTTPConnection('127.0.0.1', server.rest_port, timeout=TIMEOUT)
    try:  # Chunked: no Content-Length, so the bytes are counted while reading.
      chunked = exchange(conn, 'POST', PREDICT, body_for([1.0] * 2000), chunked=True)
    finally:
      conn.close()
    assert chunked.status == 413 and 'larger than the limit of 4096' in chunked.json()['error']
    assert rest_request(server.rest_port, 'POST', PREDICT, body_for([1.0])).status == 200
  finally:
    server.stop(grace=1.0)


def test_a_body_over_the_element_cap_is_invalid_argument(model_dir):
  server = start(model_dir, rest_api_max_elements=1000)
  try:
    reply = rest_request(server.rest_port, 'POST', PREDICT, body_for([1.0] * 1001))
    assert reply.status == 400 and reply.content_type == JSON_TYPE
    error = reply.json()['error']
    assert 'more than the limit of 1000 (--rest_api_max_elements)' in error, error
    ok = rest_request(server.rest_port, 'POST', PREDICT, body_for([2.0] * 999))
    assert ok.status == 200 and ok.json()['predictions'] == [3.0] * 999
  finally:
    server.stop(grace=1.0)


def test_a_request_larger_than_the_whole_budget_runs_alone(model_dir):
  server = start(model_dir, max_inflight_request_bytes=100)
  try:
    body = body_for([1.0] * 500)
    assert len(body) > 100
    replies = list(concurrent.futures.ThreadPoolExecutor(4).map(
        lambda _: rest_request(server.rest_port, 'POST', PREDICT, body), range(4)))
    assert [r.status for r in replies] == [200] * 4
    assert replies[0].json() == {'predictions': [2.5] * 500}
    assert server.service.budget.in_use == 0 and server.service.budget.waiting == 0
  finally:
    server.stop(grace=1.0)


_SERVER_SCRIPT = textwrap.dedent('''
    import sys
    from estimator_export.serving import config as config_lib, server as server_lib
    model, body_bytes, budget = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    server = server_lib.create_server(config_lib.ServerOptions(
        port=0, rest_api_port=0, model_name='half_plus_two', model_base_path=model,
        rest_api_max_body_bytes=body_bytes, max_inflight_request_bytes=budget))
    print(server.rest_port, flush=True)
    sys.stdin.read()  # Until the test closes stdin.
    server.stop(grace=1.0)
''')


def _peak_rss_growth_mb(model_dir: str, body: bytes, budget: int, concurrent_bodies: int
                        ) -> float:
  """Peak RSS growth (VmHWM) of a fresh server process answering N bodies at once."""
  env = dict(os.environ, PYTHONPATH=os.getcwd(), TF_CPP_MIN_LOG_LEVEL='3')
  process = subprocess.Popen([sys.executable, '-c', _SERVER_SCRIPT, model_dir, str(len(body)),
                              str(budget)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, env=env)

  def vm_hwm_mb() -> float:
    with open(f'/proc/{process.pid}/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024.0
    raise AssertionError('no VmHWM')

  try:
    port = int(process.stdout.readline())
    assert rest_request(port, 'POST', PREDICT, body_for([1.0])).status == 200  # Warm.
    before = vm_hwm_mb()
    with concurrent.futures.ThreadPoolExecutor(concurrent_bodies) as pool:
      replies = list(pool.map(lambda _: rest_request(port, 'POST', PREDICT, body),
                              range(concurrent_bodies)))
    assert [r.status for r in replies] == [200] * concurrent_bodies
    return vm_hwm_mb() - before
  finally:
    process.stdin.close()
    try:
      process.wait(timeout=30)
    except subprocess.TimeoutExpired:
      process.kill()
      process.wait(timeout=30)


def test_concurrent_max_size_bodies_queue_for_the_inflight_budget(model_dir):
  # A budget of one max-size body: four sent at once are decoded and run one after the other.
  # Their peak is one body's cost plus the waiting bodies' bytes and allocator slack (each
  # runs on another worker thread, so another malloc arena): 1.6-1.9x one body's growth
  # measured. Without the budget the four decode at once: 3.0-3.5x.
  limit = 8 * 1024 * 1024
  count = (limit - 20) // 5
  body = ('{"instances": [' + ', '.join(['1.0'] * count) + ']}').encode()
  assert limit - 16 <= len(body) <= limit
  one = _peak_rss_growth_mb(model_dir, body, limit, 1)
  four = _peak_rss_growth_mb(model_dir, body, limit, 4)
  print(f'peak RSS growth: one body {one:.0f} MB, four concurrent bodies {four:.0f} MB')
  assert one > 20, one
  assert four <= 2.25 * one, (one, four)


# ----- 6. read timeouts -----

@pytest.fixture(scope='module')
def quick_server(model_dir):
  server = start(model_dir, rest_api_header_timeout_in_ms=400, rest_api_body_timeout_in_ms=400,
                 rest_api_keepalive_timeout_in_ms=400)
  yield server
  server.stop(grace=1.0)


def _closed_after(sock: socket.socket, limit: float, trickle: bytes = b'') -> float:
  """Seconds until the server closes `sock` (sending `trickle` a byte per 0.1 s meanwhile)."""
  began = time.monotonic()
  sock.settimeout(0.1)
  data = b''
  while time.monotonic() - began < limit:
    try:
      chunk = sock.recv(65536)
    except socket.timeout:
      if trickle:
        try:
          sock.sendall(trickle[:1])
        except OSError:
          return time.monotonic() - began
        trickle = trickle[1:] or trickle
      continue
    except ConnectionResetError:
      return time.monotonic() - began
    if not chunk:
      return time.monotonic() - began
    data += chunk
  raise AssertionError(f'still open after {limit} s (received {data[:200]!r})')


@pytest.mark.parametrize('case', ['silent', 'partial_headers', 'trickled_headers'])
def test_slow_headers_are_cut_off(quick_server, case):
  sock = socket.create_connection(('127.0.0.1', quick_server.rest_port), timeout=TIMEOUT)
  try:
    trickle = b''
    if case == 'partial_headers':
      sock.sendall(f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\n'.encode())
    elif case == 'trickled_headers':
      trickle = f'GET /v1/models/{MODEL} HTTP/1.1\r\nX-Slow: {"a" * 100}'.encode()
    took = _closed_after(sock, 5.0, trickle)
  finally:
    sock.close()
  print(f'{case}: closed after {took:.3f} s (header timeout 0.4 s)')
  assert 0.3 <= took <= 1.2, took


def test_a_trickled_body_gets_408_and_the_connection_closes(quick_server):
  sock = socket.create_connection(('127.0.0.1', quick_server.rest_port), timeout=TIMEOUT)
  try:
    began = time.monotonic()
    sock.sendall(f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{{'
                 .encode())
    sock.settimeout(0.1)
    received = b''
    while True:
      assert time.monotonic() - began < 5.0, received
      try:
        chunk = sock.recv(65536)
      except socket.timeout:
        sock.sendall(b' ')
        continue
      if not chunk:
        break
      received += chunk
    took = time.monotonic() - began
  finally:
    sock.close()
  head, _, body = received.partition(b'\r\n\r\n')
  assert head.startswith(b'HTTP/1.1 408'), received[:300]
  assert b'application/json' in head
  message = json.loads(body)['error']
  assert 'within 400 ms' in message and '--rest_api_body_timeout_in_ms' in message
  print(f'trickled body: 408 and closed after {took:.3f} s (body timeout 0.4 s)')
  assert 0.3 <= took <= 1.2, took


def test_idle_keep_alive_connection_is_closed(quick_server):
  sock = socket.create_connection(('127.0.0.1', quick_server.rest_port), timeout=TIMEOUT)
  try:
    sock.sendall(f'GET /v1/models/{MODEL} HTTP/1.1\r\nHost: x\r\n\r\n'.encode())
    response = http.client.HTTPResponse(sock)
    response.begin()
    assert response.status == 200 and not response.will_close
    response.read()
    took = _closed_after(sock, 5.0)
  finally:
    sock.close()
  print(f'idle keep-alive: closed after {took:.3f} s (keep-alive timeout 0.4 s)')
  assert 0.3 <= took <= 1.2, took


def _open_fds() -> int:
  return len(os.listdir('/proc/self/fd'))


def test_many_slow_connections_are_all_closed_while_requests_still_work(quick_server):
  port = quick_server.rest_port
  before = _open_fds()
  socks = []
  try:
    for i in range(100):
      sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
      sock.sendall(f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\nX-N: {i}'.encode())
      socks.append(sock)
    during = _open_fds()
    for _ in range(20):  # The server accepts them asynchronously.
      time.sleep(0.01)
      during = max(during, _open_fds())
    assert during >= before + 150, (before, during)  # Client and server ends are open.
    for _ in range(3):  # Normal requests are answered during the attack.
      reply = rest_request(port, 'POST', PREDICT, body_for([1.0, 2.0]))
      assert reply.status == 200 and reply.json() == {'predictions': [2.5, 3.0]}
    wait_for(lambda: _open_fds() <= before + 100 + 5, 3.0,
             'the server to close its ends of 100 slow connections')
    after_cutoff = _open_fds()
    for sock in socks:
      sock.settimeout(2.0)
      assert sock.recv(10) == b''  # Closed by the server.
  finally:
    for sock in socks:
      sock.close()
  wait_for(lambda: _open_fds() <= before + 5, 3.0, 'fds back to their level')
  print(f'fds: before {before}, during {during}, after the cut-off {after_cutoff} '
        f'(100 client ends still open), after closing the clients {_open_fds()}')


# ----- 7. timeouts and disconnects stop work -----

@pytest.fixture
def batching_server(model_dir, config_files):
  monitoring_file, batching_file = config_files
  server = start(model_dir, monitoring_config_file=monitoring_file, enable_batching=True,
                 batching_parameters_file=batching_file, rest_api_timeout_in_ms=500)
  yield server
  server.stop(grace=1.0)


def test_requests_nobody_waits_for_never_run_the_model(batching_server):
  server = batching_server
  port = server.rest_port
  assert rest_request(port, 'POST', PREDICT, body_for([1.0])).status == 200
  runs = batch_runs(port)
  assert runs == 1
  budget = server.service.budget
  budget.acquire(budget.limit)  # Stands for a large request in progress: others must wait.
  try:
    # REST: the timeout passes while the request waits.
    began = time.monotonic()
    reply = rest_request(port, 'POST', PREDICT, body_for([1.0]))
    took = time.monotonic() - began
    assert reply.status == 504 and reply.content_type == JSON_TYPE
    assert '--rest_api_timeout_in_ms' in reply.json()['error']
    assert 0.45 <= took <= 2.0, took
    wait_for(lambda: budget.waiting == 0, 5.0, 'the timed-out request to leave the queue')
    # REST: the client disconnects while the request waits.
    sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
    body = body_for([1.0])
    sock.sendall(f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n'
                 .encode() + body)
    wait_for(lambda: budget.waiting == 1, 5.0, 'the request to queue for the budget')
    sock.close()
    wait_for(lambda: request_count(port, 'CANCELLED') == 1, 5.0,
             'the disconnected request to be counted as CANCELLED')
    # gRPC: the deadline passes while the request waits.
    with grpc.insecure_channel(f'127.0.0.1:{server.grpc_port}') as channel:
      stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
      with pytest.raises(grpc.RpcError) as raised:
        stub.Predict(predict_request(MODEL, [1.0]), timeout=0.5)
      assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    wait_for(lambda: request_count(port, 'DEADLINE_EXCEEDED') == 2, 5.0,
             'both timed-out requests to be counted as DEADLINE_EXCEEDED')
    assert budget.waiting == 0
  finally:
    budget.release(budget.limit)
  time.sleep(0.3)  # Nothing is left waiting to run once the budget frees up.
  assert batch_runs(port) == runs
  assert request_count(port, 'OK') == 1
  assert rest_request(port, 'POST', PREDICT, body_for([1.0])).status == 200
  assert batch_runs(port) == runs + 1


def test_a_client_leaving_mid_body_is_counted_as_cancelled_not_an_error(batching_server,
                                                                       caplog):
  caplog.set_level(logging.INFO)
  port = batching_server.rest_port
  sock = socket.create_connection(('127.0.0.1', port), timeout=TIMEOUT)
  sock.sendall(f'POST {PREDICT} HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n'
               '{"instances": ['.encode())
  time.sleep(0.2)  # The server is reading the body now.
  sock.close()
  wait_for(lambda: request_count(port, 'CANCELLED') == 1, 5.0,
           'the request whose client left mid-body to be counted as CANCELLED')
  assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text
  assert rest_request(port, 'POST', PREDICT, body_for([1.0])).status == 200


# ----- 8. error bodies and long URLs -----

def test_long_url_is_a_414_logged_in_one_line(quick_server, caplog):
  caplog.set_level(logging.DEBUG)
  path = f'/v1/models/{"a" * 9000}'
  reply = rest_request(quick_server.rest_port, 'GET', path)
  assert reply.status == 414 and reply.content_type == JSON_TYPE
  message = reply.json()['error']
  assert 'Request URL is longer than the limit of 8190 bytes' in message
  assert message.count('a') < 200  # Quotes only the URL's start.
  records = [r for r in caplog.records if r.levelno >= logging.WARNING]
  assert len(records) == 1, [r.getMessage() for r in records]
  assert records[0].exc_info is None and '414' in records[0].getMessage()
  assert rest_request(quick_server.rest_port, 'GET', f'/v1/models/{MODEL}').status == 200


def test_internal_error_hides_the_exception_text(caplog):
  error = internal_error('REST POST /v1/models/m:predict', ValueError('secret /etc/path'))
  assert error.code == Code.INTERNAL and error.http_status == 500
  assert 'secret' not in error.message and 'error id' in error.message
  error_id = error.message.split('[error id ')[1].split(']')[0]
  logged = [r for r in caplog.records if error_id in r.getMessage()]
  assert len(logged) == 1 and 'ValueError: secret /etc/path' in logged[0].getMessage()
