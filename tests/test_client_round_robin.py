"""GrpcClient over several servers: gRPC's round_robin load balancing, and bad address lists.

Three embedded servers (estimator_export.serving.server on 127.0.0.1, port 0)
serve the same half_plus_two fixture; one client sends a bounded number of
Predicts to all of them, and each server's Prometheus request_count (its REST
/monitoring/prometheus/metrics route) says how many it answered.
"""
import os
import re
import time
from typing import Dict, List

import numpy as np
import pytest

from estimator_export import cli
from estimator_export.client import ClientInputError, GrpcClient, channel_target
from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from tests.serving_util import rest_request

MODEL = 'half_plus_two'
REQUESTS = 40
_COUNT = re.compile(r'^:tensorflow:serving:request_count\{model_name="half_plus_two",'
                    r'status="OK"\} (\d+)', re.MULTILINE)


def start_server(testdata: str):
  return server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, model_name=MODEL,
      model_base_path=os.path.join(testdata, 'saved_model_half_plus_two_cpu'),
      monitoring_config_file=os.path.join(testdata, 'monitoring_config.txt'),
      file_system_poll_wait_seconds=0))


def ok_count(server) -> int:
  """Requests the server answered OK, from its own Prometheus metrics."""
  reply = rest_request(server.rest_port, 'GET', '/monitoring/prometheus/metrics')
  assert reply.status == 200, reply.body[:500]
  match = _COUNT.search(reply.text)
  return int(match.group(1)) if match else 0


@pytest.fixture
def servers(tf_serving_testdata):
  started: List = []
  try:
    for _ in range(3):
      started.append(start_server(tf_serving_testdata))
    yield started
  finally:
    for server in started:
      server.stop(grace=0.5)


def predict_many(client: GrpcClient, count: int) -> None:
  for i in range(count):
    got = client.predict(MODEL, {'x': np.array([[float(i)]], np.float32)})
    np.testing.assert_allclose(got['y'], [[0.5 * i + 2.0]])


def counts(servers) -> Dict[int, int]:
  return {server.grpc_port: ok_count(server) for server in servers}


