r"""The smallest full path: train, export for serving, show, predict in-process.

(`make demo` runs the BERT demo, bert_example/demo.py; this is the small one.)

    python -m examples.demo --output_dir /tmp/demo

1. trains a small custom model (a ServingModelMixin subclass) on generated
   data for a few hundred steps;
2. exports it with raw-tensor and tf.Example receivers, so Predict, Classify
   and Regress signatures all exist; validated, with warmup and manifest;
3. prints its signatures in `saved_model_cli show --all` format;
4. answers requests through the in-process Predictor, on every signature.
"""
import os
import time

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from examples._common import prepare_output_dir
from estimator_export import contract as contract_lib
from estimator_export.hooks import ProgressHook, show_export_progress

FLAGS = flags.FLAGS

LABELS = ('small', 'medium', 'large')


class SizeClassifier(ee.ServingModelMixin):
  """Classifies boxes by volume from their three sides; also regresses the volume."""
  feature_spec = ee.FeatureSpec([
      ee.Feature('sides', 'float32', shape=(3,), description='width, height, depth in m'),
      ee.Feature('label', 'int32', training_only=True),
      ee.Feature('volume', 'float32', training_only=True),
  ])
  label_vocabulary = LABELS

  def predictions(self, features, mode, params):
    hidden = tf.compat.v1.layers.dense(tf.math.log(features['sides']), 16, tf.nn.relu,
                                       name='hidden')
    logits = tf.compat.v1.layers.dense(hidden, len(LABELS), name='logits')
    log_volume = tf.compat.v1.layers.dense(hidden, 1, name='log_volume')[:, 0]
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits),
            'class_ids': tf.argmax(logits, axis=-1, output_type=tf.int32),
            'volume': tf.exp(log_volume)}

  def regress_head(self, predictions):
    return ee.regress_output(predictions['volume'])

  def loss(self, predictions, labels, features, mode, params):
    xent = tf.compat.v1.losses.sparse_softmax_cross_entropy(features['label'],
                                                            predictions['logits'])
    err = tf.math.log(predictions['volume']) - tf.math.log(features['volume'])
    return xent + tf.reduce_mean(tf.square(err))

  def eval_metric_ops(self, predictions, labels, features, params):
    return {'accuracy': tf.compat.v1.metrics.accuracy(features['label'],
                                                      predictions['class_ids'])}


def make_boxes(n: int, seed: int):
  """n boxes with sides in 0.1..2 m; label by volume (< 0.25, < 1.5, else)."""
  rng = np.random.RandomState(seed)
  sides = rng.uniform(0.1, 2.0, size=(n, 3)).astype(np.float32)
  volume = sides.prod(axis=1)
  label = np.digitize(volume, [0.25, 1.5]).astype(np.int32)
  return {'sides': sides, 'label': label, 'volume': volume}


def run(output_dir: str, train_steps: int) -> ee.ExportResult:
  """Trains, exports and queries; returns the export result."""
  model_dir = os.path.join(output_dir, 'model')
  export_base = os.path.join(output_dir, 'export', 'boxes')
  model = SizeClassifier()
  estimator = model.make_estimator(
      model_dir, params={'learning_rate': 0.02},
      config=tf.estimator.RunConfig(log_step_count_steps=100, save_summary_steps=1000))
  data = make_boxes(2048, seed=0)

  def train_input_fn():
    return tf.data.Dataset.from_tensor_slices(data).shuffle(2048, seed=1).repeat().batch(64)

  t0 = time.time()
  print(f'[1/4] training SizeClassifier for {train_steps} steps in {model_dir}', flush=True)
  estimator.train(train_input_fn, max_steps=train_steps,
                  hooks=[ProgressHook(100, train_steps, prefix='      ')])
  held_out = make_boxes(512, seed=7)
  metrics = estimator.evaluate(
      lambda: tf.data.Dataset.from_tensor_slices(held_out).batch(128), name='held_out')
  print(f'      trained in {time.time() - t0:.1f}s: held-out accuracy '
        f'{metrics["accuracy"]:.3f}, loss {metrics["loss"]:.3f}', flush=True)

  print(f'[2/4] exporting to {export_base} (validation, parity, warmup, manifest)', flush=True)
  samples = {'sides': held_out['sides'][:4]}
  result = model.export_for_serving(estimator, export_base, samples=samples,
                                    metrics={'accuracy': metrics['accuracy']},
                                    version='step', keep=3)
  print(f'      version {result.version} at {result.path}; '
        f'{result.warmup_records} warmup requests', flush=True)

  print('[3/4] signatures (saved_model_cli show --all format):', flush=True)
  print(contract_lib.show(result.path, show_all=True), flush=True)

  print('[4/4] in-process predictions:', flush=True)
  queries = np.array([[0.2, 0.3, 0.4], [1.0, 1.0, 1.0], [1.9, 1.8, 1.7]], np.float32)
  with ee.Predictor.from_saved_model(result.path) as predictor:
    out = predictor({'sides': queries})
    classify = predictor.for_signature('examples:classify')
    examples = model.feature_spec.to_examples({'sides': queries})
    classes = classify({'inputs': examples})
    regress = predictor.for_signature('examples:regress')({'inputs': examples})
  for i, sides in enumerate(queries):
    best = int(np.argmax(classes['scores'][i]))
    print(f'      sides {", ".join(f"{s:.1f}" for s in sides)} m (volume {sides.prod():.3f}): '
          'predict -> '
          f'{LABELS[out["class_ids"][i]]}; classify -> {classes["classes"][i][best].decode()} '
          f'({classes["scores"][i][best]:.2f}); regress -> {regress["outputs"][i]:.3f}',
          flush=True)
  return result


def main(argv):
  del argv
  show_export_progress()
  output_dir = prepare_output_dir(FLAGS.output_dir, FLAGS.fresh)
  run(output_dir, FLAGS.train_steps)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'demo_output', 'Where the model and exports go.')
  flags.DEFINE_integer('train_steps', 300, 'Training steps.')
  flags.DEFINE_bool('fresh', True, 'Start from an empty output_dir.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
