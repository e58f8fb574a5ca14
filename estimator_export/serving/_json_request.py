"""JSON request bodies -> input arrays: TF Serving 2.15's parsing and tensor rules.

parse_json_body (syntax, top-level object), peek_signature_name, and
parse_predict_request (row 'instances' or columnar 'inputs' -> numpy arrays) follow
tensorflow_serving/util/json_tensor.cc: the same checks in the same order, with its
exact messages. Long numeric arrays arrive packed as text (_json_syntax) and become
arrays through numpy; other regular tensors take a vectorised path; anything these cannot
vouch for takes the exact element-by-element emulation, which owns every message.
"""
import binascii
import json
import math
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from estimator_export._saved_model import DEFAULT_SIGNATURE
from estimator_export.serving import _json_syntax
from estimator_export.serving._json_text import COLUMNAR
from estimator_export.serving._json_text import CodecError
from estimator_export.serving._json_text import INTERNAL
from estimator_export.serving._json_text import JsonConstant
from estimator_export.serving._json_text import MAX_TENSOR_RANK
from estimator_export.serving._json_text import NumberTooBig
from estimator_export.serving._json_text import PackedArray
from estimator_export.serving._json_text import ROW
from estimator_export.serving._json_text import UNIMPLEMENTED
from estimator_export.serving._json_text import invalid
from estimator_export.serving._json_text import json_type
from estimator_export.serving._json_text import shape_text
from estimator_export.serving._json_text import str_bytes
from estimator_export.serving._json_text import value_text
from estimator_export.serving.status import tf_type_name

_CONSTANTS = {name: JsonConstant(name) for name in ('NaN', 'Infinity', '-Infinity')}
_DECODER = json.JSONDecoder(parse_constant=_CONSTANTS.__getitem__)


class _JsonDocument(dict):
  """The parsed top-level object; `raw` keeps the body for late parse-error offsets.

  `packed` says whether some value in it is a PackedArray.
  """
  raw: bytes = b''
  packed: bool = False


# ----------------------------------------------------------------------------------------
# DataType enums (tensorflow/core/framework/types.proto) and TF's names for them.
DT_FLOAT, _DOUBLE, _INT32, _UINT8, _INT16, _INT8, _STRING = 1, 2, 3, 4, 5, 6, 7
_INT64, _BOOL, _UINT32, _UINT64 = 9, 10, 22, 23
_EXTRA_NAMES = {11: 'qint8', 12: 'quint8', 13: 'qint32', 15: 'qint16', 16: 'quint16',
                20: 'resource', 21: 'variant'}
_INT_RANGE = {_INT32: (-2**31, 2**31 - 1), _UINT8: (-2**31, 2**31 - 1),
              _INT16: (-2**31, 2**31 - 1), _INT8: (-2**31, 2**31 - 1),
              _INT64: (-2**63, 2**63 - 1), _UINT32: (0, 2**32 - 1), _UINT64: (0, 2**64 - 1)}
_NUMPY = {DT_FLOAT: np.float32, _DOUBLE: np.float64, _INT32: np.int32, _UINT8: np.uint8,
          _INT16: np.int16, _INT8: np.int8, _INT64: np.int64, _BOOL: np.bool_,
          _UINT32: np.uint32, _UINT64: np.uint64, _STRING: object, 8: np.complex64,
          17: np.uint16, 18: np.complex128, 19: np.float16}
_ENUM_OF_NUMPY = {np.dtype(t): e for e, t in _NUMPY.items() if t is not object}
_FLT_MAX = float(np.finfo(np.float32).max)


def _type_name(enum: int) -> str:
  return _EXTRA_NAMES.get(enum) or tf_type_name(enum)


def _dtype_enum(dtype: Any) -> int:
  """DataType enum of an int enum, a tf.DType, or a numpy dtype (str/bytes -> DT_STRING)."""
  if isinstance(dtype, (int, np.integer)) and not isinstance(dtype, bool):
    return int(dtype)
  enum = getattr(dtype, 'as_datatype_enum', None)
  if enum is not None:
    return int(enum)
  np_dtype = np.dtype(dtype)
  if np_dtype.kind in 'OSU':
    return _STRING
  if np_dtype not in _ENUM_OF_NUMPY:
    raise CodecError(INTERNAL, f'A signature input dtype has no TensorFlow DataType: got '
                     f'{dtype!r}. Fix: pass TensorInfo.dtype (a DataType enum), a tf.DType '
                     'or a numpy dtype that TensorFlow has')
  return _ENUM_OF_NUMPY[np_dtype]


