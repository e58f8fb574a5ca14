"""Tests for estimator_export.export: real exports, reloaded and run."""
import json
import logging
import os
import time

from absl import flags as absl_flags
import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import _saved_model
from estimator_export import flags as export_flags
from estimator_export import warmup
from tests import toy


def _export(trained, base, **kwargs):
  model, estimator = trained
  kwargs.setdefault('samples', toy.SAMPLES)
  return model.export_for_serving(estimator, str(base), **kwargs)


def _listing(base):
  return sorted(os.listdir(base))


class TestExportForServing:

  def test_layout_signatures_and_results(self, trained_toy, tmp_path):
    result = _export(trained_toy, tmp_path / 'm')
    assert result.version == 20 and result.global_step == 20
    assert result.path == str(tmp_path / 'm' / '20')
    assert _listing(tmp_path / 'm') == ['20']  # No staging directory left behind.
    assert result.signatures == {
        'serving_default': 'tensorflow/serving/predict',
        'predict': 'tensorflow/serving/predict',
        'examples:serving_default': 'tensorflow/serving/predict',
        'examples:predict': 'tensorflow/serving/predict',
        'examples:classify': 'tensorflow/serving/classify',
        'examples:regress': 'tensorflow/serving/regress'}
    examples = toy.ToyClassifier.feature_spec.to_examples(toy.SAMPLES)
    with ee.Predictor.from_saved_model(result.path) as predictor:
      raw = predictor(toy.SAMPLES)
      classify = predictor.for_signature('examples:classify')({'inputs': examples})
      regress = predictor.for_signature('examples:regress')({'inputs': examples})
      by_example = predictor.for_signature('examples:serving_default')({'examples': examples})
    probs = raw['probabilities']
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(classify['scores'], probs, rtol=1e-5)
    assert classify['classes'].tolist() == [[b'neg', b'pos']] * 2
    np.testing.assert_allclose(regress['outputs'], probs[:, 1], rtol=1e-5)
    np.testing.assert_allclose(by_example['logits'], raw['logits'], rtol=1e-5)

  def test_matches_estimator_predict(self, trained_toy, tmp_path):
    model, estimator = trained_toy
    result = _export(trained_toy, tmp_path)
    expected = next(estimator.predict(
        lambda: tf.data.Dataset.from_tensor_slices(toy.SAMPLES).batch(2),
        yield_single_examples=False))
    with ee.Predictor.from_saved_model(result.path) as predictor:
      got = predictor(toy.SAMPLES)
    np.testing.assert_allclose(got['logits'], expected['logits'], rtol=1e-5)
    del model

  def test_manifest(self, trained_toy, tmp_path):
    result = _export(trained_toy, tmp_path, metrics={'accuracy': 0.75})
    manifest = json.load(open(result.manifest_path))
    assert manifest['checkpoint']['global_step'] == 20
    assert manifest['checkpoint']['path'].endswith('model.ckpt-20')
    assert manifest['versions']['tensorflow'].startswith('2.15')
    assert manifest['versions']['estimator'].startswith('2.15')
    assert [f['name'] for f in manifest['features']] == ['x', 'n', 'label']
    assert manifest['features'][2]['training_only'] is True
    assert manifest['label_vocabulary'] == ['neg', 'pos']
    assert manifest['signatures'] == dict(result.signatures)
    assert manifest['metrics'] == {'accuracy': 0.75}
    assert ee.FeatureSpec.from_json(manifest['features']) == toy.ToyClassifier.feature_spec

  def test_serving_signature_never_needs_training_features(self, trained_toy, tmp_path):
    result = _export(trained_toy, tmp_path)
    with ee.Predictor.from_saved_model(result.path) as predictor:
      for name in result.signatures:
        assert 'label' not in predictor.for_signature(name).input_keys

  def test_warmup_file(self, trained_toy, tmp_path):
    result = _export(trained_toy, tmp_path, warmup_records_per_signature=2)
    logs = warmup.read_warmup_requests(result.path)
    assert result.warmup_records == len(logs) == 2 * len(result.signatures)
    kinds = {log.WhichOneof('log_type') for log in logs}
    assert kinds == {'predict_log', 'classify_log', 'regress_log'}
    with ee.Predictor.from_saved_model(result.path) as predictor:
      assert warmup.replay_warmup(predictor, logs) == len(logs)

  def test_no_warmup_no_validation(self, trained_toy, tmp_path):
    result = _export(trained_toy, tmp_path, warmup=False, validate=False)
    assert not result.validated and result.warmup_records == 0
    assert not os.path.exists(os.path.join(result.path, 'assets.extra', 'tf_serving_warmup_requests'))

  @pytest.mark.parametrize('version,expected', [(7, 7), ('step', 20)])
  def test_versions(self, trained_toy, tmp_path, version, expected):
    assert _export(trained_toy, tmp_path, version=version).version == expected

  def test_timestamp_version(self, trained_toy, tmp_path):
    before = int(time.time())
    version = _export(trained_toy, tmp_path, version='timestamp').version
    assert before <= version <= int(time.time())

  def test_existing_version_is_an_error_and_untouched(self, trained_toy, tmp_path):
    _export(trained_toy, tmp_path, version=3)
    marker = tmp_path / '3' / 'marker'
    marker.write_text('keep me')
    with pytest.raises(ee.VersionExistsError, match=r"already exists.*got 3.*on_collision='bump'"):
      _export(trained_toy, tmp_path, version=3)
    assert marker.read_text() == 'keep me'
    assert _listing(tmp_path) == ['3']

  def test_bump_takes_next_free_version(self, trained_toy, tmp_path):
    _export(trained_toy, tmp_path, version=3)
    (tmp_path / '4').mkdir()
    assert _export(trained_toy, tmp_path, version=3, on_collision='bump').version == 5

  def test_export_base_is_a_file(self, trained_toy, tmp_path):
    path = tmp_path / 'file'
    path.write_text('x')
    with pytest.raises(ee.ExportDirError, match=r'export base is a file.*file'):
      _export(trained_toy, path)

  def test_missing_checkpoint_names_model_dir(self, tmp_path):
    model = toy.ToyClassifier()
    estimator = model.make_estimator(str(tmp_path / 'empty_model'))
    with pytest.raises(ee.CheckpointNotFoundError,
                       match=r"no checkpoint to export in model_dir: got '.*empty_model'.*'checkpoint' state file"):
      model.export_for_serving(estimator, str(tmp_path / 'export'))
    assert not os.path.exists(tmp_path / 'export' / '0')

  def test_warm_start_checkpoint_is_never_used(self, trained_toy, tmp_path):
    model, trained = trained_toy
    fresh = model.make_estimator(str(tmp_path / 'fresh'), warm_start_from=trained.model_dir)
    with pytest.raises(ee.CheckpointNotFoundError, match='warm-start checkpoint is never used'):
      model.export_for_serving(fresh, str(tmp_path / 'export'))

  def test_explicit_checkpoint(self, trained_toy, tmp_path):
    _, estimator = trained_toy
    ckpt = tf.train.latest_checkpoint(estimator.model_dir)
    assert _export(trained_toy, tmp_path, checkpoint_path=ckpt).checkpoint_path == ckpt
    with pytest.raises(ee.CheckpointNotFoundError, match=r'checkpoint not found.*model.ckpt-999'):
      _export(trained_toy, tmp_path, checkpoint_path=ckpt.replace('-20', '-999'))

  def test_retention_keeps_newest(self, trained_toy, tmp_path):
    for v in (1, 2, 3):
      result = _export(trained_toy, tmp_path, version=v, keep=2, validate=False, warmup=False)
    assert _listing(tmp_path) == ['2', '3']
    assert result.deleted_versions == (1,)

  def test_retention_never_deletes_the_new_version(self, trained_toy, tmp_path):
    for version in (10, 11, 12):
      _export(trained_toy, tmp_path, version=version, validate=False, warmup=False)
    result = _export(trained_toy, tmp_path, version=5, keep=2, validate=False, warmup=False)
    assert os.path.isdir(result.path)
    assert _listing(tmp_path) == ['12', '5'] and result.deleted_versions == (10, 11)

  def test_retention_keeps_best(self, trained_toy, tmp_path):
    for v, acc in ((1, 0.9), (2, 0.5), (3, 0.7)):
      _export(trained_toy, tmp_path, version=v, keep=2, keep_best_by='accuracy',
              metrics={'accuracy': acc}, validate=False, warmup=False)
    assert _listing(tmp_path) == ['1', '3']

  def test_failed_validation_publishes_nothing(self, trained_toy, tmp_path):
    model, estimator = trained_toy

    class Noisy(toy.ToyClassifier):
      def predictions(self, features, mode, params):
        out = super().predictions(features, mode, params)
        out['logits'] += tf.random.uniform(tf.shape(out['logits']))
        return out

    with pytest.raises(ee.ValidationError, match=r"output 'logits' differs from .*max abs difference"):
      noisy = Noisy()
      noisy.export_for_serving(noisy.make_estimator(estimator.model_dir), str(tmp_path),
                               samples=toy.SAMPLES)
    assert _listing(tmp_path) == []  # Neither a version nor the staging directory.
    del model


