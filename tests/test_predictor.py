"""Tests for estimator_export.predictor against real TF1 SavedModels."""
import concurrent.futures
import os
import re

import numpy as np
import pytest
import tensorflow as tf

from estimator_export import predictor as predictor_lib
from estimator_export.errors import ContractError, ExportError, SignatureError
from estimator_export.predictor import Predictor

# The toy model: y = x @ W + B + 2 * n; ids = VOCAB lookup; classify/regress on tf.Examples.
W = np.array([[1.0], [2.0], [-0.5]], np.float32)
B = np.float32(0.25)
VOCAB = {'apple': 7, 'banana': 8, 'cherry': 9}
CLASSES = [b'neg', b'pos']


def expected_y(x, n) -> np.ndarray:
  """float32 [batch]: the toy model's score for x [batch, 3] and n [batch]."""
  x = np.asarray(x, np.float32)
  return (x @ W)[:, 0] + B + 2.0 * np.asarray(n, np.float32)


def make_example(x, n=None) -> bytes:
  """A serialized tf.Example with float feature x [3] and (optional) int64 feature n."""
  feature = {'x': tf.train.Feature(float_list=tf.train.FloatList(value=x))}
  if n is not None:
    feature['n'] = tf.train.Feature(int64_list=tf.train.Int64List(value=[n]))
  return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


def build_test_saved_model(export_dir: str) -> str:
  """Writes the toy TF1 SavedModel (tag 'serve') and returns export_dir.

  Signatures: serving_default (predict: x float [-1, 3] 'myInput:0', n int64 [-1]
  'count:0' -> y float [-1] 'myOutput:0', doubled int64 [-1]); aliased (the same
  inputs -> y and score, both 'myOutput:0'); lookup (predict:
  words string [-1] -> ids int64 [-1], a StaticHashTable initialized by main_op);
  classify and regress on serialized tf.Examples ('tf_example:0').
  Variables are assigned after initialization, so only a restore gives W and B.
  """
  with tf.Graph().as_default():
    x = tf.compat.v1.placeholder(tf.float32, [None, 3], name='myInput')
    n = tf.compat.v1.placeholder(tf.int64, [None], name='count')
    words = tf.compat.v1.placeholder(tf.string, [None], name='words')
    serialized = tf.compat.v1.placeholder(tf.string, [None], name='tf_example')
    w = tf.compat.v1.get_variable('w', shape=[3, 1], initializer=tf.zeros_initializer())
    b = tf.compat.v1.get_variable('b', shape=[], initializer=tf.zeros_initializer())

    def score(features_x, features_n):
      return tf.matmul(features_x, w)[:, 0] + b + 2.0 * tf.cast(features_n, tf.float32)

    y = tf.identity(score(x, n), name='myOutput')
    doubled = tf.identity(n * 2, name='doubled')
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(list(VOCAB), list(VOCAB.values()),
                                            key_dtype=tf.string, value_dtype=tf.int64), -1)
    ids = tf.identity(table.lookup(words), name='word_ids')
    parsed = tf.io.parse_example(serialized, {
        'x': tf.io.FixedLenFeature([3], tf.float32),
        'n': tf.io.FixedLenFeature([], tf.int64, default_value=0)})
    example_y = score(parsed['x'], parsed['n'])
    positive = tf.sigmoid(example_y)
    scores = tf.stack([1.0 - positive, positive], axis=1, name='scores')
    classes = tf.tile(tf.constant([CLASSES]), [tf.shape(example_y)[0], 1])
    sig = tf.compat.v1.saved_model
    signatures = {
        'serving_default': sig.predict_signature_def({'x': x, 'n': n},
                                                     {'y': y, 'doubled': doubled}),
        'aliased': sig.predict_signature_def({'x': x, 'n': n}, {'y': y, 'score': y}),
        'lookup': sig.predict_signature_def({'words': words}, {'ids': ids}),
        'classify': sig.classification_signature_def(serialized, classes, scores),
        'regress': sig.regression_signature_def(serialized, tf.expand_dims(example_y, 1)),
    }
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.global_variables_initializer())
      session.run([w.assign(W), b.assign(B)])
      builder = sig.Builder(export_dir)
      builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING],
                                           signature_def_map=signatures,
                                           main_op=tf.compat.v1.tables_initializer())
      builder.save()
  return export_dir


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  return build_test_saved_model(str(tmp_path_factory.mktemp('toy') / '1'))