def _parse_error(raw: bytes, fallback: Tuple[str, int]) -> CodecError:
  message, offset = _json_syntax.syntax_error(raw) or fallback
  return invalid(f'JSON Parse error: {message} at offset: {offset}')


def too_big_error(obj: Any) -> CodecError:
  return _parse_error(getattr(obj, 'raw', b''),
                      ('Number too big to be stored in double.', 0))


def rank_error(rank: int) -> CodecError:
  return invalid(f'Tensor of rank {rank} is not supported: at most {MAX_TENSOR_RANK} '
                 "dimensions (numpy's limit). Fix: send the tensor with fewer dimensions")


def _too_many_values(count: int, limit: int) -> CodecError:
  return invalid(f'The request has {count} values (numbers, strings, booleans, nulls), more '
                 f'than the limit of {limit} (--rest_api_max_elements). Fix: send fewer rows '
                 'per request, or raise --rest_api_max_elements')


def _decode(data: bytes) -> Tuple[Any, str]:
  """json's value of `data`, and the text it read (a UnicodeDecodeError-free str)."""
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError:  # rapidjson copies unvalidated bytes into strings.
    text = data.decode('utf-8', 'surrogateescape')
  return _DECODER.decode(text), text


def parse_json_body(body: bytes, max_elements: Optional[int] = None) -> Dict[str, Any]:
  """Parses a request body like TF Serving (rapidjson with NaN/Infinity allowed).

  Long arrays of plain numbers are kept packed as text (see _json_syntax), so a body of
  numbers costs about its own size, not ~50 bytes per number.

  Args:
    body: the HTTP body (bytes; str is encoded as UTF-8).
    max_elements: most scalars (numbers, strings, true/false/null) the body may hold, the
      tensor elements of predict and the feature values of classify/regress; counted
      before anything is decoded. None: no cap.

  Returns:
    The top-level JSON object as a dict (keeps the raw body for late error offsets).

  Raises:
    CodecError: INVALID_ARGUMENT 'JSON Parse error: The document is empty',
      'JSON Parse error: <rapidjson message> at offset: <byte offset>',
      'JSON Value: <value> Is not object', a nesting-depth refusal, or a body with more
      than `max_elements` values.
  """
  raw = body.encode('utf-8') if isinstance(body, str) else bytes(body)
  if not raw:
    raise invalid('JSON Parse error: The document is empty')
  nul = raw.find(b'\0')  # rapidjson's stream ends at the first NUL,
  data = raw if nul < 0 else raw[:nul]
  bom = 0  # and its UTF-8 MemoryStream skips the bytes of a BOM.
  for byte in b'\xef\xbb\xbf':
    bom += data[bom:bom + 1] == bytes([byte])
  data = b' ' * bom + data[bom:]  # keeps offsets counted from the body's start
  if max_elements is not None:
    count = _json_syntax.count_values(data)
    if count > max_elements:
      raise _too_many_values(count, max_elements)
  obj = None
  cut, packs = _json_syntax.pack_numeric_arrays(data)
  if packs:
    try:
      obj, text = _decode(cut)
      obj = _json_syntax.restore_packed(obj, packs)
    except (ValueError, RecursionError):  # e.g. a marker inside a string: parse `data`.
      obj = None
  if obj is None:
    packs = {}
    try:
      obj, text = _decode(data)
    except RecursionError:
      raise invalid('JSON Parse error: The document nests arrays/objects too deeply to '
                    'parse; a tensor may have at most rank '
                    f'{MAX_TENSOR_RANK}') from None
    except ValueError as e:  # JSONDecodeError, or an integer with too many digits.
      position = getattr(e, 'pos', 0)
      text = data.decode('utf-8', 'surrogateescape')
      offset = len(text[:position].encode('utf-8', 'estimator_export_json_raw'))
      raise _parse_error(data, ('Invalid value.', offset)) from None
  if '\\u' in text and _json_syntax.LONE_HIGH_SURROGATE.search(text):
    error = _json_syntax.syntax_error(data)
    if error:
      raise invalid(f'JSON Parse error: {error[0]} at offset: {error[1]}')
  if not isinstance(obj, dict):
    raise invalid(f'JSON Value: {value_text(obj)} Is not object')
  document = _JsonDocument(obj)
  document.raw = data
  document.packed = bool(packs)
  return document


