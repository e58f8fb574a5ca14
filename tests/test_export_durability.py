"""Exports survive crashes and concurrent exporters (issue #11).

Real exports of the toy model run in child processes forked from a "zygote": a Python
process that imports TensorFlow once (~2 s) and forks one child per export, so a child
starts exporting within milliseconds and 20+ kill -9 runs fit in seconds. The zygote
never runs a TF op itself (a forked child must not inherit TF's thread pools); each child
builds its Estimator and exports. Children are killed by PID and reaped by the zygote.
"""
import json
import logging
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

import estimator_export as ee
from estimator_export import _saved_model
from estimator_export import export as export_lib
from tests import toy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KILL_RUNS = 24
STAGES = (('writing SavedModel', 'write'), ('signatures', 'signatures'),
          ('wrote ', 'warmup'), ('validating', 'validate'), ('parity', 'parity'),
          ('fsynced', 'fsynced'), ('published', 'published'), ('retention', 'retention'),
          ('version ', 'ready'))


# ----- the zygote and its children (run in the subprocess) -----

def _child_export(model_dir, base, log_path, exports, first, step):
  """Runs in a forked child: real exports of versions first, first + step, ... to base.

  Stages are logged to log_path. Versions are given, never bumped: retention frees low
  numbers, and a bump from a fixed number would reuse them.
  """
  log = open(log_path, 'a', buffering=1, encoding='utf-8')  # pylint: disable=consider-using-with
  devnull = os.open(os.devnull, os.O_WRONLY)
  os.dup2(devnull, 1)
  os.dup2(log.fileno(), 2)

  class Stages(logging.Handler):
    def emit(self, record):
      log.write(f'{time.monotonic():.4f} {record.getMessage()}\n')

  logger = logging.getLogger('estimator_export')
  logger.addHandler(Stages())
  logger.setLevel(logging.DEBUG)
  model = toy.ToyClassifier()
  estimator = model.make_estimator(model_dir)
  for i in range(exports):
    result = model.export_for_serving(estimator, base, samples=toy.SAMPLES,
                                      version=first + i * step, keep=2)
    summary = {'version': result.version, 'deleted': list(result.deleted_versions)}
    log.write(f'RESULT {json.dumps(summary)}\n')


def zygote_main():
  """Imports TF once, then serves 'export', 'wait' and 'quit' commands on stdin/stdout."""
  import tensorflow  # pylint: disable=g-import-not-at-top,unused-import
  from estimator_export import mixins  # pylint: disable=g-import-not-at-top,unused-import
  print('ready', flush=True)
  for line in sys.stdin:
    command, *args = line.split()
    if command == 'export':  # model_dir base log_path exports first step
      sys.stdout.flush()
      pid = os.fork()
      if pid == 0:
        code = 1
        try:
          _child_export(args[0], args[1], args[2], *map(int, args[3:]))
          code = 0
        except BaseException:  # pylint: disable=broad-except
          import traceback  # pylint: disable=g-import-not-at-top
          traceback.print_exc()
        finally:
          os._exit(code)  # pylint: disable=protected-access
      print(f'pid {pid}', flush=True)
    elif command == 'wait':
      _, status = os.waitpid(int(args[0]), 0)
      print(f'status {os.waitstatus_to_exitcode(status)}', flush=True)
    elif command == 'quit':
      return


