"""The export's parity check with estimator.predict, shown to catch a real training/serving skew.

A hand-written receiver serves the toy model on raw tensors and on serialized
tf.Examples (an 'examples' alternative). Both paths apply a normalisation
(x * SCALE) that the training input path never applied, so the two serving
paths agree with each other (the consistency check passes) while both differ
from estimator.predict on the same samples: export_for_serving must refuse to
publish, with a ValidationError naming the signature and output. A receiver
skewed on one path only fails the consistency check instead.
"""
import os

import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import _saved_model as saved_model_lib
from estimator_export import validate as validate_lib
from estimator_export.errors import ValidationError
from tests import toy

SPEC = toy.ToyClassifier.feature_spec
SCALE = 2.0


def receiver_fn(scale: float, example_only_scale: float = 1.0, extra_feature: bool = False):
  """Raw 'x', 'n' and an 'examples' alternative; the model gets x * scale on both paths.

  example_only_scale multiplies x on the tf.Example path alone (a skew between the paths).
  extra_feature: the model also gets 'note', a feature the samples do not have.
  """

  def build():
    serialized = tf.compat.v1.placeholder_with_default(tf.constant([], tf.string), [None],
                                                       name='input_example_tensor')
    parsed = SPEC.parse_examples(serialized)
    # Raw inputs default to the parsed batch: feeding them bypasses the Example path.
    x = tf.compat.v1.placeholder_with_default(parsed['x'] * example_only_scale, [None, 3],
                                              name='x')
    n = tf.compat.v1.placeholder_with_default(parsed['n'], [None], name='n')
    features = {'x': x * scale, 'n': n}
    if extra_feature:
      features['note'] = tf.zeros_like(n)
    return tf.estimator.export.ServingInputReceiver(
        features, {'x': x, 'n': n},
        receiver_tensors_alternatives={'examples': {'examples': serialized}})

  return build


def _published(base) -> list:
  return saved_model_lib.numeric_versions(str(base)) if base.exists() else []


def test_receiver_kinds_make_both_paths_compared():
  fn = ee.adapt_receiver_fn(receiver_fn(SCALE), features=SPEC)
  assert {name: part.kind for name, part in fn.parts().items()} == {'': 'raw',
                                                                     'examples': 'example'}


def test_skew_on_both_paths_fails_parity_but_not_consistency(trained_toy, tmp_path):
  model, estimator = trained_toy
  skewed = receiver_fn(SCALE)
  base = tmp_path / 'skewed'

  # Without the parity check the export is published: the consistency check passed.
  result = model.export_for_serving(estimator, str(base), skewed, samples=toy.SAMPLES,
                                    parity=False, version=1)
  assert result.validated and 'examples:classify' in result.signatures
  expected = next(estimator.predict(lambda: tf.data.Dataset.from_tensors(toy.SAMPLES),
                                    checkpoint_path=result.checkpoint_path,
                                    yield_single_examples=False))
  with ee.Predictor.from_saved_model(result.path) as predictor:
    raw = predictor(toy.SAMPLES)
    examples = predictor.for_signature('examples:serving_default')(
        {'examples': SPEC.to_examples(toy.SAMPLES)})
  np.testing.assert_allclose(raw['logits'], examples['logits'], rtol=1e-6)
  scaled = dict(toy.SAMPLES, x=toy.SAMPLES['x'] * SCALE)
  as_scaled = next(estimator.predict(lambda: tf.data.Dataset.from_tensors(scaled),
                                     checkpoint_path=result.checkpoint_path,
                                     yield_single_examples=False))
  np.testing.assert_allclose(raw['logits'], as_scaled['logits'], rtol=1e-5)  # The skew itself.
  difference = np.max(np.abs(raw['logits'] - expected['logits']))
  assert difference > 1e-2

  # With it (the default), the same export is refused and nothing new is published.
  with pytest.raises(ValidationError, match=r"^'examples:predict' output 'logits' differs from "
                     r"estimator.predict: max abs difference [0-9.e+-]+: got [0-9.e+-]+\. "
                     r"Fix: tolerance is rtol=0.0001, atol=1e-05") as info:
    model.export_for_serving(estimator, str(base), skewed, samples=toy.SAMPLES, version=2)
  assert info.value.value == pytest.approx(difference, rel=1e-3)
  assert _published(base) == [1]
  assert [n for n in os.listdir(base) if n.startswith('.')] == []  # Staging removed.