def peek_signature_name(obj: Mapping[str, Any]) -> str:
  """The request's signature name; absent or '' gives 'serving_default'.

  Call it before resolving the signature (TF Serving checks the type first).

  Raises:
    CodecError: "JSON Value: <body> not formatted correctly. 'signature_name' key must be
      a string value."
  """
  if not isinstance(obj, dict):
    raise invalid(f'JSON Value: {value_text(obj)} Is not object')
  name = obj.get('signature_name', '')
  if not isinstance(name, str):
    raise invalid(f'JSON Value: {value_text(obj)} not formatted correctly. '
                   "'signature_name' key must be a string value.")
  return name or DEFAULT_SIGNATURE


def document_error(doc: Any, text: str) -> CodecError:
  return invalid(f'JSON Value: {value_text(doc)} {text}')


# ----------------------------------------------------------------------------------------
# JSON values -> tensors (predict).
def is_b64(v: Any) -> bool:
  return type(v) is dict and len(v) == 1 and isinstance(v.get('b64'), str)


def _is_element_object(v: Any) -> bool:
  return isinstance(v, dict) and not is_b64(v)


_B64_BODY = re.compile(r'[A-Za-z0-9+/]*={0,2}')


def b64_decode(v: Any) -> bytes:
  """absl::Base64Unescape of {"b64": "..."}: whitespace skipped, padding optional."""
  if not is_b64(v):
    raise invalid(f'JSON Value: {value_text(v)} not formatted correctly for base64 data')
  text = ''.join(v['b64'].split())
  core = text.rstrip('=')
  if (not _B64_BODY.fullmatch(text) or len(core) % 4 == 1
      or (len(text) != len(core) and len(text) % 4)):
    raise invalid('Unable to base64 decode')
  try:
    return binascii.a2b_base64(core + '=' * (-len(core) % 4))
  except binascii.Error:
    raise invalid('Unable to base64 decode') from None


def _type_error(v: Any, enum: int) -> CodecError:
  return invalid(f'JSON Value: {value_text(v)} Type: {json_type(v)} '
                  f'is not of expected type: {_type_name(enum)}')


def check_float(v: Any, enum: int) -> float:
  """rapidjson IsLosslessDecimal + GetFloat/GetDouble for a float/double input."""
  if type(v) is int and -2**63 <= v < 2**64:
    if abs(v) > (2**24 - 1 if enum == DT_FLOAT else 2**53 - 1):
      raise invalid(f'Cannot convert JSON value: {v} to {_type_name(enum)} '
                     'without loss of precision.')
    return float(v)
  try:
    f = float(v)
  except OverflowError:
    raise NumberTooBig() from None
  if math.isinf(f) and type(v) is not JsonConstant:
    raise NumberTooBig()
  if enum == DT_FLOAT and math.isfinite(f) and abs(f) > _FLT_MAX:
    raise invalid(f'Cannot convert JSON value: {value_text(v)} to float '
                   'without loss of precision.')
  return f


def _leaf_value(v: Any, enum: int) -> Any:
  """One JSON leaf as a value of DataType `enum` (TF Serving's AddValueToTensor)."""
  if isinstance(v, dict):
    if enum == _STRING:
      return b64_decode(v)
    raise _type_error(v, enum)
  if enum in (DT_FLOAT, _DOUBLE):
    if v is None or isinstance(v, (bool, str)):
      raise _type_error(v, enum)
    return check_float(v, enum)
  if enum in _INT_RANGE:
    low, high = _INT_RANGE[enum]
    if type(v) is not int or not low <= v <= high:
      raise _type_error(v, enum)
    return v
  if enum == _BOOL:
    if type(v) is not bool:
      raise _type_error(v, enum)
    return v
  if enum == _STRING:
    if not isinstance(v, str):
      raise _type_error(v, enum)
    return str_bytes(v)
  raise CodecError(UNIMPLEMENTED, f'Conversion of JSON Value: {value_text(v)} '
                   f'to type: {_type_name(enum)}')


