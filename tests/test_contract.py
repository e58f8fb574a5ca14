"""Tests for estimator_export.contract against the real saved_model_cli.

`show()` is compared with the output of TensorFlow's own `saved_model_cli show`
code, run in one subprocess (TF is imported once, then `show()` of
tensorflow/python/tools/saved_model_cli.py runs per request with its absl flags
set), next to one run of the installed `saved_model_cli` executable that checks
the driver prints the same as the real command. The models are the TF Serving
test fixtures in <repo>/../shared (skipped when absent) and SavedModels
generated here: a TF1 graph-mode one with several MetaGraphDefs and signatures
(like an Estimator export), an evolved variant of it (for diff), a .pbtxt copy
and a TF2 one whose functions cover the "Concrete Functions" section.
"""
import ast
import copy
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from typing import Any, Dict, List, Tuple

from google.protobuf import text_format
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2

from estimator_export import contract as contract_lib
from estimator_export.errors import ContractError

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_TESTDATA = os.path.join(os.path.dirname(_REPO), 'shared', 'fixtures', 'tf_serving_testdata')
_SKIP_REASON = f'TF Serving fixtures not found at {_TESTDATA} (../shared beside the checkout)'
_FIXTURES = {
    'half_plus_two': 'saved_model_half_plus_two_cpu/00000123',
    'half_plus_three': 'saved_model_half_plus_three/00000123',
    'half_plus_two_tf2': 'saved_model_half_plus_two_tf2_cpu/00000123',
    'matrix_half_plus_two': 'matrix_half_plus_two/1',
}
_SAVED_MODEL_CLI = shutil.which('saved_model_cli', path=os.path.dirname(sys.executable)) or \
    shutil.which('saved_model_cli')
_EXECUTABLE_CASE = ('generated_tf1', {'show_all': True})

# Runs TF's saved_model_cli `show` once per request, in one process.
_CLI_DRIVER = """
import contextlib, io, json, sys, traceback
from absl import flags
from tensorflow.python.tools import saved_model_cli
with open(sys.argv[1]) as f:
  requests = json.load(f)
results = []
for argv in requests:
  flags.FLAGS.unparse_flags()
  flags.FLAGS(['saved_model_cli'] + argv)
  buffer = io.StringIO()
  try:
    with contextlib.redirect_stdout(buffer):
      saved_model_cli.show()
  except Exception:  # pylint: disable=broad-except
    buffer.write('DRIVER ERROR\\n' + traceback.format_exc())
  results.append(buffer.getvalue())
with open(sys.argv[2], 'w') as f:
  json.dump(results, f)
"""

_CLI_CASES = [
    ('half_plus_two', {}),
    ('half_plus_two', {'tag_set': 'serve'}),
    ('half_plus_two', {'tag_set': 'serve', 'signature_def': 'serving_default'}),
    ('half_plus_two', {'tag_set': 'serve', 'signature_def': 'classify_x_to_y'}),
    ('half_plus_two', {'show_all': True}),
    ('half_plus_three', {}),
    ('half_plus_three', {'tag_set': 'serve'}),
    ('half_plus_three', {'tag_set': 'serve', 'signature_def': 'tensorflow/serving/regress'}),
    ('half_plus_three', {'show_all': True}),
    ('half_plus_two_tf2', {'tag_set': 'serve'}),
    ('half_plus_two_tf2', {'tag_set': 'serve', 'signature_def': '__saved_model_init_op'}),
    ('half_plus_two_tf2', {'show_all': True}),
    ('matrix_half_plus_two', {'show_all': True}),
    ('generated_tf1', {}),
    ('generated_tf1', {'tag_set': 'serve'}),
    ('generated_tf1', {'tag_set': 'gpu,serve'}),
    ('generated_tf1', {'tag_set': 'serve,gpu'}),
    ('generated_tf1', {'tag_set': 'eval'}),
    ('generated_tf1', {'tag_set': 'serve', 'signature_def': 'serving_default'}),
    ('generated_tf1', {'tag_set': 'serve', 'signature_def': 'classify'}),
    ('generated_tf1', {'tag_set': 'serve', 'signature_def': 'regress'}),
    ('generated_tf1', {'tag_set': 'serve', 'signature_def': 'sparse_and_ragged'}),
    ('generated_tf1', {'signature_def': 'serving_default'}),  # ignored without a tag-set
    ('generated_tf1', {'show_all': True}),
    ('generated_tf1', {'show_all': True, 'tag_set': 'eval'}),  # --all wins
    ('generated_tf1_evolved', {'show_all': True}),
    ('generated_tf1_pbtxt', {}),
    ('generated_tf1_pbtxt', {'show_all': True}),
    ('generated_tf2', {'tag_set': 'serve', 'signature_def': 'serving_default'}),
    ('generated_tf2', {'show_all': True}),
]


