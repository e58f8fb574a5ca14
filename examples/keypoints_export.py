r"""A keypoint model from a plain model_fn, exported for TF Serving on raw images.

    python -m examples.keypoints_export --output_dir /tmp/keypoints [--image_size 384]

The workflow of the "export my custom Estimator for TF Serving" articles, with
the library's lower-level helpers instead of `ServingModelMixin`:

1. trains a custom `tf.estimator.Estimator` whose model_fn is a plain
   function: a small conv net over a raw float32 image [batch, H, W, 3] with
   three sigmoid heads, `pred_x_ratio` and `pred_y_ratio` (where the keypoint
   is, as fractions of the width and height) and `pred_v` (the probability it
   is visible at all). The data are generated: dark noisy images that, three
   times in four, carry one bright square; its centre is the keypoint.
2. in its PREDICT branch the model_fn returns
   `export_outputs=estimator_export.build_export_outputs(predictions=...)`:
   a checked Predict output under 'predict', also as 'serving_default'.
3. exports with `estimator_export.export_for_serving` and a raw receiver from
   one `FeatureSpec([Feature('image', 'float32', (H, W, 3))])`: the
   signatures take the image tensor itself under the key 'image'. The export
   is written to a hidden staging directory, validated (every signature run
   on sample images and compared with `estimator.predict`), given warmup
   requests and a manifest, and only then renamed to `<base>/<global step>`.
   Like every `Estimator.export_saved_model` in TF 2.15, it strips op
   attributes that have their default values from the graph
   (strip_default_attrs=True is hard-wired), so an older TF Serving binary
   that does not know a newer attr can still load it.
4. prints the signatures as `estimator-export show --dir <export> --all`
   (or `saved_model_cli show --all`) would;
5. answers requests in-process through `estimator_export.Predictor`: one
   image with a square at a known place, then a held-out batch to measure
   visibility accuracy and keypoint error.
"""
import os
import shutil
import time
from typing import Any, Dict, Iterator, Tuple
import warnings

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from estimator_export import contract as contract_lib
from estimator_export.hooks import ProgressHook, show_export_progress

FLAGS = flags.FLAGS

IMAGE_KEY = 'image'
OUTPUT_KEYS = ('pred_x_ratio', 'pred_y_ratio', 'pred_v')
VISIBLE_FRACTION = 0.75
ModeKeys = tf.estimator.ModeKeys


def feature_spec(image_size: int) -> ee.FeatureSpec:
  """The one serving input: a raw RGB image, float32 in [0, 1]."""
  return ee.FeatureSpec([
      ee.Feature(IMAGE_KEY, 'float32', (image_size, image_size, 3),
                 description='RGB image, float32 in [0, 1]'),
  ])


def square_side(image_size: int) -> int:
  return max(2, image_size // 8)


def make_images(n: int, image_size: int, rng: np.random.RandomState,
                visible_fraction: float = VISIBLE_FRACTION
               ) -> Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]:
  """n noisy dark images, most with one bright square.

  Returns:
    (features, labels): features {'image': float32 [n, H, W, 3]}; labels
    'x_ratio', 'y_ratio' (the square's centre as fractions of the width and
    height; 0.5 where there is no square) and 'visible' (1.0 or 0.0), each
    float32 [n].
  """
  side = square_side(image_size)
  images = rng.uniform(0.0, 0.3, size=(n, image_size, image_size, 3)).astype(np.float32)
  left = rng.randint(0, image_size - side + 1, size=n)
  top = rng.randint(0, image_size - side + 1, size=n)
  visible = rng.uniform(size=n) < visible_fraction
  colour = rng.uniform(0.8, 1.0, size=(n, 3)).astype(np.float32)
  for i in np.flatnonzero(visible):
    images[i, top[i]:top[i] + side, left[i]:left[i] + side] = colour[i]
  centre_x = np.where(visible, (left + side / 2) / image_size, 0.5)
  centre_y = np.where(visible, (top + side / 2) / image_size, 0.5)
  labels = {'x_ratio': centre_x.astype(np.float32), 'y_ratio': centre_y.astype(np.float32),
            'visible': visible.astype(np.float32)}
  return {IMAGE_KEY: images}, labels


