"""One declaration of a model's serving inputs.

A `FeatureSpec` lists the features a model reads, once. Every receiver, every
signature, the tf.Example parsing spec, the export manifest and the sample
inputs used for validation and warmup derive from it::

    spec = FeatureSpec([
        Feature('input_ids', 'int32', shape=(128,)),
        Feature('tags', 'string', shape=(None,)),           # VarLen -> dense, padded
        Feature('weight', 'float32', default=1.0),
        Feature('label_ids', 'int32', training_only=True),  # never asked at serving
    ])
    spec.parsing_spec()   # {'input_ids': FixedLenFeature([128], tf.int64), ...}

A feature may be served under another input key than its name: the model's
features dict says ``predictor_inputs`` while requests send ``images``::

    Feature('predictor_inputs', 'float32', shape=(28, 28), input_key='images')

The raw receiver's placeholder and the signature input alias are then
``images``; the features dict, tf.Example feature keys, `estimator.predict`
and the manifest's ``name`` keep ``predictor_inputs``. Sample batches may be
keyed by either (`to_feature_names`). An input key equal to another feature's
name or input key is a `FeatureError` naming both features.

Shapes are per example (no batch dimension). A shape with a `None` dimension is
a variable-length feature: parsed with `VarLenFeature` and densified (padded
with the default) unless `ragged=True`, which yields a `tf.RaggedTensor`.

Nested feature dicts are rejected (`FeatureError`), not flattened: a flattened
name such as ``a/b`` would be a legal TF Serving input key but would not round
trip through `tf.Example` feature names or Estimator `features` dicts the way
users expect, so we ask for flat names instead.
"""
import dataclasses
import json
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from estimator_export.errors import FeatureError, did_you_mean

# dtype a feature may have -> dtype it is stored as in a tf.Example.
_EXAMPLE_DTYPE = {
    tf.float16: tf.float32, tf.float32: tf.float32, tf.float64: tf.float32,
    tf.bfloat16: tf.float32,
    tf.int8: tf.int64, tf.int16: tf.int64, tf.int32: tf.int64, tf.int64: tf.int64,
    tf.uint8: tf.int64, tf.uint16: tf.int64, tf.uint32: tf.int64,
    tf.bool: tf.int64,
    tf.string: tf.string,
}
SUPPORTED_DTYPES = tuple(sorted(d.name for d in _EXAMPLE_DTYPE))

ShapeLike = Union[int, None, Sequence[Optional[int]]]


def as_dtype(dtype: Any, feature_name: str = '?') -> tf.DType:
  """Converts 'int32', np.int32 or tf.int32 to a supported tf.DType."""
  try:
    tf_dtype = tf.as_dtype(dtype)
  except TypeError:
    tf_dtype = None
  if tf_dtype not in _EXAMPLE_DTYPE:
    name = dtype if isinstance(dtype, str) else getattr(dtype, 'name', repr(dtype))
    raise FeatureError(
        f'unsupported dtype for feature {feature_name!r}', value=name,
        fix=f'use one of {", ".join(SUPPORTED_DTYPES)}' +
        did_you_mean(str(name), SUPPORTED_DTYPES))
  return tf_dtype


def _as_shape(shape: ShapeLike, feature_name: str) -> Tuple[Optional[int], ...]:
  if shape is None:
    return ()
  if isinstance(shape, (int, np.integer)):
    shape = (int(shape),)
  try:
    dims = tuple(None if d is None or d == -1 else int(d) for d in shape)
  except (TypeError, ValueError):
    raise FeatureError(f'bad shape for feature {feature_name!r}', value=shape,
                       fix='give the per-example shape as a tuple of ints, '
                       'None for a variable dimension, e.g. (128,) or (None,)') from None
  if any(d is not None and d < 0 for d in dims):
    raise FeatureError(f'negative dimension in shape of feature {feature_name!r}',
                       value=shape, fix='use None (or -1) for a variable dimension')
  return dims


