"""Tests for estimator_export.custom_receiver: users' own receiver fns, described and exported.

Unit tests build real receivers in real graphs; the export tests export the trained toy
model through hand-written receivers (the same checkpoint, through export_for_serving)
and run the exports; the last tests run examples/custom_receiver_export.py.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import _saved_model as saved_model_lib
from estimator_export import custom_receiver
from estimator_export import warmup as warmup_lib
from estimator_export.errors import FeatureError, ReceiverError, SignatureError
from examples import custom_receiver_export
from tests import toy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SPEC = toy.ToyClassifier.feature_spec
ServingInputReceiver = tf.estimator.export.ServingInputReceiver


def renamed_receiver_fn():
  """Requests send 'measurements'; the model reads 'x'."""
  x = tf.compat.v1.placeholder(tf.float32, [None, 3], name='measurements')
  n = tf.compat.v1.placeholder(tf.int32, [None], name='n')
  return ServingInputReceiver({'x': x, 'n': n}, {'measurements': x, 'n': n})


def csv_receiver_fn():
  """One string input 'csv' of 'x0,x1,x2,n' lines, parsed in-graph."""
  lines = tf.compat.v1.placeholder(tf.string, [None], name='csv')
  columns = tf.io.decode_csv(lines, [[0.0], [0.0], [0.0], [0]])
  return ServingInputReceiver({'x': tf.stack(columns[:3], axis=1), 'n': columns[3]},
                              {'csv': lines})


def parsing_receiver_fn():
  """tf.estimator's own parsing receiver: 'n' parses as int64."""
  return tf.estimator.export.build_parsing_serving_input_receiver_fn(SPEC.parsing_spec())()


class PredictOnlyToy(toy.ToyClassifier):
  """The toy model without Classify/Regress heads (for receivers without tf.Examples)."""
  label_vocabulary = None

  def regress_head(self, predictions):
    return None


class TestAdapt:

  def test_rename_learned_from_the_fed_through_tensor(self):
    fn = ee.adapt_receiver_fn(renamed_receiver_fn, features=SPEC)
    assert isinstance(fn, custom_receiver.AdaptedReceiverFn)
    assert fn.kind == 'raw' and fn.input_keys == ('measurements', 'n')
    assert fn.feature_spec['x'].input_key == 'measurements'
    assert fn.feature_spec.serving_names == ('x', 'n')
    assert fn.input_specs[''] == {
        'measurements': tf.TensorSpec([None, 3], tf.float32, name='measurements'),
        'n': tf.TensorSpec([None], tf.int32, name='n')}
    assert not fn.is_single_string_input
    assert repr(fn) == ("AdaptedReceiverFn(renamed_receiver_fn, kind='raw', "
                        "inputs=['measurements', 'n'])")

  def test_spec_derived_without_features(self):
    fn = ee.adapt_receiver_fn(renamed_receiver_fn)
    assert [(f.name, f.dtype, f.shape, f.input_key) for f in fn.feature_spec] == [
        ('x', tf.float32, (3,), 'measurements'), ('n', tf.int32, (), 'n')]

  def test_calling_it_builds_the_users_receiver(self):
    calls = []

    def counted():
      calls.append(1)
      return renamed_receiver_fn()

    fn = ee.adapt_receiver_fn(counted)
    assert len(calls) == 1  # Built once, in a scratch graph.
    with tf.Graph().as_default():
      receiver = fn()
      with tf.compat.v1.Session() as session:
        out = session.run(receiver.features['x'],
                          {receiver.receiver_tensors['measurements']: [[1.0, 2.0, 3.0]]})
    assert len(calls) == 2 and out.tolist() == [[1.0, 2.0, 3.0]]

  def test_parsing_receiver_is_example_kind(self):
    fn = ee.adapt_receiver_fn(parsing_receiver_fn)
    assert fn.kind == 'example' and fn.is_single_string_input
    assert fn.input_keys == ('examples',)
    assert fn.feature_spec['n'].dtype == tf.int64  # Derived: what the receiver produces.

  def test_computed_input_is_custom_kind(self):
    fn = ee.adapt_receiver_fn(csv_receiver_fn, features=SPEC)
    assert fn.kind == 'custom' and fn.input_keys == ('csv',)
    assert not fn.is_single_string_input  # Classify/Regress would be fed tf.Examples.

  def test_alternatives_become_parts(self):
    def with_alternative():
      receiver = renamed_receiver_fn()
      serialized = tf.compat.v1.placeholder(tf.string, [None], name='serialized')
      return ServingInputReceiver(
          receiver.features, receiver.receiver_tensors,
          {'examples': serialized, 'csv': csv_receiver_fn().receiver_tensors})
    fn = ee.adapt_receiver_fn(with_alternative, features=SPEC)
    assert fn.kind == 'combined'
    kinds = {name: part.kind for name, part in fn.parts().items()}
    # 'serialized' reaches no parse op: it is not tf.Examples, whatever its name.
    assert kinds == {'': 'raw', 'examples': 'custom', 'csv': 'custom'}
    assert fn.parts()['examples'].input_keys == ('input',)  # tf.estimator's name for one tensor.

  def test_library_receivers_pass_through(self):
    fn = ee.build_raw_receiver_fn(SPEC)
    assert ee.adapt_receiver_fn(fn, features=SPEC) is fn