def _dense_shape(v: Any, outer: int = 0) -> List[int]:
  """Shape from the first element at each level (GetDenseTensorShape).

  `outer` dimensions go before it (the batch of 'instances'), for the rank limit.
  """
  shape = []
  while isinstance(v, list):
    shape.append(len(v))
    if not v:
      break
    v = v[0]
  if len(shape) + outer > MAX_TENSOR_RANK:
    raise rank_error(len(shape) + outer)
  return shape


def _fill_exact(value: Any, enum: int) -> Tuple[List[int], List[Any]]:
  """TF Serving's FillTensorProto, leaf by leaf in document order: (shape, values)."""
  shape, values = _dense_shape(value), []
  rank = len(shape)

  def walk(v, level):
    if not isinstance(v, list):
      if level != rank:
        raise invalid(f'JSON Value: {value_text(v)} found at incorrect level: '
                       f'{level + 1} in the JSON DOM. Expected at level: {rank}')
      values.append(_leaf_value(v, enum))
      return
    if level >= rank:
      raise invalid(f'Encountered list at unexpected level: {level} expected < {rank}')
    if len(v) != shape[level]:
      raise invalid(f'Encountered list at unexpected size: {len(v)} at level: {level} '
                     f'expected size: {shape[level]}')
    for x in v:
      walk(x, level + 1)

  walk(value, 0)
  return shape, values


def _to_array(values: List[Any], shape: Sequence[int], enum: int) -> np.ndarray:
  dtype = _NUMPY.get(enum, object)
  if enum in _INT_RANGE:  # int8/int16/uint8 take int32 values, cast like C.
    return np.array(values, dtype=np.int64 if enum != _UINT64 else np.uint64).astype(
        dtype).reshape(shape)
  array = np.empty(len(values), dtype=dtype)
  array[:] = values
  return array.reshape(shape)


def _fast_array(value: Any, shape: Sequence[int], enum: int) -> Optional[np.ndarray]:
  """Vectorised conversion of a regular value; None sends it to the exact path."""
  try:
    objects = np.array(value, dtype=object)
  except (ValueError, TypeError):
    return None
  if objects.shape != tuple(shape):
    return None
  flat = objects.reshape(-1)
  types = set(map(type, flat))
  if list in types or (dict in types and enum != _STRING):
    return None
  try:
    if enum in (DT_FLOAT, _DOUBLE):
      if not types <= {float, int, JsonConstant}:
        return None
      values = flat.astype(np.float64)
      finite = np.isfinite(values)
      if not finite.all() and any(type(flat[i]) is not JsonConstant
                                  for i in np.flatnonzero(~finite)):
        return None
      if enum == DT_FLOAT and (np.abs(values[finite]) > _FLT_MAX).any():
        return None
      if int in types:
        limit = 2.0**24 - 1 if enum == DT_FLOAT else 2.0**53 - 1
        for i in np.flatnonzero(finite & (np.abs(values) > limit)):
          if type(flat[i]) is int and -2**63 <= flat[i] < 2**64:
            return None
      result = values.astype(_NUMPY[enum])
    elif enum in _INT_RANGE:
      if not types <= {int}:
        return None
      low, high = _INT_RANGE[enum]
      wide = flat.astype(np.int64)  # uint64 values >= 2**63 take the exact path
      if ((wide < low) | (wide > min(high, 2**63 - 1))).any():
        return None
      result = wide.astype(_NUMPY[enum])
    elif enum == _BOOL:
      if not types <= {bool}:
        return None
      result = flat.astype(np.bool_)
    elif enum == _STRING:
      result = np.empty(flat.size, dtype=object)
      result[:] = [_leaf_value(v, enum) for v in flat]
    elif flat.size == 0 and enum in _NUMPY:
      result = np.empty(0, dtype=_NUMPY[enum])
    else:
      return None
  except (OverflowError, CodecError, NumberTooBig):
    return None
  return result.reshape(shape)