class TestCheckServable:
  """ExportOptions.check_servable: ops TF Serving 2.15.1 lacks fail the export."""

  def test_core_ops_pass_and_publish(self, trained_toy, tmp_path):
    result = _export(trained_toy, tmp_path, version=1, check_servable=True)
    assert _listing(tmp_path) == ['1'] and result.version == 1

  def test_op_newer_than_tf_text_2_12_1_publishes_nothing(self, trained_toy, tmp_path):
    tf_text = pytest.importorskip('tensorflow_text')
    _, estimator = trained_toy

    class Binarized(toy.ToyClassifier):
      def predictions(self, features, mode, params):
        out = super().predictions(features, mode, params)
        bits = tf_text.utf8_binarize(tf.strings.as_string(features['n']))  # TF Text 2.13+
        out['logits'] += 0.0 * tf.reduce_sum(bits, axis=-1, keepdims=True)
        return out

    model = Binarized()
    with pytest.raises(ee.UnservableGraphError, match=r"TFText>Utf8Binarize"):
      model.export_for_serving(model.make_estimator(estimator.model_dir), str(tmp_path),
                               samples=toy.SAMPLES, check_servable=True)
    assert _listing(tmp_path) == []


class TestSignatureChecks:

  def test_classify_without_example_receiver_is_an_error(self, trained_toy, tmp_path):
    model, estimator = trained_toy
    with pytest.raises(ee.SignatureError, match="classify output 'classify' would be silently dropped"):
      model.export_for_serving(estimator, str(tmp_path), model.serving_input_receiver_fn('raw'))
    assert _listing(tmp_path) == []

  def test_default_classify_on_raw_receiver_is_an_error(self, trained_toy, tmp_path):
    model, estimator = trained_toy

    class ClassifyDefault(toy.ToyClassifier):
      default_signature = 'classify'

    with pytest.raises(ee.SignatureError, match="no 'serving_default' signature"):
      other = ClassifyDefault()
      other.export_for_serving(other.make_estimator(estimator.model_dir), str(tmp_path))
    assert _listing(tmp_path) == []
    del model

  def test_example_receiver_alone_serves_all_three_apis(self, trained_toy, tmp_path):
    model, estimator = trained_toy
    result = model.export_for_serving(estimator, str(tmp_path),
                                      model.serving_input_receiver_fn('example'))
    assert set(result.signatures.values()) == {'tensorflow/serving/predict',
                                               'tensorflow/serving/classify',
                                               'tensorflow/serving/regress'}

  def test_classify_on_text_input_is_removed(self, tmp_path):
    spec = ee.FeatureSpec([ee.Feature('length', 'float32')])

    class TextLength(ee.ServingModelMixin):
      feature_spec = spec
      label_vocabulary = ('short', 'long')

      def predictions(self, features, mode, params):
        w = tf.compat.v1.get_variable('w', [], initializer=tf.compat.v1.ones_initializer())
        logit = features['length'] * w - 3.0
        probs = tf.stack([tf.sigmoid(-logit), tf.sigmoid(logit)], axis=1)
        return {'probabilities': probs}

      def loss(self, predictions, labels, features, mode, params):
        return tf.reduce_mean(predictions['probabilities'])

    model = TextLength()
    estimator = model.make_estimator(str(tmp_path / 'model'))
    estimator.train(lambda: tf.data.Dataset.from_tensors({'length': [1.0]}).repeat(), max_steps=1)
    text = ee.build_text_receiver_fn(
        lambda t: {'length': tf.cast(tf.strings.length(t['text']), tf.float32)}, spec)
    receiver = ee.build_combined_receiver_fn(text, {'examples': ee.build_example_receiver_fn(spec)})
    result = model.export_for_serving(estimator, str(tmp_path / 'export'), receiver)
    assert result.removed_signatures == ('classify',)
    assert 'examples:classify' in result.signatures
    with ee.Predictor.from_saved_model(result.path) as predictor:
      out = predictor({'text': ['ab', 'abcdefgh']})
    assert out['probabilities'].argmax(axis=1).tolist() == [0, 1]