class TestAdaptErrors:

  def test_not_callable(self):
    with pytest.raises(ReceiverError,
                       match="serving_input_receiver_fn is not callable: got 'dict'"):
      ee.adapt_receiver_fn({'x': 1})

  def test_failure_inside_names_it_and_keeps_the_cause(self):
    def broken():
      raise KeyError('vocab')
    with pytest.raises(ReceiverError,
                       match=r"failed when built: got \"KeyError: 'vocab'\"") as info:
      ee.adapt_receiver_fn(broken)
    assert isinstance(info.value.__cause__, KeyError)

  def test_wrong_return_type(self):
    with pytest.raises(ReceiverError, match="must return a tf.estimator.export."
                       "ServingInputReceiver: got 'dict'"):
      ee.adapt_receiver_fn(lambda: {'x': tf.compat.v1.placeholder(tf.float32)})

  def test_tensor_receiver_refused(self):
    def tensor_receiver():
      x = tf.compat.v1.placeholder(tf.float32, [None, 3])
      return tf.estimator.export.TensorServingInputReceiver(x, {'x': x})
    with pytest.raises(ReceiverError, match='returned a TensorServingInputReceiver'):
      ee.adapt_receiver_fn(tensor_receiver)

  def test_sparse_receiver_tensor_refused(self):
    def sparse():
      ids = tf.compat.v1.sparse_placeholder(tf.int64, name='ids')
      return ServingInputReceiver({'ids': ids}, {'ids': ids})
    with pytest.raises(ReceiverError, match="receiver tensor 'ids' of receiver 'primary' is a "
                       "SparseTensor.*TF Serving feeds dense tensors"):
      ee.adapt_receiver_fn(sparse)

  def test_missing_feature(self):
    def only_x():
      x = tf.compat.v1.placeholder(tf.float32, [None, 3])
      return ServingInputReceiver({'x': x}, {'x': x})
    with pytest.raises(ReceiverError, match=r"does not produce serving feature\(s\): got \['n'\]"):
      ee.adapt_receiver_fn(only_x, features=SPEC)

  def test_training_only_feature_refused(self):
    def with_label():
      receiver = renamed_receiver_fn()
      label = tf.compat.v1.placeholder(tf.int32, [None], name='label')
      return ServingInputReceiver(dict(receiver.features, label=label),
                                  dict(receiver.receiver_tensors, label=label))
    with pytest.raises(ReceiverError,
                       match=r"produces training-only feature\(s\): got \['label'\]"):
      ee.adapt_receiver_fn(with_label, features=SPEC)

  def test_dtype_mismatch_named(self):
    with pytest.raises(ReceiverError, match="produces 'n' as int64, the FeatureSpec declares "
                       "int32.*tf.cast it"):
      ee.adapt_receiver_fn(parsing_receiver_fn, features=SPEC)

  def test_shape_mismatch_named(self):
    def wide():
      x = tf.compat.v1.placeholder(tf.float32, [None, 4])
      n = tf.compat.v1.placeholder(tf.int32, [None])
      return ServingInputReceiver({'x': x, 'n': n}, {'x': x, 'n': n})
    with pytest.raises(ReceiverError, match=r"produces 'x' with shape \(None, 4\)"):
      ee.adapt_receiver_fn(wide, features=SPEC)

  def test_sparse_feature_where_dense_declared(self):
    def sparse_x():
      serialized = tf.compat.v1.placeholder(tf.string, [None])
      parsed = tf.io.parse_example(serialized, {'x': tf.io.VarLenFeature(tf.float32),
                                                'n': tf.io.FixedLenFeature([], tf.int64)})
      return ServingInputReceiver({'x': parsed['x'], 'n': tf.cast(parsed['n'], tf.int32)},
                                  serialized)
    with pytest.raises(ReceiverError, match="produces 'x' as a SparseTensor"):
      ee.adapt_receiver_fn(sparse_x, features=SPEC)

  def test_input_key_disagreeing_with_the_declaration(self):
    spec = ee.FeatureSpec([ee.Feature('x', 'float32', (3,), input_key='inputs'),
                           ee.Feature('n', 'int32')])
    with pytest.raises(ReceiverError, match="feeds feature 'x' as 'measurements', but the "
                       "FeatureSpec declares input_key 'inputs'"):
      ee.adapt_receiver_fn(renamed_receiver_fn, features=spec)

  def test_rename_onto_another_feature_collides(self):
    def swapped():
      x = tf.compat.v1.placeholder(tf.float32, [None, 3])
      n = tf.compat.v1.placeholder(tf.int32, [None])
      return ServingInputReceiver({'x': x, 'n': n}, {'n': x, 'count': n})
    with pytest.raises(FeatureError, match="input_key 'n' of feature 'x' is the name of "
                       "feature 'n'"):
      ee.adapt_receiver_fn(swapped)

  def test_unknown_rank_needs_a_spec(self):
    def unknown():
      x = tf.compat.v1.placeholder(tf.float32, None)
      return ServingInputReceiver({'x': x}, {'x': x})
    with pytest.raises(ReceiverError, match="feature 'x' the receiver produces has no batch "
                       "dimension or an unknown rank.*pass features=FeatureSpec"):
      ee.adapt_receiver_fn(unknown)


