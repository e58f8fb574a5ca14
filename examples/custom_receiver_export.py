r"""Your own serving_input_receiver_fn, with a renamed input, exported and served.

    python -m examples.custom_receiver_export --output_dir /tmp/custom_receiver

The workflow of the "my clients send `images`, my model reads
`predictor_inputs`" articles:

1. trains a small classifier (`ServingModelMixin`) whose model_fn reads the
   feature 'predictor_inputs', a float32 image [8, 8]: a bright bar in the top
   half is class 1, in the bottom half class 0. Its FeatureSpec declares the
   feature with `input_key='images'`, the name clients use.
2. exports with a hand-written receiver, as the articles write it:

       def images_receiver_fn():
         images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8], name='images')
         return tf.estimator.export.ServingInputReceiver(
             features={'predictor_inputs': images}, receiver_tensors={'images': images})

   passed as it is to `estimator_export.export_for_serving`. The export builds
   it once in a scratch graph (`adapt_receiver_fn`), learns its input
   ('images', float32 [batch, 8, 8]) and that it feeds 'predictor_inputs'
   through, checks that against the FeatureSpec, validates the export on the
   samples (keyed 'images'), compares it with estimator.predict, writes warmup
   requests keyed 'images' and only then publishes it.
3. exports the same model with the library's receivers built from the
   declaration (`model.export_for_serving`): the raw receiver takes 'images'
   too, plus an 'examples' alternative of serialized tf.Examples (whose
   feature key stays 'predictor_inputs', the model's data record).
4. serves both exports with the embedded server on 127.0.0.1 and sends REST
   requests keyed 'images' to each; answers are compared with the in-process
   Predictor and with estimator.predict.
"""
import json
import os
from typing import Any, Dict
import urllib.request

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from examples import _common

FLAGS = flags.FLAGS

SIZE = 8
FEATURE = 'predictor_inputs'
INPUT = 'images'
CLASSES = ('bottom', 'top')


class BarClassifier(ee.ServingModelMixin):
  """Logistic regression over the pixels: is the bright bar in the top half?"""
  feature_spec = ee.FeatureSpec([
      ee.Feature(FEATURE, 'float32', (SIZE, SIZE), input_key=INPUT,
                 description='grey image [8, 8] in [0, 1]; clients send it as "images"'),
      ee.Feature('label', 'int32', training_only=True),
  ])

  def predictions(self, features, mode, params):
    pixels = tf.reshape(features[FEATURE], [-1, SIZE * SIZE])
    logits = tf.compat.v1.layers.dense(pixels, 2, name='logits')
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits),
            'class_ids': tf.argmax(logits, axis=-1, output_type=tf.int32)}

  def loss(self, predictions, labels, features, mode, params):
    del labels, mode, params
    return tf.compat.v1.losses.sparse_softmax_cross_entropy(features['label'],
                                                            predictions['logits'])


def images_receiver_fn():
  """The articles' receiver: requests send 'images', the model reads 'predictor_inputs'."""
  images = tf.compat.v1.placeholder(tf.float32, [None, SIZE, SIZE], name='images')
  return tf.estimator.export.ServingInputReceiver(
      features={FEATURE: images}, receiver_tensors={INPUT: images})


