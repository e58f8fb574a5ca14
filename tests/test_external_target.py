"""The wire tests' external mode, against a server in another process.

`estimator-export serve --server_binary=embedded` runs in a subprocess on the
models.config tests/wire_models.py writes (the one deploy/check_with_tf_serving.sh
serves from tensorflow/serving:2.15.1); the gRPC and REST wire test modules then
run in a subprocess pytest with ESTIMATOR_EXPORT_TEST_GRPC/_REST/_MODELS set.
They must pass there, the tests that need a server of their own must skip
naming the variable, and the server's own request counter must show that the
requests reached it.
"""
import os
import re
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree

import pytest

from tests import wire_models
from tests.conftest import REPO
from tests.serving_util import rest_request
from tests.test_serving_grpc import free_port

SERVE_LINE = re.compile(r'gRPC on 127\.0\.0\.1:(\d+), REST on 127\.0\.0\.1:(\d+)')
COUNT = re.compile(r'^:tensorflow:serving:request_count\{model_name="half_plus_two",'
                   r'status="OK"\} (\d+)', re.MULTILINE)


def stop(proc: subprocess.Popen) -> None:
  if proc.poll() is None:
    proc.send_signal(signal.SIGTERM)
    try:
      proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
      proc.kill()
      proc.wait()


def ok_count(rest_port: int) -> int:
  reply = rest_request(rest_port, 'GET', '/monitoring/prometheus/metrics')
  assert reply.status == 200
  match = COUNT.search(reply.text)
  return int(match.group(1)) if match else 0


@pytest.fixture(scope='module')
def models_dir(tf_serving_testdata, tmp_path_factory):
  root = str(tmp_path_factory.mktemp('wire_models'))
  wire_models.build(root, tf_serving_testdata)
  return root


@pytest.fixture(scope='module')
def external_server(models_dir, tf_serving_testdata, tmp_path_factory):
  """(grpc_port, rest_port) of `estimator-export serve` in a subprocess."""
  log_path = tmp_path_factory.mktemp('serve') / 'serve.log'
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3')
  with open(log_path, 'wb') as log:
    proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-m', 'estimator_export.cli', 'serve', '--server_binary=embedded',
         '--port=0', f'--rest_api_port={free_port()}',
         f'--model_config_file={os.path.join(models_dir, "models.config")}',
         '--rest_api_enable_cors_support=true', '--file_system_poll_wait_seconds=0',
         '--monitoring_config_file=' + os.path.join(tf_serving_testdata,
                                                    'monitoring_config.txt')],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=REPO)
  try:
    deadline = time.monotonic() + 45
    while not (match := SERVE_LINE.search(log_path.read_text(errors='replace'))):
      if proc.poll() is not None or time.monotonic() > deadline:
        raise AssertionError(f'serve did not start:\n{log_path.read_text(errors="replace")}')
      time.sleep(0.1)
    yield int(match.group(1)), int(match.group(2))
  finally:
    stop(proc)


def test_wire_tests_pass_against_an_external_server(external_server, models_dir, tmp_path):
  grpc_port, rest_port = external_server
  before = ok_count(rest_port)
  report = tmp_path / 'report.xml'
  env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3',
             **{wire_models.ENV_GRPC: f'127.0.0.1:{grpc_port}',
                wire_models.ENV_REST: f'http://127.0.0.1:{rest_port}',
                wire_models.ENV_MODELS: models_dir})
  done = subprocess.run(
      [sys.executable, '-m', 'pytest', '-q', '-p', 'no:cacheprovider', f'--junitxml={report}',
       'tests/test_serving_rest.py', 'tests/test_serving_grpc.py'],
      env=env, cwd=REPO, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
  outcomes = {}
  for case in ElementTree.parse(report).iter('testcase'):
    name = f'{case.get("classname").rsplit(".", 1)[-1]}.{case.get("name")}'
    skipped = case.find('skipped')
    outcomes[name] = 'skipped' if skipped is not None else 'passed'
    if skipped is not None:
      assert 'targets an external one' in skipped.get('message', ''), (name, skipped.attrib)
  passed = [n for n, o in outcomes.items() if o == 'passed']
  skipped = sorted(n for n, o in outcomes.items() if o == 'skipped')
  print(f'external mode: {len(passed)} passed, {len(skipped)} skipped')
  assert len(passed) > 200
  # Only the external server runs: no embedded / binary parametrisation.
  assert all('[external' in n or '[' not in n for n in passed), passed[:5]
  assert any(n.startswith('TestExportedModel.') for n in passed)  # the served toy export
  for own_server in ('TestEmbeddedOnly.', 'TestReloadConfig.',
                     'test_serving_grpc.test_port_in_use_fails_clearly'):
    matching = [n for n in outcomes if n.startswith(own_server) or n == own_server]
    assert matching and all(outcomes[n] == 'skipped' for n in matching), own_server
  assert ok_count(rest_port) - before > 50  # the requests reached this server


def test_default_mode_ignores_unset_variables():
  # The variables are read at import time; in this process they are unset.
  for env in (wire_models.ENV_GRPC, wire_models.ENV_REST):
    assert not os.environ.get(env)
  assert wire_models.external_grpc() is None and wire_models.external_rest() is None


def test_bad_rest_variable_names_the_fix(monkeypatch):
  monkeypatch.setenv(wire_models.ENV_REST, 'https://127.0.0.1')
  with pytest.raises(ValueError, match=r'must be http://HOST:PORT: got .* Fix: e\.g\.'):
    wire_models.external_rest()