class Zygote:
  """The test's side of the zygote process: every call bounded in time."""

  def __init__(self, model_dir, tmp_path):
    self.model_dir = model_dir
    self.tmp_path = tmp_path
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get('PYTHONPATH', ''),
               TF_CPP_MIN_LOG_LEVEL='3')
    self.stderr = open(  # pylint: disable=consider-using-with
        tmp_path / 'zygote.stderr', 'w', encoding='utf-8')
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [sys.executable, '-c', 'from tests.test_export_durability import zygote_main; '
         'zygote_main()'], cwd=REPO, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=self.stderr, text=True, bufsize=1)
    self.lines = queue.Queue()
    threading.Thread(target=self._read, daemon=True).start()
    self.children = set()
    self._runs = 0
    assert self._line(timeout=120) == 'ready', self._stderr()

  def _read(self):
    for line in self.proc.stdout:
      self.lines.put(line.strip())

  def _stderr(self):
    self.stderr.flush()
    return (self.tmp_path / 'zygote.stderr').read_text()[-3000:]

  def _line(self, timeout=60):
    try:
      return self.lines.get(timeout=timeout)
    except queue.Empty:
      raise AssertionError(f'zygote silent for {timeout} s; stderr: {self._stderr()}') from None

  def export(self, base, version, exports=1, step=1):
    """Forks a child exporting versions version, version + step, ... to base.

    Returns:
      (pid, the child's log path).
    """
    self._runs += 1
    log = self.tmp_path / f'child-{self._runs}.log'
    self.proc.stdin.write(f'export {self.model_dir} {base} {log} {exports} {version} {step}\n')
    self.proc.stdin.flush()
    reply = self._line()
    assert reply.startswith('pid '), reply
    pid = int(reply.split()[1])
    self.children.add(pid)
    return pid, log

  def wait(self, pid, timeout=60):
    """Reaps child pid; returns its exit code (negative: killed by that signal)."""
    self.proc.stdin.write(f'wait {pid}\n')
    self.proc.stdin.flush()
    reply = self._line(timeout)
    assert reply.startswith('status '), reply
    self.children.discard(pid)
    return int(reply.split()[1])

  def close(self):
    for pid in list(self.children):
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    try:
      for pid in list(self.children):
        self.wait(pid, timeout=10)
      self.proc.stdin.write('quit\n')
      self.proc.stdin.flush()
      self.proc.wait(timeout=10)
    except (AssertionError, OSError, subprocess.TimeoutExpired):
      pass
    finally:
      if self.proc.poll() is None:
        self.proc.kill()
        self.proc.wait(timeout=10)
      self.stderr.close()


@pytest.fixture
def zygote(trained_toy, tmp_path):
  z = Zygote(trained_toy[1].model_dir, tmp_path)
  try:
    yield z
  finally:
    z.close()


# ----- helpers -----

def _staging(base):
  return sorted(n for n in os.listdir(base) if n.startswith(export_lib.STAGING_PREFIX))


def _owner_pid(name):
  return int(export_lib._STAGING_RE.match(name)['pid'])  # pylint: disable=protected-access


def _check_versions(base, loaded, context=''):
  """Every numeric directory is a complete SavedModel; new ones (not in loaded) load and run."""
  versions = _saved_model.numeric_versions(str(base))
  for v in versions:
    path = os.path.join(base, str(v))
    try:
      _saved_model.read_saved_model(path)  # Parses: not truncated.
      manifest = _saved_model.read_manifest(path)
      if v not in loaded:
        with ee.Predictor.from_saved_model(path) as predictor:
          probs = predictor(toy.SAMPLES)['probabilities']
    except Exception as e:  # pylint: disable=broad-except
      raise AssertionError(f'{context}: version {v} is broken: {e!r}; it holds '
                           f'{sorted(os.listdir(path))}') from e
    assert manifest.get('version') == v, f'{context}: version {v} has manifest {manifest}'
    if v not in loaded:
      assert probs.shape == (2, 2) and abs(float(probs.sum()) - 2.0) < 1e-4, (context, probs)
      loaded.add(v)
  return versions


def _stages(log_path):
  """[(monotonic time, stage)] the child's log reached, in order."""
  found = []
  if not log_path.exists():  # Not yet created (or the child was killed before).
    return found
  for line in log_path.read_text().splitlines():
    stamp, _, message = line.partition(' ')
    for prefix, stage in STAGES:
      if message.startswith('export: ' + prefix):
        found.append((float(stamp), stage))
  return found


def _next_export(trained_toy, base, version):
  model, estimator = trained_toy
  return model.export_for_serving(estimator, str(base), version=version, keep=2,
                                  validate=False, warmup=False)


# ----- kill -9 at random points -----