@dataclasses.dataclass(frozen=True)
class Feature:
  """One model input, described per example (no batch dimension).

  Attributes:
    name: the features-dict key and the tf.Example feature name (and, unless
      `input_key` says otherwise, the raw receiver's input key).
    dtype: what the model_fn receives (int32, float32, string, ...). tf.Example
      stores ints as int64 and floats as float32; parsing casts back.
    shape: per-example shape; () for a scalar, None dims for variable length.
    default: value for a missing tf.Example feature (fixed length) and the pad
      value for variable-length ones; None makes a fixed feature required.
    training_only: the model reads it only in TRAIN/EVAL (e.g. label_ids);
      serving receivers never ask for it.
    ragged: for variable-length features: hand the model a tf.RaggedTensor
      instead of a dense, padded tensor.
    description: free text carried into the export manifest.
    input_key: the raw receiver's input key and the signature input alias
      clients send (e.g. 'images' for the feature 'predictor_inputs');
      defaults to `name`. tf.Example receivers keep `name` as the Example
      feature key, since Examples are the model's data records.
  """
  name: str
  dtype: Any = tf.float32
  shape: ShapeLike = ()
  default: Any = None
  training_only: bool = False
  ragged: bool = False
  description: str = ''
  input_key: Optional[str] = None

  def __post_init__(self):
    if not isinstance(self.name, str) or not self.name:
      raise FeatureError('feature name must be a non-empty string', value=self.name,
                         fix='name features like tf.Example keys, e.g. "input_ids"')
    _check_key(self.name, f'feature name {self.name!r}')
    if self.input_key is None:
      object.__setattr__(self, 'input_key', self.name)
    elif not isinstance(self.input_key, str) or not self.input_key:
      raise FeatureError(f'input_key of feature {self.name!r} must be a non-empty string',
                         value=self.input_key, fix='e.g. input_key="images", or leave it out')
    else:
      _check_key(self.input_key, f'input_key of feature {self.name!r}')
    if self.training_only and self.input_key != self.name:
      raise FeatureError(f'training-only feature {self.name!r} has an input_key, but serving '
                         'never asks for it', value=self.input_key,
                         fix='drop input_key, or drop training_only=True')
    object.__setattr__(self, 'dtype', as_dtype(self.dtype, self.name))
    object.__setattr__(self, 'shape', _as_shape(self.shape, self.name))
    if self.ragged and self.is_fixed_length:
      raise FeatureError(f'feature {self.name!r} is ragged but its shape is fully known',
                         value=self.shape, fix='give a None dimension, e.g. shape=(None,)')
    if self.default is not None:
      self._check_default()

  def _check_default(self):
    try:
      value = np.asarray(self.default, dtype=self.numpy_dtype)
    except (TypeError, ValueError):
      raise FeatureError(f'default of feature {self.name!r} does not fit dtype '
                         f'{self.dtype.name}', value=self.default,
                         fix=f'give a {self.dtype.name} value') from None
    if self.is_fixed_length and value.ndim and value.shape != self.shape:
      raise FeatureError(f'default of feature {self.name!r} has shape {value.shape}, '
                         f'the feature {self.shape}', value=self.default,
                         fix='give a scalar (repeated to fill the shape) or a value of '
                         'the feature\'s shape')
    if not self.is_fixed_length and value.ndim:
      raise FeatureError(f'default of variable-length feature {self.name!r} must be '
                         'a scalar pad value', value=self.default, fix='give a scalar')

  @property
  def is_fixed_length(self) -> bool:
    return all(d is not None for d in self.shape)

  @property
  def example_dtype(self) -> tf.DType:
    """The dtype this feature is stored as in a tf.Example (int64/float32/string)."""
    return _EXAMPLE_DTYPE[self.dtype]

  @property
  def numpy_dtype(self) -> np.dtype:
    return np.dtype(object) if self.dtype == tf.string else self.dtype.as_numpy_dtype

  @property
  def batch_shape(self) -> List[Optional[int]]:
    """Shape with a leading unknown batch dimension, e.g. [None, 128]."""
    return [None] + list(self.shape)

  def parsing_feature(self):
    """The tf.io parsing config for this feature."""
    if self.ragged:
      return tf.io.RaggedFeature(self.example_dtype)
    if not self.is_fixed_length:
      return tf.io.VarLenFeature(self.example_dtype)
    default = None
    if self.default is not None:
      ex_np = self.example_dtype.as_numpy_dtype
      if self.example_dtype == tf.string:
        ex_np = object
      default = np.broadcast_to(np.asarray(self.default, dtype=ex_np), self.shape)
    return tf.io.FixedLenFeature(list(self.shape), self.example_dtype, default_value=default)

  def sample_value(self) -> np.ndarray:
    """One example's worth of values (the default, or zeros / 'a'), for smoke tests."""
    shape = tuple(1 if d is None else d for d in self.shape)
    fill = self.default
    if fill is None:
      fill = b'a' if self.dtype == tf.string else 0
    return np.full(shape, fill, dtype=self.numpy_dtype)

  def to_json_dict(self) -> Dict[str, Any]:
    default = self.default
    if isinstance(default, np.ndarray):
      default = default.tolist()
    if isinstance(default, bytes):
      default = default.decode('utf-8', 'replace')
    return {'name': self.name, 'dtype': self.dtype.name,
            'shape': [-1 if d is None else d for d in self.shape],
            'default': default, 'training_only': self.training_only,
            'ragged': self.ragged, 'description': self.description,
            'input_key': self.input_key}