@pytest.fixture(scope='module')
def predictor(export_dir):
  with Predictor.from_saved_model(export_dir) as p:
    yield p


@pytest.fixture(scope='module')
def half_plus_two(tf_serving_testdata):
  """The TF Serving test model y = 0.5 * x + 2 (TF 1.14 SavedModel)."""
  path = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu', '00000123')
  with Predictor.from_saved_model(path) as p:
    yield p


X = np.array([[1.0, 2.0, 3.0], [-1.0, 0.5, 4.0], [0.0, 0.0, 0.0]], np.float32)
N = np.array([0, 3, -2], np.int64)


class TestPredictor:
  """The toy SavedModel: results, properties, signatures, raw tensors."""

  def test_predict_matches_numpy(self, predictor):
    result = predictor({'x': X, 'n': N})
    assert set(result) == {'y', 'doubled'}
    assert result['y'].dtype == np.float32 and result['y'].shape == (3,)
    np.testing.assert_allclose(result['y'], expected_y(X, N), rtol=1e-6)
    assert result['doubled'].dtype == np.int64
    np.testing.assert_array_equal(result['doubled'], 2 * N)

  def test_converts_lists_scalars_and_keywords(self, predictor):
    result = predictor(x=[[1, 2, 3]], n=[4])  # Python ints into float32 and int64.
    np.testing.assert_allclose(result['y'], expected_y([[1, 2, 3]], [4]), rtol=1e-6)
    result = predictor({'x': X[:1].astype(np.float64)}, n=np.array([1], np.int32))
    np.testing.assert_allclose(result['y'], expected_y(X[:1], [1]), rtol=1e-6)

  def test_whole_floats_convert_to_int64(self, predictor):
    assert predictor(x=X[:1], n=[2.0])['doubled'].tolist() == [4]

  def test_outputs_sharing_a_tensor(self, predictor):
    result = predictor.for_signature('aliased')({'x': X, 'n': N})
    assert set(result) == {'y', 'score'}
    np.testing.assert_array_equal(result['y'], result['score'])
    np.testing.assert_allclose(result['score'], expected_y(X, N), rtol=1e-6)
    assert list(predictor.for_signature('aliased')({'x': X, 'n': N}, outputs=['score'])) == [
        'score']

  def test_output_filter(self, predictor):
    assert list(predictor({'x': X, 'n': N}, outputs=['doubled'])) == ['doubled']
    only_y = predictor({'x': X, 'n': N}, outputs='y')
    np.testing.assert_allclose(only_y['y'], expected_y(X, N), rtol=1e-6)

  def test_properties(self, predictor, export_dir):
    assert predictor.signature_name == 'serving_default'
    assert predictor.signature_def.method_name == 'tensorflow/serving/predict'
    assert set(predictor.signatures) == {'serving_default', 'aliased', 'lookup', 'classify',
                                         'regress'}
    assert predictor.input_keys == ('n', 'x')
    assert predictor.output_keys == ('doubled', 'y')
    assert predictor.input_specs == {'x': (np.dtype(np.float32), (None, 3)),
                                     'n': (np.dtype(np.int64), (None,))}
    assert predictor.signature_def.inputs['x'].name == 'myInput:0'
    assert isinstance(predictor.graph, tf.Graph)
    assert predictor.session.graph is predictor.graph
    assert predictor.graph.finalized
    assert predictor.export_dir == export_dir
    text = repr(predictor)
    assert "signature='serving_default'" in text and "inputs=['n', 'x']" in text

  def test_lookup_table_initialized_by_main_op(self, predictor):
    lookup = predictor.for_signature('lookup')
    ids = lookup({'words': ['banana', b'apple', 'durian', np.bytes_(b'cherry')]})['ids']
    assert ids.tolist() == [8, 7, -1, 9]
    assert lookup.input_specs == {'words': (np.dtype(object), (None,))}

  def test_for_signature_shares_graph_and_session(self, predictor):
    lookup = predictor.for_signature('lookup')
    assert lookup.session is predictor.session and lookup.graph is predictor.graph
    assert lookup.signature_name == 'lookup'
    assert predictor.for_signature('serving_default') is predictor
    assert predictor.for_signature('lookup') is lookup  # One predictor per signature.

  def test_classify_and_regress_on_serialized_examples(self, predictor):
    examples = [make_example(row, int(n)) for row, n in zip(X, N)]
    examples[2] = make_example(X[2])  # n defaults to 0 in the parsing spec.
    expected = expected_y(X, [N[0], N[1], 0])
    regress = predictor.for_signature('regress')
    np.testing.assert_allclose(regress({'inputs': examples})['outputs'][:, 0], expected,
                               rtol=1e-6)
    classified = predictor.for_signature('classify')(examples)  # A bare value for 'inputs'.
    positive = 1.0 / (1.0 + np.exp(-expected))
    np.testing.assert_allclose(classified['scores'][:, 1], positive, rtol=1e-5)
    assert classified['classes'].tolist() == [CLASSES] * 3

  def test_run_tensors(self, predictor):
    y, doubled = predictor.run_tensors({'myInput:0': X, 'count:0': N},
                                       ['myOutput:0', 'doubled:0'])
    np.testing.assert_allclose(y, expected_y(X, N), rtol=1e-6)
    np.testing.assert_array_equal(doubled, 2 * N)
    (ids,) = predictor.run_tensors({'words:0': ['cherry']}, 'word_ids:0')
    assert ids.tolist() == [9]

  def test_concurrent_calls_from_threads(self, predictor):
    lookup = predictor.for_signature('lookup')

    def work(thread: int) -> int:
      rng = np.random.RandomState(thread)
      for _ in range(50):
        x = rng.randn(4, 3).astype(np.float32)
        n = rng.randint(-5, 5, size=4)
        result = predictor({'x': x, 'n': n})
        np.testing.assert_allclose(result['y'], expected_y(x, n), rtol=1e-5, atol=1e-5)
        word = list(VOCAB)[thread % 3]
        assert lookup({'words': [word]})['ids'].tolist() == [VOCAB[word]]
      return thread

    with concurrent.futures.ThreadPoolExecutor(max_workers=8) as pool:
      assert sorted(pool.map(work, range(8))) == list(range(8))


