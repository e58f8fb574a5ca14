r"""Freeze an Estimator export: outputs come from the signature; then run the .pb.

    python -m examples.freeze_saved_model --output_dir /tmp/freeze_saved_model

1. trains a small Estimator (a ServingModelMixin subclass) and exports it for
   TF Serving;
2. freezes the export's `serving_default` signature: no output node names are
   needed (what `freeze_graph --input_saved_model_dir` could not do), inputs
   and outputs are recorded in the manifest, every optimisation is applied and
   checked; also stores an fp16 copy;
3. freezes the Estimator's PREDICT graph directly from its latest checkpoint;
4. runs the frozen graphs by alias and compares them with the SavedModel.
"""
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from examples._common import prepare_output_dir

FLAGS = flags.FLAGS


class Regressor(ee.ServingModelMixin):
  """Predicts a noisy y = x . [1, -2, 0.5] + 1 and whether it is positive."""
  feature_spec = ee.FeatureSpec([ee.Feature('x', 'float32', shape=(3,)),
                                 ee.Feature('y', 'float32', training_only=True)])

  def predictions(self, features, mode, params):
    hidden = tf.compat.v1.layers.dense(features['x'], 64, tf.nn.tanh, name='hidden')
    value = tf.compat.v1.layers.dense(hidden, 1, name='value')[:, 0]
    return {'value': value, 'positive': tf.cast(value > 0, tf.int32)}

  def regress_head(self, predictions):
    return ee.regress_output(predictions['value'])

  def loss(self, predictions, labels, features, mode, params):
    return tf.compat.v1.losses.mean_squared_error(features['y'], predictions['value'])


def make_data(n: int, seed: int):
  rng = np.random.RandomState(seed)
  x = rng.randn(n, 3).astype(np.float32)
  y = (x @ np.array([1.0, -2.0, 0.5], np.float32) + 1.0 + 0.05 * rng.randn(n)).astype(
      np.float32)
  return {'x': x, 'y': y}


def run(output_dir: str, train_steps: int = 100):
  """Trains, exports, freezes two ways and compares; returns what each step produced."""
  model = Regressor()
  estimator = model.make_estimator(os.path.join(output_dir, 'model'),
                                   params={'learning_rate': 0.05})
  data = make_data(512, seed=0)
  estimator.train(lambda: tf.data.Dataset.from_tensor_slices(data).repeat().batch(32),
                  max_steps=train_steps)
  samples = {'x': make_data(4, seed=1)['x']}
  export = model.export_for_serving(estimator, os.path.join(output_dir, 'export'),
                                    samples=samples)
  print(f'[1/4] trained {train_steps} steps; exported {export.path} with signatures '
        f'{sorted(export.signatures)}')

  options = ee.FreezeOptions(optimizations=('all',), samples=samples)
  frozen = ee.freeze_saved_model(export.path, 'serving_default', options=options)
  graph_path = os.path.join(output_dir, 'frozen', 'serving_default.pb')
  manifest = frozen.save(graph_path)
  half = ee.freeze_saved_model(export.path, options=ee.FreezeOptions(
      optimizations=('all',), compression='fp16', samples=samples, min_compress_elements=8))
  half_path = os.path.join(output_dir, 'frozen', 'serving_default_fp16.pb')
  half.save(half_path)
  print(f'[2/4] froze signature serving_default -> {graph_path}: inputs '
        + ', '.join(f'{k}={v["name"]}' for k, v in frozen.inputs.items()) + '; outputs '
        + ', '.join(f'{k}={v["name"]}' for k, v in frozen.outputs.items())
        + f'; fp16 copy {half.compression["size_ratio"]:.2f}x the size')

  direct = ee.freeze_estimator(estimator, model.serving_input_receiver_fn('raw'),
                               options=options)
  direct_path = os.path.join(output_dir, 'frozen', 'estimator.pb')
  direct.save(direct_path)
  print(f'[3/4] froze the Estimator PREDICT graph at step {direct.source["step"]} -> '
        f'{direct_path}')

  x = make_data(6, seed=2)['x']
  with ee.Predictor.from_saved_model(export.path) as predict:
    saved = predict({'x': x})
  results = {}
  for name, path in (('frozen', graph_path), ('fp16', half_path), ('estimator', direct_path)):
    with ee.FrozenPredictor.from_frozen_graph(path) as predict:
      results[name] = predict({'x': x})
  differences = {name: max(float(np.max(np.abs(out[k] - saved[k]))) for k in saved)
                 for name, out in results.items()}
  print('[4/4] frozen vs SavedModel, max |diff| over outputs: '
        + ', '.join(f'{k} {v:.2g}' for k, v in differences.items()))
  return {'export': export, 'frozen': frozen, 'half': half, 'direct': direct,
          'manifest': manifest, 'saved_model_outputs': saved, 'frozen_outputs': results,
          'differences': differences}


def main(argv):
  del argv
  output_dir = prepare_output_dir(FLAGS.output_dir)
  run(output_dir, FLAGS.train_steps)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'freeze_saved_model_output', 'Where everything is written.')
  flags.DEFINE_integer('train_steps', 100, 'Training steps.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
