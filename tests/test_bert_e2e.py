"""BERT end to end: fine-tune a tiny BERT, export three kinds of signature, serve, query.

Every served answer (ids, tf.Example/Classify and raw text, over gRPC and
REST) must match estimator.predict on the same checkpoint to 1e-5.
"""
import os

import numpy as np
import pytest

import estimator_export as ee
from bert_example import client as client_lib
from bert_example import model as model_lib
from bert_example import pipeline
from bert_example import servability
from estimator_export.client import GrpcClient, RestClient, ServingClientError
from tests import bert_serving

pytest.importorskip('tensorflow_text', reason='the text signature needs tensorflow-text')

MODEL = 'bert'
SEQ = 32
TOL = 1e-5
SENTENCES = ['a truly great film', 'The acting was awful.', 'not good at all',
             'Ünïcödé àccents, 中文 and emoji 😀!']
PAIRS_A = ['the film was good', 'it was bad']
PAIRS_B = ['i loved it', 'a long second sentence that will need some truncation ' * 3]


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  """(run, server): a tiny BERT fine-tuned on the demo data, exported and served."""
  with bert_serving.trained_and_served(
      str(tmp_path_factory.mktemp('bert_e2e')), MODEL, SEQ, num_train=320, num_dev=64,
      num_test=16, hidden_size=128, num_hidden_layers=2, intermediate_size=256,
      max_position_embeddings=64, train_batch_size=32, learning_rate=1e-3, do_eval=True,
      do_predict=True) as served_model:
    yield served_model


def _clients(server):
  return {'grpc': GrpcClient(f'127.0.0.1:{server.grpc_port}'),
          'rest': RestClient(f'http://127.0.0.1:{server.rest_port}')}


@pytest.fixture(params=['grpc', 'rest'])
def client(request, served):
  c = _clients(served[1])[request.param]
  yield c
  c.close()


def _expected(run, texts_a, texts_b=None):
  return pipeline.estimator_probabilities(run.model, run.estimator, texts_a, texts_b)


class TestExport:

  def test_signatures(self, served):
    run, _ = served
    sigs = run.export.signatures
    for name in ('serving_default', 'predict', 'examples:classify', 'examples:predict',
                 'text', 'text:predict', 'text_pair', 'text_pair:predict'):
      assert name in sigs, sorted(sigs)
    assert sigs['examples:classify'] == 'tensorflow/serving/classify'
    assert not any(n.startswith('text') and sigs[n] != 'tensorflow/serving/predict'
                   for n in sigs)  # Classify on raw text would be fed Examples: removed.

  def test_training_features_never_served(self, served):
    run, _ = served
    with ee.Predictor.from_saved_model(run.export.path) as predictor:
      for name, sig in predictor.signatures.items():
        assert not {'label_ids', 'is_real_example'} & set(sig.inputs), name
      assert set(predictor.signatures['serving_default'].inputs) == set(model_lib.ID_FEATURES)
      assert set(predictor.signatures['text'].inputs) == {'text'}
      assert set(predictor.signatures['text_pair'].inputs) == {'text_a', 'text_b'}

  def test_servable_by_tensorflow_model_server(self, served):
    run, _ = served
    report = servability.assert_servable(run.export.path)
    assert 'WordpieceTokenizeWithOffsets' in report.ops_used

  def test_vocab_is_an_asset(self, served):
    run, _ = served
    assets = os.listdir(os.path.join(run.export.path, 'assets'))
    assert assets == [os.path.basename(run.model.vocab_file)]

  def test_eval_and_predict_outputs(self, served):
    run, _ = served
    assert 0.0 <= run.eval_metrics['accuracy'] <= 1.0
    with open(run.predictions_file) as f:
      rows = f.read().splitlines()
    assert rows[0].split('\t') == ['guid', 'label', 'negative', 'positive']
    assert len(rows) == 17


class TestServedMatchesEstimator:

  def test_ids_signature(self, served, client):
    run, _ = served
    ids = model_lib.encode_ids(run.model.tokenizer, SEQ, SENTENCES)
    out = client.predict(MODEL, ids)
    np.testing.assert_allclose(out['probabilities'], _expected(run, SENTENCES), atol=TOL)
    names = [n.decode() for n in out['label_name']]
    assert names == [run.model.label_vocabulary[i] for i in out['label_id']]

  def test_classify_signature(self, served, client):
    run, _ = served
    ids = model_lib.encode_ids(run.model.tokenizer, SEQ, SENTENCES)
    examples = [{k: v[i].tolist() for k, v in ids.items()} for i in range(len(SENTENCES))]
    out = client.classify(MODEL, examples, signature_name='examples:classify')
    scores = np.array([[score for _, score in row] for row in out])
    classes = [[label for label, _ in row] for row in out]
    assert classes == [['negative', 'positive']] * len(SENTENCES)
    np.testing.assert_allclose(scores, _expected(run, SENTENCES), atol=TOL)

  def test_text_signature(self, served, client):
    run, _ = served
    answers = client_lib.classify_texts(client, MODEL, SENTENCES)
    got = np.array([[a.probabilities[l] for l in run.model.label_vocabulary] for a in answers])
    np.testing.assert_allclose(got, _expected(run, SENTENCES), atol=TOL)

  def test_text_pairs(self, served, client):
    run, _ = served
    answers = client_lib.classify_texts(client, MODEL, PAIRS_A, PAIRS_B)
    got = np.array([[a.probabilities[l] for l in run.model.label_vocabulary] for a in answers])
    np.testing.assert_allclose(got, _expected(run, PAIRS_A, PAIRS_B), atol=TOL)


class TestBadTextInput:

  @pytest.mark.parametrize('text', ['', ' \t\n ', 'word ' * 2000, 'x' * 10000],
                           ids=['empty', 'whitespace', '10k-words', '10k-one-word'])
  def test_odd_text_is_answered_like_estimator(self, served, client, text):
    run, _ = served
    answers = client_lib.classify_texts(client, MODEL, [text])
    got = [answers[0].probabilities[l] for l in run.model.label_vocabulary]
    np.testing.assert_allclose(got, _expected(run, [text])[0], atol=TOL)

  def test_invalid_utf8_is_dropped_like_the_python_tokenizer(self, served):
    run, server = served
    raw = b'good \xff\xfe film \xc3'
    with GrpcClient(f'127.0.0.1:{server.grpc_port}') as grpc_client:
      out = grpc_client.predict(MODEL, {'text': np.array([raw], object)},
                                signature_name='text')
    np.testing.assert_allclose(out['probabilities'][0], _expected(run, [raw])[0], atol=TOL)

  def test_mismatched_pair_batch_is_a_clean_error_and_server_keeps_serving(self, served,
                                                                           client):
    with pytest.raises(ServingClientError) as info:
      client.predict(MODEL, {'text_a': ['one', 'two'], 'text_b': ['only one']},
                     signature_name='text_pair')
    assert info.value.code.name == 'INVALID_ARGUMENT'
    assert client_lib.classify_texts(client, MODEL, ['still serving'])[0].label
