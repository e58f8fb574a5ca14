"""The three freezing examples, run for real with tiny sizes (in-process and as programs)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import estimator_export as ee
from examples import freeze_inference_graph
from examples import freeze_saved_model
from examples import freeze_session_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_session_model_frozen_answers_like_the_session(tmp_path):
  result = freeze_session_model.run(str(tmp_path), steps=60)
  for name in ('model.ckpt.meta', 'model.ckpt.index'):
    assert os.path.isfile(tmp_path / 'model' / name)
  np.testing.assert_allclose(result['by_import'], result['reference'], rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(result['by_alias'], result['reference'], rtol=1e-5, atol=1e-6)
  manifest = json.loads(open(result['manifest']).read())
  assert manifest['inputs']['input']['name'] == 'input:0'
  assert manifest['outputs']['output']['shape'] == [-1, 3]
  assert manifest['source']['checkpoint'] == result['checkpoint']
  nodes = {n.op for n in result['frozen'].graph_def.node}
  assert not nodes & {'VarHandleOp', 'ReadVariableOp', 'SaveV2', 'RestoreV2', 'Identity'}
  # Trained on separable blobs: the frozen model classifies them.
  assert result['reference'].max(axis=1).mean() > 0.8


def test_inference_graph_vs_training_graph(tmp_path):
  result = freeze_inference_graph.run(str(tmp_path), steps=40)
  (warning,) = result['training_warnings']
  for node in ('bn1/FusedBatchNormV3', 'bn2/FusedBatchNormV3', 'dropout'):
    assert node in warning
  assert result['training'].warnings == [warning]
  assert result['inference'].warnings == []
  ops = {n.op for n in result['inference'].graph_def.node}
  assert 'FusedBatchNormV3' not in ops and 'RandomUniform' not in ops
  assert {'FusedBatchNormV3', 'RandomUniform'} <= {
      n.op for n in result['training'].graph_def.node}
  inference_a, inference_b = result['inference_runs']
  np.testing.assert_array_equal(inference_a, inference_b)
  np.testing.assert_allclose(inference_a, result['model'], rtol=1e-4, atol=1e-5)
  # Compared as log-probabilities: the trained softmax saturates near 0 and 1.
  training_a, training_b = (np.log(p + 1e-12) for p in result['training_runs'])
  model = np.log(result['model'] + 1e-12)
  assert np.max(np.abs(training_a - training_b)) > 1e-2   # dropout differs per run
  assert np.max(np.abs(training_a - model)) > 1e-2


def test_saved_model_signature_frozen_and_estimator_direct(tmp_path):
  result = freeze_saved_model.run(str(tmp_path), train_steps=60)
  frozen = result['frozen']
  assert sorted(frozen.inputs) == ['x'] and sorted(frozen.outputs) == ['positive', 'value']
  assert frozen.source['signature'] == 'serving_default'
  assert frozen.source['step'] == 60 and result['direct'].source['step'] == 60
  assert result['half'].compression['size_ratio'] < 1.0
  assert result['differences']['frozen'] < 1e-5
  assert result['differences']['estimator'] < 1e-5
  assert 0 < result['differences']['fp16'] < 1e-2
  saved = result['saved_model_outputs']
  for name, outputs in result['frozen_outputs'].items():
    assert outputs['positive'].tolist() == (outputs['value'] > 0).astype(int).tolist(), name
  assert ee.read_frozen_manifest(os.path.join(str(tmp_path), 'frozen', 'serving_default.pb'))[
      'outputs']['value']['dtype'] == 'float32'
  assert saved['value'].shape == (6,)


@pytest.mark.parametrize('module,args,expected', [
    ('freeze_session_model', ['--steps=20'], ['[2/3] froze', 'same as the training session']),
    ('freeze_inference_graph', ['--steps=10'], ['[2/4] froze the training graph',
                                                'BatchNorm 2 folded into weights']),
    ('freeze_saved_model', ['--train_steps=20'], ['[2/4] froze signature serving_default',
                                                  '[4/4] frozen vs SavedModel']),
])
def test_examples_as_programs(tmp_path, module, args, expected):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  proc = subprocess.run([sys.executable, '-m', f'examples.{module}',
                         f'--output_dir={tmp_path / "out"}'] + args, cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 0, proc.stderr[-2000:]
  for text in expected:
    assert text in proc.stdout, text
  assert 'DIFFERS' not in proc.stdout
  assert proc.stdout.rstrip().endswith('done.')