def make_images(n: int, rng: np.random.RandomState):
  """n noisy images [n, 8, 8] float32 with a bright row in the top or bottom half; labels."""
  labels = rng.randint(0, 2, size=n).astype(np.int32)
  images = rng.uniform(0.0, 0.3, size=(n, SIZE, SIZE)).astype(np.float32)
  rows = np.where(labels == 1, rng.randint(0, SIZE // 2, size=n),
                  rng.randint(SIZE // 2, SIZE, size=n))
  images[np.arange(n), rows, :] = 1.0
  return images, labels


def _post_json(port: int, path: str, body: Dict[str, Any]) -> Dict[str, Any]:
  request = urllib.request.Request(f'http://127.0.0.1:{port}{path}',
                                   data=json.dumps(body).encode('utf-8'),
                                   headers={'Content-Type': 'application/json'})
  with urllib.request.urlopen(request, timeout=30) as response:
    return json.loads(response.read())


def _config_file(path: str, models: Dict[str, str]) -> str:
  entries = ''.join(f'  config {{ name: "{name}" base_path: "{base}" '
                    'model_platform: "tensorflow" }\n' for name, base in models.items())
  with open(path, 'w') as f:
    f.write(f'model_config_list {{\n{entries}}}\n')
  return path


def run(output_dir: str, train_steps: int = 100) -> Dict[str, Any]:
  """Trains, exports twice (hand-written and declared receivers), serves, queries.

  Returns:
    A dict: 'adapted' (the AdaptedReceiverFn), 'handwritten' and 'declared'
    (ExportResults), 'inputs' (signature name -> input keys, per export),
    'rest' (export -> REST probabilities [n, 2]), 'predictor' (export ->
    Predictor probabilities), 'estimator' (estimator.predict probabilities),
    'labels' and 'accuracy'.
  """
  model = BarClassifier()
  estimator = model.make_estimator(os.path.join(output_dir, 'model'),
                                   params={'learning_rate': 0.02})
  train_images, train_labels = make_images(512, np.random.RandomState(0))

  def input_fn():
    data = {FEATURE: train_images, 'label': train_labels}
    return tf.data.Dataset.from_tensor_slices(data).shuffle(512, seed=0).repeat().batch(32)

  print(f'[1/4] training BarClassifier for {train_steps} steps (feature {FEATURE!r}, '
        f'served as {INPUT!r})', flush=True)
  estimator.train(input_fn, max_steps=train_steps)

  images, labels = make_images(6, np.random.RandomState(1))
  adapted = ee.adapt_receiver_fn(images_receiver_fn, features=model.feature_spec)
  print(f'[2/4] hand-written receiver: {adapted!r}; feeds {FEATURE!r} from '
        f'{adapted.feature_spec[FEATURE].input_key!r}', flush=True)
  bases = {name: os.path.join(output_dir, 'export', name) for name in ('handwritten', 'declared')}
  handwritten = ee.export_for_serving(estimator, bases['handwritten'], images_receiver_fn,
                                      samples={INPUT: images[:2]}, version=1)
  print(f'      version {handwritten.version}: {dict(handwritten.signatures)}', flush=True)
  print('[3/4] the same model through receivers built from its FeatureSpec', flush=True)
  declared = model.export_for_serving(estimator, bases['declared'], samples={INPUT: images[:2]},
                                      version=1)
  print(f'      version {declared.version}: {dict(declared.signatures)}', flush=True)

  inputs, from_predictor = {}, {}
  for name, result in (('handwritten', handwritten), ('declared', declared)):
    with ee.Predictor.from_saved_model(result.path) as predictor:
      inputs[name] = {s: sorted(sig.inputs) for s, sig in predictor.signatures.items()}
      from_predictor[name] = predictor({INPUT: images})['probabilities']
  expected = next(estimator.predict(lambda: tf.data.Dataset.from_tensors({FEATURE: images}),
                                    yield_single_examples=False))['probabilities']

  print('[4/4] serving both on 127.0.0.1; REST requests keyed "images"', flush=True)
  config = _config_file(os.path.join(output_dir, 'models.config'), bases)
  server = server_lib.create_server(config_lib.ServerOptions(
      model_config_file=config, host='127.0.0.1', port=0, rest_api_port=0))
  rest = {}
  try:
    body = {'signature_name': 'serving_default', 'inputs': {INPUT: images.tolist()}}
    for name in bases:
      reply = _post_json(server.rest_port, f'/v1/models/{name}:predict', body)
      rest[name] = np.asarray(reply['outputs']['probabilities'], np.float32)
      print(f'      POST /v1/models/{name}:predict {{"inputs": {{"images": [6 x 8 x 8]}}}} '
            f'-> {sorted(reply["outputs"])}', flush=True)
  finally:
    server.stop(grace=1)
  predicted = rest['handwritten'].argmax(axis=1)
  for row, label in enumerate(labels):
    print(f'      image {row}: bar in the {CLASSES[label]:>6} half -> '
          f'{CLASSES[predicted[row]]:>6} (p_top {rest["handwritten"][row, 1]:.3f}; '
          f'declared {rest["declared"][row, 1]:.3f}; estimator.predict '
          f'{expected[row, 1]:.3f})', flush=True)
  accuracy = float(np.mean(predicted == labels))
  print(f'      accuracy {accuracy:.2f} on {len(labels)} held-out images', flush=True)
  return {'adapted': adapted, 'handwritten': handwritten, 'declared': declared,
          'inputs': inputs, 'rest': rest, 'predictor': from_predictor,
          'estimator': expected, 'labels': labels, 'accuracy': accuracy}


def main(argv):
  del argv
  output_dir = _common.prepare_output_dir(FLAGS.output_dir)
  run(output_dir, train_steps=FLAGS.train_steps)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'custom_receiver_output', 'Where the model and exports go.')
  flags.DEFINE_integer('train_steps', 100, 'Training steps.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
