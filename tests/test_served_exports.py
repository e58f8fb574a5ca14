"""Exports served by the embedded server on 127.0.0.1 and asked over gRPC and REST.

* a multi-head export (`multi_head_outputs`: a Predict head, a Classify head and a
  Regress head on one model): each head's signature answered over gRPC (GrpcClient)
  and REST (TF Serving's JSON, sent as bytes on a socket), equal to estimator.predict;
* an image export (`build_image_receiver_fn`: PNG/JPEG bytes decoded in-graph): REST
  sends `{"b64": ...}`, gRPC a DT_STRING tensor of the bytes themselves.
"""
import base64

import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export.client import GrpcClient
from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from tests.serving_util import rest_request

ModeKeys = tf.estimator.ModeKeys
KINDS = ('small', 'large')
MULTI_SPEC = ee.FeatureSpec([
    ee.Feature('x', 'float32', (3,)),
    ee.Feature('kind', 'int32', training_only=True),
    ee.Feature('amount', 'float32', training_only=True),
])
X = np.array([[1.0, 2.0, 3.0], [-2.0, -1.0, 0.5], [0.1, -0.3, 0.2]], np.float32)
TOL = dict(rtol=1e-5, atol=1e-6)


# ----- the multi-head model -----

def multi_head_model_fn(features, labels, mode, params):
  """Three heads on one hidden layer: an embedding, a size class, an amount."""
  del labels, params
  hidden = tf.compat.v1.layers.dense(features['x'], 4, activation=tf.nn.tanh, name='hidden')
  kind_logits = tf.compat.v1.layers.dense(hidden, 2, name='kind')
  amount = tf.reshape(tf.compat.v1.layers.dense(hidden, 1, name='amount'), [-1])
  probabilities = tf.nn.softmax(kind_logits)
  predictions = {'embedding': hidden, 'kind_probabilities': probabilities, 'amount': amount}
  if mode == ModeKeys.PREDICT:
    return tf.estimator.EstimatorSpec(mode, predictions=predictions, export_outputs=(
        ee.multi_head_outputs({
            'embedding': ee.predict_output({'embedding': hidden}),
            'kind': ee.classify_output(scores=probabilities, label_vocabulary=KINDS),
            'amount': ee.regress_output(amount)}, default='embedding')))
  loss = (tf.compat.v1.losses.sparse_softmax_cross_entropy(features['kind'], kind_logits) +
          tf.compat.v1.losses.mean_squared_error(features['amount'], amount))
  train_op = tf.compat.v1.train.AdamOptimizer(0.05).minimize(
      loss, global_step=tf.compat.v1.train.get_or_create_global_step())
  return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


def multi_head_input_fn():
  rng = np.random.RandomState(0)
  x = rng.randn(128, 3).astype(np.float32)
  data = {'x': x, 'kind': (x.sum(axis=1) > 0).astype(np.int32), 'amount': 2.0 * x[:, 0]}
  return tf.data.Dataset.from_tensor_slices(data).repeat().batch(32)


# ----- the image model -----

class ColorClassifier(ee.ServingModelMixin):
  """Red or blue? Logistic regression over the mean of each channel."""
  feature_spec = ee.FeatureSpec([ee.Feature('image', 'float32', (8, 8, 3)),
                                 ee.Feature('label', 'int32', training_only=True)])

  def predictions(self, features, mode, params):
    logits = tf.compat.v1.layers.dense(tf.reduce_mean(features['image'], axis=[1, 2]), 2,
                                       name='logits')
    return {'probabilities': tf.nn.softmax(logits),
            'class_ids': tf.argmax(logits, axis=-1, output_type=tf.int32)}

  def loss(self, predictions, labels, features, mode, params):
    return tf.compat.v1.losses.sparse_softmax_cross_entropy(
        features['label'], tf.math.log(predictions['probabilities'] + 1e-6))


def solid(color, size=8) -> np.ndarray:
  """uint8 image [size, size, 3] of one colour."""
  return np.tile(np.asarray(color, np.uint8), (size, size, 1))


def image_input_fn():
  rng = np.random.RandomState(1)
  labels = rng.randint(0, 2, size=64).astype(np.int32)
  red, blue = solid((230, 20, 20)) / 255.0, solid((20, 20, 230)) / 255.0
  noise = rng.uniform(-0.1, 0.1, size=(64, 8, 8, 3))
  images = (np.where(labels[:, None, None, None] == 1, blue, red) + noise).astype(np.float32)
  return tf.data.Dataset.from_tensor_slices({'image': images, 'label': labels}).repeat().batch(16)


PNG_RED = tf.io.encode_png(solid((250, 10, 10))).numpy()
PNG_BLUE = tf.io.encode_png(solid((10, 10, 250))).numpy()


