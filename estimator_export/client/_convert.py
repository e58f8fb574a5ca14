"""Python values <-> TF Serving's protos and REST JSON, for both clients.

Predict inputs (arrays, nested lists, scalars, tf.Tensor, TensorProto) become
TensorProtos; feature dicts become `tf.train.Example`s; lists of model configs
become a ModelServerConfig; and REST's JSON values (with {"b64": ...} for bytes)
go both ways. A value that cannot be converted raises `ClientInputError`.
"""
import base64
from typing import Any, Dict, Iterable, Mapping, Optional

import numpy as np
import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import tensor_pb2
from tensorflow_serving.config import model_server_config_pb2

from estimator_export.errors import ClientInputError


# ----- Predict inputs -----

def _string_array(array: np.ndarray) -> np.ndarray:
  """str/bytes arrays -> object arrays of bytes (UTF-8 for str)."""
  flat = np.empty(array.size, dtype=object)
  for i, v in enumerate(array.ravel()):
    if isinstance(v, str):
      v = v.encode('utf-8')
    if not isinstance(v, bytes):
      raise ClientInputError('a string tensor holds only str or bytes', value=v,
                             fix='make every element str or bytes, or send numbers alone')
    flat[i] = v
  return flat.reshape(array.shape)


def to_ndarray(value: Any) -> np.ndarray:
  """Converts a Predict input to numpy: arrays keep their dtype; Python floats become float32."""
  if isinstance(value, tensor_pb2.TensorProto):
    return tf.make_ndarray(value)
  if isinstance(value, tf.Tensor):
    value = value.numpy()
  if isinstance(value, (np.ndarray, np.generic)):
    array = np.asarray(value)
    return _string_array(array) if array.dtype.kind in 'OSU' else array
  try:
    array = np.asarray(value)
  except ValueError as e:  # Ragged nested lists.
    raise ClientInputError(f'cannot make a tensor from a ragged nested list ({e})',
                           fix='give every row of a dimension the same length (pad them)'
                           ) from e
  if array.dtype.kind == 'f':
    return array.astype(np.float32)
  if array.dtype.kind in 'iu':
    fits = array.size == 0 or (array.min() >= -2**31 and array.max() < 2**31)
    return array.astype(np.int32 if fits else np.int64)
  if array.dtype.kind in 'OSU':
    return _string_array(array)
  return array


def to_tensor_proto(value: Any) -> tensor_pb2.TensorProto:
  """A Predict input (array, list, scalar, tf.Tensor, TensorProto) -> TensorProto."""
  if isinstance(value, tensor_pb2.TensorProto):
    return value
  return tf.make_tensor_proto(to_ndarray(value))


# ----- Examples -----

def _feature(name: str, value: Any) -> tf.train.Feature:
  """One feature value or list -> float_list, int64_list or bytes_list."""
  if isinstance(value, tf.train.Feature):
    return value
  if isinstance(value, np.ndarray):
    items = value.ravel().tolist()
  elif isinstance(value, (list, tuple)):
    items = [v.item() if isinstance(v, np.generic) else v for v in value]
  else:
    items = [value.item() if isinstance(value, np.generic) else value]
  feature = tf.train.Feature()
  if not items:
    return feature
  if all(isinstance(v, (str, bytes)) for v in items):
    feature.bytes_list.value.extend(v.encode('utf-8') if isinstance(v, str) else v
                                    for v in items)
  elif all(isinstance(v, (bool, int)) for v in items):
    feature.int64_list.value.extend(int(v) for v in items)
  elif all(isinstance(v, (bool, int, float)) for v in items):
    feature.float_list.value.extend(float(v) for v in items)
  else:
    kinds = sorted({type(v).__name__ for v in items})
    raise ClientInputError(f'feature {name!r}: values must be all numbers or all str/bytes',
                           value=kinds, fix='split the values into one feature per kind')
  return feature


def to_example(value: Any) -> tf.train.Example:
  """A feature dict, tf.train.Example or serialized Example -> tf.train.Example."""
  if isinstance(value, tf.train.Example):
    return value
  if isinstance(value, (bytes, bytearray)):
    return tf.train.Example.FromString(bytes(value))
  if isinstance(value, Mapping):
    example = tf.train.Example()
    for name, feature in value.items():
      example.features.feature[name].CopyFrom(_feature(name, feature))
    return example
  raise ClientInputError('an example must be a dict of features, a tf.train.Example or '
                         'serialized bytes', value=type(value).__name__,
                         fix="pass e.g. {'x': [1.0, 2.0]}")


def fill_input(input_proto, examples: Iterable, context: Any = None):
  """Fills a tensorflow.serving.Input (example_list, or example_list_with_context)."""
  converted = [to_example(e) for e in examples]
  if context is None:
    input_proto.example_list.examples.extend(converted)
  else:
    input_proto.example_list_with_context.examples.extend(converted)
    input_proto.example_list_with_context.context.CopyFrom(to_example(context))


# ----- Model configs -----

def _policy_proto(policy, proto):
  """A Latest/All/Specific instance (or 'latest'/'all') -> ServableVersionPolicy."""
  kind = policy.lower() if isinstance(policy, str) else type(policy).__name__.lower()
  if kind == 'all':
    proto.all.SetInParent()
  elif kind == 'specific':
    proto.specific.versions.extend(sorted(int(v) for v in policy.versions))
  else:
    proto.latest.num_versions = int(getattr(policy, 'num_versions', 1) or 1)


