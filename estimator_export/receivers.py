"""serving_input_receiver_fn builders, all derived from one FeatureSpec.

Each ``build_*_receiver_fn`` returns a `ServingReceiverFn`: a no-argument
callable returning a `tf.estimator.export.ServingInputReceiver`, which is what
`Estimator.export_saved_model` takes. The object also knows its kind, its
serving input keys and the FeatureSpec its features follow, which the export
wrapper uses to make sample inputs, validate and write warmup requests.

Kinds:
  raw      placeholders ([batch] + shape) keyed by each feature's input key
           (its name unless `Feature(..., input_key='images')` renames it).
  example  one string input 'examples' of serialized tf.Examples [batch]; the
           only form that Classify and Regress signatures accept.
  text     string inputs [batch] handed to a tokenizer function in-graph.
  image    a string input of JPEG/PNG/GIF/BMP bytes [batch], decoded and
           resized in-graph (REST clients send {"b64": "..."}).
  combined a primary receiver plus named alternatives sharing one set of
           feature tensors (see `build_combined_receiver_fn`).
  custom   a user's own serving_input_receiver_fn whose inputs are neither raw
           features nor serialized tf.Examples (see `adapt_receiver_fn` in
           estimator_export.custom_receiver).
"""
from typing import Callable, Dict, Mapping, Optional, Sequence

import tensorflow as tf

from estimator_export.errors import ReceiverError
from estimator_export.features import Feature, FeatureSpec

EXAMPLES_KEY = 'examples'
EXAMPLES_TENSOR_NAME = 'input_example_tensor'
RAW, EXAMPLE, TEXT, IMAGE, COMBINED = 'raw', 'example', 'text', 'image', 'combined'
CUSTOM = 'custom'


class ServingReceiverFn:
  """A serving_input_receiver_fn that also describes itself.

  Call it with no arguments (as Estimator does) to build the receiver in the
  current graph. `build(optional_inputs=True)` makes string inputs default to
  an empty batch, which lets several computed receivers share one graph.
  """
  # build_combined_receiver_fn may combine it (False for adapted user receiver fns).
  composable = True

  def __init__(self, kind: str, spec: FeatureSpec, input_keys: Sequence[str],
               build_fn: Callable[[bool], tf.estimator.export.ServingInputReceiver],
               primary: Optional['ServingReceiverFn'] = None,
               alternatives: Optional[Mapping[str, 'ServingReceiverFn']] = None):
    self.kind = kind
    self.feature_spec = spec
    self.input_keys = tuple(input_keys)
    self.primary = primary
    self.alternatives = dict(alternatives or {})
    self._build_fn = build_fn

  def parts(self) -> Dict[str, 'ServingReceiverFn']:
    """Receiver name ('' for the primary) -> the single-kind receiver behind it."""
    out = {'': self.primary or self}
    out.update(self.alternatives)
    return out

  def __call__(self) -> tf.estimator.export.ServingInputReceiver:
    return self._build_fn(False)

  def build(self, optional_inputs: bool = False) -> tf.estimator.export.ServingInputReceiver:
    return self._build_fn(optional_inputs)

  @property
  def is_single_string_input(self) -> bool:
    """True when Classify/Regress signatures can be built on this receiver."""
    return self.kind == EXAMPLE

  def __repr__(self):
    alts = f', alternatives={sorted(self.alternatives)}' if self.alternatives else ''
    return f'ServingReceiverFn(kind={self.kind!r}, inputs={list(self.input_keys)}{alts})'


def as_feature_spec(features) -> FeatureSpec:
  """A FeatureSpec from a FeatureSpec, a list of Features or a mapping (ReceiverError if not)."""
  if isinstance(features, FeatureSpec):
    return features
  try:
    return FeatureSpec(features)
  except Exception as e:
    raise ReceiverError('receivers need a FeatureSpec (or a list of Features)',
                        value=type(features).__name__,
                        fix='pass FeatureSpec([Feature(...), ...])') from e