# ----- exports through hand-written receivers -----

@pytest.fixture(scope='module')
def predict_only(trained_toy):
  """An Estimator of PredictOnlyToy over the trained toy checkpoint."""
  _, estimator = trained_toy
  return PredictOnlyToy(), PredictOnlyToy().make_estimator(estimator.model_dir)


def _estimator_outputs(estimator, checkpoint, features):
  return next(estimator.predict(lambda: tf.data.Dataset.from_tensors(features),
                                checkpoint_path=checkpoint, yield_single_examples=False))


class TestExport:

  def test_renamed_raw_export(self, predict_only, tmp_path):
    model, estimator = predict_only
    result = model.export_for_serving(
        estimator, str(tmp_path / 'renamed'), renamed_receiver_fn,
        samples={'measurements': toy.SAMPLES['x'], 'n': toy.SAMPLES['n']})
    assert result.validated and result.signatures == {
        'predict': 'tensorflow/serving/predict', 'serving_default': 'tensorflow/serving/predict'}
    expected = _estimator_outputs(estimator, result.checkpoint_path, toy.SAMPLES)
    with ee.Predictor.from_saved_model(result.path) as predictor:
      assert sorted(predictor.signature_def.inputs) == ['measurements', 'n']
      got = predictor({'measurements': toy.SAMPLES['x'], 'n': toy.SAMPLES['n']})
    np.testing.assert_allclose(got['probabilities'], expected['probabilities'], rtol=1e-5)
    logs = warmup_lib.read_warmup_requests(result.path)
    sent = {tuple(sorted(log.predict_log.request.inputs)) for log in logs}
    assert sent == {('measurements', 'n')}
    features = saved_model_lib.read_manifest(result.path)['features']
    assert features[0]['name'] == 'x' and features[0]['input_key'] == 'measurements'

  def test_parsing_receiver_keeps_classify_and_regress(self, trained_toy, tmp_path):
    _, estimator = trained_toy
    result = ee.export_for_serving(estimator, str(tmp_path / 'parsing'), parsing_receiver_fn,
                                   samples=toy.SAMPLES)
    assert result.signatures['classify'] == 'tensorflow/serving/classify'
    assert result.signatures['regress'] == 'tensorflow/serving/regress'
    assert result.removed_signatures == ()
    expected = _estimator_outputs(estimator, result.checkpoint_path, toy.SAMPLES)
    examples = SPEC.to_examples(toy.SAMPLES)
    with ee.Predictor.from_saved_model(result.path, 'predict') as predictor:
      got = predictor({'examples': examples})
    np.testing.assert_allclose(got['probabilities'], expected['probabilities'], rtol=1e-5)

  def test_custom_string_input_fed_by_alias(self, predict_only, tmp_path):
    model, estimator = predict_only
    lines = [b'1,2,3,1', b'-1,-2,0.5,2']  # toy.SAMPLES as CSV
    result = model.export_for_serving(estimator, str(tmp_path / 'csv'), csv_receiver_fn,
                                      samples={'csv': lines})
    logs = warmup_lib.read_warmup_requests(result.path)
    sent = tf.make_ndarray(logs[0].predict_log.request.inputs['csv'])
    assert sent.tolist() == [lines[0]]
    expected = _estimator_outputs(estimator, result.checkpoint_path, toy.SAMPLES)
    with ee.Predictor.from_saved_model(result.path) as predictor:
      got = predictor({'csv': np.array(lines, dtype=object)})
    np.testing.assert_allclose(got['probabilities'], expected['probabilities'], rtol=1e-5)

  def test_custom_input_without_samples_gets_zeros(self, predict_only, tmp_path):
    model, estimator = predict_only

    def scaled():
      tenths = tf.compat.v1.placeholder(tf.float32, [None, 3], name='tenths')
      n = tf.compat.v1.placeholder(tf.int32, [None], name='n')
      return ServingInputReceiver({'x': tenths / 10.0, 'n': n}, {'tenths': tenths, 'n': n})

    result = model.export_for_serving(estimator, str(tmp_path / 'scaled'), scaled)
    assert result.validated and result.warmup_records == 2
    logs = warmup_lib.read_warmup_requests(result.path)
    tenths = tf.make_ndarray(logs[0].predict_log.request.inputs['tenths'])
    assert tenths.shape == (1, 3) and not tenths.any()

  def test_mismatch_refused_before_anything_is_written(self, trained_toy, tmp_path):
    model, estimator = trained_toy
    base = tmp_path / 'refused'
    with pytest.raises(ReceiverError, match="produces 'n' as int64"):
      model.export_for_serving(estimator, str(base), parsing_receiver_fn)
    assert not base.exists()

  def test_classify_without_examples_is_named(self, trained_toy, tmp_path):
    model, estimator = trained_toy  # ToyClassifier has Classify and Regress heads.
    with pytest.raises(SignatureError, match="classify output 'classify' would be silently "
                       "dropped.*'primary': \\['measurements', 'n'\\]"):
      model.export_for_serving(estimator, str(tmp_path / 'dropped'), renamed_receiver_fn)
    assert saved_model_lib.numeric_versions(str(tmp_path / 'dropped')) == []