def test_kill_9_at_random_points_leaves_loadable_versions(zygote, trained_toy, tmp_path):
  seed = int(os.environ.get('EXPORT_KILL_SEED', time.time_ns() % 2**31))
  print(f'\nkill test seed: {seed} (rerun with EXPORT_KILL_SEED={seed})')
  rng = random.Random(seed)
  base = tmp_path / 'base'
  started = time.monotonic()
  for version in (1, 2):  # Calibrate: full exports, fork to exit (the 2nd counts).
    t = time.monotonic()
    pid, log = zygote.export(base, version)
    assert zygote.wait(pid) == 0, log.read_text()[-3000:]
    full = time.monotonic() - t
  # Half the kills land anywhere in [0, full]; half in the short tail after the parity
  # check (warmup replay, manifest, fsync, publish, retention), timed from the child's log.
  reached = dict((stage, t) for t, stage in _stages(log))
  tail = reached['ready'] - reached['parity']
  loaded, stages, stale_runs, completed = set(), {}, 0, 0
  for run in range(KILL_RUNS):
    pid, log = zygote.export(base, 10 + 2 * run)
    if run % 2:
      delay = rng.uniform(0, full)
    else:
      delay = rng.uniform(0, tail * 1.2)
      deadline = time.monotonic() + 60
      while not any(stage == 'parity' for _, stage in _stages(log)):
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.001)
    time.sleep(delay)
    os.kill(pid, signal.SIGKILL)
    code = zygote.wait(pid)
    assert code in (0, -signal.SIGKILL), f'seed {seed} run {run}: child exit {code}\n' + (
        log.read_text()[-3000:])
    completed += code == 0
    stage = ([s for _, s in _stages(log)] or ['start'])[-1]
    stages[stage] = stages.get(stage, 0) + 1
    context = f'seed {seed} run {run}: killed {delay * 1000:.1f} ms after ' + (
        'the parity check' if run % 2 == 0 else 'the fork') + f', in stage {stage}'
    versions = _check_versions(base, loaded, context)
    assert versions, context
    left = [n for n in _staging(base) if _owner_pid(n) == pid]
    stale_runs += bool(left)
    result = _next_export(trained_toy, base, 11 + 2 * run)  # Removes the dead child's dirs.
    assert set(left) <= set(result.removed_staging), context
    assert _staging(base) == [], f'{context}: left {_staging(base)}'
    _check_versions(base, loaded, context + ', after the next export')
  elapsed = time.monotonic() - started
  print(f'kill test: {KILL_RUNS} runs in {elapsed:.1f} s (full export {full * 1000:.0f} ms), '
        f'{completed} finished before the kill, {stale_runs} left staging directories, '
        f'last stage reached: {stages}; delays uniform in [0, {full * 1000:.0f}] ms after '
        f'the fork, or [0, {tail * 1200:.1f}] ms after the parity check')
  assert len(stages) >= 3, f'seed {seed}: kills did not spread over the stages: {stages}'


# ----- stale staging directories -----

def test_live_exporter_staging_is_kept_a_killed_ones_removed(zygote, trained_toy, tmp_path):
  base = tmp_path / 'base'
  _next_export(trained_toy, base, 1)
  live, live_log = zygote.export(base, 3)
  dead, dead_log = zygote.export(base, 4)
  for pid in (live, dead):  # Freeze both in the middle of writing their export.
    deadline = time.monotonic() + 30
    while not any(_owner_pid(n) == pid for n in _staging(base)):
      assert time.monotonic() < deadline, 'child never created its staging directory'
      time.sleep(0.005)
    os.kill(pid, signal.SIGSTOP)
  os.kill(dead, signal.SIGKILL)
  assert zygote.wait(dead) == -signal.SIGKILL
  try:
    result = _next_export(trained_toy, base, 2)
    owners = {_owner_pid(n) for n in _staging(base)}
    assert owners == {live}, (owners, live, dead)
    assert {_owner_pid(n) for n in result.removed_staging} == {dead}
  finally:
    os.kill(live, signal.SIGCONT)
  assert zygote.wait(live) == 0, live_log.read_text()[-3000:]
  assert _staging(base) == []
  assert _check_versions(base, set()) == [2, 3]
  assert 'published' not in dead_log.read_text()


def _name(what='export', ms=None, pid=None, host=None):
  ms = int(time.time() * 1000) if ms is None else ms
  host = export_lib._host() if host is None else host  # pylint: disable=protected-access
  return f'.staging-{what}-{ms}-{os.getpid() if pid is None else pid}-0123abcd@{host}'


def test_staleness_rule(tmp_path):
  day = export_lib.STALE_STAGING_SECONDS
  zombie = subprocess.Popen(['true'])  # pylint: disable=consider-using-with
  try:
    deadline = time.monotonic() + 10
    while export_lib._process_state(zombie.pid)[0] != 'Z':  # pylint: disable=protected-access
      assert time.monotonic() < deadline, 'the child never exited'
      time.sleep(0.01)
    now_ms = int(time.time() * 1000)
    cases = {
        _name(): False,  # This live process.
        _name(what='delete7'): False,
        _name(pid=zombie.pid, ms=now_ms): True,  # Exited, not yet reaped.
        # The pid runs, but started after the directory: the pid was reused.
        _name(pid=os.getpid(), ms=1000): True,
        _name(pid=2**22 + 7): True,  # No such process.
        _name(host='other-host'): False,  # Cannot ask another host: age decides.
        _name(host='other-host', ms=now_ms - (day + 60) * 1000): True,
        '.staging-0123456789abcdef': False,  # An unowned name, fresh.
        '.staging-old-unowned': True,
    }
    for name in cases:
      (tmp_path / name).mkdir()
    old = time.time() - day - 60
    os.utime(tmp_path / '.staging-old-unowned', (old, old))
    os.utime(tmp_path / _name(host='other-host', ms=now_ms - (day + 60) * 1000), (old, old))
    got = {n: export_lib.staging_is_stale(str(tmp_path), n) for n in cases}
    assert got == cases
    removed = export_lib.clean_stale_staging(str(tmp_path))
    assert removed == sorted(n for n, stale in cases.items() if stale)
    assert sorted(os.listdir(tmp_path)) == sorted(n for n, stale in cases.items() if not stale)
  finally:
    zombie.wait(timeout=10)