# ----- exported and served once -----

@pytest.fixture(scope='module')
def exports(tmp_path_factory):
  """name -> (estimator, ExportResult) for 'multi' and 'image'."""
  root = tmp_path_factory.mktemp('served_exports')
  multi = tf.estimator.Estimator(multi_head_model_fn, model_dir=str(root / 'multi_model'))
  multi.train(multi_head_input_fn, max_steps=30)
  multi_result = ee.export_for_serving(
      multi, str(root / 'multi'), ee.build_combined_receiver_fn(
          ee.build_raw_receiver_fn(MULTI_SPEC),
          {'examples': ee.build_example_receiver_fn(MULTI_SPEC)}),
      samples={'x': X[:2]}, model_name='multi')
  model = ColorClassifier()
  image = model.make_estimator(str(root / 'image_model'), params={'learning_rate': 0.1})
  image.train(image_input_fn, max_steps=40)
  image_result = model.export_for_serving(image, str(root / 'image'),
                                          ee.build_image_receiver_fn(8, 8),
                                          samples={'image_bytes': [PNG_RED, PNG_BLUE]},
                                          model_name='image')
  return {'multi': (multi, multi_result), 'image': (image, image_result)}


@pytest.fixture(scope='module')
def server(exports, tmp_path_factory):
  path = tmp_path_factory.mktemp('served_config') / 'models.config'
  entries = ''.join(f'config {{ name: "{name}" base_path: "{result.path.rsplit("/", 1)[0]}" '
                    'model_platform: "tensorflow" }\n' for name, (_, result) in exports.items())
  path.write_text(f'model_config_list {{\n{entries}}}\n')
  srv = server_lib.create_server(config_lib.ServerOptions(
      model_config_file=str(path), host='127.0.0.1', port=0, rest_api_port=0))
  yield srv
  srv.stop(grace=1)


@pytest.fixture
def grpc_client(server):
  with GrpcClient(f'127.0.0.1:{server.grpc_port}', timeout=30) as client:
    yield client


def _rest(server, path, body):
  reply = rest_request(server.rest_port, 'POST', path, body)
  assert reply.status == 200, reply.text
  return reply.json()


def _estimator(exports, name, features):
  estimator, result = exports[name]
  return next(estimator.predict(lambda: tf.data.Dataset.from_tensors(features),
                                checkpoint_path=result.checkpoint_path,
                                yield_single_examples=False))


# ----- multi-head -----

class TestMultiHead:

  def test_each_head_has_its_signature(self, exports):
    _, result = exports['multi']
    assert result.signatures == {
        'embedding': 'tensorflow/serving/predict',
        'serving_default': 'tensorflow/serving/predict',
        'examples:embedding': 'tensorflow/serving/predict',
        'examples:serving_default': 'tensorflow/serving/predict',
        'examples:kind': 'tensorflow/serving/classify',
        'examples:amount': 'tensorflow/serving/regress'}
    # tf.estimator's Classify/Regress on the raw receiver: never built.
    assert result.removed_signatures == ()

  @pytest.mark.parametrize('signature', ['embedding', 'serving_default'])
  def test_predict_head(self, exports, server, grpc_client, signature):
    expected = _estimator(exports, 'multi', {'x': X})['embedding']
    got = grpc_client.predict('multi', {'x': X}, signature_name=signature)
    np.testing.assert_allclose(got['embedding'], expected, **TOL)
    reply = _rest(server, '/v1/models/multi:predict',
                  {'signature_name': signature, 'instances': [{'x': row} for row in X.tolist()]})
    np.testing.assert_allclose(np.asarray(reply['predictions'], np.float32), expected, **TOL)

  def test_predict_head_on_examples(self, exports, server, grpc_client):
    expected = _estimator(exports, 'multi', {'x': X})['embedding']
    examples = MULTI_SPEC.to_examples({'x': X})
    got = grpc_client.predict('multi', {'examples': np.array(examples, dtype=object)},
                              signature_name='examples:embedding')
    np.testing.assert_allclose(got['embedding'], expected, **TOL)
    reply = _rest(server, '/v1/models/multi:predict', {
        'signature_name': 'examples:embedding',
        'inputs': {'examples': [{'b64': base64.b64encode(e).decode()} for e in examples]}})
    np.testing.assert_allclose(np.asarray(reply['outputs'], np.float32), expected, **TOL)

  def test_classify_head(self, exports, server, grpc_client):
    expected = _estimator(exports, 'multi', {'x': X})['kind_probabilities']
    got = grpc_client.classify('multi', [{'x': row} for row in X.tolist()],
                               signature_name='examples:kind')
    assert [[label for label, _ in row] for row in got] == [list(KINDS)] * len(X)
    np.testing.assert_allclose([[s for _, s in row] for row in got], expected, **TOL)
    reply = _rest(server, '/v1/models/multi:classify',
                  {'signature_name': 'examples:kind', 'examples': [{'x': r} for r in X.tolist()]})
    assert [[pair[0] for pair in row] for row in reply['results']] == [list(KINDS)] * len(X)
    np.testing.assert_allclose([[pair[1] for pair in row] for row in reply['results']],
                               expected, **TOL)

  def test_regress_head(self, exports, server, grpc_client):
    expected = _estimator(exports, 'multi', {'x': X})['amount']
    got = grpc_client.regress('multi', [{'x': row} for row in X.tolist()],
                              signature_name='examples:amount')
    np.testing.assert_allclose(got, expected, **TOL)
    reply = _rest(server, '/v1/models/multi:regress',
                  {'signature_name': 'examples:amount', 'examples': [{'x': r} for r in X.tolist()]})
    np.testing.assert_allclose(np.asarray(reply['results'], np.float32), expected, **TOL)

  def test_classify_and_regress_heads_in_one_request(self, exports, grpc_client):
    expected = _estimator(exports, 'multi', {'x': X})
    kinds, amounts = grpc_client.multi_inference(
        'multi', [('examples:kind', 'classify'), ('examples:amount', 'regress')],
        [{'x': row} for row in X.tolist()])
    np.testing.assert_allclose([[s for _, s in row] for row in kinds],
                               expected['kind_probabilities'], **TOL)
    np.testing.assert_allclose(amounts, expected['amount'], **TOL)

  def test_raw_classify_head_is_not_served(self, server):
    reply = rest_request(server.rest_port, 'POST', '/v1/models/multi:classify',
                         {'signature_name': 'kind', 'examples': [{'x': [1.0, 2.0, 3.0]}]})
    assert reply.status == 400
    assert reply.json() == {'error': 'No signature was found with the name: kind'}  # TF Serving's.