def test_skew_on_one_path_fails_consistency(trained_toy, tmp_path):
  model, estimator = trained_toy
  base = tmp_path / 'one_path'
  with pytest.raises(ValidationError, match=r"^'examples:serving_default' output 'logits' "
                     r"differs from 'serving_default': max abs difference"):
    model.export_for_serving(estimator, str(base), receiver_fn(1.0, example_only_scale=SCALE),
                             samples=toy.SAMPLES, parity=False)
  assert _published(base) == []


def test_no_skew_passes_parity(trained_toy, tmp_path):
  model, estimator = trained_toy
  result = model.export_for_serving(estimator, str(tmp_path / 'faithful'),
                                    receiver_fn(1.0), samples=toy.SAMPLES)
  assert result.validated
  with ee.Predictor.from_saved_model(result.path) as predictor:
    outputs = validate_lib.run_signatures(predictor, {
        'serving_default': toy.SAMPLES,
        'examples:serving_default': {'examples': SPEC.to_examples(toy.SAMPLES)}})
  compared = validate_lib.check_parity(
      estimator, result.checkpoint_path, SPEC, toy.SAMPLES, outputs, 1e-4, 1e-5,
      validate_lib.kinds_of(ee.adapt_receiver_fn(receiver_fn(1.0), features=SPEC)))
  assert compared == 6  # logits, probabilities, class_ids of both paths.


class CountsBuilds(toy.ToyClassifier):
  """Counts the builds of its PREDICT graph."""

  def __init__(self):
    self.predict_builds = 0

  def predictions(self, features, mode, params):
    if mode == tf.estimator.ModeKeys.PREDICT:
      self.predict_builds += 1
    return super().predictions(features, mode, params)


def test_parity_reuses_the_export_graph_when_the_features_match(trained_toy, tmp_path):
  model_dir = trained_toy[1].model_dir
  # Features of estimator.predict's dtypes and static shapes: one build, still a real check.
  model = CountsBuilds()
  result = model.export_for_serving(model.make_estimator(model_dir), str(tmp_path / 'once'),
                                    receiver_fn(1.0), samples=toy.SAMPLES)
  assert result.validated and model.predict_builds == 1
  model = CountsBuilds()
  with pytest.raises(ValidationError, match=r"differs from estimator.predict"):
    model.export_for_serving(model.make_estimator(model_dir), str(tmp_path / 'skew'),
                             receiver_fn(SCALE), samples=toy.SAMPLES)
  assert model.predict_builds == 1
  # The export's model_fn got a feature estimator.predict's would not (the samples lack
  # it), so the reference builds its own graph, as estimator.predict would.
  model = CountsBuilds()
  with pytest.warns(ee.UnreadFeatureWarning):
    result = model.export_for_serving(model.make_estimator(model_dir), str(tmp_path / 'twice'),
                                      receiver_fn(1.0, extra_feature=True), samples=toy.SAMPLES)
  assert result.validated and model.predict_builds == 2


class FailsOnSecondBuild(toy.ToyClassifier):
  """Builds its PREDICT graph once (tf.estimator's export); the second build (the parity
  reference's, when it cannot reuse the export's graph) raises."""

  def __init__(self):
    self.predict_builds = 0

  def predictions(self, features, mode, params):
    if mode == tf.estimator.ModeKeys.PREDICT:
      self.predict_builds += 1
      if self.predict_builds == 2:
        raise RuntimeError('the reference cannot be built')
    return super().predictions(features, mode, params)


def test_a_reference_that_fails_fails_the_export_after_the_served_checks(trained_toy, tmp_path):
  model_dir = trained_toy[1].model_dir  # The toy's checkpoint; the same variables.
  base = tmp_path / 'reference'
  model = FailsOnSecondBuild()
  with pytest.raises(RuntimeError, match='the reference cannot be built'):
    model.export_for_serving(model.make_estimator(model_dir), str(base),
                             receiver_fn(1.0, extra_feature=True), samples=toy.SAMPLES)
  assert model.predict_builds == 2 and _published(base) == []
  # A served-side failure (the paths disagree) comes first, as if the checks ran in turn.
  model = FailsOnSecondBuild()
  with pytest.raises(ValidationError, match=r"^'examples:serving_default' output 'logits' "
                     r'differs from'):
    model.export_for_serving(model.make_estimator(model_dir), str(base),
                             receiver_fn(1.0, example_only_scale=SCALE, extra_feature=True),
                             samples=toy.SAMPLES)
  assert model.predict_builds == 2 and _published(base) == []
  assert [n for n in os.listdir(base) if n.startswith('.')] == []  # Staging removed.