def _check_key(key: str, what: str):
  if ':' in key or key.startswith('/') or key.endswith('/'):
    raise FeatureError(f'{what} is not a valid input key', value=key,
                       fix='use letters, digits, "_", "-" and "."')


class FeatureSpec:
  """An immutable, ordered collection of `Feature`s with unique names."""

  def __init__(self, features: Union[Iterable[Feature], Mapping[str, Any]]):
    if isinstance(features, FeatureSpec):
      features = features.features
    elif isinstance(features, Mapping):
      features = _features_from_mapping(features)
    items = tuple(features)
    for f in items:
      if not isinstance(f, Feature):
        raise FeatureError('FeatureSpec takes Feature objects', value=f,
                           fix="wrap it: Feature('name', 'float32', shape=(...))")
    seen = set()
    for f in items:
      if f.name in seen:
        raise FeatureError('duplicate feature name', value=f.name,
                           fix='give every feature a unique name')
      seen.add(f.name)
    _check_input_keys(items)
    if not items:
      raise FeatureError('a FeatureSpec needs at least one feature', value=[],
                         fix='declare the inputs your model_fn reads')
    self._features = items
    self._by_name = {f.name: f for f in items}

  @property
  def features(self) -> Tuple[Feature, ...]:
    return self._features

  @property
  def serving_features(self) -> Tuple[Feature, ...]:
    """Features a serving request must (or may) carry: all but training-only."""
    return tuple(f for f in self._features if not f.training_only)

  @property
  def serving_names(self) -> Tuple[str, ...]:
    """Feature names (features-dict keys) of the serving features."""
    return tuple(f.name for f in self.serving_features)

  @property
  def input_keys(self) -> Tuple[str, ...]:
    """What requests send for the serving features: each one's input_key (the raw receiver's)."""
    return tuple(f.input_key for f in self.serving_features)

  def feature_for_input(self, key: str) -> Feature:
    """The serving feature a raw input key carries ('images' -> Feature('predictor_inputs'))."""
    for f in self.serving_features:
      if f.input_key == key:
        return f
    raise FeatureError('no serving feature has this input key', value=key,
                       fix=f'input keys are {list(self.input_keys)}' +
                       did_you_mean(key, self.input_keys))

  def to_feature_names(self, batch: Mapping[str, Any]) -> Dict[str, Any]:
    """Re-keys a batch from input keys to feature names; other keys are kept as they are.

    {'images': array} -> {'predictor_inputs': array} for
    Feature('predictor_inputs', input_key='images'). Collisions are impossible:
    an input key never equals another feature's name (checked at construction).
    """
    renamed = {f.input_key: f.name for f in self.serving_features if f.input_key != f.name}
    out = {}
    for key, value in batch.items():
      name = renamed.get(key, key)
      if name in out:
        raise FeatureError(f'batch gives feature {name!r} twice: by name and by its input '
                           'key', value=sorted(k for k in batch if renamed.get(k, k) == name),
                           fix='key the batch by the feature name or by the input key, '
                           'not both')
      out[name] = value
    return out

  @property
  def names(self) -> Tuple[str, ...]:
    return tuple(f.name for f in self._features)

  def __getitem__(self, name: str) -> Feature:
    try:
      return self._by_name[name]
    except KeyError:
      fix = f'declared features are {list(self.names)}'
    if name in self.input_keys:
      fix = f'{name!r} is the input key of feature {self.feature_for_input(name).name!r}'
    raise FeatureError('unknown feature', value=name,
                       fix=fix + did_you_mean(name, self.names)) from None

  def __contains__(self, name) -> bool:
    return name in self._by_name

  def __iter__(self):
    return iter(self._features)

  def __len__(self):
    return len(self._features)

  def __eq__(self, other):
    return isinstance(other, FeatureSpec) and self._features == other._features

  def __hash__(self):
    return hash(self._features)

  def __repr__(self):
    return f'FeatureSpec({list(self._features)!r})'

  def parsing_spec(self, include_training: bool = False) -> Dict[str, Any]:
    """Name -> FixedLenFeature / VarLenFeature / RaggedFeature, for tf.io.parse_example."""
    return {f.name: f.parsing_feature() for f in self._selected(include_training)}

  def parse_examples(self, serialized: tf.Tensor, include_training: bool = False
                    ) -> Dict[str, Any]:
    """Parses a string Tensor [batch] of tf.Examples into model-dtype features.

    Variable-length features are densified, padded with their default; ints
    and floats are cast back from int64/float32 to the declared dtype.
    """
    parsed = tf.io.parse_example(serialized, self.parsing_spec(include_training))
    out = {}
    for f in self._selected(include_training):
      value = parsed[f.name]
      if isinstance(value, tf.sparse.SparseTensor):
        pad = f.default if f.default is not None else ('' if f.dtype == tf.string else 0)
        value = tf.sparse.to_dense(value, default_value=tf.cast(pad, f.example_dtype))
      if f.dtype != f.example_dtype:
        value = tf.cast(value, f.dtype)
      out[f.name] = value
    return out

  def placeholders(self, default_batch_size: Optional[int] = None,
                   include_training: bool = False) -> Dict[str, tf.Tensor]:
    """Graph-mode placeholders [batch] + shape, keyed by feature name.

    Each placeholder op is named after the feature's input key ('images:0'
    for Feature('predictor_inputs', input_key='images')).
    """
    out = {}
    for f in self._selected(include_training):
      if f.ragged:
        raise FeatureError(f'ragged feature {f.name!r} has no raw-tensor placeholder',
                           value=f.name, fix='serve it through the tf.Example receiver, '
                           'or declare it dense with a fixed shape')
      out[f.name] = tf.compat.v1.placeholder(
          f.dtype, [default_batch_size] + list(f.shape), name=f.input_key)
    return out

  def sample_batch(self, batch_size: int = 2, include_training: bool = False
                  ) -> Dict[str, np.ndarray]:
    """A batch of default / zero values for every serving feature."""
    return {f.name: np.stack([f.sample_value()] * batch_size)
            for f in self._selected(include_training)}

  def to_examples(self, batch: Mapping[str, Any]) -> List[bytes]:
    """Serializes a feature batch (name or input key -> array [batch, ...]) to tf.Example bytes.

    The Example feature keys are the feature names.
    """
    batch = self.to_feature_names(batch)
    sizes = {name: len(np.asarray(v, dtype=object)) for name, v in batch.items()}
    if len(set(sizes.values())) > 1:
      raise FeatureError('features of one batch differ in batch size', value=sizes,
                         fix='give every feature the same leading dimension')
    unknown = [n for n in batch if n not in self._by_name]
    if unknown:
      raise FeatureError('sample batch has features the spec does not declare',
                         value=unknown, fix=f'declared features are {list(self.names)}')
    n = next(iter(sizes.values()), 0)
    examples = []
    for i in range(n):
      feats = {}
      for name, values in batch.items():
        feats[name] = _to_tf_feature(self._by_name[name], values[i])
      examples.append(tf.train.Example(
          features=tf.train.Features(feature=feats)).SerializeToString())
    return examples

  def to_json(self) -> List[Dict[str, Any]]:
    return [f.to_json_dict() for f in self._features]

  @classmethod
  def from_json(cls, items: Union[str, Sequence[Mapping[str, Any]]]) -> 'FeatureSpec':
    if isinstance(items, str):
      items = json.loads(items)
    return cls([Feature(name=d['name'], dtype=d['dtype'],
                        shape=tuple(None if s == -1 else s for s in d['shape']),
                        default=d.get('default'), training_only=d.get('training_only', False),
                        ragged=d.get('ragged', False), description=d.get('description', ''),
                        input_key=d.get('input_key'))
                for d in items])

  def _selected(self, include_training: bool) -> Tuple[Feature, ...]:
    return self._features if include_training else self.serving_features


