"""Tests for estimator_export.receivers: every receiver built and run in a real graph.

TestInputKeyExport exports a model whose feature is served under another input key and
checks that everything derived from the declaration follows: signatures, validation
samples, parity with estimator.predict, warmup, manifest, `validate_export`.
"""
import numpy as np
import pytest
import tensorflow as tf

from estimator_export import (Feature, FeatureSpec, Predictor, ReceiverError, adapt_receiver_fn,
                              build_combined_receiver_fn, build_example_receiver_fn,
                              build_image_receiver_fn, build_raw_receiver_fn,
                              build_text_receiver_fn)
from estimator_export import _saved_model as saved_model_lib
from estimator_export import validate as validate_lib
from estimator_export import warmup as warmup_lib
from tests import toy

SPEC = FeatureSpec([Feature('length', 'int32'), Feature('first', 'string', default=''),
                    Feature('label', 'int32', training_only=True)])


def word_stats(texts):
  """Toy tokenizer: {'text': string [batch]} -> word count and first word."""
  words = tf.strings.split(texts['text'])
  return {'length': tf.cast(words.row_lengths(), tf.int32),
          'first': words.to_tensor(default_value='', shape=[None, 1])[:, 0]}


def _run(receiver, feeds):
  with tf.compat.v1.Session(graph=tf.compat.v1.get_default_graph()) as sess:
    return sess.run(receiver.features, feeds)


class TestRaw:

  def test_placeholders_and_batch_size(self):
    with tf.Graph().as_default():
      rec = build_raw_receiver_fn(SPEC, default_batch_size=3)()
      assert sorted(rec.receiver_tensors) == ['first', 'length']
      assert rec.receiver_tensors['length'].name == 'length:0'
      assert rec.receiver_tensors['length'].shape.as_list() == [3]

  def test_not_a_spec(self):
    with pytest.raises(ReceiverError, match='need a FeatureSpec'):
      build_raw_receiver_fn(42)

  def test_input_key_renames_the_receiver_tensor_not_the_feature(self):
    spec = FeatureSpec([Feature('predictor_inputs', 'float32', (2,), input_key='images'),
                        Feature('n', 'int32')])
    fn = build_raw_receiver_fn(spec)
    assert fn.input_keys == ('images', 'n')
    with tf.Graph().as_default():
      rec = fn()
      assert sorted(rec.receiver_tensors) == ['images', 'n']
      assert sorted(rec.features) == ['n', 'predictor_inputs']
      assert rec.receiver_tensors['images'].name == 'images:0'
      out = _run(rec, {rec.receiver_tensors['images']: [[1.0, 2.0]],
                       rec.receiver_tensors['n']: [3]})
    assert out['predictor_inputs'].tolist() == [[1.0, 2.0]] and out['n'].tolist() == [3]


class TestExample:

  def test_single_string_input_parses(self):
    fn = build_example_receiver_fn(SPEC)
    assert fn.is_single_string_input and fn.input_keys == ('examples',)
    with tf.Graph().as_default():
      rec = fn()
      assert list(rec.receiver_tensors) == ['examples']
      ex = SPEC.to_examples({'length': [4, 7], 'first': [b'a', b'b']})
      out = _run(rec, {rec.receiver_tensors['examples']: ex})
    assert out['length'].dtype == np.int32 and out['length'].tolist() == [4, 7]
    assert 'label' not in out


class TestText:

  def test_tokenizes_in_graph(self):
    with tf.Graph().as_default():
      rec = build_text_receiver_fn(word_stats, SPEC)()
      out = _run(rec, {rec.receiver_tensors['text']: [b'hello big world', b'x']})
    assert out['length'].tolist() == [3, 1]
    assert out['first'].tolist() == [b'hello', b'x']

  def test_missing_feature_named(self):
    with tf.Graph().as_default():
      fn = build_text_receiver_fn(lambda t: {'length': tf.zeros_like(t['text'], tf.int32)}, SPEC)
      with pytest.raises(ReceiverError, match=r"did not produce serving feature\(s\): got \['first'\]"):
        fn()

  def test_wrong_dtype_named(self):
    def bad(texts):
      return {'length': tf.strings.length(texts['text']), 'first': tf.zeros_like(texts['text'], tf.float32)}
    with tf.Graph().as_default(), pytest.raises(ReceiverError, match="produced 'first' as float32"):
      build_text_receiver_fn(bad, SPEC)()

  def test_optional_key_must_exist(self):
    with pytest.raises(ReceiverError, match='optional_text_keys must be among text_keys'):
      build_text_receiver_fn(word_stats, SPEC, optional_text_keys=('text_b',))


