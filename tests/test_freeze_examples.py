"""The freezing examples, run for real with tiny sizes (in-process and as programs)."""
import json
import os
import subprocess
import sys

from google.protobuf import text_format
import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export.freeze import _passes as passes_lib
from examples import freeze_inference_graph
from examples import freeze_saved_model
from examples import freeze_session_model
from examples import freeze_tagged_saved_model
from examples import freeze_write_graph

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


def test_tagged_saved_model_without_signature_frozen_from_the_cli(tmp_path):
  result = freeze_tagged_saved_model.run(str(tmp_path))
  # What the article's Builder call writes: one MetaGraph, tag my_model, no SignatureDef.
  saved_model = tf.compat.v1.saved_model.loader  # Read back independently of the library.
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta_graph = saved_model.load(session, ['my_model'], result['export_dir'])
  assert list(meta_graph.meta_info_def.tags) == ['my_model']
  assert len(meta_graph.signature_def) == 0
  assert 'has no SignatureDef' in result['by_signature_error']
  assert '--output_node_names=' in result['by_signature_error']
  manifest = result['manifest']
  assert manifest['inputs'] == {'x': {'name': 'x:0', 'dtype': 'float32', 'shape': [-1, 4]}}
  assert sorted(manifest['outputs']) == ['class_id', 'probabilities']
  assert manifest['source']['tags'] == ['my_model'] and manifest['source']['signature'] is None
  assert [s['name'] for s in manifest['optimizations']] == list(passes_lib.PASSES)
  assert 'checked on 2 sample(s)' in result['cli_output']
  np.testing.assert_allclose(result['frozen']['probabilities'],
                             result['saved']['probabilities'], rtol=1e-6, atol=1e-7)
  np.testing.assert_array_equal(result['frozen']['class_id'], result['saved']['class_id'])
  np.testing.assert_allclose(result['saved']['probabilities'].sum(axis=1), 1.0, rtol=1e-5)
  assert result['same']


def test_write_graph_pbtxt_and_checkpoint_frozen_from_the_cli(tmp_path):
  result = freeze_write_graph.run(str(tmp_path), steps=20)
  with open(result['pbtxt']) as f:  # A text GraphDef, as tf.io.write_graph(as_text=True).
    graph_def = text_format.Parse(f.read(), tf.compat.v1.GraphDef())
  assert {'x', 'output', 'hidden/kernel'} <= {n.name for n in graph_def.node}
  assert os.path.isfile(result['checkpoint'] + '.index')
  manifest = result['manifest']
  assert manifest['source']['kind'] == 'graph_def+checkpoint'
  assert manifest['source']['checkpoint'] == result['checkpoint']
  assert list(manifest['inputs']) == ['x'] and list(manifest['outputs']) == ['output']
  frozen_graph = tf.compat.v1.GraphDef()
  with open(result['graph_path'], 'rb') as f:
    frozen_graph.ParseFromString(f.read())
  assert not {n.op for n in frozen_graph.node} & {'VarHandleOp', 'VariableV2', 'RestoreV2'}
  np.testing.assert_allclose(result['frozen'], result['reference'], rtol=1e-6, atol=1e-7)
  assert result['same'] and result['frozen'].shape == (8, 1)


def test_cli_mistake_in_a_real_process_is_one_line_without_traceback(tmp_path):
  result_dir = tmp_path / 'saved'
  freeze_tagged_saved_model.save_tagged_model(str(result_dir))
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  proc = subprocess.run([sys.executable, '-m', 'estimator_export.cli', 'freeze',
                         '--input_saved_model_dir', str(result_dir),
                         '--output_node_names', 'probabilities',
                         '--output_graph', str(tmp_path / 'x.pb')],
                        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr == ("estimator-export freeze: error: the SavedModel has no MetaGraph with "
                         "this tag set: got 'serve'. Fix: pass one of its tag sets ['my_model'] "
                         "as saved_model_tags (--saved_model_tags=my_model).\n")
  assert proc.stdout == '' and not os.path.exists(tmp_path / 'x.pb')


@pytest.mark.parametrize('module,args,expected', [
    ('freeze_session_model', ['--steps=20'], ['[2/3] froze', 'same as the training session']),
    ('freeze_inference_graph', ['--steps=10'], ['[2/4] froze the training graph',
                                                'BatchNorm 2 folded into weights']),
    ('freeze_saved_model', ['--train_steps=20'], ['[2/4] froze signature serving_default',
                                                  '[4/4] frozen vs SavedModel']),
    ('freeze_tagged_saved_model', [], ['no SignatureDef', '--saved_model_tags=my_model',
                                       '[4/4] frozen.pb vs the SavedModel on 8 samples: '
                                       'same outputs']),
    ('freeze_write_graph', ['--steps=10'], ['wrote graph.pbtxt (text GraphDef)',
                                            '[3/3] frozen.pb vs the trained session on 8 '
                                            'samples: same outputs']),
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