def train_input_fn(image_size: int, batch_size: int, seed: int = 0):
  """An input_fn of endless generated batches (made on the fly, not held in memory)."""

  def batches() -> Iterator[Tuple[Dict[str, np.ndarray], Dict[str, np.ndarray]]]:
    rng = np.random.RandomState(seed)
    while True:
      yield make_images(batch_size, image_size, rng)

  def input_fn():
    image = tf.TensorSpec([batch_size, image_size, image_size, 3], tf.float32)
    target = tf.TensorSpec([batch_size], tf.float32)
    return tf.data.Dataset.from_generator(
        batches, output_signature=({IMAGE_KEY: image},
                                   {'x_ratio': target, 'y_ratio': target,
                                    'visible': target}))

  return input_fn


def keypoint_net(images: tf.Tensor) -> Dict[str, tf.Tensor]:
  """Strided 3x3 convolutions down to at most 8x8, then one dense layer of 3 logits."""
  net = images
  size = images.shape[1]
  layer = 0
  while layer < 2 or size > 8:
    net = tf.compat.v1.layers.conv2d(net, min(8 * 2 ** layer, 32), 3, strides=2,
                                     padding='same', activation=tf.nn.relu,
                                     name=f'conv{layer}')
    size = (size + 1) // 2
    layer += 1
  logits = tf.compat.v1.layers.dense(tf.compat.v1.layers.flatten(net), 3, name='logits')
  return {'x_logit': logits[:, 0], 'y_logit': logits[:, 1], 'v_logit': logits[:, 2]}


def keypoint_model_fn(features, labels, mode, params):
  """A plain Estimator model_fn; PREDICT carries export_outputs for serving."""
  logits = keypoint_net(features[IMAGE_KEY])
  predictions = {
      'pred_x_ratio': tf.sigmoid(logits['x_logit'], name='pred_x_ratio'),
      'pred_y_ratio': tf.sigmoid(logits['y_logit'], name='pred_y_ratio'),
      'pred_v': tf.sigmoid(logits['v_logit'], name='pred_v'),
  }
  if mode == ModeKeys.PREDICT:
    # 'predict' and 'serving_default': one Predict signature with the three
    # outputs, checked (dense, servable dtypes) by predict_output.
    return tf.estimator.EstimatorSpec(
        mode, predictions=predictions,
        export_outputs=ee.build_export_outputs(predictions=predictions))

  visible = labels['visible']
  # Where the square is only counts where there is one: weight 0 elsewhere.
  position_loss = sum(
      tf.compat.v1.losses.sigmoid_cross_entropy(labels[target], logits[logit],
                                                weights=visible)
      for target, logit in (('x_ratio', 'x_logit'), ('y_ratio', 'y_logit')))
  visibility_loss = tf.compat.v1.losses.sigmoid_cross_entropy(visible, logits['v_logit'])
  loss = position_loss + visibility_loss
  if mode == ModeKeys.TRAIN:
    optimizer = tf.compat.v1.train.AdamOptimizer(params.get('learning_rate', 1e-3))
    train_op = optimizer.minimize(loss,
                                  global_step=tf.compat.v1.train.get_or_create_global_step())
    return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)
  return tf.estimator.EstimatorSpec(mode, loss=loss)


def keypoint_metrics(outputs: Dict[str, np.ndarray], labels: Dict[str, np.ndarray],
                     image_size: int) -> Dict[str, float]:
  """Visibility accuracy, and mean keypoint error (in pixels) where visible."""
  visible = labels['visible'] > 0.5
  error = np.hypot(outputs['pred_x_ratio'] - labels['x_ratio'],
                   outputs['pred_y_ratio'] - labels['y_ratio'])[visible] * image_size
  # What always answering the image centre would score, for comparison.
  centre = np.hypot(0.5 - labels['x_ratio'], 0.5 - labels['y_ratio'])[visible] * image_size
  return {'visibility_accuracy': float(np.mean((outputs['pred_v'] > 0.5) == visible)),
          'mean_error_px': float(np.mean(error)),
          'centre_guess_error_px': float(np.mean(centre))}


