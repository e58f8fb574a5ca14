r"""Freeze the inference graph, not the training graph: BatchNorm and dropout.

    python -m examples.freeze_inference_graph --output_dir /tmp/freeze_inference

1. trains a small AlexNet-like CNN (conv-BatchNorm-ReLU-pool twice, dropout,
   dense) on 16x16 images of bright squares in one of four quadrants, and saves
   model.ckpt with its training .meta graph;
2. freezes the training graph as it is: BatchNorm uses the batch's statistics
   and dropout is on, so the tool warns and names those nodes;
3. rebuilds the graph with is_training=False and freezes that (moving
   statistics, no dropout), with every optimisation (BatchNorm folded into the
   convolutions), checked against the unfrozen model;
4. runs both frozen graphs on the same input: the inference graph is
   deterministic and agrees with the model; the training graph is not.
"""
import os
import warnings

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from examples._common import prepare_output_dir

FLAGS = flags.FLAGS
SIZE = 16


def build(is_training: bool, images=None):
  """The CNN; returns ({'images': float32 [batch, 16, 16, 1]}, {'probabilities': [batch, 4]})."""
  if images is None:
    images = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE, 1], name='images')
  layers = tf.compat.v1.layers
  net = images
  for i, filters in enumerate((8, 16)):
    net = layers.conv2d(net, filters, 3, padding='same', use_bias=False, name=f'conv{i + 1}')
    net = layers.batch_normalization(net, training=is_training, name=f'bn{i + 1}')
    net = layers.max_pooling2d(tf.nn.relu(net), 2, 2, name=f'pool{i + 1}')
  net = layers.flatten(net)
  net = layers.dropout(net, rate=0.3, training=is_training, name='dropout')
  logits = layers.dense(net, 4, name='logits')
  return {'images': images}, {'probabilities': tf.nn.softmax(logits, name='probabilities')}


def make_images(n: int, seed: int):
  """Noisy 16x16 images with a bright 6x6 square in quadrant `label` (0..3)."""
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, 4, size=n)
  images = 0.3 * rng.rand(n, SIZE, SIZE, 1).astype(np.float32)
  for image, label in zip(images, labels):
    row, col = (label // 2) * 8 + 1, (label % 2) * 8 + 1
    image[row:row + 6, col:col + 6] += 1.0
  return images, labels.astype(np.int32)


def train(model_dir: str, steps: int) -> str:
  """Trains the is_training=True graph; saves model.ckpt + .meta; returns the prefix."""
  images, labels = make_images(256, seed=0)
  graph = tf.Graph()
  with graph.as_default():
    inputs, outputs = build(is_training=True)
    label_ph = tf.compat.v1.placeholder(tf.int32, [None], name='labels')
    loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(
        label_ph, tf.math.log(outputs['probabilities'] + 1e-7))
    with tf.control_dependencies(tf.compat.v1.get_collection(
        tf.compat.v1.GraphKeys.UPDATE_OPS)):  # BatchNorm moving statistics.
      train_op = tf.compat.v1.train.AdamOptimizer(0.01).minimize(loss)
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      for step in range(steps):
        batch = slice((step * 32) % 256, (step * 32) % 256 + 32)
        session.run(train_op, {inputs['images']: images[batch], label_ph: labels[batch]})
      return saver.save(session, os.path.join(model_dir, 'model.ckpt'))


def run(output_dir: str, steps: int = 60):
  """Trains and freezes both ways; returns the frozen graphs, warnings and outputs."""
  model_dir = os.path.join(output_dir, 'model')
  os.makedirs(model_dir, exist_ok=True)
  prefix = train(model_dir, steps)
  print(f'[1/4] trained {steps} steps; saved {prefix} with the training graph (.meta)')

  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', ee.FreezeWarning)
    training = ee.freeze_checkpoint(prefix, ['probabilities'])
  training_warnings = [str(w.message) for w in caught if w.category is ee.FreezeWarning]
  training_path = os.path.join(output_dir, 'training_graph.pb')
  training.save(training_path)
  print(f'[2/4] froze the training graph -> {os.path.basename(training_path)}; warning: '
        f'{training_warnings[0] if training_warnings else "none"}')

  inference = ee.freeze_graph_fn(build, prefix, options=ee.FreezeOptions(
      optimizations=('all',), rtol=1e-4, atol=1e-5))
  inference_path = os.path.join(output_dir, 'inference_graph.pb')
  inference.save(inference_path)
  folded = [s['note'] for s in inference.optimizations if s['name'] == 'fold_batch_norms']
  ops = sorted({n.op for n in inference.graph_def.node})
  print(f'[3/4] froze the is_training=False graph -> {os.path.basename(inference_path)}: '
        f'{len(inference.graph_def.node)} nodes, BatchNorm {folded[0]}, ops {ops}')

  images, labels = make_images(8, seed=1)
  with ee.FrozenPredictor.from_frozen_graph(inference_path) as predict:
    inference_runs = [predict({'images': images})['probabilities'] for _ in range(2)]
  with ee.FrozenPredictor.from_frozen_graph(training_path) as predict:
    training_runs = [predict({'images': images})['probabilities'] for _ in range(2)]
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session() as session:
    inputs, outputs = build(is_training=False)
    tf.compat.v1.train.Saver().restore(session, prefix)
    model = session.run(outputs['probabilities'], {inputs['images']: images})
  accuracy = float(np.mean(np.argmax(inference_runs[0], 1) == labels))
  print(f'[4/4] same 8 images: inference graph vs model max |diff| '
        f'{np.max(np.abs(inference_runs[0] - model)):.2g}, run-to-run '
        f'{np.max(np.abs(inference_runs[0] - inference_runs[1])):.2g} (accuracy {accuracy:.2f}); '
        f'training graph vs model {np.max(np.abs(training_runs[0] - model)):.2g}, run-to-run '
        f'{np.max(np.abs(training_runs[0] - training_runs[1])):.2g}')
  return {'checkpoint': prefix, 'training': training, 'inference': inference,
          'training_warnings': training_warnings, 'model': model,
          'inference_runs': inference_runs, 'training_runs': training_runs,
          'accuracy': accuracy, 'labels': labels}


def main(argv):
  del argv
  output_dir = prepare_output_dir(FLAGS.output_dir)
  run(output_dir, FLAGS.steps)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'freeze_inference_output', 'Where everything is written.')
  flags.DEFINE_integer('steps', 60, 'Training steps.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
