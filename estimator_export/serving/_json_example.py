"""JSON examples -> serialized tf.Example: TF Serving 2.15's classify/regress request rules.

Each JSON feature becomes a tf.train.Example feature (TF Serving's AddValueToFeature):
a string or {"b64": ...} -> bytes_list; a number written with '.' or an exponent (or
NaN/Infinity) -> float_list; an integral number or true/false -> int64_list. The
Example is built as a protobuf message and serialized (deterministic=True: map entries
sorted by name, floats packed as their float32 bits), so the bytes are the same on
every run; parsing them equals parsing TF Serving's.

Known difference: a feature name that is not valid UTF-8 (raw bytes in the body, or a
lone-surrogate escape) cannot be a key of Example's map<string, Feature>, so it is left
out after its values are checked. TF Serving keeps it, but no parse config can name it,
so the model's ParseExample ignores it either way.
"""
from typing import Any, List, Mapping, Optional, Tuple

# The protobuf class itself: tf.train.Example is this class, and importing it from here
# keeps the REST codec from importing all of TensorFlow.
from tensorflow.core.example import example_pb2

from estimator_export.serving import _json_syntax
from estimator_export.serving._json_request import DT_FLOAT
from estimator_export.serving._json_request import b64_decode
from estimator_export.serving._json_request import check_float
from estimator_export.serving._json_request import document_error
from estimator_export.serving._json_request import is_b64
from estimator_export.serving._json_request import peek_signature_name
from estimator_export.serving._json_request import too_big_error
from estimator_export.serving._json_text import INTERNAL
from estimator_export.serving._json_text import CodecError
from estimator_export.serving._json_text import NumberTooBig
from estimator_export.serving._json_text import PackedArray
from estimator_export.serving._json_text import invalid
from estimator_export.serving._json_text import is_rj_double
from estimator_export.serving._json_text import json_type
from estimator_export.serving._json_text import str_bytes

_INT64_MAX = 2**63 - 1


def _feature_value(v: Any, name: str) -> Tuple[str, Any]:
  """(kind, value) of one JSON feature element (TF Serving's AddValueToFeature)."""
  if v is True or v is False:
    return 'int64', int(v)
  if isinstance(v, str):
    return 'bytes', str_bytes(v)
  if is_b64(v):
    return 'bytes', b64_decode(v)
  if v is None or isinstance(v, (dict, list)):
    raise invalid(f'Feature: {name} has element with unexpected JSON type: {json_type(v)}')
  if is_rj_double(v):
    return 'float', check_float(v, DT_FLOAT)
  if v > _INT64_MAX:
    raise invalid(f'Feature: {name} has uint64 element. Only int64 is supported.')
  return 'int64', v


def _feature_key(name: str) -> Optional[str]:
  """The map key for a feature name, or None when its bytes are not UTF-8 (see above)."""
  try:
    return str_bytes(name).decode('utf-8')
  except UnicodeDecodeError:
    return None


def _example_bytes(value: Any) -> bytes:
  """A JSON object of features -> serialized tensorflow.Example."""
  if not isinstance(value, dict):
    raise invalid(f'Example must be JSON object but got JSON {json_type(value)}')
  example = example_pb2.Example()
  for name, content in value.items():
    if isinstance(content, PackedArray):  # a long list of numbers (see _json_syntax)
      content = content.tolist()
    kind, values = None, []
    for element in content if isinstance(content, list) else [content]:
      element_kind, element_value = _feature_value(element, name)
      if kind not in (None, element_kind):
        raise invalid(f'Unexpected element type in feature: {name} expecting type: {kind}')
      kind = element_kind
      values.append(element_value)
    key = _feature_key(name)
    if key is None:
      continue
    feature = example.features.feature[key]
    if kind is not None:
      getattr(feature, f'{kind}_list').value.extend(values)
  return example.SerializeToString(deterministic=True)


def parse_classify_regress_request(obj: Mapping[str, Any],
                                   method: str) -> Tuple[str, List[bytes]]:
  """Decodes a classify/regress body into serialized tf.Example bytes.

  Mapping: string or {"b64"} -> bytes_list; a number written with '.' or an exponent
  (or NaN/Infinity) -> float_list; an integral number -> int64_list; true/false -> int64
  1/0; a list gives several values. So {"x": 2} is int64 and {"x": 2.0} is float. With a
  "context", each result is context bytes + example bytes (the example wins on shared
  features, as for ExampleListWithContext).

  Args:
    obj: the result of parse_json_body.
    method: 'classify' or 'regress' (parsed alike; TF Serving even names 'classify' in the
      missing-examples message for both).

  Returns:
    (signature_name or 'serving_default', [serialized Example, ...]).

  Raises:
    CodecError: TF Serving's INVALID_ARGUMENT messages (INTERNAL for a bad `method`).
  """
  if method not in ('classify', 'regress'):
    raise CodecError(INTERNAL, f"parse_classify_regress_request's method must be 'classify' "
                     f"or 'regress': got {method!r}. Fix: pass the REST verb of the request")
  name = peek_signature_name(obj)
  try:
    context = _example_bytes(obj['context']) if 'context' in obj else b''
    if 'examples' not in obj:
      raise document_error(obj, "When method is classify, key 'examples' is expected and "
                           'was not found')
    examples = obj['examples']
    if isinstance(examples, PackedArray):  # numbers, not objects: the first one fails
      examples = _json_syntax.unpack(examples.head(1))
    if not isinstance(examples, list):
      raise document_error(obj, "Expecting 'examples' value to be an list/array")
    if not examples:
      raise document_error(obj, "'examples' value is an empty array")
    return name, [context + _example_bytes(example) for example in examples]
  except NumberTooBig:
    raise too_big_error(obj) from None
