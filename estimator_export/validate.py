"""Checks that an export keeps its contract: every signature runs, paths agree.

Used by `export_for_serving` before a version is published, and by
`estimator-export validate --dir DIR` on any export with a manifest. Freezing
uses its sample inputs (sample_feeds) and tolerance comparison (compare_arrays).
"""
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from estimator_export import _saved_model as saved_model_lib
from estimator_export import outputs as outputs_lib
from estimator_export import receivers as receivers_lib
from estimator_export._reference import predict_once
from estimator_export.errors import ExportError, ValidationError
from estimator_export.features import FeatureSpec
from estimator_export.predictor import Predictor, checks_session_config

SAMPLE_SENTENCE = b'this is a sample sentence'


def receiver_of(signature_name: str) -> str:
  """'examples:classify' -> 'examples'; 'serving_default' -> '' (the primary)."""
  return signature_name.split(':', 1)[0] if ':' in signature_name else ''


def guess_kind(signature_def) -> str:
  """A receiver kind from a SignatureDef alone (for exports we did not build)."""
  inputs = signature_def.inputs
  strings = [k for k, v in inputs.items() if v.dtype == tf.string.as_datatype_enum]
  if signature_def.method_name != outputs_lib.PREDICT_METHOD or (
      list(inputs) == [receivers_lib.EXAMPLES_KEY] and strings):
    return receivers_lib.EXAMPLE
  if strings and len(strings) == len(inputs):
    return receivers_lib.IMAGE if any('image' in k for k in strings) else receivers_lib.TEXT
  return receivers_lib.RAW


def sample_feeds(signature_defs: Mapping[str, Any], spec: Optional[FeatureSpec],
                 samples: Optional[Mapping[str, Any]] = None,
                 kinds: Optional[Mapping[str, str]] = None,
                 batch_size: int = 2,
                 rng: Optional[np.random.RandomState] = None) -> Dict[str, Dict[str, Any]]:
  """Signature name -> inputs, from the samples or from defaults.

  Args:
    signature_defs: name -> SignatureDef.
    spec: the serving features (None: inputs are made from signature shapes).
    samples: feature name or input key -> array [batch, ...].
    kinds: receiver name -> kind; guessed from each SignatureDef if absent.
      A 'custom' receiver (a user's own receiver fn) takes samples[alias],
      else zeros / b'' of the signature's dtype and shape.
    batch_size: rows of generated samples.
    rng: generated float inputs are drawn from it (normal), not zeros.

  Raw inputs take the sample of the feature whose input key they are; a
  serialized tf.Example input takes the samples serialized; text inputs take
  samples[key] (default: a sentence); image inputs take samples[key]
  (default: a small PNG). Without a spec, other
  inputs are generated from their signature shapes: known dims kept, an
  unknown first dim is the batch, other unknown dims 1; strings b''.
  """
  batch = dict(samples) if samples is not None else {}
  inputs_of = {}  # Raw input key -> feature name.
  if spec is not None:
    features = spec.sample_batch(_rows(batch, batch_size))
    features.update({k: np.asarray(v, dtype=spec[k].numpy_dtype)
                     for k, v in spec.to_feature_names(batch).items() if k in spec})
    inputs_of = {f.input_key: f.name for f in spec.serving_features}
  else:
    features = {}
  n = _rows(batch, batch_size)
  feeds = {}
  for name, sig in signature_defs.items():
    kind = (kinds or {}).get(receiver_of(name)) or guess_kind(sig)
    inputs = {}
    for key, info in sig.inputs.items():
      if kind == receivers_lib.CUSTOM:  # A user's receiver: samples by alias, else zeros.
        inputs[key] = batch[key] if key in batch else _generated(info, n, rng)
      elif key in batch and (spec is None or key not in spec and key not in inputs_of):
        inputs[key] = batch[key]
      elif kind == receivers_lib.EXAMPLE:
        if spec is None:
          raise ValidationError(f'signature {name!r} takes tf.Examples but the export has '
                                'no manifest with its features', value=key,
                                fix='pass samples with serialized examples')
        inputs[key] = spec.to_examples(features)
      elif kind == receivers_lib.TEXT:
        inputs[key] = [SAMPLE_SENTENCE] * n
      elif kind == receivers_lib.IMAGE:
        inputs[key] = [tiny_png()] * n
      elif key in inputs_of:
        inputs[key] = features[inputs_of[key]]
      elif key in features:
        inputs[key] = features[key]
      elif spec is None:
        inputs[key] = _generated(info, n, rng)
      else:
        raise ValidationError(f'signature {name!r} input {key!r} has no sample value',
                              value=key, fix=f'pass samples={{{key!r}: [...]}}')
    feeds[name] = inputs
  return feeds


def _rows(batch: Mapping[str, Any], default: int) -> int:
  return len(next(iter(batch.values()))) if batch else default