def _packed_array(packed: PackedArray, enum: int) -> Optional[np.ndarray]:
  """A PackedArray converted by numpy from its text; None sends it to the exact rules.

  Only the cases that cannot fail are taken: finite float/double values whose integers
  are lossless (|v| < 2**24 / 2**53), and integer inputs written without '.' or exponent
  within 2**53 and the dtype's range. '-0' (an integer: 0, not -0.0) goes the exact way.
  """
  floats = enum in (DT_FLOAT, _DOUBLE)
  if not floats and enum not in _INT_RANGE:
    return None
  flat = packed.text.translate(None, b'[]')
  if floats and (flat == b'-0' or flat.startswith(b'-0,') or flat.endswith(b',-0')
                 or b',-0,' in flat):
    return None
  if not floats and (b'.' in flat or b'e' in flat or b'E' in flat):
    return None
  values = np.fromstring(flat, dtype=np.float64, sep=',')
  if values.size != packed.size:
    return None
  largest = float(np.abs(values).max())  # nan or inf if any is
  if floats:
    if not largest < (2.0**24 - 1 if enum == DT_FLOAT else 2.0**53 - 1):
      return None
    return values.astype(_NUMPY[enum]).reshape(packed.shape)
  low, high = _INT_RANGE[enum]
  if not largest < 2.0**53 or values.min() < low or values.max() > high:
    return None
  return values.astype(np.int64).astype(_NUMPY[enum]).reshape(packed.shape)


def _unpacked(value: Any, obj: Any) -> Any:
  """`value` ready for the exact rules (PackedArrays as lists) if the body had any."""
  if not getattr(obj, 'packed', False) and not isinstance(value, PackedArray):
    return value
  try:
    return _json_syntax.unpack(value)
  except RecursionError:
    raise invalid('JSON Parse error: The document nests arrays/objects too deeply to '
                  f'parse; a tensor may have at most rank {MAX_TENSOR_RANK}') from None


def _tensor(value: Any, enum: int, obj: Any = None) -> np.ndarray:
  """One JSON tensor value (columnar input): fast paths, else the exact emulation."""
  if isinstance(value, PackedArray):
    array = _packed_array(value, enum)
    if array is not None:
      return array
  value = _unpacked(value, obj)
  shape = _dense_shape(value)
  array = _fast_array(value, shape, enum)
  if array is None:
    shape, values = _fill_exact(value, enum)
    array = _to_array(values, shape, enum)
  return array


def _status_text(error: CodecError) -> str:
  return f'{error.code.name}: {error.message}'


def _rows_exact(instances: List[Any], dtypes: Dict[str, int]) -> Dict[str, np.ndarray]:
  """TF Serving's FillTensorMapFromInstancesList, element by element."""
  names = sorted(dtypes)
  if not isinstance(instances[0], dict) and len(names) > 1:
    raise invalid('instances is a plain list, but expecting list of objects as multiple '
                   'input tensors required as per tensorinfo_map')
  objects = _is_element_object(instances[0])
  sizes, shapes, values = {}, {}, {}

  def add_item(item, name):
    if name not in dtypes:
      raise invalid(f'JSON object: does not have named input: {name}')
    _dense_shape(item, 1)
    shape, leaves = _fill_exact(item, dtypes[name])
    if name not in sizes:
      sizes[name], shapes[name], values[name] = len(leaves), shape, []
    elif sizes[name] != len(leaves):
      raise invalid(f'Expecting tensor size: {sizes[name]} but got: {len(leaves)}')
    elif shapes[name] != shape:
      raise invalid(f'Expecting shape {shape_text(shapes[name])} '
                     f'but got: {shape_text(shape)}')
    values[name].extend(leaves)

  for index, element in enumerate(instances):
    if objects:
      if not _is_element_object(element):
        raise invalid(f'Expecting object but got list at item {index} of input list')
      for key, item in element.items():
        try:
          add_item(item, key)
        except CodecError as e:
          raise invalid(f'Failed to process element: {index} key: {key} of '
                         f"'instances' list. Error: {_status_text(e)}") from None
      if set(element) != set(names):
        raise invalid(f"Failed to process element: {index} of 'instances' list. "
                       f'JSON object: {value_text(element)} keys must be equal to: '
                       f'{",".join(names)}')
    else:
      if _is_element_object(element):
        raise invalid(f'Expecting value/list but got object at item {index} of input list')
      try:
        add_item(element, names[0])
      except CodecError as e:
        raise invalid(f"Failed to process element: {index} of 'instances' list. "
                       f'Error: {_status_text(e)}') from None
  return {name: _to_array(values[name], [len(instances)] + shapes[name], dtypes[name])
          for name in values}


