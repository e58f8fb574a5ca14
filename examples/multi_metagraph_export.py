r"""Two MetaGraphs in one export, each served by its tags: {serve} and {serve, gpu}.

    python -m examples.multi_metagraph_export --output_dir /tmp/multi_metagraph

1. trains a small regressor (a ServingModelMixin subclass learning
   y = 3 x0 - 2 x1 + 1) for a few hundred steps;
2. exports it once with two MetaGraphs that share one variables/ directory
   (`ExportOptions.tag_sets`): {serve} with every signature, and
   {serve, gpu} with only `serving_default`. The export loads each MetaGraph
   by its tags, runs its signatures, compares them with `estimator.predict`
   and replays the warmup file on each, before publishing;
3. prints the tag sets as `saved_model_cli show` does, and each one's
   signatures;
4. for each tag set, starts the embedded server, `estimator-export serve
   --saved_model_tags=TAGS` (TF Serving's own flag; `tensorflow_model_server`
   takes the same), in a subprocess on a loopback port, queries it once over
   gRPC, asks which signatures it serves, and stops it by its PID.

Both servers answer the same (one graph, one set of variables); the
{serve, gpu} one serves only `serving_default`. A server started with tags no
MetaGraph has refuses the version ("Could not find meta graph def matching
supplied tags: { ... }"). The copies share the serving graph: this shows how
one export carries tag sets for different deployments, not a graph placed
differently per device.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from typing import Any, Dict, List, Tuple

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from estimator_export import contract as contract_lib
from estimator_export.client import GrpcClient
from estimator_export.hooks import ProgressHook, show_export_progress
from examples._common import prepare_output_dir

FLAGS = flags.FLAGS

MODEL_NAME = 'line'
TAG_SETS = {'serve': None, 'serve,gpu': ['serving_default']}
QUERY = np.array([[1.0, 2.0], [0.5, -1.0]], np.float32)  # y = 0.0 and 4.5
SERVER_START_SECONDS = 120.0
_SERVE_LINE = re.compile(r'estimator-export serve: gRPC on 127\.0\.0\.1:(\d+)')


class LineRegressor(ee.ServingModelMixin):
  """y from two features by one dense layer."""
  feature_spec = ee.FeatureSpec([
      ee.Feature('x', 'float32', shape=(2,), description='two inputs'),
      ee.Feature('y', 'float32', training_only=True),
  ])

  def predictions(self, features, mode, params):
    y = tf.compat.v1.layers.dense(features['x'], 1, name='line')[:, 0]
    return {'y': y}

  def loss(self, predictions, labels, features, mode, params):
    return tf.compat.v1.losses.mean_squared_error(features['y'], predictions['y'])


def make_data(n: int, seed: int) -> Dict[str, np.ndarray]:
  rng = np.random.RandomState(seed)
  x = rng.uniform(-2.0, 2.0, size=(n, 2)).astype(np.float32)
  return {'x': x, 'y': (3.0 * x[:, 0] - 2.0 * x[:, 1] + 1.0).astype(np.float32)}


def serve_and_query(export_base: str, tags: str, log_path: str
                   ) -> Tuple[Dict[str, List[float]], List[str]]:
  """Runs `estimator-export serve --saved_model_tags=TAGS` in a subprocess and queries it once.

  Returns:
    (the Predict outputs for QUERY, the signature names the server serves).
    The server is stopped by its PID before this returns.
  """
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3',
             PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
  argv = [sys.executable, '-m', 'estimator_export.cli', 'serve', '--server_binary=embedded',
          '--port=0', f'--model_name={MODEL_NAME}', f'--model_base_path={export_base}',
          f'--saved_model_tags={tags}', '--file_system_poll_wait_seconds=0']
  with open(log_path, 'wb') as log:
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)  # pylint: disable=consider-using-with
  try:
    port = _wait_for_port(proc, log_path)
    print(f'      pid {proc.pid}: gRPC on 127.0.0.1:{port} (--saved_model_tags={tags})',
          flush=True)
    with GrpcClient(f'127.0.0.1:{port}') as client:
      outputs = client.predict(MODEL_NAME, {'x': QUERY})
      served = sorted(client.metadata(MODEL_NAME))
  finally:
    _stop(proc)
  return {key: np.asarray(value).tolist() for key, value in outputs.items()}, served


def _wait_for_port(proc: subprocess.Popen, log_path: str) -> int:
  """The gRPC port the server prints once its models are loaded (bounded in time)."""
  deadline = time.monotonic() + SERVER_START_SECONDS
  while True:
    with open(log_path, encoding='utf-8', errors='replace') as f:
      match = _SERVE_LINE.search(f.read())
    if match:
      return int(match.group(1))
    if proc.poll() is not None or time.monotonic() > deadline:
      with open(log_path, encoding='utf-8', errors='replace') as f:
        tail = f.read()[-2000:]
      raise RuntimeError(f'the server (pid {proc.pid}) did not start within '
                         f'{SERVER_START_SECONDS:.0f} s; its log ends:\n{tail}')
    time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
  """SIGTERM to the server's PID (it stops gracefully), SIGKILL if it is still there."""
  if proc.poll() is not None:
    return
  os.kill(proc.pid, signal.SIGTERM)
  try:
    proc.wait(timeout=30)
  except subprocess.TimeoutExpired:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def run(output_dir: str, train_steps: int) -> Dict[str, Any]:
  """Trains, exports two MetaGraphs, serves each by tag; returns what it saw (also summary.json)."""
  model_dir = os.path.join(output_dir, 'model')
  export_base = os.path.join(output_dir, 'export', MODEL_NAME)
  model = LineRegressor()
  estimator = model.make_estimator(model_dir, params={'learning_rate': 0.05})
  data = make_data(1024, seed=0)

  def train_input_fn():
    return tf.data.Dataset.from_tensor_slices(data).shuffle(1024, seed=1).repeat().batch(32)

  print(f'[1/4] training LineRegressor for {train_steps} steps in {model_dir}', flush=True)
  estimator.train(train_input_fn, max_steps=train_steps,
                  hooks=[ProgressHook(100, train_steps, prefix='      ')])

  print(f'[2/4] exporting MetaGraphs {", ".join("{" + t + "}" for t in TAG_SETS)} to '
        f'{export_base}', flush=True)
  result = model.export_for_serving(estimator, export_base, model.serving_input_receiver_fn('raw'),
                                    samples={'x': QUERY}, tag_sets=TAG_SETS)
  variables = sorted(os.listdir(os.path.join(result.path, 'variables')))
  print(f'      version {result.version}; one variables/ directory: {", ".join(variables)}',
        flush=True)

  print('[3/4] tag sets (saved_model_cli show):', flush=True)
  print(contract_lib.show(result.path), end='', flush=True)
  for tags, names in result.tag_sets.items():
    print(f'      {{{tags}}}: {", ".join(names)}', flush=True)

  print('[4/4] serving each tag set with --saved_model_tags, one query each:', flush=True)
  answers, served, in_process = {}, {}, {}
  for tags in TAG_SETS:
    with ee.Predictor.from_saved_model(result.path, tags=tags.split(',')) as predictor:
      in_process[tags] = predictor({'x': QUERY})['y'].tolist()
    answers[tags], served[tags] = serve_and_query(
        export_base, tags, os.path.join(output_dir, f'serve_{tags.replace(",", "_")}.log'))
    print(f'      {{{tags}}}: y = {[round(v, 3) for v in answers[tags]["y"]]} '
          f'(signatures served: {", ".join(served[tags])})', flush=True)
  summary = {'export': result.path, 'version': result.version, 'tag_sets': result.tag_sets,
             'answers': answers, 'served_signatures': served, 'in_process': in_process}
  with open(os.path.join(output_dir, 'summary.json'), 'w', encoding='utf-8') as f:
    json.dump(summary, f, indent=2, sort_keys=True)
  return summary


def main(argv):
  del argv
  show_export_progress()
  output_dir = prepare_output_dir(FLAGS.output_dir, FLAGS.fresh)
  run(output_dir, FLAGS.train_steps)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'multi_metagraph_output', 'Where the model and exports go.')
  flags.DEFINE_integer('train_steps', 300, 'Training steps.')
  flags.DEFINE_bool('fresh', True, 'Start from an empty output_dir.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
