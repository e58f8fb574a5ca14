"""Bring your own serving_input_receiver_fn: described once, then checked and fed like ours.

    def my_receiver_fn():
      images = tf.compat.v1.placeholder(tf.float32, [None, 28, 28], name='images')
      return tf.estimator.export.ServingInputReceiver({'predictor_inputs': images},
                                                      {'images': images})

    receiver = adapt_receiver_fn(my_receiver_fn, features=model.feature_spec)
    receiver.kind, receiver.input_keys   # ('raw', ('images',))
    export_for_serving(estimator, base, my_receiver_fn)   # adapts it on the way in

`adapt_receiver_fn` builds the function once in a scratch graph and learns:

* its receiver tensors (alias, dtype, shape), for the primary receiver and each
  of its `receiver_tensors_alternatives` (tf.estimator names their signatures
  `NAME:<key>`). A SparseTensor receiver tensor is refused: TF Serving's
  Predict API feeds dense tensors.
* the features it produces. Given a FeatureSpec (the model's declaration),
  every serving feature must be produced with the declared dtype, rank and
  known dims, dense (or a RaggedTensor for a ragged feature, a SparseTensor for
  a variable-length one, as a VarLenFeature parse gives), and no training-only
  feature may be produced (serving must never need labels). Without one, a
  FeatureSpec is derived from the features produced.
* each receiver's kind, which tells validation and warmup what to feed:

  example  its one string input reaches a ParseExample op: serialized
           tf.Examples (the samples serialized, keyed by feature name).
           Classify and Regress signatures are kept for it.
  raw      its inputs are exactly the serving features' input keys, with the
           features' dtypes. A receiver tensor that *is* a feature tensor under
           another alias ('images' -> 'predictor_inputs') becomes that
           feature's `input_key`. Validation feeds the feature samples and
           compares with `estimator.predict`, which gets the same samples as
           features: a receiver that transforms them (scales, clips, ...) fails
           that parity check unless training fed the same transformed values.
           That is the training/serving skew the check is for; if your
           input_fn applies the same transformation, pass parity=False.
  custom   anything else (image bytes, JSON strings, ...): fed samples[alias],
           else zeros (b'' for strings) of the signature's dtype and shape;
           not compared with other signatures or with estimator.predict.
"""
import dataclasses
from typing import Any, Callable, Mapping, Optional, Tuple

import tensorflow as tf

from estimator_export import receivers as receivers_lib
from estimator_export.errors import ExportError, ReceiverError
from estimator_export.features import Feature, FeatureSpec

ServingInputReceiver = tf.estimator.export.ServingInputReceiver
# Ops that read serialized tf.Examples (what TF Serving's Classify and Regress send).
_EXAMPLE_PARSERS = frozenset({'ParseExample', 'ParseExampleV2', 'ParseSingleExample'})
_MAX_OPS_SEARCHED = 100000


class AdaptedReceiverFn(receivers_lib.ServingReceiverFn):
  """A user's receiver fn plus what `adapt_receiver_fn` learned about it.

  Calling it calls the user's function (in the current graph, as Estimator does).

  Attributes (beyond ServingReceiverFn's):
    wrapped: the user's function.
    input_specs: receiver name ('' for the primary) -> alias -> tf.TensorSpec
      of the receiver tensor, e.g. {'': {'images': TensorSpec([None, 28, 28], tf.float32)}}.
  """
  composable = False  # Its inputs are the user's; they cannot be made optional.

  def __init__(self, kind: str, spec: FeatureSpec, wrapped: Callable[[], Any],
               input_specs: Mapping[str, Mapping[str, tf.TensorSpec]],
               primary: Optional['AdaptedReceiverFn'] = None,
               alternatives: Optional[Mapping[str, 'AdaptedReceiverFn']] = None):
    super().__init__(kind, spec, tuple(input_specs['']), lambda optional: _call(wrapped),
                     primary=primary, alternatives=alternatives)
    self.wrapped = wrapped
    self.input_specs = {name: dict(specs) for name, specs in input_specs.items()}

  def __repr__(self):
    alts = f', alternatives={sorted(self.alternatives)}' if self.alternatives else ''
    name = getattr(self.wrapped, '__name__', type(self.wrapped).__name__)
    return (f'AdaptedReceiverFn({name}, kind={self.kind!r}, '
            f'inputs={list(self.input_keys)}{alts})')