def _case_id(name: str, kwargs: Dict[str, Any]) -> str:
  parts = [name]
  if kwargs.get('show_all'):
    parts.append('all')
  parts.extend(kwargs.get(key) for key in ('tag_set', 'signature_def') if kwargs.get(key))
  return '-'.join(parts) if len(parts) > 1 else f'{name}-tag_sets'


# ----------------------------------------------------------------------------
# SavedModels generated for the tests.
# ----------------------------------------------------------------------------


def _build_tf1_model(export_dir: str, evolved: bool = False) -> str:
  """An Estimator-style (graph mode, Builder) SavedModel with three MetaGraphDefs.

  The base model has tag-sets serve, serve+gpu and eval, and signatures
  serving_default (predict: string, float and unknown-rank int64 inputs),
  classify, regress and sparse_and_ragged. The evolved one changes inputs,
  outputs, signatures and tag-sets in the ways test_diff_of_real_exports
  expects.

  Args:
    export_dir: where to write; must not exist.
    evolved: build the changed variant.

  Returns:
    export_dir.
  """
  v1 = tf.compat.v1
  utils = v1.saved_model.signature_def_utils
  info = v1.saved_model.utils.build_tensor_info
  graph = tf.Graph()
  with graph.as_default(), v1.Session(graph=graph) as sess:
    text = v1.placeholder(tf.string, [None], name='text')
    x = v1.placeholder(tf.float32, [None, None] if evolved else [None, 3], name='x')
    if evolved:
      anything = v1.placeholder(tf.int32, [None], name='anything')
    else:
      anything = v1.placeholder(tf.int64, None, name='anything')
    examples = v1.placeholder(tf.string, None, name='tf_example')
    sparse = v1.sparse_placeholder(tf.float32, [None, 5], name='sparse')
    ragged = v1.ragged.placeholder(tf.int32, 1, [None], name='ragged')
    weight = tf.Variable(2.0, name='weight')
    count = tf.cast(tf.size(text), tf.float32)
    if evolved:
      score = tf.identity(tf.reduce_sum(x, 1, keepdims=True) * weight + count, name='score_v2')
    else:
      score = tf.identity(tf.matmul(x, tf.ones([3, 1])) * weight + count, name='score')
    inputs = {'text': text, 'x': x, 'anything': anything}
    outputs = {'score': score}
    if evolved:
      inputs['extra'] = v1.placeholder(tf.float32, [None], name='extra')
      outputs['probability'] = tf.sigmoid(score, name='probability')
    else:
      outputs['classes'] = tf.strings.as_string(anything, name='classes')
    predict = utils.predict_signature_def(inputs, outputs)
    signatures = {
        'serving_default': predict,
        'regress': utils.regression_signature_def(examples, score),
        'sparse_and_ragged': utils.build_signature_def(
            inputs={'sparse': info(sparse), 'ragged': info(ragged)},
            outputs={'total': info(tf.identity(tf.sparse.reduce_sum(sparse, 1), name='total'))},
            method_name='tensorflow/serving/predict'),
    }
    if evolved:
      signatures['extra_predict'] = utils.predict_signature_def({'x': x}, {'score': score})
    else:
      signatures['classify'] = utils.classification_signature_def(
          examples, tf.constant([['no', 'yes']], name='class_names'),
          tf.constant([[0.25, 0.75]], name='class_scores'))
    sess.run(v1.global_variables_initializer())
    builder = v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(sess, ['serve'], signature_def_map=signatures)
    builder.add_meta_graph(['serve', 'gpu'], signature_def_map={'serving_default': predict})
    builder.add_meta_graph(['train'] if evolved else ['eval'])
    builder.save()
  return export_dir