def _generated(tensor_info, n: int, rng: Optional[np.random.RandomState]) -> np.ndarray:
  dtype = tf.dtypes.as_dtype(tensor_info.dtype)
  dims = [d.size for d in tensor_info.tensor_shape.dim]
  shape = [n if dims[0] < 0 else dims[0]] + [1 if d < 0 else d for d in dims[1:]] if dims else []
  if dtype == tf.string:
    return np.full(shape, b'', dtype=object)
  if rng is not None and dtype.is_floating:
    return rng.normal(size=shape).astype(dtype.as_numpy_dtype)
  return np.zeros(shape, dtype=dtype.as_numpy_dtype)


def tiny_png() -> bytes:
  """A 4x4 RGB PNG, half white."""
  image = np.zeros((4, 4, 3), dtype=np.uint8)
  image[:, :2] = 255
  return tf.io.encode_png(image).numpy()


def run_signatures(predictor: Predictor, feeds: Mapping[str, Mapping[str, Any]]
                  ) -> Dict[str, Dict[str, np.ndarray]]:
  """Runs every signature of a loaded export on its feeds."""
  results = {}
  for name, inputs in feeds.items():
    try:
      results[name] = predictor.for_signature(name)(inputs)
    except ExportError:
      raise
    except Exception as e:  # A TF runtime error: say which signature failed.
      raise ValidationError(f'signature {name!r} failed on sample inputs', value=str(e)[:500],
                            fix='run it with estimator_export.Predictor to debug; '
                            'check that the receiver and the model agree') from e
  return results


def check_same_outputs(got: Mapping[str, np.ndarray], expected: Mapping[str, np.ndarray],
                       name: str, target: str):
  """A signature alias must give exactly what its target gives on the same inputs."""
  if sorted(got) != sorted(expected):
    raise ValidationError(f'signature alias {name!r} outputs differ from {target!r}',
                          value=sorted(got), fix=f'expected {sorted(expected)}')
  for key, value in got.items():
    if is_numeric(value):
      assert_close(expected[key], value, f'{name!r} output {key!r}', repr(target), 0., 0.)
    elif not np.array_equal(np.asarray(expected[key]), np.asarray(value)):
      raise ValidationError(f'signature alias {name!r} output {key!r} differs from {target!r}',
                            value=np.asarray(value).tolist()[:3], fix='report this as a bug')


def check_consistency(results: Mapping[str, Mapping[str, np.ndarray]], rtol: float,
                      atol: float, kinds: Optional[Mapping[str, str]] = None):
  """Default signatures fed the same samples (raw, tf.Example) must agree.

  Text and image receivers get other inputs, so they are not compared.
  """
  same_data = (receivers_lib.RAW, receivers_lib.EXAMPLE)
  names = [n for n in sorted(results, key=lambda n: (':' in n, n))
           if n.split(':')[-1] == outputs_lib.DEFAULT_KEY and
           (kinds or {}).get(receiver_of(n), receivers_lib.RAW) in same_data]
  if len(names) < 2:
    return
  reference = results[names[0]]
  for name in names[1:]:
    for key, value in results[name].items():
      if key in reference and is_numeric(value):
        assert_close(reference[key], value, f'{name!r} output {key!r}', repr(names[0]),
                     rtol, atol)


def check_parity(estimator, checkpoint_path: str, spec: FeatureSpec,
                 samples: Mapping[str, Any], results: Mapping[str, Mapping[str, np.ndarray]],
                 rtol: float, atol: float, kinds: Optional[Mapping[str, str]] = None) -> int:
  """Compares signatures fed the samples with estimator.predict; returns outputs compared.

  Samples may be keyed by feature name or input key; estimator.predict gets
  them by feature name. Every signature whose inputs came from the samples
  (raw tensors or tf.Examples) is compared on each output key it shares with the
  estimator's predictions (e.g. a canned classifier's 'predict' signature).
  The predictions are `_reference.predict_once`'s: what estimator.predict gives
  on the checkpoint, without its input pipeline.
  """
  features = parity_features(spec, samples)
  if not parity_signatures(results, kinds) or not features:
    return 0
  return compare_parity(predict_once(estimator, checkpoint_path, features), results,
                        rtol, atol, kinds)


def parity_features(spec: FeatureSpec, samples: Mapping[str, Any]) -> Dict[str, np.ndarray]:
  """The samples as the model_fn's features: feature name -> array of the declared dtype."""
  return {k: np.asarray(v, dtype=spec[k].numpy_dtype)
          for k, v in spec.to_feature_names(samples).items() if k in spec}


def parity_signatures(results: Mapping[str, Any], kinds: Optional[Mapping[str, str]] = None
                     ) -> List[str]:
  """The signatures fed the samples themselves (raw tensors or tf.Examples), sorted."""
  same_data = (receivers_lib.RAW, receivers_lib.EXAMPLE)
  return sorted(n for n in results
                if (kinds or {}).get(receiver_of(n), receivers_lib.RAW) in same_data)


