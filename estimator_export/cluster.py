"""Classic tf.estimator distribution: TF_CONFIG, a local multi-process cluster, a TFJob.

tf.estimator trains on TF's own distributed runtime when each process gets a
`TF_CONFIG` naming the cluster and its own task. `tf.estimator.RunConfig` reads
it; `tf.estimator.train_and_evaluate` then runs the task's role:

    ps-0 .. ps-M      hold the variables (Estimator places them there with
                      tf.compat.v1.train.replica_device_setter); never exit;
    chief             trains, initialises variables, writes checkpoints;
    worker-0 .. N     train asynchronously on the same variables;
    evaluator         outside the training cluster: evaluates each new
                      checkpoint and runs the EvalSpec's exporters, the only
                      task that exports.

Every role runs the same command; only TF_CONFIG differs. This module builds
those TF_CONFIGs (`tf_config`, `local_cluster`), reads one (`read_tf_config`),
runs a whole cluster on one machine (`run_local_cluster`, with a log file per
role) and writes the Kubeflow Training Operator v1 `TFJob` for the same job
(`tfjob_manifest`). Local addresses are 127.0.0.1; note that TF's gRPC servers
listen on every interface whatever host the cluster spec names, so a local
cluster's ports are reachable from the network unless a firewall says otherwise.
"""
import contextlib
import copy
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence

CHIEF, WORKER, PS, EVALUATOR = 'chief', 'worker', 'ps', 'evaluator'
TRAINING_ROLES = (CHIEF, WORKER, PS)  # The roles in the cluster spec; the evaluator is not.
ROLES = TRAINING_ROLES + (EVALUATOR,)
ENV_VAR = 'TF_CONFIG'
PrintFn = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class Task:
  """One process of the cluster: a role and its index in that role."""
  type: str
  index: int = 0

  @property
  def name(self) -> str:
    """'worker-1', 'chief-0', ...: the task's log file stem and its name in messages."""
    return f'{self.type}-{self.index}'


def cluster_tasks(workers: int = 1, ps: int = 1, evaluator: bool = True) -> List[Task]:
  """The tasks of a cluster, in start order: ps first, then chief, workers, evaluator.

  Raises:
    ValueError: a negative count.
  """
  for name, value in (('workers', workers), ('ps', ps)):
    if value < 0:
      raise ValueError(f'{name}={value}: give 0 or more.')
  return ([Task(PS, i) for i in range(ps)] + [Task(CHIEF, 0)] +
          [Task(WORKER, i) for i in range(workers)] +
          ([Task(EVALUATOR, 0)] if evaluator else []))


def free_ports(count: int, host: str = '127.0.0.1') -> List[int]:
  """`count` distinct TCP ports on `host` that were free a moment ago.

  All sockets stay bound until every port is chosen, so the ports differ; a
  process started later may still take one (the cluster would then fail to
  start and say so in that role's log).
  """
  with contextlib.ExitStack() as stack:
    ports = []
    for _ in range(count):
      sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
      sock.bind((host, 0))
      ports.append(sock.getsockname()[1])
    return ports


def local_cluster(workers: int = 1, ps: int = 1, host: str = '127.0.0.1'
                 ) -> Dict[str, List[str]]:
  """A cluster spec of one chief, `workers` workers and `ps` parameter servers on free ports.

  Returns:
    {'chief': ['127.0.0.1:P'], 'worker': [...], 'ps': [...]}, without empty roles
    (the evaluator is never part of it: tf.estimator keeps it outside the cluster).
  """
  training = cluster_tasks(workers, ps, evaluator=False)
  ports = iter(free_ports(len(training), host))
  spec: Dict[str, List[str]] = {}
  for role in TRAINING_ROLES:
    addresses = [f'{host}:{next(ports)}' for t in training if t.type == role]
    if addresses:
      spec[role] = addresses
  return spec


def tf_config(cluster: Mapping[str, Sequence[str]], task: Task) -> Dict:
  """The TF_CONFIG dict of `task` in `cluster` (json.dumps it into the environment)."""
  if task.type not in ROLES:
    raise ValueError(f'task type {task.type!r}: use one of {", ".join(ROLES)}.')
  if task.type != EVALUATOR and not 0 <= task.index < len(cluster.get(task.type, ())):
    raise ValueError(f'task {task.name} is not in the cluster {dict(cluster)}; '
                     f'its index must be below the number of {task.type} addresses.')
  return {'cluster': {k: list(v) for k, v in cluster.items()},
          'task': {'type': task.type, 'index': task.index}}


