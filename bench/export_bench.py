"""Export and prediction benchmarks, as ratios against baselines measured in the same run.

    python bench/export_bench.py [--repeats 5] [--hidden 256]

1. `export_for_serving` (validation + parity + warmup + manifest + atomic
   publish) vs bare `Estimator.export_saved_model` with the same receiver.
   Goal: at most 2x.
2. Per-request latency at batch 1: the persistent `Predictor` vs
   `estimator.predict` (which rebuilds the graph and restores the checkpoint on
   every call, as users of tf.estimator do per request). Goal: at least 40x.
3. The Predictor vs a bare `session.run` on the same loaded SavedModel
   (the floor: Predictor overhead should be small).
Medians of repeated runs; the machine has 2 cores, so runs are sequential.
"""
import argparse
import os
import sys
import tempfile

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import estimator_export as ee  # pylint: disable=g-import-not-at-top
from bench._common import median_seconds as _median_seconds  # pylint: disable=g-import-not-at-top


class MLPClassifier(ee.ServingModelMixin):
  """A 3-layer MLP over 64 features, 10 classes."""
  feature_spec = ee.FeatureSpec([ee.Feature('x', 'float32', (64,)),
                                 ee.Feature('label', 'int32', training_only=True)])
  label_vocabulary = tuple(f'class_{i}' for i in range(10))
  hidden = 256

  def predictions(self, features, mode, params):
    h = features['x']
    for i in range(3):
      h = tf.compat.v1.layers.dense(h, self.hidden, tf.nn.relu, name=f'dense_{i}')
    logits = tf.compat.v1.layers.dense(h, 10, name='logits')
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits)}

  def loss(self, predictions, labels, features, mode, params):
    return tf.compat.v1.losses.sparse_softmax_cross_entropy(features['label'],
                                                            predictions['logits'])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--repeats', type=int, default=5)
  parser.add_argument('--requests', type=int, default=10,
                      help='estimator.predict calls (the Predictor makes 100x more)')
  parser.add_argument('--hidden', type=int, default=256)
  args = parser.parse_args()
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)

  work = tempfile.mkdtemp(prefix='export_bench_')
  MLPClassifier.hidden = args.hidden
  model = MLPClassifier()
  estimator = model.make_estimator(os.path.join(work, 'model'))
  rng = np.random.RandomState(0)
  data = {'x': rng.randn(256, 64).astype(np.float32),
          'label': rng.randint(0, 10, 256).astype(np.int32)}
  estimator.train(lambda: tf.data.Dataset.from_tensor_slices(data).repeat().batch(32),
                  max_steps=10)
  receiver = model.serving_input_receiver_fn('combined')
  samples = {'x': data['x'][:4]}
  print(f'model: 3x{args.hidden} MLP, 64 inputs, 10 classes; {args.repeats} repeats each')

  counter = iter(range(1, 10**6))
  # A fresh base per bare export: tf.estimator sleeps to get a new timestamp
  # when two exports in one base fall within the same second.
  bare = _median_seconds(
      lambda: estimator.export_saved_model(os.path.join(work, 'bare', str(next(counter))),
                                           receiver), args.repeats)
  counter = iter(range(1, 10**6))
  full = _median_seconds(
      lambda: model.export_for_serving(estimator, os.path.join(work, 'full'), receiver,
                                       samples=samples, version=next(counter)), args.repeats)
  print(f'export: bare export_saved_model {bare * 1e3:8.1f} ms | export_for_serving '
        f'(validate+parity+warmup+manifest) {full * 1e3:8.1f} ms | ratio {full / bare:.2f}x '
        '(goal <= 2x)')

  export_dir = os.path.join(work, 'full', '1')
  one = {'x': data['x'][:1]}

  def estimator_request():
    next(estimator.predict(lambda: tf.data.Dataset.from_tensor_slices(one).batch(1),
                           yield_single_examples=False))

  per_estimator = _median_seconds(estimator_request, args.requests)
  n = args.requests * 100
  with ee.Predictor.from_saved_model(export_dir) as predictor:
    predictor(one)  # First call builds the callable.
    per_predictor = _median_seconds(lambda: [predictor(one) for _ in range(n)], 3) / n
    sig = predictor.signature_def
    feed_name = sig.inputs['x'].name
    fetch_names = [sig.outputs[k].name for k in predictor.output_keys]
    session = predictor.session
    session.run(fetch_names, {feed_name: one['x']})
    per_session = _median_seconds(
        lambda: [session.run(fetch_names, {feed_name: one['x']}) for _ in range(n)], 3) / n
  print(f'predict, batch 1: estimator.predict {per_estimator * 1e3:8.2f} ms/request | '
        f'Predictor {per_predictor * 1e3:8.3f} ms/request | ratio '
        f'{per_estimator / per_predictor:.0f}x (goal >= 40x)')
  print(f'predict, batch 1: bare session.run {per_session * 1e3:8.3f} ms/request | '
        f'Predictor {per_predictor * 1e3:8.3f} ms/request | overhead ratio '
        f'{per_predictor / per_session:.2f}x')


if __name__ == '__main__':
  main()