# ----- examples/custom_receiver_export.py -----

def test_example_run(tmp_path):
  result = custom_receiver_export.run(str(tmp_path), train_steps=60)
  assert result['adapted'].kind == 'raw'
  assert result['adapted'].feature_spec['predictor_inputs'].input_key == 'images'
  assert result['inputs']['handwritten'] == {'predict': ['images'], 'serving_default': ['images']}
  assert result['inputs']['declared']['serving_default'] == ['images']
  assert result['inputs']['declared']['examples:serving_default'] == ['examples']
  for name in ('handwritten', 'declared'):
    np.testing.assert_allclose(result['rest'][name], result['estimator'], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result['predictor'][name], result['estimator'], rtol=1e-5,
                               atol=1e-6)
  assert result['accuracy'] >= 5 / 6  # Six clear images; chance is 1/2.


def test_example_as_a_program(tmp_path):
  proc = subprocess.run(
      [sys.executable, '-m', 'examples.custom_receiver_export', f'--output_dir={tmp_path}',
       '--train_steps=40'], cwd=REPO, capture_output=True, text=True, timeout=300,
      env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == 0, proc.stderr[-3000:]
  out = proc.stdout
  assert ("[2/4] hand-written receiver: AdaptedReceiverFn(images_receiver_fn, kind='raw', "
          "inputs=['images']); feeds 'predictor_inputs' from 'images'") in out
  for name in ('handwritten', 'declared'):
    assert (f'POST /v1/models/{name}:predict {{"inputs": {{"images": [6 x 8 x 8]}}}} -> '
            "['class_ids', 'logits', 'probabilities']") in out
  assert out.count('      image ') == 6 and out.rstrip().endswith('done.')
  assert sorted(os.listdir(tmp_path / 'export')) == ['declared', 'handwritten']
