"""Pieces the benchmarks share: timing, the server in a second process, a gRPC caller.

    from bench import _common
    proc, grpc_port, rest_port = _common.start_server('/tmp/models/enc', model_name='enc')
    predict = _common.grpc_predict_fn(_common.grpc_channel(grpc_port), 'enc')
    base, measured, ratio = _common.median_ratio(bare_run, lambda: predict(feeds), 30)
    _common.stop_server(proc)

Timings are medians of `time.perf_counter` intervals; comparisons interleave
the baseline and the measured call so both see the same machine load.
"""
import dataclasses
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SERVER_READY_PREFIX = 'estimator-export serve:'  # The CLI prints this once the ports answer.


def free_port() -> int:
  """A TCP port on 127.0.0.1 that was free a moment ago."""
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


def start_server(base: str, model_name: str = 'enc', batching_file: Optional[str] = None,
                 log_dir: Optional[str] = None) -> Tuple[subprocess.Popen, int, int]:
  """Starts the embedded server (`estimator-export serve`) in another process.

  Returns once the initial version is loaded and warmed up and both ports
  answer. The server's stderr goes to `<log_dir>/server-<grpc port>.log`
  (log_dir defaults to the parent of `base`), whose path is `proc.log_path`.

  Args:
    base: the model base path (numeric version subdirectories).
    model_name: --model_name.
    batching_file: --batching_parameters_file; turns --enable_batching on.
    log_dir: where the server log goes.

  Returns:
    (process, gRPC port, REST port).

  Raises:
    RuntimeError: the server exited before it was ready (see its log).
  """
  grpc_port, rest_port = free_port(), free_port()
  cmd = [sys.executable, '-m', 'estimator_export.cli', 'serve', '--server_binary=embedded',
         f'--port={grpc_port}', f'--rest_api_port={rest_port}', f'--model_name={model_name}',
         f'--model_base_path={base}', '--file_system_poll_wait_seconds=1']
  if batching_file:
    cmd += ['--enable_batching', f'--batching_parameters_file={batching_file}']
  log_dir = log_dir or os.path.join(base, os.pardir)
  log = open(os.path.join(log_dir, f'server-{grpc_port}.log'), 'w')  # pylint: disable=consider-using-with
  proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=log, text=True)  # pylint: disable=consider-using-with
  for line in proc.stdout:
    if line.startswith(SERVER_READY_PREFIX):
      break
  else:
    proc.wait()
    raise RuntimeError(f'the server exited with code {proc.returncode} before it was ready; '
                       f'see {log.name}')
  threading.Thread(target=proc.stdout.read, daemon=True).start()
  proc.log_path = log.name
  return proc, grpc_port, rest_port


def stop_server(proc: subprocess.Popen, timeout: float = 30.0):
  """Terminates a server from start_server and waits for it (kills it after timeout s)."""
  if proc.poll() is not None:
    return
  proc.terminate()
  try:
    proc.wait(timeout)
  except subprocess.TimeoutExpired:
    proc.kill()
    proc.wait()


def grpc_channel(port: int, host: str = '127.0.0.1') -> grpc.Channel:
  """An insecure channel without message size limits."""
  return grpc.insecure_channel(f'{host}:{port}', options=[
      ('grpc.max_receive_message_length', -1), ('grpc.max_send_message_length', -1)])


def grpc_predict_fn(channel: grpc.Channel, model_name: str, signature_name: str = '',
                    timeout: float = 120.0
                   ) -> Callable[[Mapping[str, np.ndarray]], predict_pb2.PredictResponse]:
  """A function sending one Predict of {input alias: array} and returning the response."""
  stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)

  def call(inputs: Mapping[str, np.ndarray]) -> predict_pb2.PredictResponse:
    """inputs: alias -> numpy array (e.g. int32 [batch, seq_len]); the PredictResponse."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    if signature_name:
      request.model_spec.signature_name = signature_name
    for alias, value in inputs.items():
      request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return stub.Predict(request, timeout=timeout)
  return call


def median_seconds(fn: Callable[[], object], repeats: int) -> float:
  """Median wall time of `repeats` calls of fn, in seconds."""
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def median_ratio(baseline: Callable[[], object], measured: Callable[[], object],
                 repeats: int) -> Tuple[float, float, float]:
  """Interleaved medians (seconds) of two callables, and measured/baseline.

  The order alternates (AB BA AB ...), so neither call always runs right
  after the other (whose threads may still be winding down).
  """
  base_t, meas_t = [], []
  pair = ((baseline, base_t), (measured, meas_t))
  for i in range(repeats):
    for fn, out in (pair if i % 2 == 0 else pair[::-1]):
      start = time.perf_counter()
      fn()
      out.append(time.perf_counter() - start)
  b, m = statistics.median(base_t), statistics.median(meas_t)
  return b, m, m / b


def interleaved_medians(calls: Mapping[str, Callable[[], object]], repeats: int
                       ) -> Dict[str, float]:
  """Median seconds of each of several callables, timed in rotating order.

  Round i starts with the (i mod n)-th callable and goes on round the list, so
  each runs after each of the others about as often and all see the same load.

  Args:
    calls: name -> callable (already warmed up).
    repeats: calls of each (rounds).

  Returns:
    name -> median seconds per call.
  """
  names = list(calls)
  times = {name: [] for name in names}
  for i in range(repeats):
    for name in names[i % len(names):] + names[:i % len(names)]:
      start = time.perf_counter()
      calls[name]()
      times[name].append(time.perf_counter() - start)
  return {name: statistics.median(values) for name, values in times.items()}


@dataclasses.dataclass(frozen=True)
class Row:
  """One line of a benchmark's goal table: what, the values, the ratio and its goal."""
  what: str
  measured: str
  ratio: str
  goal: str
  met: Optional[bool]  # None: informational, skipped, or too few calls to judge.

  def line(self) -> str:
    verdict = {True: 'met', False: 'NOT met', None: '-'}[self.met]
    return f'{self.what:<44} | {self.measured:<56} | {self.ratio:>9} | {self.goal:<9} | {verdict}'


def load_average() -> str:
  return '/'.join(f'{x:.2f}' for x in os.getloadavg())


def finish(name: str, rows: Sequence[Row], load_before: str, output_dir: Optional[str],
           extra: Optional[Mapping[str, object]] = None, say=print) -> str:
  """Prints the goal table every benchmark ends with; writes <output_dir>/<name>.json.

  Args:
    name: the benchmark ('freeze_bench', ...).
    rows: its results.
    load_before: load_average() when it started (the one after is taken here).
    output_dir: where the JSON goes; None: nowhere.
    extra: more JSON fields.
    say: the print function.

  Returns:
    the load line ('load average (1/5/15 min) ... before, ... after').
  """
  load = f'load average (1/5/15 min) {load_before} before, {load_average()} after'
  say('\n' + Row('what', 'measured', 'ratio', 'goal', None).line().replace('| -', '| met?'))
  for row in rows:
    say(row.line())
  say(f'{load} ({os.cpu_count()} cores shared with other work: ratios, not absolute times)')
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, f'{name}.json')
    with open(path, 'w', encoding='utf-8') as f:
      json.dump({'rows': [dataclasses.asdict(r) for r in rows], 'load': load,
                 **dict(extra or {})}, f, indent=2)
    say(f'(results in {path})')
  return load