def compare_parity(predictions: Mapping[str, Any],
                   results: Mapping[str, Mapping[str, np.ndarray]], rtol: float, atol: float,
                   kinds: Optional[Mapping[str, str]] = None) -> int:
  """check_parity's comparison, given the estimator's predictions; returns outputs compared."""
  compared = 0
  for name in parity_signatures(results, kinds):
    outputs = results[name]
    for key, expected in predictions.items():
      if key in outputs and is_numeric(expected):
        assert_close(expected, outputs[key], f'{name!r} output {key!r}', 'estimator.predict',
                     rtol, atol)
        compared += 1
  return compared


def is_numeric(value) -> bool:
  return np.asarray(value).dtype.kind in 'biuf'


def max_abs_difference(expected, actual) -> float:
  """The largest |actual - expected|, computed in float64 (0.0 for empty arrays)."""
  expected, actual = np.asarray(expected), np.asarray(actual)
  if not expected.size:
    return 0.0
  return float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))


def compare_arrays(expected, actual, rtol: float, atol: float,
                   equal_nan: bool = True) -> Tuple[bool, float]:
  """(close, difference) of two arrays of one shape: the one tolerance check.

  Floats (and complex) are close when |actual - expected| <= atol + rtol *
  |expected| everywhere (NaN matches NaN if equal_nan); the difference is the
  largest |actual - expected|. Everything else (ints, bools, strings) must be
  equal; the difference is the largest one for ints, else the number of
  differing elements.
  """
  expected, actual = np.asarray(expected), np.asarray(actual)
  if expected.dtype.kind in 'fc':
    return (bool(np.allclose(actual, expected, rtol=rtol, atol=atol, equal_nan=equal_nan)),
            max_abs_difference(expected, actual))
  same = np.array_equal(expected, actual)
  if expected.dtype.kind in 'iu' and actual.dtype.kind in 'iu':
    return same, max_abs_difference(expected, actual)
  return same, float(np.sum(expected != actual)) if expected.size else 0.0


def assert_close(expected, actual, what: str, against: str, rtol: float, atol: float):
  expected, actual = np.asarray(expected), np.asarray(actual)
  if expected.shape != actual.shape:
    raise ValidationError(f'{what} has shape {actual.shape}, {against} {expected.shape}',
                          value=actual.shape, fix='check the receivers and the model_fn')
  close, diff = compare_arrays(expected, actual, rtol, atol, equal_nan=False)
  if not close:
    raise ValidationError(f'{what} differs from {against}: max abs difference {diff:.3g}',
                          value=diff, fix=f'tolerance is rtol={rtol}, atol={atol}; look for '
                          'randomness or training-mode ops (dropout) in the PREDICT graph, '
                          'or loosen the tolerance')


def validate_export(export_dir: str, samples: Optional[Mapping[str, Any]] = None,
                    rtol: float = 1e-4, atol: float = 1e-5,
                    tag_set: saved_model_lib.TagSet = saved_model_lib.SERVE_TAG
                    ) -> Dict[str, Dict[str, tuple]]:
  """Runs every signature of one MetaGraph of an export; returns name -> output key -> shape.

  Args:
    export_dir: the SavedModel (version) directory.
    samples: feature name or input key -> rows (see sample_feeds).
    rtol, atol: tolerance of the comparison of the raw and tf.Example paths.
    tag_set: the MetaGraph's tags ('serve,gpu' or ['serve', 'gpu'], order
      ignored); the default is the one TF Serving loads by default.

  Raises:
    ContractError: not a SavedModel, or no MetaGraph tagged exactly `tag_set`
      (the message lists the tag-sets there are).
    ValidationError: a signature failed, or the paths disagree.
  """
  # Checks the directory and the tag-set first.
  sig_defs = saved_model_lib.signature_defs(export_dir, tag_set)
  manifest = saved_model_lib.read_manifest(export_dir)
  spec = FeatureSpec.from_json(manifest['features']) if manifest.get('features') else None
  kinds = {receiver_of(n): guess_kind(sig) for n, sig in sig_defs.items()
           if n.split(':')[-1] == outputs_lib.DEFAULT_KEY}
  first = (outputs_lib.DEFAULT_KEY if outputs_lib.DEFAULT_KEY in sig_defs or not sig_defs
           else min(sig_defs))
  with Predictor.from_saved_model(export_dir, signature_name=first,
                                  tags=sorted(saved_model_lib.parse_tag_set(tag_set)),
                                  config=checks_session_config()) as predictor:
    results = run_signatures(predictor, sample_feeds(sig_defs, spec, samples))
  check_consistency(results, rtol, atol, kinds)
  return {name: {k: np.shape(v) for k, v in out.items()} for name, out in results.items()}


def kinds_of(receiver_fn: receivers_lib.ServingReceiverFn) -> Dict[str, str]:
  return {name: fn.kind for name, fn in receiver_fn.parts().items()}


__all__: Sequence[str] = ('sample_feeds', 'run_signatures', 'check_consistency',
                          'check_parity', 'compare_parity', 'parity_features', 'validate_export')
