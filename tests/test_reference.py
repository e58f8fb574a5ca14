"""_reference.predict_once gives what estimator.predict gives on one batch, on a real checkpoint.

Each model is trained for a few steps, so its checkpoint differs from a fresh
initialisation; every comparison is against `estimator.predict` itself on the
same checkpoint.
"""
import numpy as np
import pytest
import tensorflow as tf

from estimator_export import _reference
from tests import toy

ModeKeys = tf.estimator.ModeKeys
WORDS = ('good', 'bad', 'fine')


def _estimator_predict(estimator, features, **kwargs):
  return next(estimator.predict(lambda: tf.data.Dataset.from_tensors(features),
                                yield_single_examples=False, **kwargs))


def _assert_same(got, expected):
  assert sorted(got) == sorted(expected)
  for key, value in expected.items():
    np.testing.assert_allclose(got[key], value, rtol=1e-6, atol=1e-7, err_msg=key)


def test_toy_matches_estimator_predict(trained_toy):
  _, estimator = trained_toy
  checkpoint = tf.train.latest_checkpoint(estimator.model_dir)
  got = _reference.predict_once(estimator, checkpoint, toy.SAMPLES)
  _assert_same(got, _estimator_predict(estimator, toy.SAMPLES, checkpoint_path=checkpoint))
  assert got['logits'].shape == (2, 2)


def _word_model_fn(features, labels, mode, params):
  """A string feature through a lookup table (a local init op) and a trained embedding."""
  table = tf.compat.v1.lookup.StaticVocabularyTable(tf.compat.v1.lookup.KeyValueTensorInitializer(
      tf.constant(WORDS), tf.range(len(WORDS), dtype=tf.int64)), num_oov_buckets=1)
  ids = table.lookup(features['word'])
  embedding = tf.compat.v1.get_variable('embedding', [len(WORDS) + 1, 2])
  logits = tf.gather(embedding, ids) * params['scale']
  global_step = tf.compat.v1.train.get_global_step()
  if mode == ModeKeys.PREDICT:
    predictions = {'logits': logits, 'step': tf.fill(tf.shape(ids), global_step)}
    if params.get('hook'):
      return tf.estimator.EstimatorSpec(mode, predictions=predictions,
                                        prediction_hooks=[params['hook']])
    if params.get('plain'):
      return tf.estimator.EstimatorSpec(mode, predictions=logits)
    return tf.estimator.EstimatorSpec(mode, predictions=predictions)
  loss = tf.compat.v1.losses.sparse_softmax_cross_entropy(labels, logits)
  train_op = tf.compat.v1.train.GradientDescentOptimizer(0.5).minimize(loss, global_step)
  return tf.estimator.EstimatorSpec(mode, loss=loss, train_op=train_op)


class _CountingHook(tf.estimator.SessionRunHook):
  """Counts runs on the class: the Estimator deep-copies params, and the hook with them."""
  runs = 0

  def before_run(self, run_context):
    type(self).runs += 1


@pytest.fixture(scope='module')
def word_model(tmp_path_factory):
  model_dir = str(tmp_path_factory.mktemp('words'))
  features = {'word': np.array([b'good', b'bad', b'fine', b'other'], object)}
  labels = np.array([1, 0, 1, 0], np.int32)
  estimator = tf.estimator.Estimator(_word_model_fn, model_dir, params={'scale': 2.0})
  estimator.train(lambda: tf.data.Dataset.from_tensors((features, labels)).repeat(), steps=5)
  return model_dir, features


def test_tables_params_and_global_step_as_in_estimator_predict(word_model):
  model_dir, features = word_model
  estimator = tf.estimator.Estimator(_word_model_fn, model_dir, params={'scale': 2.0})
  checkpoint = tf.train.latest_checkpoint(model_dir)
  got = _reference.predict_once(estimator, checkpoint, features)
  _assert_same(got, _estimator_predict(estimator, features))
  np.testing.assert_array_equal(got['step'], [5] * 4)  # Restored, not initialised.
  assert np.abs(got['logits']).max() > 0  # The table maps the words (OOV: the last row).


def test_prediction_hooks_go_through_estimator_predict(word_model):
  model_dir, features = word_model
  estimator = tf.estimator.Estimator(_word_model_fn, model_dir,
                                     params={'scale': 2.0, 'hook': _CountingHook()})
  checkpoint = tf.train.latest_checkpoint(model_dir)
  before = _CountingHook.runs
  got = _reference.predict_once(estimator, checkpoint, features)
  assert _CountingHook.runs == before + 1  # The model_fn's hook ran, as in estimator.predict.
  _assert_same(got, _estimator_predict(estimator, features))


def test_non_dict_predictions_as_estimator_predict_yields_them(word_model):
  model_dir, features = word_model
  estimator = tf.estimator.Estimator(_word_model_fn, model_dir,
                                     params={'scale': 2.0, 'plain': True})
  checkpoint = tf.train.latest_checkpoint(model_dir)
  got = _reference.predict_once(estimator, checkpoint, features)
  np.testing.assert_allclose(got, _estimator_predict(estimator, features), rtol=1e-6)