# ----- image bytes -----

def _decoded(images) -> np.ndarray:
  """What the receiver hands the model: float32 [n, 8, 8, 3] in [0, 1]."""
  return np.stack([tf.io.decode_image(data, channels=3).numpy() for data in images]
                  ).astype(np.float32) / 255.0


class TestImageBytes:

  def test_signature_takes_bytes(self, exports):
    _, result = exports['image']
    assert result.signatures == {'predict': 'tensorflow/serving/predict',
                                 'serving_default': 'tensorflow/serving/predict'}
    with ee.Predictor.from_saved_model(result.path) as predictor:
      inputs = predictor.signature_def.inputs
    assert list(inputs) == ['image_bytes']
    assert inputs['image_bytes'].dtype == tf.string.as_datatype_enum
    assert [d.size for d in inputs['image_bytes'].tensor_shape.dim] == [-1]

  @pytest.mark.parametrize('form', ['instances', 'instances_bare', 'inputs'])
  def test_rest_b64(self, exports, server, form):
    images = [PNG_RED, PNG_BLUE, tf.io.encode_jpeg(solid((240, 30, 30)), quality=95).numpy()]
    encoded = [{'b64': base64.b64encode(data).decode('ascii')} for data in images]
    bodies = {'instances': {'instances': [{'image_bytes': e} for e in encoded]},
              'instances_bare': {'instances': encoded},  # One input: a bare value per row.
              'inputs': {'inputs': {'image_bytes': encoded}}}
    reply = _rest(server, '/v1/models/image:predict', bodies[form])
    rows = reply['outputs'] if form == 'inputs' else {
        k: [row[k] for row in reply['predictions']] for k in reply['predictions'][0]}
    assert rows['class_ids'] == [0, 1, 0]  # red, blue, red
    expected = _estimator(exports, 'image', {'image': _decoded(images)})
    np.testing.assert_allclose(np.asarray(rows['probabilities'], np.float32),
                               expected['probabilities'], rtol=1e-5, atol=1e-6)

  def test_grpc_bytes(self, exports, grpc_client):
    images = [PNG_BLUE, PNG_RED]
    got = grpc_client.predict('image', {'image_bytes': np.array(images, dtype=object)})
    assert got['class_ids'].tolist() == [1, 0]
    expected = _estimator(exports, 'image', {'image': _decoded(images)})
    np.testing.assert_allclose(got['probabilities'], expected['probabilities'], rtol=1e-5,
                               atol=1e-6)

  def test_not_an_image_is_a_named_error(self, server):
    reply = rest_request(server.rest_port, 'POST', '/v1/models/image:predict',
                         {'instances': [{'b64': base64.b64encode(b'not an image').decode()}]})
    assert reply.status == 400 and 'Unknown image file format' in reply.json()['error']