def run(output_dir: str, image_size: int = 384, train_steps: int = 300,
        batch_size: int = 16, learning_rate: float = 3e-3,
        eval_images: int = 64) -> Dict[str, Any]:
  """Trains, exports, shows and queries the keypoint model.

  Returns:
    A dict with 'export' (the ExportResult), 'show' (the printed signature
    text), 'single' (the one request's image, truth and outputs), 'held_out'
    (Predictor outputs and labels on a held-out batch), 'estimator_outputs'
    (estimator.predict on the same batch) and 'metrics'.
  """
  model_dir = os.path.join(output_dir, 'model')
  export_base = os.path.join(output_dir, 'export', 'keypoints')
  spec = feature_spec(image_size)
  estimator = tf.estimator.Estimator(
      keypoint_model_fn, model_dir=model_dir, params={'learning_rate': learning_rate},
      config=tf.estimator.RunConfig(log_step_count_steps=1000, save_summary_steps=1000))

  t0 = time.time()
  print(f'[1/5] training the keypoint model on {image_size}x{image_size} images for '
        f'{train_steps} steps in {model_dir}', flush=True)
  estimator.train(train_input_fn(image_size, batch_size), max_steps=train_steps,
                  hooks=[ProgressHook(max(1, train_steps // 5), train_steps, prefix='      ')])
  print(f'      trained in {time.time() - t0:.1f}s', flush=True)

  rng = np.random.RandomState(123)
  held_out, held_out_labels = make_images(eval_images, image_size, rng)
  print(f'[2/5] exporting to {export_base} with a raw image receiver '
        f'(inputs: {list(spec.serving_names)}; default attrs stripped)', flush=True)
  result = ee.export_for_serving(
      estimator, export_base, ee.build_raw_receiver_fn(spec),
      samples={IMAGE_KEY: held_out[IMAGE_KEY][:2]}, version='step')
  print(f'      version {result.version} at {result.path}: signatures '
        f'{dict(result.signatures)}', flush=True)

  print(f'[3/5] estimator-export show --dir {result.path} --all', flush=True)
  shown = contract_lib.show(result.path, show_all=True)
  print(shown, end='', flush=True)

  print('[4/5] one request through estimator_export.Predictor:', flush=True)
  single, single_labels = make_images(1, image_size, np.random.RandomState(7),
                                      visible_fraction=1.0)
  with ee.Predictor.from_saved_model(result.path) as predictor:
    print(f'      {predictor!r}', flush=True)
    answer = predictor({IMAGE_KEY: single[IMAGE_KEY]})
    print(f'      square centred at x={single_labels["x_ratio"][0]:.3f}, '
          f'y={single_labels["y_ratio"][0]:.3f} -> pred_x_ratio '
          f'{answer["pred_x_ratio"][0]:.3f}, pred_y_ratio {answer["pred_y_ratio"][0]:.3f}, '
          f'pred_v {answer["pred_v"][0]:.3f}', flush=True)
    print(f'[5/5] {eval_images} held-out images:', flush=True)
    outputs = predictor({IMAGE_KEY: held_out[IMAGE_KEY]})
  metrics = keypoint_metrics(outputs, held_out_labels, image_size)
  print(f'      visibility accuracy {metrics["visibility_accuracy"]:.3f} '
        f'(always "visible": {VISIBLE_FRACTION:.2f}); mean keypoint error '
        f'{metrics["mean_error_px"]:.1f} px (always the centre: '
        f'{metrics["centre_guess_error_px"]:.1f} px)', flush=True)

  estimator_outputs = next(estimator.predict(
      lambda: tf.data.Dataset.from_tensors(held_out), yield_single_examples=False,
      checkpoint_path=result.checkpoint_path))
  return {'export': result, 'show': shown,
          'single': {'image': single[IMAGE_KEY], 'labels': single_labels,
                     'outputs': answer},
          'held_out': {'outputs': outputs, 'labels': held_out_labels},
          'estimator_outputs': estimator_outputs, 'metrics': metrics}


def main(argv):
  del argv
  show_export_progress()
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  warnings.filterwarnings('ignore', message=r'`tf\.layers\.')
  output_dir = os.path.abspath(FLAGS.output_dir)
  if FLAGS.fresh and os.path.isdir(output_dir):
    shutil.rmtree(output_dir)
  run(output_dir, image_size=FLAGS.image_size, train_steps=FLAGS.train_steps,
      batch_size=FLAGS.batch_size)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'keypoints_output', 'Where the model and exports go.')
  flags.DEFINE_integer('image_size', 384, 'Height and width of the (square) input images.')
  flags.DEFINE_integer('train_steps', 300, 'Training steps.')
  flags.DEFINE_integer('batch_size', 16, 'Training batch size.')
  flags.DEFINE_bool('fresh', True, 'Start from an empty output_dir.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