class TestImage:

  def test_png_and_jpeg_decoded_and_resized(self):
    red = np.zeros((8, 6, 3), np.uint8)
    red[..., 0] = 255
    png = tf.io.encode_png(red).numpy()
    jpeg = tf.io.encode_jpeg(red, quality=100).numpy()
    with tf.Graph().as_default():
      rec = build_image_receiver_fn(4, 5)()
      out = _run(rec, {rec.receiver_tensors['image_bytes']: [png, jpeg]})
    image = out['image']
    assert image.shape == (2, 4, 5, 3) and image.dtype == np.float32
    np.testing.assert_allclose(image[..., 0], 1.0, atol=0.02)
    np.testing.assert_allclose(image[..., 1:], 0.0, atol=0.02)

  def test_bad_size(self):
    with pytest.raises(ReceiverError, match='image height must be a positive int: got 0'):
      build_image_receiver_fn(0, 5)


class TestCombined:

  def test_each_path_feeds_the_same_features(self):
    fn = build_combined_receiver_fn(
        build_raw_receiver_fn(SPEC),
        {'examples': build_example_receiver_fn(SPEC), 'text': build_text_receiver_fn(word_stats, SPEC)})
    assert set(fn.parts()) == {'', 'examples', 'text'}
    with tf.Graph().as_default():
      rec = fn()
      alts = rec.receiver_tensors_alternatives
      assert sorted(alts) == ['examples', 'text']
      raw = _run(rec, {rec.receiver_tensors['length']: [9], rec.receiver_tensors['first']: [b'r']})
      ex = SPEC.to_examples({'length': [4, 5], 'first': [b'e', b'f']})
      parsed = _run(rec, {alts['examples']['examples']: ex})
      text = _run(rec, {alts['text']['text']: [b'one two three']})
    assert raw['length'].tolist() == [9]
    assert parsed['length'].tolist() == [4, 5] and parsed['first'].tolist() == [b'e', b'f']
    assert text['length'].tolist() == [3] and text['first'].tolist() == [b'one']

  def test_variable_length_paths_are_padded(self):
    spec = FeatureSpec([Feature('ids', 'int64', shape=(None,), default=0)])
    fn = build_combined_receiver_fn(
        build_example_receiver_fn(spec),
        {'text': build_text_receiver_fn(
            lambda t: {'ids': tf.strings.to_number(tf.strings.split(t['text']).to_tensor('0'), tf.int64)},
            spec)})
    with tf.Graph().as_default():
      rec = fn()
      out = _run(rec, {rec.receiver_tensors_alternatives['text']['text']: [b'1 2 3', b'4']})
    assert out['ids'].tolist() == [[1, 2, 3], [4, 0, 0]]

  def test_two_raw_receivers_rejected(self):
    with pytest.raises(ReceiverError, match='at most one raw receiver'):
      build_combined_receiver_fn(build_raw_receiver_fn(SPEC), {'raw2': build_raw_receiver_fn(SPEC)})

  def test_feature_mismatch_rejected(self):
    other = FeatureSpec([Feature('length', 'int32')])
    with pytest.raises(ReceiverError, match="receiver 'examples' declares other serving features"):
      build_combined_receiver_fn(build_raw_receiver_fn(SPEC),
                                 {'examples': build_example_receiver_fn(other)})

  def test_renamed_raw_path_beside_examples(self):
    spec = FeatureSpec([Feature('predictor_inputs', 'int32', input_key='images')])
    fn = build_combined_receiver_fn(build_raw_receiver_fn(spec),
                                    {'examples': build_example_receiver_fn(spec)})
    assert fn.input_keys == ('images',)
    with tf.Graph().as_default():
      rec = fn()
      assert list(rec.receiver_tensors) == ['images']
      raw = _run(rec, {rec.receiver_tensors['images']: [7]})
      parsed = _run(rec, {rec.receiver_tensors_alternatives['examples']['examples']:
                          spec.to_examples({'images': [[4], [5]]})})
    assert raw['predictor_inputs'].tolist() == [7]
    assert parsed['predictor_inputs'].tolist() == [4, 5]

  def test_hand_written_receiver_not_combined(self):
    def own():
      t = tf.compat.v1.placeholder(tf.int32, [None], name='length')
      s = tf.compat.v1.placeholder(tf.string, [None], name='first')
      return tf.estimator.export.ServingInputReceiver({'length': t, 'first': s},
                                                      {'length': t, 'first': s})
    with pytest.raises(ReceiverError, match="receiver 'examples' is a hand-written receiver fn"):
      build_combined_receiver_fn(build_raw_receiver_fn(SPEC), {'examples': adapt_receiver_fn(own)})

  def test_bad_alternative_name(self):
    with pytest.raises(ReceiverError, match='without ":"'):
      build_combined_receiver_fn(build_raw_receiver_fn(SPEC), {'a:b': build_example_receiver_fn(SPEC)})