def _check_input_keys(features: Sequence[Feature]):
  """An input key may equal no other feature's name or input key (FeatureError naming both)."""
  by_name = {f.name: f for f in features}
  owner: Dict[str, Feature] = {}
  for f in features:
    if f.training_only:
      continue
    other = by_name.get(f.input_key)
    if other is not None and other is not f:
      raise FeatureError(f'input_key {f.input_key!r} of feature {f.name!r} is the name of '
                         f'feature {other.name!r}', value=f.input_key,
                         fix='choose an input key no other feature is named (a sample or '
                         'request keyed by it would be ambiguous)')
    if f.input_key in owner:
      raise FeatureError(f'features {owner[f.input_key].name!r} and {f.name!r} share the input '
                         f'key {f.input_key!r}', value=f.input_key,
                         fix='give every serving feature its own input_key')
    owner[f.input_key] = f


def _features_from_mapping(mapping: Mapping[str, Any]) -> List[Feature]:
  """{'x': Feature(...) | tf.io.FixedLenFeature | dtype} -> Features; nested dicts rejected."""
  out = []
  for name, value in mapping.items():
    if isinstance(value, Mapping):
      raise FeatureError(f'nested feature dict under {name!r}', value=sorted(value),
                         fix='declare flat features (TF Serving inputs and tf.Example '
                         f'features are flat), e.g. {name}_<child> for each child')
    if isinstance(value, Feature):
      if value.name != name:
        raise FeatureError(f'feature keyed {name!r} is named {value.name!r}', value=value.name,
                           fix='use the same name for the key and the Feature')
      out.append(value)
    elif isinstance(value, tf.io.FixedLenFeature):
      out.append(Feature(name, value.dtype, tuple(value.shape), default=value.default_value))
    elif isinstance(value, tf.io.VarLenFeature):
      out.append(Feature(name, value.dtype, (None,)))
    else:
      out.append(Feature(name, value))
  return out


def _to_tf_feature(feature: Feature, value: Any) -> tf.train.Feature:
  flat = np.asarray(value, dtype=object if feature.dtype == tf.string else None).reshape(-1)
  if feature.example_dtype == tf.string:
    data = [v.encode('utf-8') if isinstance(v, str) else bytes(v) for v in flat]
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
  if feature.example_dtype == tf.int64:
    return tf.train.Feature(int64_list=tf.train.Int64List(value=[int(v) for v in flat]))
  return tf.train.Feature(float_list=tf.train.FloatList(value=[float(v) for v in flat]))
