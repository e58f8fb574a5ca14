r"""Freeze a text GraphDef (tf.io.write_graph) plus a Saver checkpoint, as freeze_graph did.

    python -m examples.freeze_write_graph --output_dir /tmp/freeze_write_graph

The freeze_graph article's route: the graph structure and the weights are
written separately and joined by freezing.

1. builds a tiny regression graph (Placeholder 'x' float32 [batch, 3] ->
   dense+tanh -> 'output' float32 [batch, 1]) and trains it a few steps;
2. writes the GraphDef as text with tf.io.write_graph(..., 'graph.pbtxt',
   as_text=True) and the variables with tf.compat.v1.train.Saver
   (model.ckpt.index/.data);
3. freezes them from the command line with freeze_graph's flags:
     python -m estimator_export.cli freeze --input_graph graph.pbtxt \
       --input_binary=false --input_checkpoint model.ckpt \
       --output_node_names output --output_graph frozen.pb
4. loads frozen.pb with import_graph_def and checks it answers like the
   trained session on the same samples.
"""
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from examples._common import import_frozen_graph
from examples._common import prepare_output_dir
from examples._common import run_cli

FLAGS = flags.FLAGS



def make_data(n: int, seed: int):
  """x float32 [n, 3] and y float32 [n, 1] = tanh(x . [1, -2, 0.5]) + noise."""
  rng = np.random.RandomState(seed)
  x = rng.randn(n, 3).astype(np.float32)
  y = np.tanh(x @ np.array([[1.0], [-2.0], [0.5]], np.float32)) + 0.01 * rng.randn(n, 1)
  return x, y.astype(np.float32)


def train_and_write(model_dir: str, steps: int, samples: np.ndarray):
  """Trains; writes graph.pbtxt and model.ckpt; returns (pbtxt, prefix, outputs on samples)."""
  x_train, y_train = make_data(256, seed=0)
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
    x = tf.compat.v1.placeholder(tf.float32, [None, 3], name='x')
    y = tf.compat.v1.placeholder(tf.float32, [None, 1], name='y')
    init = tf.compat.v1.random_normal_initializer(stddev=0.5, seed=0)
    w1 = tf.compat.v1.get_variable('hidden/kernel', [3, 16], initializer=init)
    b1 = tf.compat.v1.get_variable('hidden/bias', [16], initializer=tf.zeros_initializer())
    w2 = tf.compat.v1.get_variable('out/kernel', [16, 1], initializer=init)
    b2 = tf.compat.v1.get_variable('out/bias', [1], initializer=tf.zeros_initializer())
    output = tf.identity(tf.matmul(tf.tanh(tf.matmul(x, w1) + b1), w2) + b2, name='output')
    loss = tf.reduce_mean(tf.square(output - y))
    train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
    saver = tf.compat.v1.train.Saver()
    session.run(tf.compat.v1.global_variables_initializer())
    for _ in range(steps):
      session.run(train_op, {x: x_train, y: y_train})
    pbtxt = tf.io.write_graph(session.graph_def, model_dir, 'graph.pbtxt', as_text=True)
    prefix = saver.save(session, os.path.join(model_dir, 'model.ckpt'))
    reference = session.run(output, {x: samples})
  return pbtxt, prefix, reference


def freeze_with_cli(pbtxt: str, prefix: str, output_graph: str) -> str:
  """Runs `python -m estimator_export.cli freeze` on graph + checkpoint; returns its stdout."""
  return run_cli(['freeze',
                  '--input_graph', pbtxt, '--input_binary=false', '--input_checkpoint', prefix,
                  '--output_node_names', 'output', '--output_graph', output_graph])


def run_frozen_graph(graph_path: str, x: np.ndarray) -> np.ndarray:
  """'output:0' of the frozen graph on x: import_graph_def, then run by tensor names."""
  with tf.compat.v1.Session(graph=import_frozen_graph(graph_path)) as session:
    return session.run('output:0', {'x:0': x})


def run(output_dir: str, steps: int = 50):
  """Trains, writes, freezes from the command line and compares; returns each step's result."""
  model_dir = os.path.join(output_dir, 'model')
  os.makedirs(model_dir, exist_ok=True)
  samples = make_data(8, seed=1)[0]
  pbtxt, prefix, reference = train_and_write(model_dir, steps, samples)
  print(f'[1/3] trained {steps} steps; wrote {os.path.basename(pbtxt)} (text GraphDef) and '
        f'{os.path.basename(prefix)}.index/.data (Saver)')
  graph_path = os.path.join(output_dir, 'frozen.pb')
  cli_output = freeze_with_cli(pbtxt, prefix, graph_path)
  manifest = ee.read_frozen_manifest(graph_path)
  print(f'[2/3] froze with --input_graph=graph.pbtxt --input_binary=false '
        f'--input_checkpoint={os.path.basename(prefix)} '
        f'--output_node_names=output: {os.path.getsize(graph_path)} bytes, inputs '
        f'{sorted(manifest["inputs"])}, outputs {sorted(manifest["outputs"])}')
  for line in cli_output.splitlines():
    print(f'      | {line}')
  frozen = run_frozen_graph(graph_path, samples)
  same = bool(np.allclose(frozen, reference, rtol=1e-6, atol=1e-7))
  print(f'[3/3] frozen.pb vs the trained session on {len(samples)} samples: '
        f'{"same outputs" if same else "DIFFERS"}; first -> {float(frozen[0, 0]):.4f}')
  return {'pbtxt': pbtxt, 'checkpoint': prefix, 'graph_path': graph_path,
          'manifest': manifest, 'cli_output': cli_output, 'samples': samples,
          'reference': reference, 'frozen': frozen, 'same': same}


def main(argv):
  del argv
  output_dir = prepare_output_dir(FLAGS.output_dir)
  result = run(output_dir, FLAGS.steps)
  if not result['same']:
    raise SystemExit('the frozen graph differs from the trained session')
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'freeze_write_graph_output', 'Where everything is written.')
  flags.DEFINE_integer('steps', 50, 'Training steps.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