class TestPredictorErrors:
  """Every bad request fails before running, naming the bad value and the fix."""

  @pytest.mark.parametrize('inputs, pattern', [
      ({'x': X}, r"missing input\(s\) for signature 'serving_default': got \['n'\]. "
                 r"Fix: pass every input: \['n', 'x'\]"),
      ({'x': X, 'n': N, 'nn': N}, r"unknown input key .*got 'nn'.*Did you mean 'n'\?"),
      ({'xs': X, 'n': N}, r"unknown input key .*got 'xs'.*Did you mean 'x'\?"),
      ({'x': np.zeros([2, 4]), 'n': [1, 2]},
       r"input 'x' of signature 'serving_default' expects shape \(None, 3\).*got \(2, 4\)"),
      ({'x': [1.0, 2.0, 3.0], 'n': [1]},
       r"input 'x' .*expects shape \(None, 3\).*got \(3,\).*rank 2"),
      ({'x': X, 'n': 5}, r"input 'n' .*expects shape \(None,\).*got \(\)"),
      ({'x': X, 'n': [0.5, 1, 2]}, r"input 'n' .*expects int64 values.*got \[0.5"),
      ({'x': X, 'n': [2**70, 1, 2]}, r"input 'n' .*expects int64 values: got 'object'"),
      ({'x': [['a', 'b', 'c']], 'n': [1]}, r"input 'x' .*expects float32 values: got 'str32'"),
      ({'x': [[1.0, 2.0], [3.0]], 'n': [1, 2]}, r"input 'x' .*not a rectangular array"),
  ])
  def test_bad_inputs(self, predictor, inputs, pattern):
    with pytest.raises(SignatureError, match=pattern):
      predictor(inputs)

  def test_non_string_into_string_input(self, predictor):
    with pytest.raises(SignatureError, match=r"input 'words' .*element 1 is not bytes or str"):
      predictor.for_signature('lookup')({'words': ['apple', 3]})

  def test_input_given_twice(self, predictor):
    with pytest.raises(SignatureError, match=r"both in the dict and as keywords: got \['x'\]"):
      predictor({'x': X, 'n': N}, x=X)

  def test_non_mapping_inputs(self, predictor):
    with pytest.raises(SignatureError, match=r"must be a dict.*got 'list'.*\['n', 'x'\]"):
      predictor([1.0, 2.0])

  def test_unknown_output(self, predictor):
    with pytest.raises(SignatureError, match=r"no such output .*got 'ys'.*Did you mean 'y'\?"):
      predictor({'x': X, 'n': N}, outputs=['ys'])

  def test_unknown_signature(self, predictor):
    with pytest.raises(SignatureError,
                       match=r"no such signature.*got 'lookups'.*\['aliased', 'classify', "
                       r"'lookup', 'regress', 'serving_default'\].*Did you mean 'lookup'\?"):
      predictor.for_signature('lookups')

  def test_unknown_signature_at_load(self, export_dir):
    with pytest.raises(SignatureError, match=r"got 'clasify'.*Did you mean 'classify'\?"):
      Predictor.from_saved_model(export_dir, signature_name='clasify')

  def test_unknown_tensor_name(self, predictor):
    with pytest.raises(SignatureError,
                       match=r"no such tensor.*got 'myInptu:0'.*Did you mean 'myInput'\?"):
      predictor.run_tensors({'myInptu:0': X}, ['myOutput:0'])
    with pytest.raises(SignatureError, match=r"got 'myOutput'.*<op name>:<output index>"):
      predictor.run_tensors({'myInput:0': X, 'count:0': N}, ['myOutput'])

  def test_run_tensors_checks_static_shape(self, predictor):
    with pytest.raises(SignatureError,
                       match=r"tensor 'myInput:0' expects shape \(None, 3\).*got \(1, 2\)"):
      predictor.run_tensors({'myInput:0': [[1.0, 2.0]], 'count:0': [1]}, ['myOutput:0'])

  def test_closed_predictor(self, export_dir):
    with Predictor.from_saved_model(export_dir) as p:
      lookup = p.for_signature('lookup')
    assert p.closed and lookup.closed and 'closed' in repr(p)
    with pytest.raises(ExportError, match=r'predictor is closed.*Predictor.from_saved_model'):
      lookup({'words': ['apple']})