class TestSignatureAliases:

  def test_alias_is_a_validated_copy(self, trained_toy, tmp_path):
    result = _export(trained_toy, tmp_path, signature_aliases={'ex': 'examples:predict'})
    assert result.signatures['ex'] == 'tensorflow/serving/predict'
    examples = toy.ToyClassifier.feature_spec.to_examples(toy.SAMPLES)
    with ee.Predictor.from_saved_model(result.path) as predictor:
      alias = predictor.for_signature('ex')({'examples': examples})
      target = predictor.for_signature('examples:predict')({'examples': examples})
      assert predictor.signatures['ex'] == predictor.signatures['examples:predict']
    np.testing.assert_array_equal(alias['logits'], target['logits'])
    logs = warmup.read_warmup_requests(result.path)
    assert 'ex' in {log.predict_log.request.model_spec.signature_name for log in logs}

  @pytest.mark.parametrize('aliases, pattern', [
      ({'ex': 'examples:predikt'}, r"alias 'ex' targets no signature.*Did you mean "
                                   r"'examples:predict'"),
      ({'predict': 'examples:predict'}, 'alias names an existing signature'),
  ])
  def test_bad_alias_publishes_nothing(self, trained_toy, tmp_path, aliases, pattern):
    with pytest.raises(ee.SignatureError, match=pattern):
      _export(trained_toy, tmp_path, signature_aliases=aliases)
    assert _listing(tmp_path) == []