class _Tf2Module(tf.Module):
  """Functions that exercise every argument kind of the Concrete Functions section."""

  def __init__(self):
    super().__init__()
    self.scale = tf.Variable(2.0)

  @tf.function(input_signature=[tf.TensorSpec([None, 1], tf.float32, name='x')])
  def predict(self, x):
    return {'y': x * self.scale}

  @tf.function
  def poly(self, x, training=False):
    return x if training else x + x

  @tf.function
  def nested(self, inputs, *, scale):
    return inputs['a'] * scale + tf.reduce_sum(inputs['b'])

  @tf.function
  def pair(self, xs):
    return xs[0] + xs[1]

  @tf.function(input_signature=[tf.RaggedTensorSpec([None, None], tf.int32)])
  def ragged(self, values):
    return values.flat_values

  @tf.function
  def untraced(self, x):
    return x


def _build_tf2_model(export_dir: str) -> str:
  """A TF2 SavedModel: polymorphic, nested, keyword, ragged, bare and untraced functions."""
  module = _Tf2Module()
  module.poly.get_concrete_function(tf.TensorSpec([None], tf.float32), training=True)
  module.poly.get_concrete_function(tf.TensorSpec([2], tf.int32, name='xi'))
  module.nested.get_concrete_function(
      {'a': tf.TensorSpec([None], tf.float32, name='a'), 'b': tf.TensorSpec([3], tf.float32)},
      scale=tf.TensorSpec([], tf.float32))
  module.pair.get_concrete_function([tf.TensorSpec([None], tf.float32)] * 2)
  module.bare = tf.function(lambda a, b: a + b).get_concrete_function(
      tf.TensorSpec([], tf.float32, name='a'), tf.TensorSpec([], tf.float32, name='b'))
  tf.saved_model.save(module, export_dir, signatures={'serving_default': module.predict})
  return export_dir


def _write_pbtxt_copy(source_dir: str, export_dir: str) -> str:
  """The same SavedModel, as saved_model.pbtxt only."""
  saved_model = saved_model_pb2.SavedModel()
  with open(os.path.join(source_dir, 'saved_model.pb'), 'rb') as f:
    saved_model.ParseFromString(f.read())
  os.makedirs(export_dir)
  with open(os.path.join(export_dir, 'saved_model.pbtxt'), 'w') as f:
    f.write(text_format.MessageToString(saved_model))
  return export_dir


@pytest.fixture(scope='session')
def models(tmp_path_factory) -> Dict[str, str]:
  """{name: SavedModel directory}; TF Serving fixtures only when present."""
  root = tmp_path_factory.mktemp('inspect_models')
  paths = {name: os.path.join(_TESTDATA, rel) for name, rel in _FIXTURES.items()
           if os.path.isdir(os.path.join(_TESTDATA, rel))}
  paths['generated_tf1'] = _build_tf1_model(str(root / 'tf1' / '1'))
  paths['generated_tf1_evolved'] = _build_tf1_model(str(root / 'tf1' / '2'), evolved=True)
  paths['generated_tf1_pbtxt'] = _write_pbtxt_copy(paths['generated_tf1'],
                                                   str(root / 'tf1_pbtxt' / '1'))
  paths['generated_tf2'] = _build_tf2_model(str(root / 'tf2' / '1'))
  return paths


def _cli_argv(saved_model_dir: str, kwargs: Dict[str, Any]) -> List[str]:
  argv = [f'--dir={saved_model_dir}']
  if kwargs.get('show_all'):
    argv.append('--all')
  argv.extend(f'--{key}={kwargs[key]}' for key in ('tag_set', 'signature_def') if key in kwargs)
  return argv