def read_tf_config(environ: Optional[Mapping[str, str]] = None) -> Optional[Dict]:
  """The parsed TF_CONFIG, or None when it is unset, empty or names no cluster.

  Raises:
    ValueError: TF_CONFIG is not a JSON object, or has a cluster but no valid task.
  """
  raw = (os.environ if environ is None else environ).get(ENV_VAR, '').strip()
  if not raw:
    return None
  try:
    config = json.loads(raw)
  except json.JSONDecodeError as e:
    raise ValueError(f'{ENV_VAR} is not JSON ({e}): {raw[:200]!r}; set it to e.g. '
                     '{"cluster": {"chief": ["host:2222"], ...}, "task": {"type": "chief", '
                     '"index": 0}} or unset it to run on one machine.') from None
  if not isinstance(config, dict):
    raise ValueError(f'{ENV_VAR} must be a JSON object, got {raw[:200]!r}.')
  if not config.get('cluster'):
    return None
  task = config.get('task') or {}
  if task.get('type') not in ROLES or not isinstance(task.get('index', 0), int):
    raise ValueError(f'{ENV_VAR} task {task!r} is not valid: give {{"type": one of '
                     f'{", ".join(ROLES)}, "index": N}}.')
  return config


def task_of(config: Mapping) -> Task:
  """The Task a parsed TF_CONFIG describes."""
  task = config['task']
  return Task(task['type'], int(task.get('index', 0)))


# ----- the local launcher -----
@dataclasses.dataclass
class RoleResult:
  """How one role's process ended.

  status: 'ok' (exit 0), 'failed' (non-zero exit; or a ps that exited on its
  own), 'stopped' (stopped by the launcher: parameter servers at the end,
  everything after a failure or Ctrl-C) or 'not started'.
  """
  task: Task
  log_path: str
  pid: Optional[int] = None
  returncode: Optional[int] = None
  status: str = 'not started'
  seconds: float = 0.0

  def describe(self) -> str:
    code = '' if self.returncode is None else f', exit {self.returncode}'
    return f'{self.task.name}: {self.status}{code} after {self.seconds:.1f}s (log {self.log_path})'


@dataclasses.dataclass
class ClusterResult:
  """What `run_local_cluster` saw: each role's result; `failed` names the first failure."""
  cluster: Dict[str, List[str]]
  roles: List[RoleResult]
  failed: Optional[RoleResult] = None
  seconds: float = 0.0

  @property
  def ok(self) -> bool:
    return self.failed is None

  def role(self, name: str) -> RoleResult:
    return next(r for r in self.roles if r.task.name == name)


class _Role:
  """A started role: its process, log file and result."""

  def __init__(self, task: Task, log_path: str, proc: subprocess.Popen, log_file):
    self.task, self.proc, self.log_file = task, proc, log_file
    self.started = time.monotonic()
    self.result = RoleResult(task, log_path, pid=proc.pid, status='running')

  def finish(self, status: str) -> None:
    self.result.returncode = self.proc.returncode
    self.result.status = status
    self.result.seconds = time.monotonic() - self.started
    self.log_file.close()


def _stop(role: _Role, grace_secs: float) -> None:
  """Stops the role's process group (its PID; started in a session of its own)."""
  if role.proc.poll() is not None:
    return
  for sig, wait in ((signal.SIGTERM, grace_secs), (signal.SIGKILL, 10.0)):
    try:
      os.killpg(role.proc.pid, sig)
    except ProcessLookupError:
      return
    try:
      role.proc.wait(timeout=wait)
      return
    except subprocess.TimeoutExpired:
      continue


def _kill_leftovers(role: _Role, wait_secs: float = 10.0) -> None:
  """Kills what the role's process left behind in its process group (orphaned children).

  SIGKILL is delivered asynchronously, so this waits (up to `wait_secs`) until
  no member of the group still runs: a caller that returns has no role
  process left, only zombies its init has yet to reap.
  """
  try:
    os.killpg(role.proc.pid, signal.SIGKILL)
  except (ProcessLookupError, PermissionError):
    return  # The group is empty: nothing left.
  deadline = time.monotonic() + wait_secs
  while _running_in_group(role.proc.pid) and time.monotonic() < deadline:
    time.sleep(0.01)


def _running_in_group(pgid: int) -> bool:
  """Whether a process of group `pgid` still runs (Linux /proc; elsewhere: assume not)."""
  try:
    pids = [name for name in os.listdir('/proc') if name.isdigit()]
  except OSError:
    return False
  for pid in pids:
    try:
      with open(f'/proc/{pid}/stat') as f:
        fields = f.read().rsplit(')', 1)[1].split()
    except OSError:
      continue  # Gone meanwhile.
    if int(fields[2]) == pgid and fields[0] != 'Z':  # Fields after the name: state, ppid, pgrp.
      return True
  return False