def _string_input(name: str, optional: bool, batch_size: Optional[int] = None) -> tf.Tensor:
  if optional:
    return tf.compat.v1.placeholder_with_default(
        tf.constant([], dtype=tf.string), [batch_size], name=name)
  return tf.compat.v1.placeholder(tf.string, [batch_size], name=name)


def build_raw_receiver_fn(features, default_batch_size: Optional[int] = None
                         ) -> ServingReceiverFn:
  """Returns a receiver of one placeholder per serving feature.

  Requests send each feature under its input key (the feature name, or
  `Feature(..., input_key='images')`); the model_fn gets it under its name.

  Args:
    features: FeatureSpec (training-only features are left out).
    default_batch_size: static batch dimension, None for any batch size.
  """
  spec = as_feature_spec(features)

  def build(optional_inputs: bool):
    del optional_inputs  # Placeholders are always required.
    tensors = spec.placeholders(default_batch_size)
    return tf.estimator.export.ServingInputReceiver(tensors, _by_input_key(tensors, spec))

  return ServingReceiverFn(RAW, spec, spec.input_keys, build)


def build_example_receiver_fn(features, default_batch_size: Optional[int] = None,
                              receiver_key: str = EXAMPLES_KEY) -> ServingReceiverFn:
  """Returns a receiver of one string Tensor [batch] of serialized tf.Examples.

  Features are parsed with the spec's parsing config and cast to the declared
  dtypes. This is the receiver Classify and Regress signatures need.
  """
  spec = as_feature_spec(features)

  def build(optional_inputs: bool):
    serialized = _string_input(EXAMPLES_TENSOR_NAME, optional_inputs, default_batch_size)
    parsed = spec.parse_examples(serialized)
    return tf.estimator.export.ServingInputReceiver(parsed, {receiver_key: serialized})

  return ServingReceiverFn(EXAMPLE, spec, (receiver_key,), build)


def build_text_receiver_fn(tokenizer_fn: Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]],
                           features, text_keys: Sequence[str] = ('text',),
                           optional_text_keys: Sequence[str] = ()) -> ServingReceiverFn:
  """Returns a receiver of raw text, tokenized in-graph.

  Args:
    tokenizer_fn: maps {text_key: string Tensor [batch]} to the model's
      features, e.g. {'input_ids': int32 Tensor [batch, seq_len], ...}.
    features: FeatureSpec the tokenizer's output must provide.
    text_keys: names of the string inputs, e.g. ('text',) or ('text_a', 'text_b').
    optional_text_keys: text keys a request may leave out (they default to an
      empty batch, which the tokenizer must accept), e.g. 'text_b' of a pair.
  """
  spec = as_feature_spec(features)
  text_keys = tuple(text_keys)
  if not text_keys:
    raise ReceiverError('text receiver needs at least one text key', value=text_keys,
                        fix="pass text_keys=('text',)")
  unknown = [k for k in optional_text_keys if k not in text_keys]
  if unknown:
    raise ReceiverError('optional_text_keys must be among text_keys', value=unknown,
                        fix=f'text_keys are {list(text_keys)}')

  def build(optional_inputs: bool):
    texts = {k: _string_input(k, optional_inputs or k in optional_text_keys)
             for k in text_keys}
    produced = tokenizer_fn(dict(texts))
    if not isinstance(produced, Mapping):
      raise ReceiverError('tokenizer_fn must return a dict of feature tensors',
                          value=type(produced).__name__,
                          fix="return {'input_ids': ..., 'input_mask': ..., ...}")
    missing = [n for n in spec.serving_names if n not in produced]
    if missing:
      raise ReceiverError('tokenizer_fn did not produce serving feature(s)', value=missing,
                          fix=f'it produced {sorted(produced)}; return every serving '
                          'feature of the FeatureSpec')
    feats = {n: _conform(produced[n], spec[n], 'tokenizer_fn') for n in spec.serving_names}
    return tf.estimator.export.ServingInputReceiver(feats, texts)

  return ServingReceiverFn(TEXT, spec, text_keys, build)