def adapt_receiver_fn(serving_input_receiver_fn: Callable[[], Any],
                      features: Any = None) -> receivers_lib.ServingReceiverFn:
  """Describes a hand-written serving_input_receiver_fn so exports can check and feed it.

  Args:
    serving_input_receiver_fn: a no-argument function returning a
      tf.estimator.export.ServingInputReceiver (graph-mode tensors). A receiver
      built by estimator_export.receivers is returned as it is.
    features: the model's FeatureSpec (or a list of Features); the receiver
      must produce its serving features as declared. None derives the spec
      from what the receiver produces.

  Returns:
    A ServingReceiverFn (an AdaptedReceiverFn) of kind 'raw', 'example' or
    'custom', or 'combined' when the receiver has alternatives (then `parts()`
    gives each one's kind).

  Raises:
    ReceiverError: not callable, fails to build, returns something other than
      a ServingInputReceiver, has sparse receiver tensors, or produces
      features that do not match `features`.
    FeatureError: a derived input key collides with another feature's name or
      input key.
  """
  if isinstance(serving_input_receiver_fn, receivers_lib.ServingReceiverFn):
    return serving_input_receiver_fn
  if not callable(serving_input_receiver_fn):
    raise ReceiverError('serving_input_receiver_fn is not callable',
                        value=type(serving_input_receiver_fn).__name__,
                        fix='pass a function returning tf.estimator.export.ServingInputReceiver, '
                        'or a receiver from estimator_export.receivers')
  spec = receivers_lib.as_feature_spec(features) if features is not None else None
  with tf.Graph().as_default():
    receiver = _call(serving_input_receiver_fn)
    parts = {'': dict(receiver.receiver_tensors)}
    parts.update({name: dict(tensors)  # ServingInputReceiver made each one a dict.
                  for name, tensors in (receiver.receiver_tensors_alternatives or {}).items()})
    for name, tensors in parts.items():
      _check_dense_inputs(name, tensors)
    produced = dict(receiver.features)
    if spec is None:
      spec = FeatureSpec([_derived_feature(n, t) for n, t in produced.items()])
    else:
      _check_features(spec, produced)
    spec = _with_input_keys(spec, produced, parts[''])
    kinds = {name: _kind(tensors, spec) for name, tensors in parts.items()}
  input_specs = {name: {alias: tf.TensorSpec(t.shape, t.dtype, name=alias)
                        for alias, t in tensors.items()} for name, tensors in parts.items()}
  if len(parts) == 1:
    return AdaptedReceiverFn(kinds[''], spec, serving_input_receiver_fn, input_specs)
  described = {name: AdaptedReceiverFn(kinds[name], spec, serving_input_receiver_fn,
                                       {'': input_specs[name]}) for name in parts}
  return AdaptedReceiverFn(receivers_lib.COMBINED, spec, serving_input_receiver_fn, input_specs,
                           primary=described.pop(''), alternatives=described)


def _call(fn: Callable[[], Any]) -> ServingInputReceiver:
  """fn() in the current graph, as a checked ServingInputReceiver."""
  try:
    receiver = fn()
  except ExportError:
    raise
  except Exception as e:  # The user's code: say whose it was, keep the cause.
    raise ReceiverError('serving_input_receiver_fn failed when built',
                        value=f'{type(e).__name__}: {e}'[:500],
                        fix='build graph-mode tensors (tf.compat.v1.placeholder, ...) and '
                        'return tf.estimator.export.ServingInputReceiver; to debug, call it '
                        'inside `with tf.Graph().as_default():`') from e
  if isinstance(receiver, tf.estimator.export.TensorServingInputReceiver):
    raise ReceiverError('serving_input_receiver_fn returned a TensorServingInputReceiver '
                        '(features is one Tensor)', value=type(receiver).__name__,
                        fix='return ServingInputReceiver({"name": tensor}, receiver_tensors) '
                        'and read features["name"] in the model_fn; validation, parity and '
                        'the manifest work on a features dict')
  if not isinstance(receiver, ServingInputReceiver):
    raise ReceiverError('serving_input_receiver_fn must return a '
                        'tf.estimator.export.ServingInputReceiver',
                        value=type(receiver).__name__,
                        fix='return ServingInputReceiver(features, receiver_tensors)')
  return receiver


def _check_dense_inputs(receiver: str, tensors: Mapping[str, Any]):
  for alias, tensor in tensors.items():
    if not isinstance(tensor, tf.Tensor):
      raise ReceiverError(f'receiver tensor {alias!r} of receiver {receiver or "primary"!r} is '
                          f'a {type(tensor).__name__}', value=alias,
                          fix='TF Serving feeds dense tensors: take a dense placeholder (or '
                          'serialized tf.Examples) and build the sparse feature from it')


def _shape_of(tensor) -> tf.TensorShape:
  return tf.TensorShape(tensor.shape)


def _derived_feature(name: str, tensor) -> Feature:
  """A Feature describing one produced feature tensor ([batch] + shape)."""
  shape = _shape_of(tensor)
  if shape.rank is None or shape.rank < 1:
    raise ReceiverError(f'feature {name!r} the receiver produces has no batch dimension or '
                        'an unknown rank', value=str(shape),
                        fix='pass features=FeatureSpec([...]) to adapt_receiver_fn, or give '
                        'the tensor a static rank (tf.ensure_shape)')
  dims = tuple(shape.as_list()[1:])
  if isinstance(tensor, tf.RaggedTensor):
    return Feature(name, tensor.dtype, dims, ragged=True)
  if isinstance(tensor, tf.SparseTensor):
    if not dims:
      raise ReceiverError(f'sparse feature {name!r} has rank 1 (no per-example values)',
                          value=str(shape), fix='pass features=FeatureSpec([...])')
    return Feature(name, tensor.dtype, (None,) * len(dims))
  return Feature(name, tensor.dtype, dims)