# ----- concurrent retention -----

def test_two_processes_exporting_with_retention(zygote, tmp_path):
  base = tmp_path / 'base'
  pids = [zygote.export(base, first, exports=6, step=10) for first in (10, 15)]
  codes = [zygote.wait(pid, timeout=120) for pid, _ in pids]
  logs = [log.read_text() for _, log in pids]
  assert codes == [0, 0], '\n'.join(l[-3000:] for l in logs)
  results = [json.loads(line[len('RESULT '):]) for l in logs for line in l.splitlines()
             if line.startswith('RESULT ')]
  assert len(results) == 12
  published = sorted(r['version'] for r in results)
  assert len(set(published)) == 12  # Every export got its own version.
  deleted = [v for r in results for v in r['deleted']]
  assert len(deleted) == len(set(deleted))  # Each version deleted by one retention only.
  versions = _check_versions(base, set())
  assert max(published) in versions and 2 <= len(versions) <= 3
  assert sorted(versions + deleted) == published
  assert _staging(base) == []


def _fake_versions(base, scores):
  for v, score in scores.items():
    _saved_model.write_manifest(str(base / str(v)), {'version': v, 'metrics': {'score': score}})


@pytest.mark.parametrize('best', [False, True])
def test_concurrent_retention_never_fails(tmp_path, best):
  rng = random.Random(7)
  scores = {v: rng.random() for v in range(1, 121)}
  _fake_versions(tmp_path, scores)
  barrier = threading.Barrier(4)
  results, errors = {}, []

  def retain(i):
    try:
      barrier.wait(timeout=10)
      results[i] = export_lib.apply_retention(str(tmp_path), 2, 'score' if best else None,
                                              protect=120)
    except Exception as e:  # pylint: disable=broad-except
      errors.append(e)

  threads = [threading.Thread(target=retain, args=(i,)) for i in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join(timeout=60)
  assert not any(t.is_alive() for t in threads) and errors == []
  deleted = [v for r in results.values() for v in r]
  assert len(deleted) == len(set(deleted)) == 118  # Each version deleted exactly once.
  best_other = max((v for v in scores if v != 120), key=scores.get) if best else 119
  assert _saved_model.numeric_versions(str(tmp_path)) == sorted([best_other, 120])
  assert os.listdir(tmp_path) and _staging(tmp_path) == []


def test_retention_spares_a_version_published_meanwhile(trained_toy, tmp_path, monkeypatch):
  """Another exporter publishes (worst score) between our rename and our retention."""
  model, estimator = trained_toy
  base = tmp_path / 'base'
  other = model.export_for_serving(estimator, str(tmp_path / 'other'), version=99,
                                   metrics={'score': 0.0}, validate=False, warmup=False)
  for v, score in ((1, 0.9), (2, 0.1), (3, 0.5)):
    model.export_for_serving(estimator, str(base), version=v, metrics={'score': score},
                             validate=False, warmup=False)
  real_fsync_dir = export_lib.fsync_dir

  def publish_other_then_fsync(path):
    if os.path.isdir(os.path.join(base, '4')) and not os.path.isdir(os.path.join(base, '99')):
      os.rename(other.path, os.path.join(base, '99'))
    real_fsync_dir(path)

  monkeypatch.setattr(export_lib, 'fsync_dir', publish_other_then_fsync)
  result = model.export_for_serving(estimator, str(base), version=4, keep=2,
                                    keep_best_by='score', metrics={'score': 0.2},
                                    validate=False, warmup=False)
  assert result.deleted_versions == (2, 3)  # 99 ranks worst but was published meanwhile.
  assert _saved_model.numeric_versions(str(base)) == [1, 4, 99]
  _check_versions(base, set())