def test_tpu_estimator_goes_through_its_own_predict(trained_toy, tmp_path):
  model, estimator = trained_toy
  tpu = model.make_tpu_estimator(str(tmp_path), train_batch_size=16, predict_batch_size=2)
  checkpoint = tf.train.latest_checkpoint(estimator.model_dir)
  got = _reference.predict_once(tpu, checkpoint, toy.SAMPLES)
  _assert_same({k: got[k] for k in ('logits', 'probabilities')},
               {k: v for k, v in _estimator_predict(estimator, toy.SAMPLES,
                                                    checkpoint_path=checkpoint).items()
                if k in ('logits', 'probabilities')})


def test_a_checkpoint_without_the_models_variables_fails_like_estimator_predict(
    word_model, trained_toy):
  model_dir, features = word_model
  _, toy_estimator = trained_toy
  estimator = tf.estimator.Estimator(_word_model_fn, model_dir, params={'scale': 2.0})
  foreign = tf.train.latest_checkpoint(toy_estimator.model_dir)
  with pytest.raises(tf.errors.NotFoundError, match='embedding'):
    _reference.predict_once(estimator, foreign, features)
  with pytest.raises(tf.errors.NotFoundError, match='embedding'):
    _estimator_predict(estimator, features, checkpoint_path=foreign)


# ----- the reference from the export's own graph -----

def _export_graph(receiver_fn, estimator, tmp_path, checkpoint, with_export_dir=True):
  """An ExportGraph of receiver_fn after tf.estimator's export from `checkpoint`.

  with_export_dir: it knows the export (the reference restores with the export's
  SaverDef); without, it builds a Saver as estimator.predict would.
  """
  graph = _reference.ExportGraph(receiver_fn)
  written = estimator.export_saved_model(str(tmp_path / 'export'), graph,
                                         checkpoint_path=checkpoint)
  assert graph.graph is not None and sorted(graph.features) == ['n', 'x']
  if with_export_dir:
    graph.export_dir = written.decode() if isinstance(written, bytes) else written
  return graph


def test_the_export_graph_restores_the_checkpoint_it_is_given(tmp_path):
  model = toy.ToyClassifier()
  estimator = model.make_estimator(str(tmp_path / 'model'), params={'learning_rate': 0.5})
  estimator.train(toy.train_input_fn, max_steps=1)
  exported_from = tf.train.latest_checkpoint(estimator.model_dir)
  estimator.train(toy.train_input_fn, max_steps=5)
  later = tf.train.latest_checkpoint(estimator.model_dir)
  expected = _estimator_predict(estimator, toy.SAMPLES, checkpoint_path=later)
  earlier = _estimator_predict(estimator, toy.SAMPLES, checkpoint_path=exported_from)
  assert np.abs(expected['logits'] - earlier['logits']).max() > 1e-3
  for with_export_dir in (True, False):
    graph = _export_graph(model.serving_input_receiver_fn('combined'), estimator,
                          tmp_path / str(with_export_dir), exported_from, with_export_dir)
    got = _reference.predict_in_export_graph(estimator, later, toy.SAMPLES, graph)
    # estimator.predict on the checkpoint asked for, not the variables the export wrote.
    _assert_same(got, expected)


def test_the_export_graph_is_not_used_when_the_model_fn_saw_other_features(trained_toy,
                                                                            tmp_path):
  model, estimator = trained_toy
  checkpoint = tf.train.latest_checkpoint(estimator.model_dir)
  graph = _export_graph(model.serving_input_receiver_fn('raw'), estimator, tmp_path, checkpoint)
  assert _reference.predict_in_export_graph(estimator, checkpoint, toy.SAMPLES, graph)
  as_float64 = dict(toy.SAMPLES, x=toy.SAMPLES['x'].astype(np.float64))
  wider = dict(toy.SAMPLES, x=np.zeros((2, 4), np.float32))
  without_n = {'x': toy.SAMPLES['x']}
  for features in (as_float64, wider, without_n):
    assert _reference.predict_in_export_graph(estimator, checkpoint, features, graph) is None


def test_a_model_fn_that_is_not_a_mixins_rebuilds_its_graph(word_model, tmp_path):
  model_dir, features = word_model
  estimator = tf.estimator.Estimator(_word_model_fn, model_dir, params={'scale': 2.0})
  checkpoint = tf.train.latest_checkpoint(model_dir)

  def receiver_fn():
    word = tf.compat.v1.placeholder(tf.string, [None], name='word')
    return tf.estimator.export.ServingInputReceiver({'word': word}, {'word': word})

  graph = _reference.ExportGraph(receiver_fn)
  estimator.export_saved_model(str(tmp_path / 'export'), graph, checkpoint_path=checkpoint)
  # Its predictions were not recorded: nothing says which tensors they are.
  assert _reference.predict_in_export_graph(estimator, checkpoint, features, graph) is None
  got = _reference.predict_once(estimator, checkpoint, features, graph)
  _assert_same(got, _estimator_predict(estimator, features))