def build_image_receiver_fn(height: int, width: int, channels: int = 3,
                            image_key: str = 'image', input_key: str = 'image_bytes',
                            dtype=tf.float32, scale_to_unit: bool = True) -> ServingReceiverFn:
  """Returns a receiver of encoded image bytes [batch] decoded to [batch, H, W, C].

  JPEG, PNG, GIF (first frame) and BMP are decoded in-graph and resized
  (bilinear) to height x width. With scale_to_unit, pixels are float in [0, 1];
  otherwise 0..255 in `dtype`. REST clients send {"image_bytes": {"b64": ...}}.
  """
  for name, value in (('height', height), ('width', width), ('channels', channels)):
    if not isinstance(value, int) or value <= 0:
      raise ReceiverError(f'image {name} must be a positive int', value=value,
                          fix=f'e.g. {name}=224' if name != 'channels' else 'use 1, 3 or 4')
  spec = FeatureSpec([Feature(image_key, dtype, (height, width, channels))])
  out_dtype = tf.as_dtype(dtype)

  def decode_one(data):
    image = tf.io.decode_image(data, channels=channels, expand_animations=False)
    image = tf.image.resize(image, [height, width])  # float32, 0..255
    if scale_to_unit:
      image = image / 255.0
    return tf.cast(image, out_dtype)

  def build(optional_inputs: bool):
    data = _string_input(input_key, optional_inputs)
    images = tf.map_fn(decode_one, data,
                       fn_output_signature=tf.TensorSpec([height, width, channels], out_dtype))
    images = tf.ensure_shape(images, [None, height, width, channels])
    return tf.estimator.export.ServingInputReceiver({image_key: images}, {input_key: data})

  return ServingReceiverFn(IMAGE, spec, (input_key,), build)


def build_combined_receiver_fn(primary: ServingReceiverFn,
                               alternatives: Mapping[str, ServingReceiverFn]
                              ) -> ServingReceiverFn:
  """One receiver whose features can come from the primary or any alternative.

  The exported SavedModel gets the primary receiver's signatures under the
  export_outputs keys (`serving_default`, ...) and, for each alternative NAME,
  signatures named `NAME:<key>` (tf.estimator's naming). Example:

      build_combined_receiver_fn(
          build_raw_receiver_fn(spec),
          {'examples': build_example_receiver_fn(spec)})

  gives `serving_default` on raw tensors and `examples:serving_default`,
  `examples:classify` on serialized tf.Examples.

  How the paths share one model graph: computed receivers (example, text,
  image) build their inputs with empty-batch defaults; their feature tensors
  are concatenated along the batch, so a request feeds exactly one of them.
  A raw receiver's inputs are placeholder_with_default tensors over that
  result, so feeding them bypasses the computed paths entirely. All receivers
  must declare the same serving features, and at most one may be raw.
  """
  receivers = {'': primary}
  for name, fn in alternatives.items():
    if not isinstance(name, str) or not name or ':' in name:
      raise ReceiverError('alternative receiver names must be non-empty, without ":"',
                          value=name, fix="e.g. 'examples' or 'text'")
    receivers[name] = fn
  for name, fn in receivers.items():
    if not isinstance(fn, ServingReceiverFn):
      raise ReceiverError(f'receiver {name or "primary"!r} is not built by this library',
                          value=type(fn).__name__,
                          fix='build it with build_raw/example/text/image_receiver_fn')
    if fn.kind == COMBINED:
      raise ReceiverError('combined receivers do not nest', value=name or 'primary',
                          fix='list every receiver in one build_combined_receiver_fn call')
    if not fn.composable:
      raise ReceiverError(f'receiver {name or "primary"!r} is a hand-written receiver fn; '
                          'its inputs cannot be made optional to share one graph', value=fn,
                          fix='return receiver_tensors_alternatives from your own receiver '
                          'fn instead of combining it here')
  raws = [n for n, fn in receivers.items() if fn.kind == RAW]
  if len(raws) > 1:
    raise ReceiverError('at most one raw receiver can be combined', value=raws,
                        fix='keep one raw receiver; the others would feed the same tensors')
  spec = primary.feature_spec
  for name, fn in receivers.items():
    if fn.feature_spec.serving_names != spec.serving_names:
      raise ReceiverError(
          f'receiver {name!r} declares other serving features than the primary',
          value=list(fn.feature_spec.serving_names),
          fix=f'every combined receiver must provide {list(spec.serving_names)}')

  def build(optional_inputs: bool):
    del optional_inputs
    computed = {n: fn for n, fn in receivers.items() if fn.kind != RAW}
    many = len(computed) > 1  # Only then must a request be able to omit an input.
    built = {n: fn.build(optional_inputs=many) for n, fn in computed.items()}
    if built:
      feats = {f.name: _concat_batches([b.features[f.name] for b in built.values()], f)
               for f in spec.serving_features}
    else:
      feats = {}
    if raws:
      if feats:
        feats = {f.name: tf.compat.v1.placeholder_with_default(
                     feats[f.name], [None] + list(f.shape), name=f.input_key)
                 for f in spec.serving_features}
      else:
        feats = spec.placeholders()
      built[raws[0]] = tf.estimator.export.ServingInputReceiver(
          feats, _by_input_key(feats, spec))
    alt = {n: built[n].receiver_tensors for n in receivers if n}
    return tf.estimator.export.ServingInputReceiver(
        feats, built[''].receiver_tensors, receiver_tensors_alternatives=alt or None)

  return ServingReceiverFn(COMBINED, spec, primary.input_keys, build, primary=primary,
                           alternatives=dict(alternatives))