class RenamedToy(toy.ToyClassifier):
  """The toy classifier with its feature 'x' served as 'measurements'."""
  feature_spec = FeatureSpec([
      Feature('x', 'float32', shape=(3,), input_key='measurements'),
      Feature('n', 'int32', default=0),
      Feature('label', 'int32', training_only=True),
  ])


@pytest.fixture(scope='module')
def renamed(tmp_path_factory):
  """(model, estimator, ExportResult) of RenamedToy, samples keyed by input key."""
  model = RenamedToy()
  estimator = model.make_estimator(str(tmp_path_factory.mktemp('renamed_model')),
                                   params={'learning_rate': 0.05})
  estimator.train(toy.train_input_fn, max_steps=10)
  base = tmp_path_factory.mktemp('renamed_export') / 'toy'
  samples = {'measurements': toy.SAMPLES['x'], 'n': toy.SAMPLES['n']}
  return model, estimator, model.export_for_serving(estimator, str(base), samples=samples)


class TestInputKeyExport:

  def test_signatures_take_the_input_key(self, renamed):
    _, _, result = renamed
    assert {'serving_default', 'examples:classify', 'examples:regress'} <= set(result.signatures)
    defs = saved_model_lib.serve_signature_defs(result.path)
    assert sorted(defs['serving_default'].inputs) == ['measurements', 'n']
    assert sorted(defs['examples:serving_default'].inputs) == ['examples']

  def test_served_answers_match_estimator_predict(self, renamed):
    _, estimator, result = renamed
    expected = next(estimator.predict(
        lambda: tf.data.Dataset.from_tensors(toy.SAMPLES), yield_single_examples=False,
        checkpoint_path=result.checkpoint_path))
    with Predictor.from_saved_model(result.path) as predictor:
      raw = predictor({'measurements': toy.SAMPLES['x'], 'n': toy.SAMPLES['n']})
      examples = predictor.for_signature('examples:serving_default')(
          {'examples': RenamedToy.feature_spec.to_examples(toy.SAMPLES)})
    for out in (raw, examples):
      np.testing.assert_allclose(out['probabilities'], expected['probabilities'], rtol=1e-5)

  def test_samples_by_feature_name_or_input_key_feed_the_same(self, renamed):
    _, _, result = renamed
    defs = saved_model_lib.serve_signature_defs(result.path)
    by_key = validate_lib.sample_feeds(defs, RenamedToy.feature_spec,
                                       {'measurements': toy.SAMPLES['x'], 'n': toy.SAMPLES['n']})
    by_name = validate_lib.sample_feeds(defs, RenamedToy.feature_spec, toy.SAMPLES)
    for feeds in (by_key, by_name):
      np.testing.assert_array_equal(feeds['serving_default']['measurements'], toy.SAMPLES['x'])
      example = tf.train.Example.FromString(feeds['examples:classify']['inputs'][0])
      assert list(example.features.feature['x'].float_list.value) == [1.0, 2.0, 3.0]

  def test_parity_compares_the_renamed_path(self, renamed):
    _, estimator, result = renamed
    with Predictor.from_saved_model(result.path) as predictor:
      outputs = {'serving_default': predictor({'measurements': toy.SAMPLES['x'],
                                               'n': toy.SAMPLES['n']})}
    compared = validate_lib.check_parity(
        estimator, result.checkpoint_path, RenamedToy.feature_spec,
        {'measurements': toy.SAMPLES['x'], 'n': toy.SAMPLES['n']}, outputs, 1e-4, 1e-5)
    assert compared == 3  # logits, probabilities, class_ids
    outputs['serving_default']['logits'] = outputs['serving_default']['logits'] + 1.0
    with pytest.raises(validate_lib.ValidationError,
                       match="'serving_default' output 'logits' differs from estimator.predict"):
      validate_lib.check_parity(estimator, result.checkpoint_path, RenamedToy.feature_spec,
                                toy.SAMPLES, outputs, 1e-4, 1e-5)

  def test_warmup_and_manifest_use_the_input_key(self, renamed):
    _, _, result = renamed
    logs = warmup_lib.read_warmup_requests(result.path)
    default = [log.predict_log.request for log in logs
               if log.predict_log.request.model_spec.signature_name == 'serving_default']
    assert sorted(default[0].inputs) == ['measurements', 'n']
    features = saved_model_lib.read_manifest(result.path)['features']
    assert [(f['name'], f['input_key']) for f in features] == [
        ('x', 'measurements'), ('n', 'n'), ('label', 'label')]

  def test_validate_export_reads_the_input_key_from_the_manifest(self, renamed):
    _, _, result = renamed
    shapes = validate_lib.validate_export(result.path)
    assert shapes['serving_default']['probabilities'] == (2, 2)
