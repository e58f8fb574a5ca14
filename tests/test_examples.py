"""The workflow examples, run for real with tiny sizes, and the README's table of them.

savedmodel_basics (session-trained, saved two ways, loaded every way),
keypoints_export (plain model_fn, raw image receiver) and canned_classifier
(DNNClassifier with Predict, Classify and Regress signatures).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import _saved_model as saved_model_lib
from estimator_export import contract as contract_lib
from examples import canned_classifier
from examples import keypoints_export
from examples import savedmodel_basics

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PREDICT = 'tensorflow/serving/predict'
CLASSIFY = 'tensorflow/serving/classify'
REGRESS = 'tensorflow/serving/regress'


def _signatures_by_tag_set(saved_model_dir):
  """{frozenset(tags): {signature name: method name}} read from saved_model.pb."""
  proto = saved_model_lib.read_saved_model(saved_model_dir)
  return {frozenset(mg.meta_info_def.tags):
          {name: sig.method_name for name, sig in mg.signature_def.items()}
          for mg in proto.meta_graphs}


def _assert_saved_model_files(saved_model_dir):
  assert os.path.isfile(os.path.join(saved_model_dir, 'saved_model.pb'))
  assert os.path.isfile(os.path.join(saved_model_dir, 'variables', 'variables.index'))


# ----- savedmodel_basics -----

def test_savedmodel_basics_every_route_gives_the_same_answer(tmp_path):
  result = savedmodel_basics.run(str(tmp_path), steps=200)

  for key in ('simple_save_dir', 'builder_dir'):
    _assert_saved_model_files(result[key])
  assert _signatures_by_tag_set(result['simple_save_dir']) == {
      frozenset({'serve'}): {'serving_default': PREDICT}}
  assert _signatures_by_tag_set(result['builder_dir']) == {
      frozenset({'serve', 'custom_tag'}): {'predict': PREDICT}}
  contract = contract_lib.contract(result['builder_dir'])
  assert 'myInput' in str(contract) and 'myOutput' in str(contract)

  predictions = result['predictions']
  assert set(predictions) == {
      'session', 'simple_save/loader/signature', 'simple_save/loader/tensor_names',
      'builder/loader/signature', 'builder/loader/tensor_names',
      'builder/predictor/signature', 'builder/predictor/run_tensors'}
  reference = predictions['session']
  assert reference.shape == (300, 3)
  np.testing.assert_allclose(reference.sum(axis=1), 1.0, rtol=1e-5)
  for route, probabilities in predictions.items():
    np.testing.assert_allclose(probabilities, reference, rtol=1e-5, atol=1e-6,
                               err_msg=route)
  # Three blobs: chance is 1/3.
  assert result['accuracy'] > 0.85
  # {serve, custom_tag} is not found by asking for {serve}.
  assert "['serve']" in result['wrong_tags_error']


def test_savedmodel_basics_as_a_program(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run(
      [sys.executable, '-m', 'examples.savedmodel_basics', f'--output_dir={tmp_path}',
       '--steps=100'], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = proc.stdout
  for line in ('[1/4] training a softmax classifier for 100 steps',
               'step 100/100', '[2/4] saving: (a) simple_save',
               "(b) Builder with tags ['serve', 'custom_tag']",
               "builder: The given SavedModel contains the following tag-sets: "
               "'custom_tag, serve'",
               "signature 'predict' maps 'myInput' -> myInput:0, 'myOutput' -> myOutput:0",
               '[4/4] through estimator_export.Predictor:',
               "tags ['serve'] alone: ContractError"):
    assert line in out, line
  assert out.count('same as the training session') == 7
  assert 'DIFFERS' not in out
  assert out.rstrip().endswith('done.')
  assert os.path.isfile(tmp_path / 'builder' / 'saved_model.pb')


# ----- keypoints_export -----

def test_keypoints_export_trains_exports_and_serves(tmp_path, capsys):
  size = 32
  result = keypoints_export.run(str(tmp_path), image_size=size, train_steps=250,
                                eval_images=64)
  export = result['export']
  assert export.version == 250
  assert export.path == os.path.join(str(tmp_path), 'export', 'keypoints', '250')
  _assert_saved_model_files(export.path)
  assert os.path.isfile(os.path.join(export.path, 'assets.extra',
                                     'tf_serving_warmup_requests'))
  assert dict(export.signatures) == {'predict': PREDICT, 'serving_default': PREDICT}

  # The printed text is `estimator-export show --all`.
  assert result['show'] == contract_lib.show(export.path, show_all=True)
  out = capsys.readouterr().out
  assert "signature_def['serving_default']:" in out
  assert "inputs['image'] tensor_info:" in out
  assert f'shape: (-1, {size}, {size}, 3)' in out
  for key in keypoints_export.OUTPUT_KEYS:
    assert f"outputs['{key}'] tensor_info:" in out

  manifest = ee.read_manifest(export.path)
  assert manifest['features'][0]['name'] == 'image'
  assert manifest['features'][0]['shape'] == [size, size, 3]

  outputs = result['held_out']['outputs']
  assert sorted(outputs) == sorted(keypoints_export.OUTPUT_KEYS)
  for key, value in outputs.items():
    assert value.shape == (64,), key
    assert np.all((value >= 0) & (value <= 1)), key
    # The served graph answers what estimator.predict answers.
    np.testing.assert_allclose(value, result['estimator_outputs'][key], rtol=1e-4,
                               atol=1e-5, err_msg=key)
  metrics = result['metrics']
  assert metrics['visibility_accuracy'] > 0.9  # "Always visible" scores 0.75.
  assert metrics['mean_error_px'] < 0.5 * metrics['centre_guess_error_px']


def test_keypoints_export_strips_default_attrs(tmp_path):
  result = keypoints_export.run(str(tmp_path), image_size=16, train_steps=2, eval_images=4)
  graph_def = saved_model_lib.read_saved_model(result['export'].path).meta_graphs[0].graph_def
  convs = [node for node in graph_def.node if node.op == 'Conv2D']
  assert convs
  for node in convs:
    # Defaults (dilations [1,1,1,1], data_format NHWC) are left out of the graph.
    assert 'dilations' not in node.attr and 'data_format' not in node.attr, node.name
    assert 'strides' in node.attr


# ----- canned_classifier -----

def test_canned_classifier_serves_predict_classify_and_regress(tmp_path):
  result = canned_classifier.run(str(tmp_path), train_steps=300)

  error = result['raw_primary_error']
  assert isinstance(error, ee.SignatureError)
  assert 'serving_default' in str(error)

  export = result['export']
  base = os.path.join(str(tmp_path), 'export', 'churn')
  assert ee.numeric_versions(base) == [300] and export.version == 300
  _assert_saved_model_files(export.path)
  assert dict(export.signatures) == {
      'serving_default': CLASSIFY, 'classification': CLASSIFY, 'regression': REGRESS,
      'predict': PREDICT, 'raw:predict': PREDICT}
  manifest = ee.read_manifest(export.path)
  assert manifest['label_vocabulary'] == ['stay', 'churn']
  assert manifest['metrics']['accuracy'] == pytest.approx(result['accuracy'])

  assert result['accuracy'] > result['majority_rate'] + 0.1

  outputs = result['outputs']
  assert set(outputs) == set(export.signatures)
  probabilities = outputs['predict']['probabilities']
  assert probabilities.shape == (5, 2)
  assert np.all((probabilities >= 0) & (probabilities <= 1))
  np.testing.assert_allclose(outputs['raw:predict']['probabilities'], probabilities,
                             rtol=1e-5, atol=1e-6)
  for name in ('serving_default', 'classification'):
    np.testing.assert_allclose(outputs[name]['scores'], probabilities, rtol=1e-5, atol=1e-6)
    assert outputs[name]['classes'].tolist() == [[b'stay', b'churn']] * 5
  np.testing.assert_allclose(outputs['regression']['outputs'][:, 0], probabilities[:, 1],
                             rtol=1e-5, atol=1e-6)
  predicted = [c[0] for c in outputs['predict']['classes']]
  assert predicted == [c[0] for c in outputs['raw:predict']['classes']]
  assert predicted == [b'churn' if p > 0.5 else b'stay' for p in probabilities[:, 1]]


def test_canned_classifier_example_receiver_feeds_like_raw_tensors():
  """spec.to_examples + the example receiver parse back to the raw features."""
  features, _ = canned_classifier.make_customers(3, seed=5)
  examples = canned_classifier.SPEC.to_examples(features)
  parsed = canned_classifier.SPEC.parse_examples(tf.constant(examples))
  for name, values in features.items():
    assert parsed[name].dtype == tf.as_dtype(values.dtype)
    np.testing.assert_array_equal(parsed[name].numpy(), values)


@pytest.mark.parametrize('module,args,expected', [
    ('keypoints_export', ['--image_size=32', '--train_steps=20'],
     ['[2/5] exporting', 'export: version 20 ready']),
    ('canned_classifier', ['--train_steps=30'], ['raw:predict -> ', 'SignatureError']),
])
def test_other_examples_as_programs(tmp_path, module, args, expected):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-m', f'examples.{module}', f'--output_dir={tmp_path}']
                        + args, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for text in expected:
    assert text in proc.stdout, text
  assert proc.stdout.rstrip().endswith('done.')


def test_readme_articles_table_names_examples_that_tests_run():
  """Every example in the README's "from the articles" table exists and a test runs it."""
  with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
    readme = f.read()
  table = readme.split('| workflow (from the articles) |', 1)[1].split('\n\n', 1)[0]
  names = set()
  for row in table.splitlines()[2:]:
    cell = row.split('|')[2].strip()
    if cell.startswith('`') and cell.endswith('`') and ' ' not in cell:
      names.add(cell.strip('`'))
  assert len(names) >= 10, names
  tests_dir = os.path.join(REPO, 'tests')
  sources = ''
  for name in os.listdir(tests_dir):
    if name.startswith('test_') and name.endswith('.py'):
      with open(os.path.join(tests_dir, name), encoding='utf-8') as f:
        sources += f.read()
  for name in sorted(names):
    assert os.path.exists(os.path.join(REPO, 'examples', f'{name}.py')), name
    assert (f'examples import {name}' in sources or f'examples.{name}' in sources
            or f"'{name}'" in sources), f'no test runs examples/{name}.py'