def _by_input_key(tensors: Mapping[str, tf.Tensor], spec: FeatureSpec) -> Dict[str, tf.Tensor]:
  """Feature name -> tensor, re-keyed by each feature's input key."""
  return {spec[name].input_key: tensor for name, tensor in tensors.items()}


def _concat_batches(parts: Sequence[tf.Tensor], feature: Feature) -> tf.Tensor:
  """Concatenates [batch_i, ...] tensors, padding variable dims to the widest."""
  if len(parts) == 1:
    return parts[0]
  if not feature.is_fixed_length:
    widest = tf.reduce_max(tf.stack([tf.shape(p)[1:] for p in parts]), axis=0)
    pad = feature.default if feature.default is not None else (
        '' if feature.dtype == tf.string else 0)
    padded = []
    for p in parts:
      extra = widest - tf.shape(p)[1:]
      paddings = tf.concat([[[0, 0]], tf.stack([tf.zeros_like(extra), extra], axis=1)], 0)
      padded.append(tf.pad(p, paddings, constant_values=tf.cast(pad, p.dtype)))
    parts = padded
  return tf.concat(list(parts), axis=0, name=f'{feature.name}_from_receivers')


def _conform(tensor, feature: Feature, source: str) -> tf.Tensor:
  """Checks dtype and rank of a produced feature tensor; casts ints/floats if safe."""
  tensor = tf.convert_to_tensor(tensor)
  if tensor.dtype != feature.dtype:
    if tensor.dtype.is_integer and feature.dtype.is_integer or (
        tensor.dtype.is_floating and feature.dtype.is_floating):
      tensor = tf.cast(tensor, feature.dtype)
    else:
      raise ReceiverError(f'{source} produced {feature.name!r} as {tensor.dtype.name}',
                          value=tensor.dtype.name,
                          fix=f'produce {feature.dtype.name}, as the FeatureSpec declares')
  if tensor.shape.rank is not None and tensor.shape.rank != len(feature.shape) + 1:
    raise ReceiverError(f'{source} produced {feature.name!r} with shape {tensor.shape}',
                        value=tensor.shape.as_list(),
                        fix=f'produce [batch] + {list(feature.shape)} per the FeatureSpec')
  return tensor