def run_local_cluster(command: Sequence[str], logdir: str, *, workers: int = 1, ps: int = 1,
                      evaluator: bool = True, env: Optional[Mapping[str, str]] = None,
                      cwd: Optional[str] = None, print_fn: PrintFn = print,
                      poll_secs: float = 0.2, worker_grace_secs: float = 60.0,
                      stop_grace_secs: float = 5.0, timeout_secs: Optional[float] = None
                     ) -> ClusterResult:
  """Runs `command` as every role of a cluster on 127.0.0.1, one process per role.

  Each process gets its own TF_CONFIG and writes stdout and stderr to
  `<logdir>/<role>-<index>.log`. The launcher waits for the chief and the
  evaluator, gives the workers `worker_grace_secs` more to finish, then stops
  the parameter servers (which never exit on their own) and any worker still
  running. A role that fails (non-zero exit, or a parameter server exiting on
  its own) stops all the others. Ctrl-C stops every process, then re-raises.
  Processes are started in sessions of their own and stopped by PID: SIGTERM,
  then SIGKILL after `stop_grace_secs`.

  Args:
    command: the user's command, the same for every role (argv list).
    logdir: where the per-role logs go (created).
    workers, ps: how many workers and parameter servers (besides the chief).
    evaluator: also run an evaluator (the task that evaluates and exports).
    env: the processes' environment (default: this process's) before TF_CONFIG.
    cwd: their working directory.
    print_fn: receives one progress line per start, finish and stop.
    poll_secs: how often the processes are polled.
    worker_grace_secs: how long workers may run on after chief and evaluator ended.
    stop_grace_secs: SIGTERM to SIGKILL delay when stopping a process.
    timeout_secs: stop everything and fail after this long (None: no limit).

  Returns:
    A ClusterResult; `ok` is True when the chief, workers and evaluator exited 0.
  """
  if not command:
    raise ValueError('no command to run: give it after --, e.g. -- python -m my.trainer')
  os.makedirs(logdir, exist_ok=True)
  cluster = local_cluster(workers, ps)
  base_env = dict(os.environ if env is None else env)
  roles: List[_Role] = []
  results = [RoleResult(t, os.path.join(logdir, f'{t.name}.log'))
             for t in cluster_tasks(workers, ps, evaluator)]
  out = ClusterResult(cluster, results)
  started = time.monotonic()

  def fail(role: _Role, why: str) -> None:
    out.failed = role.result
    print_fn(f'cluster: {role.task.name} {why}; log {role.result.log_path}; '
             'stopping the other roles')

  try:
    for i, result in enumerate(results):
      config = json.dumps(tf_config(cluster, result.task))
      log_file = open(result.log_path, 'w')  # pylint: disable=consider-using-with
      log_file.write(f'# {ENV_VAR}={config}\n# command: {" ".join(command)}\n')
      log_file.flush()
      proc = subprocess.Popen(list(command), env={**base_env, ENV_VAR: config}, cwd=cwd,
                              stdout=log_file, stderr=subprocess.STDOUT,
                              stdin=subprocess.DEVNULL, start_new_session=True)
      role = _Role(result.task, result.log_path, proc, log_file)
      results[i] = role.result
      roles.append(role)
      address = (cluster[result.task.type][result.task.index]
                 if result.task.type in cluster else 'outside the cluster')
      print_fn(f'cluster: started {result.task.name} (pid {proc.pid}, {address}), '
               f'log {result.log_path}')
    _wait(roles, out, fail, print_fn, poll_secs, worker_grace_secs, timeout_secs, started)
  finally:
    for role in roles:
      if role.proc.poll() is None:
        _stop(role, stop_grace_secs)
        role.finish('stopped')
        why = ' (parameter servers never exit on their own)' if role.task.type == PS else ''
        print_fn(f'cluster: stopped {role.task.name} (pid {role.proc.pid}){why}')
      elif role.result.status == 'running':
        role.finish('ok' if role.proc.returncode == 0 else 'failed')
      _kill_leftovers(role)
    out.seconds = time.monotonic() - started
  return out


