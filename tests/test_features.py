"""Tests for estimator_export.features: one declaration, real parsing graphs."""
import numpy as np
import pytest
import tensorflow as tf

from estimator_export import Feature, FeatureError, FeatureSpec


def _run(fetches, feed=None):
  with tf.compat.v1.Session(graph=tf.compat.v1.get_default_graph()) as sess:
    return sess.run(fetches, feed)


SPEC = FeatureSpec([
    Feature('ids', 'int32', shape=(4,)),
    Feature('weight', 'float32', default=1.5),
    Feature('tags', 'string', shape=(None,), default=''),
    Feature('scores', tf.float32, shape=(None,), ragged=True),
    Feature('label_ids', 'int32', training_only=True),
])


class TestFeature:

  @pytest.mark.parametrize('given,expected', [
      ('int32', tf.int32), (np.float32, tf.float32), (tf.string, tf.string),
      ('bool', tf.bool), (np.dtype('uint8'), tf.uint8)])
  def test_dtype_normalised(self, given, expected):
    assert Feature('a', given).dtype == expected

  @pytest.mark.parametrize('dtype', ['complex64', 'flaot32', tf.resource, dict])
  def test_unknown_dtype_names_feature_value_and_fix(self, dtype):
    with pytest.raises(FeatureError, match=r"unsupported dtype for feature 'a': got .*Fix: use one of"):
      Feature('a', dtype)

  def test_did_you_mean_for_misspelled_dtype(self):
    with pytest.raises(FeatureError, match=r"Did you mean 'float32'\?"):
      Feature('a', 'flaot32')

  def test_shapes(self):
    assert Feature('a', 'int64', shape=5).shape == (5,)
    assert Feature('a', 'int64', shape=[None, 3]).shape == (None, 3)
    assert Feature('a', 'int64', shape=(-1,)).shape == (None,)
    with pytest.raises(FeatureError, match='bad shape'):
      Feature('a', 'int64', shape='abc')

  def test_bad_default(self):
    with pytest.raises(FeatureError, match=r"default of feature 'a' has shape \(2,\)"):
      Feature('a', 'int64', shape=(3,), default=[1, 2])
    with pytest.raises(FeatureError, match='does not fit dtype int64'):
      Feature('a', 'int64', default='x')

  def test_bad_names(self):
    with pytest.raises(FeatureError, match='not a valid input key'):
      Feature('a:0', 'int64')
    with pytest.raises(FeatureError, match='non-empty string'):
      Feature('', 'int64')

  def test_ragged_needs_variable_dim(self):
    with pytest.raises(FeatureError, match='ragged but its shape is fully known'):
      Feature('a', 'int64', shape=(3,), ragged=True)


class TestFeatureSpec:

  def test_serving_features_leave_out_training_only(self):
    assert SPEC.serving_names == ('ids', 'weight', 'tags', 'scores')
    assert 'label_ids' in SPEC.names

  def test_parsing_spec_kinds(self):
    parsing = SPEC.parsing_spec()
    assert parsing['ids'] == tf.io.FixedLenFeature([4], tf.int64)
    assert isinstance(parsing['tags'], tf.io.VarLenFeature)
    assert isinstance(parsing['scores'], tf.io.RaggedFeature)
    assert 'label_ids' not in parsing
    assert 'label_ids' in SPEC.parsing_spec(include_training=True)

  def test_examples_round_trip_through_parsing_graph(self):
    batch = {'ids': np.array([[1, 2, 3, 4], [5, 6, 7, 8]], np.int32),
             'tags': np.array([[b'a', b'b'], [b'c', b'']], dtype=object),
             'scores': np.array([[0.5, 1.0], [2.0, 3.0]], np.float32)}
    serialized = SPEC.to_examples(batch)
    with tf.Graph().as_default():
      parsed = SPEC.parse_examples(tf.constant(serialized))
      assert parsed['ids'].dtype == tf.int32
      out = _run(parsed)
    np.testing.assert_array_equal(out['ids'], batch['ids'])
    np.testing.assert_allclose(out['weight'], [1.5, 1.5])  # absent -> default
    assert out['tags'].tolist() == [[b'a', b'b'], [b'c', b'']]
    assert out['scores'].to_list() == [[0.5, 1.0], [2.0, 3.0]]

  def test_variable_length_padded_with_default(self):
    spec = FeatureSpec([Feature('v', 'int64', shape=(None,), default=-1)])
    ex = [tf.train.Example(features=tf.train.Features(feature={
        'v': tf.train.Feature(int64_list=tf.train.Int64List(value=vals))})).SerializeToString()
          for vals in ([1, 2, 3], [4])]
    with tf.Graph().as_default():
      out = _run(spec.parse_examples(tf.constant(ex)))
    assert out['v'].tolist() == [[1, 2, 3], [4, -1, -1]]

  def test_missing_required_feature_fails_parse(self):
    spec = FeatureSpec([Feature('ids', 'int32', shape=(2,))])
    with tf.Graph().as_default():
      parsed = spec.parse_examples(tf.constant([tf.train.Example().SerializeToString()]))
      with pytest.raises(tf.errors.InvalidArgumentError, match='ids'):
        _run(parsed)

  def test_placeholders_named_after_features(self):
    spec = FeatureSpec([Feature('ids', 'int32', shape=(4,)), Feature('w', 'float32')])
    with tf.Graph().as_default():
      ph = spec.placeholders(default_batch_size=8)
      assert ph['ids'].name == 'ids:0'
      assert ph['ids'].shape.as_list() == [8, 4]
      assert ph['w'].shape.as_list() == [8]

  def test_ragged_has_no_placeholder(self):
    with tf.Graph().as_default(), pytest.raises(FeatureError, match="ragged feature 'scores'"):
      SPEC.placeholders()

  def test_nested_dict_rejected(self):
    with pytest.raises(FeatureError, match=r"nested feature dict under 'user'.*declare flat"):
      FeatureSpec({'user': {'age': tf.int64}, 'x': tf.float32})

  def test_from_mapping(self):
    spec = FeatureSpec({'a': tf.io.FixedLenFeature([2], tf.int64), 'b': 'string',
                        'c': tf.io.VarLenFeature(tf.float32)})
    assert spec['a'].shape == (2,) and spec['b'].dtype == tf.string
    assert spec['c'].shape == (None,)

  def test_duplicates_and_unknown_lookup(self):
    with pytest.raises(FeatureError, match="duplicate feature name: got 'a'"):
      FeatureSpec([Feature('a'), Feature('a')])
    with pytest.raises(FeatureError, match=r"unknown feature: got 'wieght'.*Did you mean 'weight'"):
      SPEC['wieght']  # pylint: disable=pointless-statement

  def test_json_round_trip(self):
    again = FeatureSpec.from_json(SPEC.to_json())
    assert again == SPEC

  def test_sample_batch(self):
    batch = SPEC.sample_batch(3)
    assert batch['ids'].shape == (3, 4) and batch['ids'].dtype == np.int32
    np.testing.assert_allclose(batch['weight'], [1.5] * 3)
    assert 'label_ids' not in batch