class TestOtherEstimators:

  def test_tpu_estimator_on_cpu(self, tmp_path):
    model = toy.ToyClassifier()
    estimator = model.make_tpu_estimator(str(tmp_path / 'model'), train_batch_size=16,
                                         predict_batch_size=2)
    estimator.train(toy.train_input_fn, max_steps=5)
    result = model.export_for_serving(estimator, str(tmp_path / 'export'), samples=toy.SAMPLES)
    assert result.version == 5 and 'examples:classify' in result.signatures
    with ee.Predictor.from_saved_model(result.path) as predictor:
      assert predictor(toy.SAMPLES)['probabilities'].shape == (2, 2)

  def test_image_receiver(self, tmp_path):

    class Brightness(ee.ServingModelMixin):
      feature_spec = ee.FeatureSpec([ee.Feature('image', 'float32', (8, 8, 3))])

      def predictions(self, features, mode, params):
        scale = tf.compat.v1.get_variable('scale', [], initializer=tf.compat.v1.ones_initializer())
        return {'brightness': tf.reduce_mean(features['image'], axis=[1, 2, 3]) * scale}

      def loss(self, predictions, labels, features, mode, params):
        return tf.reduce_mean(predictions['brightness'])

    model = Brightness()
    estimator = model.make_estimator(str(tmp_path / 'model'))
    estimator.train(lambda: tf.data.Dataset.from_tensors(
        {'image': np.zeros((1, 8, 8, 3), np.float32)}).repeat(), max_steps=1)
    result = model.export_for_serving(estimator, str(tmp_path / 'export'),
                                      ee.build_image_receiver_fn(8, 8))
    white = tf.io.encode_png(np.full((20, 10, 3), 255, np.uint8)).numpy()
    black = tf.io.encode_jpeg(np.zeros((5, 5, 3), np.uint8)).numpy()
    with ee.Predictor.from_saved_model(result.path) as predictor:
      out = predictor({'image_bytes': [white, black]})
    np.testing.assert_allclose(out['brightness'], [1.0, 0.0], atol=0.02)