class TestLoading:
  """Directories that are not SavedModels, and tags that match no MetaGraph."""

  def test_missing_directory(self, tmp_path):
    missing = str(tmp_path / 'nope')
    with pytest.raises(ContractError, match=r'does not exist: got .*nope'):
      Predictor.from_saved_model(missing)

  def test_not_a_saved_model(self, tmp_path):
    with pytest.raises(ContractError,
                       match=rf"not a SavedModel directory.*{re.escape(str(tmp_path))}'\. "
                       r'Fix: point at a version directory'):
      Predictor.from_saved_model(str(tmp_path))

  def test_base_directory_suggests_newest_version(self, tmp_path):
    for version in ('1', '2', '10', 'tmp-99'):
      (tmp_path / version).mkdir()
      (tmp_path / version / 'saved_model.pb').write_bytes(b'')
    newest = re.escape(str(tmp_path / '10'))
    with pytest.raises(ContractError, match=rf'numeric version\(s\); point at a version directory, '
                       rf"e\.g\. its newest '{newest}'"):
      Predictor.from_saved_model(str(tmp_path))

  def test_unknown_tags(self, export_dir):
    with pytest.raises(ContractError, match=r"no MetaGraph with these tags: got \['gpu'\]"):
      Predictor.from_saved_model(export_dir, tags='gpu')

  def test_session_config(self, export_dir):
    config = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=1,
                                      inter_op_parallelism_threads=1)
    with Predictor.from_saved_model(export_dir, 'lookup', config=config) as p:
      assert p({'words': ['apple']})['ids'].tolist() == [7]