class TestInputKey:
  """Feature(..., input_key=...): served under another name than the model reads."""

  RENAMED = FeatureSpec([Feature('predictor_inputs', 'float32', (2, 2), input_key='images'),
                         Feature('n', 'int32', default=0),
                         Feature('label', 'int32', training_only=True)])

  def test_defaults_to_the_name(self):
    assert Feature('x').input_key == 'x'
    assert Feature('x') == Feature('x', input_key='x')

  def test_input_keys_and_lookup(self):
    spec = self.RENAMED
    assert spec.serving_names == ('predictor_inputs', 'n')
    assert spec.input_keys == ('images', 'n')
    assert spec.feature_for_input('images').name == 'predictor_inputs'
    with pytest.raises(FeatureError, match=r"no serving feature has this input key: got "
                       r"'image'.*Did you mean 'images'"):
      spec.feature_for_input('image')

  def test_lookup_by_input_key_says_whose_it_is(self):
    with pytest.raises(FeatureError, match=r"unknown feature: got 'images'. Fix: 'images' is the "
                       r"input key of feature 'predictor_inputs'"):
      self.RENAMED['images']  # pylint: disable=pointless-statement

  def test_to_feature_names(self):
    batch = self.RENAMED.to_feature_names({'images': [1], 'n': [2], 'other': [3]})
    assert batch == {'predictor_inputs': [1], 'n': [2], 'other': [3]}
    with pytest.raises(FeatureError, match=r"batch gives feature 'predictor_inputs' twice.*"
                       r"\['images', 'predictor_inputs'\]"):
      self.RENAMED.to_feature_names({'images': [1], 'predictor_inputs': [1]})

  def test_placeholder_named_after_input_key_keyed_by_name(self):
    with tf.Graph().as_default():
      ph = self.RENAMED.placeholders()
      assert sorted(ph) == ['n', 'predictor_inputs']
      assert ph['predictor_inputs'].name == 'images:0'

  def test_examples_keep_feature_names(self):
    serialized = self.RENAMED.to_examples({'images': np.ones((1, 2, 2), np.float32)})
    keys = set(tf.train.Example.FromString(serialized[0]).features.feature)
    assert keys == {'predictor_inputs'}
    with tf.Graph().as_default():
      out = _run(self.RENAMED.parse_examples(tf.constant(serialized)))
    np.testing.assert_array_equal(out['predictor_inputs'], np.ones((1, 2, 2)))

  def test_json_round_trip_keeps_input_key(self):
    items = self.RENAMED.to_json()
    assert items[0]['input_key'] == 'images' and items[1]['input_key'] == 'n'
    assert FeatureSpec.from_json(items) == self.RENAMED
    del items[1]['input_key']  # A manifest written before input keys existed.
    assert FeatureSpec.from_json(items)['n'].input_key == 'n'

  @pytest.mark.parametrize('features,message', [
      ([Feature('a', input_key='b'), Feature('b')],
       r"input_key 'b' of feature 'a' is the name of feature 'b': got 'b'"),
      ([Feature('b'), Feature('a', input_key='b')],
       r"input_key 'b' of feature 'a' is the name of feature 'b': got 'b'"),
      ([Feature('a', input_key='x'), Feature('b', input_key='x')],
       r"features 'a' and 'b' share the input key 'x': got 'x'"),
      ([Feature('a', input_key='label'), Feature('label', 'int32', training_only=True)],
       r"input_key 'label' of feature 'a' is the name of feature 'label'"),
      ([Feature('a', input_key='b'), Feature('b', input_key='a')],
       r"input_key 'b' of feature 'a' is the name of feature 'b'"),
  ])
  def test_collisions_name_both_features(self, features, message):
    with pytest.raises(FeatureError, match=message):
      FeatureSpec(features)

  def test_bad_input_keys(self):
    with pytest.raises(FeatureError, match=r"input_key of feature 'a' is not a valid input key: "
                       r"got 'a:0'"):
      Feature('a', input_key='a:0')
    with pytest.raises(FeatureError, match="input_key of feature 'a' must be a non-empty string"):
      Feature('a', input_key='')
    with pytest.raises(FeatureError, match="training-only feature 'y' has an input_key"):
      Feature('y', training_only=True, input_key='why')