class TestKeepOne:
  """keep=1 keeps a fallback version for servers still loading the new one."""

  def test_keep_1_keeps_2_and_warns(self, trained_toy, tmp_path, caplog):
    _export(trained_toy, tmp_path, version=1, validate=False, warmup=False)
    _export(trained_toy, tmp_path, version=2, validate=False, warmup=False)
    with caplog.at_level(logging.WARNING, logger='estimator_export'):
      result = _export(trained_toy, tmp_path, version=3, keep=1, validate=False, warmup=False)
    assert _listing(tmp_path) == ['2', '3'] and result.deleted_versions == (1,)
    assert 'keep=1 would delete the version servers are on' in caplog.text
    assert 'allow_single_version=True' in caplog.text

  def test_allow_single_version_from_the_flags(self, trained_toy, tmp_path, caplog):
    fv = absl_flags.FlagValues()
    export_flags.define_export_flags(fv)
    fv(['prog', '--exports_to_keep=1', '--export_allow_single_version'])
    options = export_flags.export_settings_from_flags(fv).options
    assert (options.keep, options.allow_single_version) == (1, True)
    _export(trained_toy, tmp_path, version=1, validate=False, warmup=False)
    with caplog.at_level(logging.WARNING, logger='estimator_export'):
      result = _export(trained_toy, tmp_path, options=options, version=2, validate=False,
                       warmup=False)
    assert _listing(tmp_path) == ['2'] and result.deleted_versions == (1,)
    assert 'keep=1' not in caplog.text


class TestDurability:
  """fsync on local paths: every file before the publish rename, the base after it."""

  def test_every_file_is_fsynced_before_the_rename_and_the_base_after(
      self, trained_toy, tmp_path, monkeypatch):
    base = tmp_path / 'm'
    synced = []  # (path, whether <base>/<version> existed at that moment)
    real_fsync = os.fsync

    def recording_fsync(fd):
      synced.append((os.readlink(f'/proc/self/fd/{fd}'), os.path.isdir(base / '7')))
      real_fsync(fd)

    monkeypatch.setattr(os, 'fsync', recording_fsync)
    result = _export(trained_toy, base, version=7)
    staged = [p for p, published in synced if not published and '/.staging-' in p]
    created = [p for p, published in synced if not published and '/.staging-' not in p]
    after = [p for p, published in synced if published]
    assert created == [str(tmp_path)]  # The new base's entry in its parent.
    assert after == [str(base)]  # The new version's entry, once; nothing else after it.
    published_files = {os.path.relpath(os.path.join(d, f), result.path)
                       for d, _, files in os.walk(result.path) for f in files}
    assert len(published_files) >= 5  # saved_model.pb, variables/*, assets.extra/*.
    staged_root = os.path.commonpath(staged)
    assert os.path.basename(os.path.dirname(staged_root)).startswith('.staging-export-')
    staged_rel = {os.path.relpath(p, staged_root) for p in staged}
    assert published_files <= staged_rel  # Every file, under its staging path.
    published_dirs = {os.path.relpath(d, result.path) for d, _, _ in os.walk(result.path)}
    assert published_dirs <= staged_rel  # And every directory ('.': the version itself),
    order = [os.path.relpath(p, staged_root) for p in staged]
    assert order.index('.') == len(order) - 1  # the version directory last.

  def test_non_local_paths_are_not_fsynced(self, monkeypatch):
    calls = []
    monkeypatch.setattr(os, 'fsync', calls.append)
    tf.io.gfile.makedirs('ram://durability/v/variables')
    with tf.io.gfile.GFile('ram://durability/v/variables/x', 'w') as f:
      f.write('x')
    assert _saved_model.fsync_tree('ram://durability/v') == 0
    _saved_model.fsync_dir('ram://durability')
    assert calls == []
    assert [_saved_model.is_local_path(p) for p in (
        '/m', 'rel/m', 'file:///m', 'gs://b/m', 'ram://m', 'hdfs://h/m')] == [
            True, True, True, False, False, False]

  def test_local_file_url_is_fsynced(self, tmp_path):
    (tmp_path / 'v' / 'variables').mkdir(parents=True)
    (tmp_path / 'v' / 'variables' / 'x').write_text('x')
    (tmp_path / 'v' / 'saved_model.pb').write_text('y')
    assert _saved_model.fsync_tree(f'file://{tmp_path}/v') == 2