def to_model_server_config(configs: Any) -> model_server_config_pb2.ModelServerConfig:
  """ModelServerConfig / ModelConfigList / text proto / list of configs -> ModelServerConfig.

  List items may be ModelConfig protos, dicts (name, base_path, model_platform,
  version_labels) or objects with name, base_path, version_policy (a
  Latest/All/Specific instance) and version_labels.
  """
  if isinstance(configs, model_server_config_pb2.ModelServerConfig):
    return configs
  server_config = model_server_config_pb2.ModelServerConfig()
  if isinstance(configs, str):
    return text_format.Parse(configs, server_config)
  if isinstance(configs, model_server_config_pb2.ModelConfigList):
    server_config.model_config_list.CopyFrom(configs)
    return server_config
  target = server_config.model_config_list
  target.SetInParent()
  for item in configs:
    entry = target.config.add()
    if isinstance(item, model_server_config_pb2.ModelConfig):
      entry.CopyFrom(item)
      continue
    get = item.get if isinstance(item, Mapping) else lambda k, d=None, o=item: getattr(o, k, d)
    if get('name', None) is None or get('base_path', None) is None:
      raise ClientInputError('a model config needs a name and a base_path', value=item,
                             fix="pass e.g. {'name': 'm', 'base_path': '/models/m'}")
    entry.name = get('name')
    entry.base_path = get('base_path')
    entry.model_platform = get('model_platform', None) or 'tensorflow'
    policy = get('version_policy', None)
    if policy is not None:
      _policy_proto(policy, entry.model_version_policy)
    for label, version in (get('version_labels', None) or {}).items():
      entry.version_labels[label] = int(version)
  return server_config


# ----- REST JSON -----

def jsonable(value: Any) -> Any:
  """Arrays, numpy scalars and bytes -> JSON values; bytes become {"b64": ...}."""
  if isinstance(value, tensor_pb2.TensorProto):
    value = tf.make_ndarray(value)
  if isinstance(value, tf.Tensor):
    value = value.numpy()
  if isinstance(value, np.ndarray):
    if value.dtype.kind not in 'OSU':
      return value.tolist()
    value = value.tolist()
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, (bytes, bytearray)):
    return {'b64': base64.b64encode(bytes(value)).decode('ascii')}
  if isinstance(value, (list, tuple)):
    return [jsonable(v) for v in value]
  return value


def is_b64(value: Any) -> bool:
  return isinstance(value, dict) and len(value) == 1 and 'b64' in value


def _decode_strings(value: Any) -> Any:
  if is_b64(value):
    return base64.b64decode(value['b64'])
  if isinstance(value, str):
    return value.encode('utf-8')
  if isinstance(value, list):
    return [_decode_strings(v) for v in value]
  return value


def output_array(value: Any, tensor_info=None) -> np.ndarray:
  """A JSON output tensor -> numpy, with the signature's dtype when known."""
  dtype = tf.as_dtype(tensor_info.dtype) if tensor_info is not None else None
  if dtype == tf.string or (dtype is None and _holds_strings(value)):
    decoded = _decode_strings(value)
    if isinstance(decoded, list):
      return _object_fill(decoded)
    scalar = np.empty((), dtype=object)
    scalar[()] = decoded
    return scalar
  if dtype is not None and dtype.is_numpy_compatible:
    return np.asarray(value, dtype=dtype.as_numpy_dtype)
  return np.asarray(value)


def _object_fill(nested: list) -> np.ndarray:
  shape = np.shape(nested)
  flat = np.empty(int(np.prod(shape)), dtype=object)
  flat[:] = list(_flatten(nested))
  return flat.reshape(shape)


def _flatten(nested):
  for item in nested:
    if isinstance(item, list):
      yield from _flatten(item)
    else:
      yield item


def _holds_strings(value: Any) -> bool:
  while isinstance(value, list) and value:
    value = value[0]
  return isinstance(value, str) or is_b64(value)


def example_json(example: tf.train.Example) -> Dict[str, Any]:
  """A tf.train.Example -> REST's feature dict (floats keep a '.', bytes as b64 if needed)."""
  features = {}
  for name, feature in example.features.feature.items():
    kind = feature.WhichOneof('kind')
    if kind == 'float_list':
      features[name] = [float(v) for v in feature.float_list.value]
    elif kind == 'int64_list':
      features[name] = [int(v) for v in feature.int64_list.value]
    elif kind == 'bytes_list':
      features[name] = [bytes_json(v) for v in feature.bytes_list.value]
    else:
      features[name] = []
  return features


def bytes_json(value: bytes) -> Any:
  """Bytes -> their UTF-8 text, or {"b64": ...} when they are not UTF-8."""
  try:
    return value.decode('utf-8')
  except UnicodeDecodeError:
    return {'b64': base64.b64encode(value).decode('ascii')}


def examples_body(examples: Iterable, signature_name: str,
                  context: Optional[Any]) -> Dict[str, Any]:
  """The JSON body of REST :classify and :regress."""
  body: Dict[str, Any] = {'examples': [example_json(to_example(e)) for e in examples]}
  if signature_name:
    body['signature_name'] = signature_name
  if context is not None:
    body['context'] = example_json(to_example(context))
  return body