def _wait(roles: List[_Role], out: ClusterResult, fail, print_fn: PrintFn, poll_secs: float,
          worker_grace_secs: float, timeout_secs: Optional[float], started: float) -> None:
  """Polls until the job is done or a role failed; marks finished roles."""
  awaited = {CHIEF, EVALUATOR}
  grace_from = None
  while True:
    for role in roles:
      if role.result.status != 'running' or role.proc.poll() is None:
        continue
      code = role.proc.returncode
      if role.task.type == PS:
        role.finish('failed')
        return fail(role, f'(parameter server) exited on its own with status {code}')
      role.finish('ok' if code == 0 else 'failed')
      if code != 0:
        return fail(role, f'failed with exit status {code}')
      print_fn(f'cluster: {role.task.name} finished (exit 0) in {role.result.seconds:.1f}s')
    running = {r.task.type for r in roles if r.result.status == 'running'}
    if not running & awaited:
      if WORKER not in running:
        return None
      grace_from = grace_from or time.monotonic()
      if time.monotonic() - grace_from > worker_grace_secs:
        print_fn(f'cluster: workers still running {worker_grace_secs:g}s after the chief '
                 'finished; stopping them')
        return None
    if timeout_secs is not None and time.monotonic() - started > timeout_secs:
      late = next(r for r in roles if r.result.status == 'running' and r.task.type != PS)
      return fail(late, f'still running after the {timeout_secs:g}s timeout')
    time.sleep(poll_secs)


# ----- Kubeflow TFJob -----
_DNS_LABEL = re.compile(r'^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$')
_REPLICA_NAMES = {CHIEF: 'Chief', WORKER: 'Worker', PS: 'PS', EVALUATOR: 'Evaluator'}
RESTART_POLICIES = ('Always', 'OnFailure', 'Never', 'ExitCode')
TFJOB_PORT = 2222  # The Training Operator's default tfjob-port.


def tfjob_manifest(name: str, image: str, command: Sequence[str], *, workers: int = 1,
                   ps: int = 1, evaluator: bool = True, namespace: Optional[str] = None,
                   restart_policy: str = 'OnFailure',
                   env: Optional[Mapping[str, str]] = None) -> Dict:
  """A Kubeflow Training Operator v1 TFJob running `command` in `image` as every role.

  The operator sets each pod's TF_CONFIG, so the same command that runs under
  `run_local_cluster` runs unchanged. runPolicy.cleanPodPolicy 'Running' lets
  the operator delete the parameter servers (which never exit) once the chief
  has succeeded, which is when the job succeeds.

  Args:
    name: metadata.name, a DNS-1123 label (lower-case letters, digits, '-').
    image: the container image holding the code and its dependencies.
    command: argv; the first element becomes the container's command, the rest its args.
    workers, ps, evaluator: the replicas besides the one chief.
    namespace: metadata.namespace (None: kubectl's current namespace).
    restart_policy: each replica's restartPolicy, one of RESTART_POLICIES.
    env: extra environment variables of every container.

  Returns:
    The manifest as a dict (write it with `dump_manifest`).
  """
  if not _DNS_LABEL.match(name or ''):
    raise ValueError(f'TFJob name {name!r} is not a DNS-1123 label; use lower-case letters, '
                     'digits and "-", starting and ending with a letter or digit, e.g. '
                     '"bert-sst2".')
  if not image:
    raise ValueError('a TFJob needs a container image: give --image, e.g. '
                     'registry.example.com/bert-train:1.0.')
  if not command:
    raise ValueError('no command to run: give it after --, e.g. -- python -m my.trainer')
  if restart_policy not in RESTART_POLICIES:
    raise ValueError(f'restart policy {restart_policy!r}: use one of '
                     f'{", ".join(RESTART_POLICIES)}.')
  counts = {CHIEF: 1, WORKER: workers, PS: ps, EVALUATOR: 1 if evaluator else 0}
  cluster_tasks(workers, ps, evaluator)  # Validates the counts.
  container = {'name': 'tensorflow', 'image': image, 'command': [command[0]],
               'args': list(command[1:]),
               'ports': [{'name': 'tfjob-port', 'containerPort': TFJOB_PORT}]}
  if env:
    container['env'] = [{'name': k, 'value': str(v)} for k, v in sorted(env.items())]
  specs = {}
  for role in ROLES:
    if counts[role]:
      specs[_REPLICA_NAMES[role]] = {
          'replicas': counts[role], 'restartPolicy': restart_policy,
          'template': {'spec': {'containers': [copy.deepcopy(container)]}}}
  metadata = {'name': name}
  if namespace:
    metadata['namespace'] = namespace
  return {'apiVersion': 'kubeflow.org/v1', 'kind': 'TFJob', 'metadata': metadata,
          'spec': {'runPolicy': {'cleanPodPolicy': 'Running'}, 'tfReplicaSpecs': specs}}


def dump_manifest(manifest: Mapping) -> str:
  """The manifest as YAML (JSON, which is YAML too, when PyYAML is not installed)."""
  try:
    import yaml  # pylint: disable=g-import-not-at-top
  except ImportError:
    return json.dumps(manifest, indent=2) + '\n'
  return yaml.safe_dump(dict(manifest), sort_keys=False, default_flow_style=False)