class TestRoundRobin:

  def test_a_comma_separated_list_spreads_calls_over_every_server(self, servers):
    target = ','.join(f'127.0.0.1:{s.grpc_port}' for s in servers)
    with GrpcClient(target, timeout=10) as client:
      assert client.channel_target == 'ipv4:' + target
      predict_many(client, REQUESTS)
    answered = counts(servers)
    print('requests per server (comma-separated list):', answered)
    assert sum(answered.values()) == REQUESTS
    # round_robin over three ready servers: each gets about a third.
    assert all(n >= REQUESTS // 6 for n in answered.values()), answered

  def test_a_list_of_addresses(self, servers):
    with GrpcClient([f'127.0.0.1:{s.grpc_port}' for s in servers[:2]], timeout=10) as client:
      predict_many(client, 20)
    answered = counts(servers)
    print('requests per server (list of two):', answered)
    assert answered[servers[2].grpc_port] == 0
    assert answered[servers[0].grpc_port] > 0 and answered[servers[1].grpc_port] > 0
    assert sum(answered.values()) == 20

  def test_a_stopped_server_is_left_out(self, servers):
    target = ','.join(f'127.0.0.1:{s.grpc_port}' for s in servers)
    with GrpcClient(target, timeout=10) as client:
      predict_many(client, 6)
      gone = servers.pop()
      gone.stop(grace=0.5)
      before = counts(servers)
      # The client learns of the closed connection asynchronously: a call may still
      # be routed there until it has; after that, every call succeeds.
      failures = 0
      deadline = time.monotonic() + 10
      while time.monotonic() < deadline:
        try:
          predict_many(client, 20)
          break
        except Exception:  # pylint: disable=broad-except
          failures += 1
      else:
        pytest.fail('calls kept failing after one of three servers stopped')
      assert failures <= 1
    after = counts(servers)
    gained = {port: after[port] - before[port] for port in after}
    print('requests per remaining server after one stopped:', gained)
    assert all(n > 0 for n in gained.values()), gained

  def test_a_dns_name(self, servers):
    # Offline, localhost resolves to 127.0.0.1 only here, so this exercises gRPC's DNS
    # resolver with round_robin over one address; a name with several A records (a
    # headless Service) gets the same policy over all of them.
    server = servers[0]
    with GrpcClient(f'dns:///localhost:{server.grpc_port}', timeout=10) as client:
      assert client.channel_target == f'dns:///localhost:{server.grpc_port}'
      predict_many(client, 5)
    assert ok_count(server) == 5

  def test_a_single_address_is_unchanged(self, servers):
    target = f'127.0.0.1:{servers[1].grpc_port}'
    with GrpcClient(target, timeout=10) as client:
      assert (client.target, client.channel_target) == (target, target)
      predict_many(client, 3)
    assert ok_count(servers[1]) == 3

  def test_pick_first_sends_everything_to_one_server(self, servers):
    target = ','.join(f'127.0.0.1:{s.grpc_port}' for s in servers)
    with GrpcClient(target, timeout=10, load_balancing='pick_first') as client:
      predict_many(client, 12)
    assert sorted(counts(servers).values()) == [0, 0, 12]


class TestQueryCommand:

  def test_server_flag_takes_a_list(self, servers, capsys):
    target = ','.join(f'127.0.0.1:{s.grpc_port}' for s in servers)
    for i in range(6):
      code = cli.main(['query', '--server', target, '--model_name', MODEL,
                       '--inputs', f'{{"x": [[{float(i)}]]}}'])
      assert code == 0
      assert capsys.readouterr().out.strip() == f'{{"y": [[{0.5 * i + 2.0}]]}}'
    # One process per call: each starts at a server of its own choosing, so only the
    # total is fixed.
    assert sum(counts(servers).values()) == 6

  def test_server_flag_takes_a_dns_uri(self, servers, capsys):
    code = cli.main(['query', '--server', f'dns:///localhost:{servers[0].grpc_port}',
                     '--model_name', MODEL, '--method', 'status'])
    assert code == 0, capsys.readouterr().err
    assert '"AVAILABLE"' in capsys.readouterr().out

  def test_bad_list_is_a_usage_error(self, capsys):
    code = cli.main(['query', '--server', 'model-a:8500,model-b:8500', '--model_name', MODEL,
                     '--method', 'status'])
    err = capsys.readouterr().err
    assert code == 2
    assert "got 'model-a:8500'" in err and 'dns:///' in err and 'Traceback' not in err


@pytest.mark.parametrize('target,expected', [
    ('127.0.0.1:8500', '127.0.0.1:8500'),
    ('serving:8500', 'serving:8500'),
    (' 10.0.0.5:8500 , 10.0.0.6:8500', 'ipv4:10.0.0.5:8500,10.0.0.6:8500'),
    (['10.0.0.5:8500', '10.0.0.6:9000'], 'ipv4:10.0.0.5:8500,10.0.0.6:9000'),
    ('[fd00::5]:8500,[::1]:8500', 'ipv6:[fd00::5]:8500,[::1]:8500'),
    ('dns:///serving.default.svc.cluster.local:8500',
     'dns:///serving.default.svc.cluster.local:8500'),
    ('ipv4:10.0.0.5:8500,10.0.0.6:8500', 'ipv4:10.0.0.5:8500,10.0.0.6:8500'),
    ('unix:/tmp/serving.sock', 'unix:/tmp/serving.sock'),
])
def test_channel_target(target, expected):
  assert channel_target(target) == expected


@pytest.mark.parametrize('target,message', [
    ('a:8500,b:8500', "may hold IP addresses only (gRPC's ipv4:/ipv6: resolvers do not look up "
                      "host names): got 'a:8500'. Fix: list IP addresses of one family"),
    ('10.0.0.5:8500,[::1]:8500', 'mixes IPv4 and IPv6 addresses'),
    ('10.0.0.5,10.0.0.6:8500', "must be IP:PORT: got '10.0.0.5'"),
    ('10.0.0.5:8500,10.0.0.6:70000', "must be IP:PORT: got '10.0.0.6:70000'"),
    ('10.0.0.5:8500,,10.0.0.6:8500', 'has an empty entry'),
    ('::1:8500,::2:8500', "needs brackets: got '::1:8500'. Fix: write '[::1]:8500'"),
    ([], 'a string or a non-empty list of strings'),
])
def test_bad_targets_name_the_value_and_the_fix(target, message):
  with pytest.raises(ClientInputError, match='Fix: ') as info:
    GrpcClient(target)
  assert message in str(info.value)


def test_unknown_load_balancing_policy():
  with pytest.raises(ClientInputError, match="got 'random'. Fix: pass 'round_robin'"):
    GrpcClient('127.0.0.1:8500', load_balancing='random')