def _check_features(spec: FeatureSpec, produced: Mapping[str, Any]):
  """The receiver's features against the declaration: present, dtype, form, rank, dims."""
  missing = [n for n in spec.serving_names if n not in produced]
  if missing:
    raise ReceiverError('serving_input_receiver_fn does not produce serving feature(s)',
                        value=missing, fix=f'it produces {sorted(produced)}; return every '
                        f'serving feature of the FeatureSpec: {list(spec.serving_names)}')
  training = [f.name for f in spec.features if f.training_only and f.name in produced]
  if training:
    raise ReceiverError('serving_input_receiver_fn produces training-only feature(s)',
                        value=training, fix='serving must not need them (labels are never a '
                        "serving input): drop them from the receiver's features")
  for feature in spec.serving_features:
    _check_feature(produced[feature.name], feature)


def _check_feature(tensor, feature: Feature):
  name = feature.name
  if feature.ragged:
    forms: Tuple[type, ...] = (tf.RaggedTensor,)
  elif feature.is_fixed_length:
    forms = (tf.Tensor,)
  else:
    forms = (tf.Tensor, tf.SparseTensor)
  if not isinstance(tensor, forms):
    raise ReceiverError(f'serving_input_receiver_fn produces {name!r} as a '
                        f'{type(tensor).__name__}', value=type(tensor).__name__,
                        fix=f'produce a {" or ".join(f.__name__ for f in forms)}, as the '
                        'FeatureSpec declares (tf.sparse.to_dense / .to_tensor() convert)')
  if tensor.dtype != feature.dtype:
    raise ReceiverError(f'serving_input_receiver_fn produces {name!r} as '
                        f'{tensor.dtype.name}, the FeatureSpec declares {feature.dtype.name}',
                        value=tensor.dtype.name, fix='tf.cast it in the receiver fn, or '
                        'declare the dtype the receiver produces')
  shape = _shape_of(tensor)
  declared = tf.TensorShape([None] + list(feature.shape))
  if shape.rank is not None and not shape.is_compatible_with(declared):
    raise ReceiverError(f'serving_input_receiver_fn produces {name!r} with shape {shape}',
                        value=shape.as_list(), fix=f'produce [batch] + {list(feature.shape)}, '
                        'as the FeatureSpec declares (None: any size)')


def _with_input_keys(spec: FeatureSpec, produced: Mapping[str, Any],
                     inputs: Mapping[str, tf.Tensor]) -> FeatureSpec:
  """The spec with input keys taken from the primary receiver: alias of a fed-through feature."""
  alias_of = {}
  for alias, tensor in inputs.items():
    for name, feature_tensor in produced.items():
      if isinstance(feature_tensor, tf.Tensor) and feature_tensor.name == tensor.name:
        alias_of[name] = alias
  features = []
  for feature in spec.features:
    alias = alias_of.get(feature.name)
    if alias is not None and not feature.training_only and alias != feature.input_key:
      if feature.input_key != feature.name:
        raise ReceiverError(f'the receiver feeds feature {feature.name!r} as {alias!r}, but the '
                            f'FeatureSpec declares input_key {feature.input_key!r}',
                            value=alias, fix='rename the receiver tensor or the input_key so '
                            'they agree')
      feature = dataclasses.replace(feature, input_key=alias)
    features.append(feature)
  return FeatureSpec(features)  # Checks that no input key collides with another feature.


def _kind(tensors: Mapping[str, tf.Tensor], spec: FeatureSpec) -> str:
  """'example', 'raw' or 'custom' for one receiver's tensors (module docstring)."""
  if len(tensors) == 1:
    (tensor,) = tensors.values()
    if tensor.dtype == tf.string and _feeds_example_parser(tensor):
      return receivers_lib.EXAMPLE
  by_key = {f.input_key: f for f in spec.serving_features}
  if set(tensors) == set(by_key) and all(
      t.dtype == by_key[k].dtype and t.shape.rank in (None, len(by_key[k].shape) + 1)
      for k, t in tensors.items()):
    return receivers_lib.RAW
  return receivers_lib.CUSTOM


def _feeds_example_parser(tensor: tf.Tensor) -> bool:
  """True if a ParseExample op is downstream of `tensor` in its graph."""
  frontier, seen = [tensor], set()
  while frontier and len(seen) < _MAX_OPS_SEARCHED:
    for op in frontier.pop().consumers():
      if op.type in _EXAMPLE_PARSERS:
        return True
      if op.name not in seen:
        seen.add(op.name)
        frontier.extend(op.outputs)
  return False

