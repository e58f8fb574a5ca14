r"""Session mode, frozen: train with named nodes, save with Saver, freeze, load the .pb, predict.

    python -m examples.freeze_session_model --output_dir /tmp/freeze_session

1. builds a softmax classifier whose input is the Placeholder 'input' and whose
   output is the node 'output', trains it briefly on three Gaussian blobs;
2. saves model.ckpt(.meta/.index/.data) with tf.compat.v1.train.Saver;
3. freezes the checkpoint and its .meta with the output node name (what
   `freeze_graph --input_meta_graph ... --output_node_names=output` did);
4. loads frozen.pb with import_graph_def and predicts by tensor name and by alias.
"""
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from examples._common import import_frozen_graph
from examples._common import prepare_output_dir

FLAGS = flags.FLAGS


def make_blobs(n: int, seed: int):
  """n points in 2-D around three centres; labels 0..2."""
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, 3, size=n)
  centres = np.array([[0.0, 2.0], [2.0, -1.0], [-2.0, -1.0]], np.float32)
  return (centres[labels] + 0.5 * rng.randn(n, 2)).astype(np.float32), labels.astype(np.int32)


def train_and_save(model_dir: str, steps: int):
  """Trains in a session; returns (checkpoint prefix, probabilities on the test points)."""
  x_train, y_train = make_blobs(600, seed=0)
  x_test, _ = make_blobs(50, seed=1)
  graph = tf.Graph()
  with graph.as_default():
    inputs = tf.compat.v1.placeholder(tf.float32, [None, 2], name='input')
    labels = tf.compat.v1.placeholder(tf.int32, [None], name='labels')
    hidden = tf.compat.v1.layers.dense(inputs, 16, tf.nn.relu, name='hidden')
    logits = tf.compat.v1.layers.dense(hidden, 3, name='logits')
    probabilities = tf.nn.softmax(logits, name='output')
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
    train_op = tf.compat.v1.train.AdamOptimizer(0.05).minimize(loss)
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      for _ in range(steps):
        session.run(train_op, {inputs: x_train, labels: y_train})
      prefix = saver.save(session, os.path.join(model_dir, 'model.ckpt'))
      reference = session.run(probabilities, {inputs: x_test})
  return prefix, x_test, reference


def run(output_dir: str, steps: int = 100):
  """Trains, freezes and predicts; returns what each step produced."""
  os.makedirs(os.path.join(output_dir, 'model'), exist_ok=True)
  prefix, x_test, reference = train_and_save(os.path.join(output_dir, 'model'), steps)
  print(f'[1/3] trained {steps} steps and saved {prefix}(.meta/.index/.data)')
  frozen = ee.freeze_checkpoint(prefix, ['output'],
                                options=ee.FreezeOptions(optimizations=('all',)))
  graph_path = os.path.join(output_dir, 'frozen.pb')
  manifest = frozen.save(graph_path)
  print(f'[2/3] froze {len(frozen.graph_def.node)} nodes into {graph_path} '
        f'({os.path.getsize(graph_path)} bytes); manifest {os.path.basename(manifest)}: '
        f'inputs {sorted(frozen.inputs)}, outputs {sorted(frozen.outputs)}')
  with tf.compat.v1.Session(graph=import_frozen_graph(graph_path)) as session:
    by_import = session.run('output:0', {'input:0': x_test})
  with ee.FrozenPredictor.from_frozen_graph(graph_path) as predict:
    by_alias = predict({'input': x_test})['output']
  same = np.allclose(by_import, reference, atol=1e-6) and np.allclose(by_alias, reference,
                                                                      atol=1e-6)
  print(f'[3/3] import_graph_def + session.run(\'output:0\') and FrozenPredictor: '
        f'{"same as the training session" if same else "DIFFERS"}; first point -> class '
        f'{int(np.argmax(by_alias[0]))} ({np.max(by_alias[0]):.2f})')
  return {'checkpoint': prefix, 'graph_path': graph_path, 'manifest': manifest,
          'reference': reference, 'by_import': by_import, 'by_alias': by_alias,
          'frozen': frozen}


def main(argv):
  del argv
  output_dir = prepare_output_dir(FLAGS.output_dir)
  run(output_dir, FLAGS.steps)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'freeze_session_output', 'Where everything is written.')
  flags.DEFINE_integer('steps', 100, 'Training steps.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