@pytest.fixture(scope='session')
def cli_output(models, tmp_path_factory) -> Dict[str, str]:
  """{case id: saved_model_cli stdout}, plus 'executable' for _EXECUTABLE_CASE."""
  cases = [(name, kwargs) for name, kwargs in _CLI_CASES if name in models]
  work = tmp_path_factory.mktemp('cli')
  requests, results = str(work / 'requests.json'), str(work / 'results.json')
  with open(requests, 'w') as f:
    json.dump([_cli_argv(models[name], kwargs) for name, kwargs in cases], f)
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  executable = None
  if _SAVED_MODEL_CLI:  # Runs while the driver runs.
    name, kwargs = _EXECUTABLE_CASE
    executable = subprocess.Popen(
        [_SAVED_MODEL_CLI, 'show'] + _cli_argv(models[name], kwargs), env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
  driver = subprocess.run([sys.executable, '-c', _CLI_DRIVER, requests, results], env=env,
                          text=True, capture_output=True, timeout=300, check=False)
  if driver.returncode:
    pytest.fail(f'saved_model_cli driver failed:\n{driver.stderr[-3000:]}')
  with open(results) as f:
    outputs = dict(zip((_case_id(*case) for case in cases), json.load(f)))
  outputs['executable'] = executable.communicate(timeout=300)[0] if executable else None
  return outputs


_OPS_LINE = re.compile(r'^(The MetaGraph with tag set .* contains the following ops: )(.*)$',
                       re.MULTILINE)


def _sorted_ops(text: str) -> str:
  """saved_model_cli prints the ops as a Python set (random order): sort them."""

  def sort_set(match):
    ops = set() if match.group(2) == 'set()' else ast.literal_eval(match.group(2))
    rendered = '{' + ', '.join(repr(op) for op in sorted(ops)) + '}' if ops else 'set()'
    return match.group(1) + rendered

  return _OPS_LINE.sub(sort_set, text)


# ----------------------------------------------------------------------------
# show()
# ----------------------------------------------------------------------------


@pytest.mark.parametrize('name, kwargs', _CLI_CASES, ids=[_case_id(*c) for c in _CLI_CASES])
def test_show_matches_saved_model_cli(models, cli_output, name, kwargs):
  if name not in models:
    pytest.skip(_SKIP_REASON)
  expected = cli_output[_case_id(name, kwargs)]
  assert 'DRIVER ERROR' not in expected, expected
  assert contract_lib.show(models[name], **kwargs) == _sorted_ops(expected)


def test_driver_prints_what_the_saved_model_cli_executable_prints(cli_output):
  executable = cli_output['executable']
  if executable is None:
    pytest.skip('no saved_model_cli executable beside the Python interpreter or on PATH')
  assert 'signature_def[' in executable
  assert _sorted_ops(executable) == _sorted_ops(cli_output[_case_id(*_EXECUTABLE_CASE)])


def test_show_all_covers_every_feature_of_the_format(models):
  text = contract_lib.show(models['generated_tf1'], show_all=True)
  assert text.startswith("\nMetaGraphDef with tag-set: 'eval' contains the following")
  assert "MetaGraphDef with tag-set: 'serve, gpu' contains" in text
  assert 'shape: unknown_rank' in text
  assert "The MetaGraph with tag set ['serve', 'gpu'] contains the following ops: {" in text
  assert text.endswith('\n')
  tf2_text = contract_lib.show(models['generated_tf2'], show_all=True)
  assert "\nConcrete Functions:\n  Function Name: 'bare'\n" in tf2_text
  assert "Function Name: 'untraced'\n" in tf2_text


def test_show_ops_line_is_sorted(models):
  text = contract_lib.show(models['generated_tf1'], show_all=True)
  for match in _OPS_LINE.finditer(text):
    ops = list(ast.literal_eval(match.group(2))) if match.group(2) != 'set()' else []
    assert match.group(2) == ('{' + ', '.join(repr(op) for op in sorted(ops)) + '}'
                              if ops else 'set()')


def test_show_accepts_a_tag_sequence_in_any_order(models):
  path = models['generated_tf1']
  expected = contract_lib.show(path, tag_set='serve,gpu')
  assert contract_lib.show(path, tag_set=['gpu', 'serve']) == expected
  assert contract_lib.show(path, tag_set=' gpu , serve ') == expected


# ----------------------------------------------------------------------------
# contract()
# ----------------------------------------------------------------------------


def _dense(dtype: str, shape, name: str) -> Dict[str, Any]:
  return {'dtype': dtype, 'encoding': 'dense', 'name': name, 'shape': shape}


def test_contract_of_generated_model(models):
  contract = contract_lib.contract(models['generated_tf1'])
  assert contract['contract_version'] == 1
  assert contract['tag_sets'] == [['eval'], ['gpu', 'serve'], ['serve']]
  assert list(contract['signatures']) == ['eval', 'gpu,serve', 'serve']
  assert contract['signatures']['eval'] == {}
  serve = contract['signatures']['serve']
  assert list(serve) == ['classify', 'regress', 'serving_default', 'sparse_and_ragged']
  assert serve['serving_default'] == {
      'inputs': {
          'anything': _dense('DT_INT64', None, 'anything:0'),
          'text': _dense('DT_STRING', [-1], 'text:0'),
          'x': _dense('DT_FLOAT', [-1, 3], 'x:0'),
      },
      'method_name': 'tensorflow/serving/predict',
      'outputs': {
          'classes': _dense('DT_STRING', None, 'classes:0'),
          'score': _dense('DT_FLOAT', [-1, 1], 'score:0'),
      },
  }
  assert serve['classify']['method_name'] == 'tensorflow/serving/classify'
  assert serve['classify']['inputs'] == {'inputs': _dense('DT_STRING', None, 'tf_example:0')}
  composite = serve['sparse_and_ragged']['inputs']
  assert composite['sparse'] == {'dtype': 'DT_FLOAT', 'encoding': 'sparse',
                                 'name': 'sparse/values:0', 'shape': [-1, 5]}
  assert composite['ragged'] == {'dtype': 'DT_INVALID', 'encoding': 'composite',
                                 'name': None, 'shape': None}
  assert contract['signatures']['gpu,serve']['serving_default'] == serve['serving_default']


def test_contract_is_json_and_sorted(models):
  for name, path in sorted(models.items()):
    contract = contract_lib.contract(path)
    text = json.dumps(contract)
    assert json.loads(text) == contract, name
    assert text == json.dumps(contract, sort_keys=True), name


def test_contract_leaves_out_tf2_internal_signature(models):
  contract = contract_lib.contract(models['generated_tf2'])
  assert list(contract['signatures']['serve']) == ['serving_default']
  assert contract['signatures']['serve']['serving_default']['inputs']['x']['shape'] == [-1, 1]


def test_contract_of_tf_serving_fixture(models):
  if 'half_plus_two' not in models:
    pytest.skip(_SKIP_REASON)
  serve = contract_lib.contract(models['half_plus_two'])['signatures']['serve']
  assert sorted(serve) == ['classify_x_to_y', 'regress_x2_to_y3', 'regress_x_to_y',
                           'regress_x_to_y2', 'serving_default']
  assert serve['classify_x_to_y'] == {
      'inputs': {'inputs': _dense('DT_STRING', None, 'tf_example:0')},
      'method_name': 'tensorflow/serving/classify',
      'outputs': {'scores': _dense('DT_FLOAT', [-1, 1], 'y:0')},
  }


def test_contract_reads_pbtxt(models):
  assert (contract_lib.contract(models['generated_tf1_pbtxt'])
          == contract_lib.contract(models['generated_tf1']))


# ----------------------------------------------------------------------------
# diff_contracts(), diff(), format_changes()
# ----------------------------------------------------------------------------

_SIG = 'serve/serving_default'


def _base_contract() -> Dict[str, Any]:
  predict = {
      'inputs': {'text': _dense('DT_STRING', None, 'text:0'),
                 'x': _dense('DT_FLOAT', [-1, 3], 'x:0')},
      'method_name': 'tensorflow/serving/predict',
      'outputs': {'y': _dense('DT_FLOAT', [-1, 1], 'y:0')},
  }
  classify = {
      'inputs': {'inputs': _dense('DT_STRING', None, 'tf_example:0')},
      'method_name': 'tensorflow/serving/classify',
      'outputs': {'scores': _dense('DT_FLOAT', [-1, 2], 'scores:0')},
  }
  return {'contract_version': 1,
          'signatures': {'serve': {'classify': classify, 'serving_default': predict}},
          'tag_sets': [['serve']]}


def _predict(contract):
  return contract['signatures']['serve']['serving_default']


def _set(where, key, attr, value):
  """A mutation setting serving_default's <where>[key][attr] = value."""

  def mutate(contract):
    _predict(contract)[where][key][attr] = value

  return mutate


def _remove_tag_set(c):
  del c['signatures']['serve']
  c['tag_sets'] = []


def _add_tag_set(c):
  c['signatures']['gpu,serve'] = {}
  c['tag_sets'].insert(0, ['gpu', 'serve'])


_B, _C = 'breaking', 'compatible'
_DIFF_CASES = [
    ('tag_set_removed', _remove_tag_set, [(_B, 'serve', 'tag-set removed')]),
    ('tag_set_added', _add_tag_set, [(_C, 'gpu,serve', 'tag-set added')]),
    ('signature_removed', lambda c: c['signatures']['serve'].pop('classify'),
     [(_B, 'serve/classify', 'signature removed')]),
    ('signature_added',
     lambda c: c['signatures']['serve'].update(extra=copy.deepcopy(_predict(c))),
     [(_C, 'serve/extra', 'signature added')]),
    ('method_name_changed',
     lambda c: _predict(c).update(method_name='tensorflow/serving/regress'),
     [(_B, _SIG, 'method name tensorflow/serving/predict -> tensorflow/serving/regress')]),
    ('input_removed', lambda c: _predict(c)['inputs'].pop('text'),
     [(_B, f'{_SIG}/inputs/text', 'input removed')]),
    ('input_added',
     lambda c: _predict(c)['inputs'].update(age=_dense('DT_INT64', [-1], 'age:0')),
     [(_B, f'{_SIG}/inputs/age', 'input added (existing clients do not send it)')]),
    ('input_dtype_changed', _set('inputs', 'x', 'dtype', 'DT_INT64'),
     [(_B, f'{_SIG}/inputs/x', 'dtype DT_FLOAT -> DT_INT64')]),
    ('input_encoding_changed', _set('inputs', 'x', 'encoding', 'sparse'),
     [(_B, f'{_SIG}/inputs/x', 'encoding dense -> sparse')]),
    ('input_rank_changed', _set('inputs', 'x', 'shape', [-1, 3, 1]),
     [(_B, f'{_SIG}/inputs/x', 'shape (-1, 3) -> (-1, 3, 1) (changed)')]),
    ('input_dim_became_fixed', _set('inputs', 'x', 'shape', [8, 3]),
     [(_B, f'{_SIG}/inputs/x', 'shape (-1, 3) -> (8, 3) (narrowed)')]),
    ('input_fixed_dim_changed', _set('inputs', 'x', 'shape', [-1, 4]),
     [(_B, f'{_SIG}/inputs/x', 'shape (-1, 3) -> (-1, 4) (changed)')]),
    ('input_dims_both_ways', _set('inputs', 'x', 'shape', [5, -1]),
     [(_B, f'{_SIG}/inputs/x', 'shape (-1, 3) -> (5, -1) (changed)')]),
    ('input_rank_became_known', _set('inputs', 'text', 'shape', [-1]),
     [(_B, f'{_SIG}/inputs/text', 'shape unknown_rank -> (-1) (narrowed)')]),
    ('input_dim_became_unknown', _set('inputs', 'x', 'shape', [-1, -1]),
     [(_C, f'{_SIG}/inputs/x', 'shape (-1, 3) -> (-1, -1) (widened)')]),
    ('input_rank_became_unknown', _set('inputs', 'x', 'shape', None),
     [(_C, f'{_SIG}/inputs/x', 'shape (-1, 3) -> unknown_rank (widened)')]),
    ('input_tensor_renamed', _set('inputs', 'x', 'name', 'x_1:0'),
     [(_C, f'{_SIG}/inputs/x', 'tensor name x:0 -> x_1:0')]),
    ('output_removed', lambda c: _predict(c)['outputs'].pop('y'),
     [(_B, f'{_SIG}/outputs/y', 'output removed')]),
    ('output_added',
     lambda c: _predict(c)['outputs'].update(z=_dense('DT_FLOAT', [-1], 'z:0')),
     [(_C, f'{_SIG}/outputs/z', 'output added')]),
    ('output_dtype_changed', _set('outputs', 'y', 'dtype', 'DT_DOUBLE'),
     [(_B, f'{_SIG}/outputs/y', 'dtype DT_FLOAT -> DT_DOUBLE')]),
    ('output_dim_became_fixed', _set('outputs', 'y', 'shape', [8, 1]),
     [(_C, f'{_SIG}/outputs/y', 'shape (-1, 1) -> (8, 1) (narrowed)')]),
    ('output_dim_became_unknown', _set('outputs', 'y', 'shape', [-1, -1]),
     [(_B, f'{_SIG}/outputs/y', 'shape (-1, 1) -> (-1, -1) (widened)')]),
    ('output_rank_became_unknown', _set('outputs', 'y', 'shape', None),
     [(_B, f'{_SIG}/outputs/y', 'shape (-1, 1) -> unknown_rank (widened)')]),
    ('output_tensor_renamed', _set('outputs', 'y', 'name', 'add:0'),
     [(_C, f'{_SIG}/outputs/y', 'tensor name y:0 -> add:0')]),
    ('several_changes_to_one_tensor',
     lambda c: _predict(c)['inputs'].update(x=_dense('DT_INT32', [-1, 3, 2], 'ids:0')),
     [(_B, f'{_SIG}/inputs/x', 'dtype DT_FLOAT -> DT_INT32'),
      (_B, f'{_SIG}/inputs/x', 'shape (-1, 3) -> (-1, 3, 2) (changed)'),
      (_C, f'{_SIG}/inputs/x', 'tensor name x:0 -> ids:0')]),
]


def _as_tuples(changes) -> List[Tuple[str, str, str]]:
  return [(c.kind, c.path, c.description) for c in changes]


@pytest.mark.parametrize('mutate, expected', [c[1:] for c in _DIFF_CASES],
                         ids=[c[0] for c in _DIFF_CASES])
def test_diff_contracts(mutate, expected):
  old = _base_contract()
  new = copy.deepcopy(old)
  mutate(new)
  assert _as_tuples(contract_lib.diff_contracts(old, new)) == expected
  assert old == _base_contract()  # inputs are not modified


def test_diff_contracts_without_changes():
  assert contract_lib.diff_contracts(_base_contract(), _base_contract()) == []


def test_diff_contracts_survives_json_round_trip(models):
  contract = contract_lib.contract(models['generated_tf1'])
  assert contract_lib.diff_contracts(json.loads(json.dumps(contract)), contract) == []


def test_diff_contracts_rejects_non_contracts():
  with pytest.raises(ContractError, match=r"the new contract is not a contract dict: got "
                                          r"'list'\. Fix: pass what contract"):
    contract_lib.diff_contracts(_base_contract(), [])
  with pytest.raises(ContractError, match=r'the old contract is not a contract dict'):
    contract_lib.diff_contracts({'tag_sets': []}, _base_contract())


def test_diff_of_real_exports(models):
  changes = contract_lib.diff(models['generated_tf1'], models['generated_tf1_evolved'])
  per_predict = [
      (_B, 'inputs/anything', 'dtype DT_INT64 -> DT_INT32'),
      (_B, 'inputs/anything', 'shape unknown_rank -> (-1) (narrowed)'),
      (_B, 'inputs/extra', 'input added (existing clients do not send it)'),
      (_C, 'inputs/x', 'shape (-1, 3) -> (-1, -1) (widened)'),
      (_B, 'outputs/classes', 'output removed'),
      (_C, 'outputs/probability', 'output added'),
      (_C, 'outputs/score', 'tensor name score:0 -> score_v2:0'),
  ]
  expected = [(_B, 'eval', 'tag-set removed')]
  expected += [(k, f'gpu,serve/serving_default/{p}', d) for k, p, d in per_predict]
  expected += [(_B, 'serve/classify', 'signature removed'),
               (_C, 'serve/extra_predict', 'signature added'),
               (_C, 'serve/regress/outputs/outputs', 'tensor name score:0 -> score_v2:0')]
  expected += [(k, f'serve/serving_default/{p}', d) for k, p, d in per_predict]
  expected += [(_C, 'train', 'tag-set added')]
  assert _as_tuples(changes) == expected
  assert contract_lib.diff(models['generated_tf1'], models['generated_tf1_pbtxt']) == []


def test_format_changes():
  changes = [
      contract_lib.Change('breaking', f'{_SIG}/inputs/x', 'dtype DT_FLOAT -> DT_INT64'),
      contract_lib.Change('compatible', f'{_SIG}/outputs/z', 'output added'),
  ]
  assert contract_lib.format_changes(changes) == (
      'BREAKING  serve/serving_default/inputs/x: dtype DT_FLOAT -> DT_INT64\n'
      'compatible serve/serving_default/outputs/z: output added')
  assert contract_lib.format_changes([]) == 'no changes'


def test_change_is_frozen_and_json_friendly():
  change = contract_lib.Change('breaking', 'serve', 'tag-set removed')
  assert change.breaking
  assert not contract_lib.Change('compatible', 'serve', 'tag-set added').breaking
  with pytest.raises(dataclasses.FrozenInstanceError):
    change.kind = 'compatible'
  assert json.loads(json.dumps(dataclasses.asdict(change))) == {
      'kind': 'breaking', 'path': 'serve', 'description': 'tag-set removed'}


# ----------------------------------------------------------------------------
# Errors
# ----------------------------------------------------------------------------


def test_model_base_directory_suggests_newest_version(tmp_path):
  for name in ('1', '9', '10', 'tmp-3'):
    (tmp_path / name).mkdir()
  (tmp_path / '12').write_text('a file, not a version directory')
  newest = re.escape(repr(str(tmp_path / '10')))
  pattern = (rf"no saved_model\.pb or saved_model\.pbtxt in it\): got "
             rf"{re.escape(repr(str(tmp_path)))}\. Fix: this is a model base directory with 3 "
             rf"numeric version\(s\); point at a version directory, e\.g\. its newest {newest}$")
  with pytest.raises(ContractError, match=pattern):
    contract_lib.show(str(tmp_path))
  with pytest.raises(ContractError, match=pattern):
    contract_lib.contract(str(tmp_path))


def test_directory_without_versions_says_to_point_at_a_version(tmp_path):
  with pytest.raises(ContractError, match=rf"no saved_model\.pb.*got "
                                          rf"{re.escape(repr(str(tmp_path)))}\. Fix: point at "
                                          r"a version directory .*e\.g\. /models/my_model/1"):
    contract_lib.show(str(tmp_path), show_all=True)


def test_missing_directory(tmp_path):
  missing = str(tmp_path / 'nope')
  with pytest.raises(ContractError, match=rf"does not exist: got {re.escape(repr(missing))}"
                                          r"\. Fix: point at an existing version directory"):
    contract_lib.contract(missing)


def test_file_instead_of_directory(models):
  pb = os.path.join(models['generated_tf1'], 'saved_model.pb')
  parent = re.escape(repr(models['generated_tf1']))
  with pytest.raises(ContractError, match=rf"not a file: got {re.escape(repr(pb))}\. Fix: "
                                          rf"pass the directory that holds saved_model\.pb: "
                                          rf"{parent}"):
    contract_lib.show(pb)


def test_corrupt_saved_model(tmp_path):
  (tmp_path / 'saved_model.pb').write_bytes(b'\xff\xff\xff not a proto')
  with pytest.raises(ContractError, match=r'cannot parse the SavedModel file .*Fix: re-export'):
    contract_lib.contract(str(tmp_path))


def test_unknown_tag_set_lists_available(models):
  path = models['generated_tf1']
  with pytest.raises(ContractError, match=rf"no MetaGraphDef with this tag-set in "
                                          rf"{re.escape(repr(path))}: got 'serv'\. Fix: use one "
                                          r"of the tag-sets: 'eval', 'gpu,serve', 'serve'\. "
                                          r"Did you mean 'serve'\?$"):
    contract_lib.show(path, tag_set='serv')
  with pytest.raises(ContractError, match=r"got 'gpu'\. Fix: use one of the tag-sets: 'eval', "
                                          r"'gpu,serve', 'serve'\."):
    contract_lib.show(path, tag_set=['gpu'], signature_def='serving_default')


def test_unknown_signature_lists_available(models):
  path = models['generated_tf1']
  with pytest.raises(ContractError, match=r"no SignatureDef with this key in tag-set 'gpu,serve' "
                                          rf"of {re.escape(repr(path))}: got 'serving_defualt'\. "
                                          r"Fix: use one of the signatures: 'serving_default'\. "
                                          r"Did you mean 'serving_default'\?$"):
    contract_lib.show(path, tag_set='serve,gpu', signature_def='serving_defualt')
  with pytest.raises(ContractError, match=r"got 'xyz'\. Fix: use one of the signatures: "
                                          r"'classify', 'regress', 'serving_default', "
                                          r"'sparse_and_ragged'\.$"):
    contract_lib.show(path, tag_set='serve', signature_def='xyz')