class TestHalfPlusTwo:
  """TF Serving's own test model, written by TF 1.14: y = 0.5 * x + 2."""

  def test_serving_default(self, half_plus_two):
    result = half_plus_two({'x': [[1.0], [2.0], [5.0]]})
    np.testing.assert_allclose(result['y'], [[2.5], [3.0], [4.5]])
    assert half_plus_two.input_specs == {'x': (np.dtype(np.float32), (None, 1))}

  def test_signatures(self, half_plus_two):
    assert {'serving_default', 'classify_x_to_y', 'regress_x_to_y', 'regress_x_to_y2',
            'regress_x2_to_y3'} <= set(half_plus_two.signatures)

  def test_example_signatures(self, half_plus_two):
    examples = [tf.train.Example(features=tf.train.Features(feature={
        'x': tf.train.Feature(float_list=tf.train.FloatList(value=[v]))})).SerializeToString()
                for v in (1.0, 2.0, 5.0)]
    regress = half_plus_two.for_signature('regress_x_to_y')
    assert regress.input_specs == {'inputs': (np.dtype(object), None)}  # Unknown rank.
    np.testing.assert_allclose(regress(inputs=examples)['outputs'], [[2.5], [3.0], [4.5]])
    y2 = half_plus_two.for_signature('regress_x_to_y2')(examples)['outputs']
    np.testing.assert_allclose(y2, [[3.5], [4.0], [5.5]])
    scores = half_plus_two.for_signature('classify_x_to_y')(examples)['scores']
    np.testing.assert_allclose(scores, [[2.5], [3.0], [4.5]])

  def test_float_regress_signature(self, half_plus_two):
    y3 = half_plus_two.for_signature('regress_x2_to_y3')(inputs=[[1.0], [2.0], [5.0]])
    np.testing.assert_allclose(y3['outputs'], [[3.5], [4.0], [5.5]])

  def test_run_tensors(self, half_plus_two):
    (y,) = half_plus_two.run_tensors({'x:0': [[1.0], [2.0], [5.0]]}, ['y:0'])
    np.testing.assert_allclose(y, [[2.5], [3.0], [4.5]])

  def test_shape_checked_against_signature(self, half_plus_two):
    with pytest.raises(SignatureError,
                       match=r"input 'x' .*expects shape \(None, 1\).*got \(3,\)"):
      half_plus_two({'x': [1.0, 2.0, 5.0]})

  def test_base_directory_suggests_version(self, tf_serving_testdata):
    base = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu')
    with pytest.raises(ContractError, match=r"its newest '.*00000123'"):
      Predictor.from_saved_model(base)


def test_checks_session_config_turns_grappler_off_and_keeps_the_rest():
  base = tf.compat.v1.ConfigProto(intra_op_parallelism_threads=3)
  config = predictor_lib.checks_session_config(base)
  assert config.graph_options.rewrite_options.disable_meta_optimizer
  assert config.intra_op_parallelism_threads == 3
  assert not base.graph_options.rewrite_options.disable_meta_optimizer  # A copy.
  assert predictor_lib.checks_session_config().graph_options.rewrite_options.disable_meta_optimizer