def _rows_fast(instances: List[Any], dtypes: Dict[str, int]) -> Optional[Dict]:
  names = sorted(dtypes)
  if _is_element_object(instances[0]):
    keys = set(names)
    if not all(_is_element_object(e) and e.keys() == keys for e in instances):
      return None
    blocks = {name: [e[name] for e in instances] for name in names}
  elif len(names) == 1:
    blocks = {names[0]: instances}
  else:
    return None
  arrays = {}
  for name, block in blocks.items():
    shape = [len(block)] + _dense_shape(block[0], 1)
    arrays[name] = _fast_array(block, shape, dtypes[name])
    if arrays[name] is None:
      return None
  return arrays


def parse_predict_request(
    obj: Mapping[str, Any], signature_inputs: Mapping[str, Any]
) -> Tuple[str, Dict[str, np.ndarray], str]:
  """Decodes a predict body (row 'instances' or columnar 'inputs') into input arrays.

  Args:
    obj: the result of parse_json_body.
    signature_inputs: alias -> dtype of the resolved signature's inputs; a DataType enum
      int (TensorInfo.dtype), a tf.DType, or a numpy dtype.

  Returns:
    (signature_name, {alias: array}, ROW or COLUMNAR). The name is 'serving_default' when
    the body has none. DT_STRING inputs are object arrays of bytes; int8/int16/uint8 keep
    TF Serving's C cast of int32 values (they wrap).

  Raises:
    CodecError: TF Serving's INVALID_ARGUMENT / UNIMPLEMENTED messages.
  """
  name = peek_signature_name(obj)
  dtypes = {alias: _dtype_enum(dtype) for alias, dtype in signature_inputs.items()}
  if not dtypes:
    raise invalid('Failed to get input map for signature: ' +
                   (obj.get('signature_name') or 'DEFAULT'))
  try:
    if 'instances' in obj:
      if 'inputs' in obj:
        raise document_error(obj, "Not formatted correctly expecting only one of 'inputs' "
                            "or 'instances' keys to exist ")
      instances = obj['instances']
      if isinstance(instances, PackedArray):
        if len(dtypes) == 1:
          array = _packed_array(instances, next(iter(dtypes.values())))
          if array is not None:
            return name, {next(iter(dtypes)): array}, ROW
        instances = instances.tolist()
      if not isinstance(instances, list):
        raise document_error(obj, "Excepting 'instances' to be an list/array")
      if not instances:
        raise document_error(obj, "No values in 'instances' array")
      instances = _unpacked(instances, obj)
      arrays = _rows_fast(instances, dtypes) or _rows_exact(instances, dtypes)
      return name, arrays, ROW
    if 'inputs' not in obj:
      raise invalid("Missing 'inputs' or 'instances' key")
    value = obj['inputs']
    if not isinstance(value, dict) or is_b64(value):
      if len(dtypes) > 1:
        raise invalid('inputs is a plain value/list, but expecting an object as multiple '
                       'input tensors required as per tensorinfo_map')
      alias = next(iter(dtypes))
      return name, {alias: _tensor(value, dtypes[alias], obj)}, COLUMNAR
    arrays = {}
    for alias in sorted(dtypes):
      if alias not in value:
        raise invalid(f"Missing named input: {alias} in 'inputs' object.")
      arrays[alias] = _tensor(value[alias], dtypes[alias], obj)
    return name, arrays, COLUMNAR
  except NumberTooBig:
    raise too_big_error(obj) from None
