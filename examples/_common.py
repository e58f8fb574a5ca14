"""What the examples share: prepare output_dir (quieting TF's deprecation noise), run the CLI."""
import os
import shutil
import subprocess
import sys
import warnings
from typing import Sequence

import tensorflow as tf


def prepare_output_dir(output_dir: str, fresh: bool = True) -> str:
  """Returns output_dir as an absolute path, emptied first when `fresh`."""
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  warnings.filterwarnings('ignore', message='`tf.layers')
  output_dir = os.path.abspath(output_dir)
  if fresh and os.path.isdir(output_dir):
    shutil.rmtree(output_dir)
  return output_dir


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLI_TIMEOUT_SECONDS = 300


def run_cli(args: Sequence[str]) -> str:
  """Runs `python -m estimator_export.cli ARGS` from this checkout; returns its stdout.

  Raises:
    RuntimeError: the command failed; the message has its exit code and last error line.
  """
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      [REPO] + [p for p in [os.environ.get('PYTHONPATH')] if p]))
  proc = subprocess.run([sys.executable, '-m', 'estimator_export.cli', *args], env=env,
                        capture_output=True, text=True, timeout=CLI_TIMEOUT_SECONDS,
                        check=False)
  if proc.returncode != 0:
    raise RuntimeError(f'`estimator-export {args[0]}` failed (exit {proc.returncode}): '
                       f'{proc.stderr.strip().splitlines()[-1:]}')
  return proc.stdout


def import_frozen_graph(graph_path: str) -> tf.Graph:
  """A frozen .pb in a new graph, as freeze_graph's users load it: parse, import_graph_def."""
  graph_def = tf.compat.v1.GraphDef()
  with open(graph_path, 'rb') as f:
    graph_def.ParseFromString(f.read())
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name='')
  return graph
