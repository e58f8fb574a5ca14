"""deploy/check_with_tf_serving.sh: syntax, what it publishes, and its whole flow.

Docker cannot run here, so the flow runs with a `docker` stand-in first on
PATH: it checks the arguments the script gives `docker run` (ports published on
127.0.0.1, mounts read-only), then serves the mounted models with this
package's embedded server on the published ports, translating the container
paths back to the host's; `inspect`, `logs` and `rm -f` act on that process by
the id `run` printed. Everything else -- building the models, waiting for them,
the wire tests in external mode, the warmup replay, the clean-up -- is the
script's own.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO
from tests.test_serving_grpc import free_port

SCRIPT = os.path.join(REPO, 'deploy', 'check_with_tf_serving.sh')

DOCKER_STANDIN = r'''#!{python}
"""A `docker` for deploy/check_with_tf_serving.sh: the embedded server plays the image."""
import json, os, signal, subprocess, sys, time
state = os.environ['DOCKER_STANDIN_STATE']
argv = sys.argv[1:]
with open(os.path.join(state, 'calls.jsonl'), 'a') as f:
  f.write(json.dumps(argv) + '\n')

def fail(message):
  print('docker stand-in: ' + message, file=sys.stderr)
  sys.exit(125)

def alive(pid):
  try:
    with open(f'/proc/{{pid}}/status') as f:
      return not any(line.startswith('State:') and 'Z' in line for line in f)
  except OSError:
    return False

def pid_of(cid):
  return int(cid[len('standin'):])

command = argv[0]
if command == 'info':
  sys.exit(0)
if command == 'run':
  args, ports, mounts, env = argv[1:], {{}}, {{}}, {{}}
  if args[0] != '-d':
    fail('expected docker run -d')
  args = args[1:]
  while args[0].startswith('-'):
    flag, value, args = args[0], args[1], args[2:]
    if flag == '-p':
      host, host_port, port = value.split(':')
      if host != '127.0.0.1':
        fail(f'publishes {{value}} beyond 127.0.0.1')
      ports[port] = host_port
    elif flag == '-v':
      source, target, mode = value.split(':')
      if mode != 'ro':
        fail(f'mount {{value}} is not read-only')
      mounts[target] = source
    elif flag == '-e':
      key, _, val = value.partition('=')
      env[key] = val
    else:
      fail(f'unexpected flag {{flag}}')
  image, server_args = args[0], args[1:]
  if image != 'tensorflow/serving:2.15.1' or set(ports) != {{'8500', '8501'}}:
    fail(f'unexpected image or ports: {{image}} {{ports}}')
  flags = []
  for arg in server_args:
    if arg.startswith('--model_config_file='):
      path = arg.split('=', 1)[1]
      mount = next(t for t in mounts if path.startswith(t + '/'))
      with open(mounts[mount] + path[len(mount):]) as f:
        text = f.read().replace(f'"{{mount}}/', f'"{{mounts[mount]}}/')
      translated = os.path.join(state, 'models.config')
      with open(translated, 'w') as f:
        f.write(text)
      flags.append('--model_config_file=' + translated)
    elif arg != '--allow_version_labels_for_unavailable_models=true':  # Refused by embedded.
      flags.append(arg)
  if 'MODEL_NAME' in env:  # What the image's entrypoint does with it.
    flags += ['--model_name=' + env['MODEL_NAME'],
              '--model_base_path=' + mounts['/models/' + env['MODEL_NAME']]]
  log = open(os.path.join(state, 'server.log'), 'ab')
  proc = subprocess.Popen(
      [sys.executable, '-m', 'estimator_export.cli', 'serve', '--server_binary=embedded',
       '--port=' + ports['8500'], '--rest_api_port=' + ports['8501']] + flags,
      stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
  with open(os.path.join(state, 'pids'), 'a') as f:
    f.write(f'{{proc.pid}}\n')
  print(f'standin{{proc.pid}}')
  sys.exit(0)
if command == 'inspect':
  print('true' if alive(pid_of(argv[-1])) else 'false')
  sys.exit(0)
if command == 'logs':
  with open(os.path.join(state, 'server.log'), 'rb') as f:
    sys.stdout.write(f.read()[-4000:].decode('utf-8', 'replace'))
  sys.exit(0)
if command == 'rm' and argv[1] == '-f':
  pid = pid_of(argv[2])
  if alive(pid):
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while alive(pid) and time.monotonic() < deadline:
      time.sleep(0.05)
    if alive(pid):
      os.kill(pid, signal.SIGKILL)
  sys.exit(0)
fail(f'unexpected command {{argv}}')
'''


def script_text() -> str:
  with open(SCRIPT) as f:
    return f.read()


def test_bash_syntax():
  done = subprocess.run(['bash', '-n', SCRIPT], capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stderr


def test_shellcheck_is_clean():
  if shutil.which('shellcheck') is None:
    pytest.skip('shellcheck not installed (apt-get install shellcheck)')
  done = subprocess.run(['shellcheck', SCRIPT], capture_output=True, text=True, check=False)
  assert done.returncode == 0, done.stdout


def test_publishes_on_127_0_0_1_only_and_mounts_read_only():
  text = script_text()
  code = '\n'.join(line for line in text.splitlines() if not line.lstrip().startswith('#'))
  published = re.findall(r'\s-p\s+"([^"]+)"', code)
  assert len(published) == 2, published
  assert all(p.startswith('127.0.0.1:') for p in published), published
  for forbidden in ('--publish', ' -P ', '--network', '0.0.0.0', '--privileged'):
    assert forbidden not in code, forbidden
  mounts = re.findall(r'\s-v\s+"([^"]+)"', code)
  assert len(mounts) == 2 and all(m.endswith(':ro') for m in mounts), mounts
  assert 'trap cleanup EXIT' in code and 'docker rm -f "$cid"' in code
  assert 'tensorflow/serving:2.15.1' in code


@pytest.mark.parametrize('args,env,message', [
    (['--export', '/nonexistent'], {}, '--export and --model_name go together'),
    (['--export', '/nonexistent', '--model_name', 'm'], {},
     "--export: no directory '/nonexistent'"),
    (['--nope'], {}, "unknown argument '--nope'. Fix:"),
    ([], {'GRPC_PORT': 'x'}, "must be a port number: got 'x'. Fix:"),
    ([], {'GRPC_PORT': '9000', 'REST_PORT': '9000'}, 'are both 9000'),
])
def test_argument_errors_exit_2_before_docker_is_used(args, env, message, tmp_path):
  done = subprocess.run([SCRIPT] + args, capture_output=True, text=True, check=False,
                        env=dict(os.environ, PATH=f'{tmp_path}:{os.environ["PATH"]}', **env))
  assert done.returncode == 2, done.stderr
  assert message in done.stderr


def test_export_must_be_a_base_directory(tmp_path):
  version = tmp_path / 'm' / '1'
  version.mkdir(parents=True)
  done = subprocess.run([SCRIPT, '--export', str(version), '--model_name', 'm'],
                        capture_output=True, text=True, check=False)
  assert done.returncode == 2 and 'has no numeric version directory' in done.stderr


@pytest.fixture
def docker_standin(tmp_path):
  """(env for the script, state dir); afterwards every server it started is stopped."""
  bin_dir, state = tmp_path / 'bin', tmp_path / 'state'
  bin_dir.mkdir()
  state.mkdir()
  docker = bin_dir / 'docker'
  docker.write_text(DOCKER_STANDIN.format(python=sys.executable))
  docker.chmod(0o755)
  env = dict(os.environ, PATH=f'{bin_dir}:{os.environ["PATH"]}', PYTHON=sys.executable,
             PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL='3', DOCKER_STANDIN_STATE=str(state),
             GRPC_PORT=str(free_port()), REST_PORT=str(free_port()), WAIT_SECONDS='60',
             TMPDIR=str(tmp_path))
  for name in ('ESTIMATOR_EXPORT_TEST_GRPC', 'ESTIMATOR_EXPORT_TEST_REST'):
    env.pop(name, None)
  try:
    yield env, state
  finally:
    pids = (state / 'pids').read_text().split() if (state / 'pids').exists() else []
    for pid in map(int, pids):
      try:
        os.kill(pid, signal.SIGKILL)  # Only if the script failed to remove it.
      except ProcessLookupError:
        pass


def calls(state) -> list:
  return [json.loads(line) for line in (state / 'calls.jsonl').read_text().splitlines()]


def alive(pid: int) -> bool:
  try:
    with open(f'/proc/{pid}/status') as f:
      return not any(line.startswith('State:') and 'Z' in line for line in f)
  except OSError:
    return False


def assert_removed_by_id(state) -> list:
  """The script removed the one container it started, by its id; returns the run call."""
  made = calls(state)
  [run] = [c for c in made if c[0] == 'run']
  [pid] = map(int, (state / 'pids').read_text().split())
  assert [c for c in made if c[0] == 'rm'] == [['rm', '-f', f'standin{pid}']]
  assert not alive(pid), 'the server outlived the script'
  return run


def test_wire_tests_through_the_script(docker_standin, tmp_path):
  env, state = docker_standin
  start = time.monotonic()
  done = subprocess.run(
      [SCRIPT, '--', '-k', 'TestDocumentedPairs or TestPredict or TestExportedModel or '
       'TestEmbeddedOnly or TestReloadConfig'],
      env=env, cwd=tmp_path, capture_output=True, text=True, timeout=150, check=False)
  print(f'script (wire tests) took {time.monotonic() - start:.1f} s')
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  assert 'PASS: the wire tests agree with tensorflow/serving:2.15.1' in done.stderr
  summary = done.stdout.strip().splitlines()[-1]
  passed = int(re.search(r'(\d+) passed', summary).group(1))
  assert passed >= 20 and 'skipped' in summary, summary
  assert 'targets an external one' in done.stdout  # -rs: the own-server tests' reason
  run = assert_removed_by_id(state)
  assert '--allow_version_labels_for_unavailable_models=true' in run
  assert '--rest_api_enable_cors_support=true' in run
  assert not [p for p in tmp_path.iterdir() if p.name.startswith('check_with_tf_serving.')]


def test_export_smoke_through_the_script(docker_standin, trained_toy, tmp_path):
  from tests import toy  # pylint: disable=g-import-not-at-top
  env, state = docker_standin
  model, estimator = trained_toy
  base = tmp_path / 'exports' / 'toy'
  model.export_for_serving(estimator, str(base), samples=toy.SAMPLES)
  done = subprocess.run([SCRIPT, '--export', str(base), '--model_name', 'toy'], env=env,
                        cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  replayed = re.search(r'PASS: TF Serving answered (\d+) warmup requests of toy', done.stdout)
  assert replayed and int(replayed.group(1)) >= 4, done.stdout
  print(replayed.group(0))
  assert 'classify examples:classify: OK' in done.stdout
  run = assert_removed_by_id(state)
  assert f'{base}:/models/toy:ro' in run and 'MODEL_NAME=toy' in run

  done = subprocess.run([SCRIPT, '--export', str(base), '--model_name', 'toy', '--inputs',
                         json.dumps({'x': toy.SAMPLES['x'].tolist(),
                                     'n': toy.SAMPLES['n'].tolist()})],
                        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=120,
                        check=False)
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  answers = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{')]
  assert len(answers) == 2 and answers[0]['class_ids'] == answers[1]['class_ids']
