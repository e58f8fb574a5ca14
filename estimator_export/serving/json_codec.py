"""TF Serving 2.15's REST JSON codec: request bodies to arrays, arrays to response text.

A pure module (no HTTP, no sessions, no TensorFlow import). The REST service calls,
in this order:

  obj = parse_json_body(body)                      # syntax, top level must be an object
  # predict
  name = peek_signature_name(obj)                  # '' -> 'serving_default'
  ...the caller resolves the signature (unknown signature is its error)...
  name, inputs, fmt = parse_predict_request(obj, {alias: dtype})
  text = format_predict_response(outputs, fmt)
  # classify / regress (the caller resolves the signature afterwards, as TF Serving does)
  name, examples = parse_classify_regress_request(obj, 'classify')
  text = format_classify_response(classes, scores)  # or format_regress_response(values)
  # any failure
  text = format_error(error.message)

Every failure is a `CodecError` carrying TF Serving's status code and exact message
(tensorflow_serving/util/json_tensor.cc behaviour, see spec/tf_serving_contract.md).
Output text is byte-for-byte what TF Serving's rapidjson PrettyWriter prints, e.g.
'{\\n    "predictions": [2.5, 3.0, 4.5\\n    ]\\n}'.

Decisions and known differences from TF Serving (all documented at the point of use):
  * dtypes are given as DataType enum ints (TensorInfo.dtype), tf.DType, or numpy dtypes.
  * Numbers follow TF Serving's code, which is stricter than the contract's wording:
    a float input rejects finite numbers beyond float range and integers above 2**24-1
    ('Cannot convert JSON value: 16777217 to float without loss of precision.').
  * Output maps, and several inputs, are walked in sorted alias order (TF Serving walks a
    protobuf map, whose order is unspecified).
  * Non-UTF-8 bytes in DT_STRING outputs (not `_bytes`) become U+FFFD; TF Serving copies
    them raw, which makes its body invalid JSON.
  * Echoed request values in messages are cut after 64 KiB (TF Serving echoes all).
  * Python's parser refuses documents nested deeper than ~900 levels; tensors are limited
    to rank 32 (numpy's limit). Both give INVALID_ARGUMENT, never RecursionError.
  * Accepted by rapidjson but refused here: the literals `Inf`, `-Inf`, `-NaN`.
  * Numbers too big for a double are reported (as rapidjson's parse error) when a tensor
    or feature uses them, not when they sit in an ignored key. Duplicate keys: last wins.
"""
import binascii
import codecs
import functools
import json
import math
import re
import struct
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import grpc
import numpy as np

from estimator_export._saved_model import DEFAULT_SIGNATURE
from estimator_export.serving.status import ServingError, tf_type_name

__all__ = [
    'CodecError', 'ROW', 'COLUMNAR', 'DEFAULT_SIGNATURE', 'parse_json_body',
    'peek_signature_name', 'parse_predict_request', 'parse_classify_regress_request',
    'format_predict_response', 'format_classify_response', 'format_regress_response',
    'format_error',
]

ROW, COLUMNAR = 'row', 'columnar'
MAX_TENSOR_RANK = 32
MAX_ECHO_CHARS = 64 * 1024
_INVALID, _UNIMPLEMENTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED


class CodecError(ServingError):
  """A request or response that TF Serving's JSON layer rejects.

  Attributes:
    code: grpc.StatusCode (INVALID_ARGUMENT -> HTTP 400, UNIMPLEMENTED -> 501).
    message: TF Serving's exact message, for `{"error": message}`.
  """


def _invalid(message: str) -> CodecError:
  return CodecError(_INVALID, message)


class _NumberTooBig(Exception):
  """A number that rapidjson refuses to parse ('Number too big to be stored in double.')."""


class _JsonConstant(float):
  """The literals NaN / Infinity / -Infinity (told apart from overflowed numbers)."""


_CONSTANTS = {name: _JsonConstant(name) for name in ('NaN', 'Infinity', '-Infinity')}
_DECODER = json.JSONDecoder(parse_constant=_CONSTANTS.__getitem__)


class _JsonDocument(dict):
  """The parsed top-level object; `raw` keeps the body for late parse-error offsets."""
  raw: bytes = b''


# ----------------------------------------------------------------------------------------
# DataType enums (tensorflow/core/framework/types.proto) and TF's names for them.
_FLOAT, _DOUBLE, _INT32, _UINT8, _INT16, _INT8, _STRING = 1, 2, 3, 4, 5, 6, 7
_INT64, _BOOL, _UINT32, _UINT64 = 9, 10, 22, 23
_EXTRA_NAMES = {11: 'qint8', 12: 'quint8', 13: 'qint32', 15: 'qint16', 16: 'quint16',
                20: 'resource', 21: 'variant'}
_INT_RANGE = {_INT32: (-2**31, 2**31 - 1), _UINT8: (-2**31, 2**31 - 1),
              _INT16: (-2**31, 2**31 - 1), _INT8: (-2**31, 2**31 - 1),
              _INT64: (-2**63, 2**63 - 1), _UINT32: (0, 2**32 - 1), _UINT64: (0, 2**64 - 1)}
_NUMPY = {_FLOAT: np.float32, _DOUBLE: np.float64, _INT32: np.int32, _UINT8: np.uint8,
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
    raise TypeError(f'No TensorFlow DataType for {dtype!r}; pass a DataType enum or tf.DType')
  return _ENUM_OF_NUMPY[np_dtype]


# ----------------------------------------------------------------------------------------
# rapidjson emulation: syntax errors, PrettyWriter, number text.
_EMPTY_DOC = 'The document is empty.'
_WS = re.compile(rb'[ \t\n\r]*')
_DIGITS = re.compile(rb'[0-9]*')
_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')
_HEX4 = re.compile(rb'[0-9A-Fa-f]{4}')
_LONE_HIGH_SURROGATE = re.compile(
    r'(?<!\\)(?:\\\\)*\\u[dD][89abAB][0-9a-fA-F]{2}(?!\\u[dD][c-fC-F][0-9a-fA-F]{2})')


class _Syntax(Exception):
  """rapidjson's parse error: (message, byte offset)."""


def _hex4(raw: bytes, i: int, escape: int) -> int:
  if not _HEX4.match(raw, i):
    raise _Syntax('Incorrect hex digit after \\u escape in string.', escape)
  return int(raw[i:i + 4], 16)


def _scan_string(raw: bytes, i: int) -> int:
  """Scans the string starting at raw[i] == '"'; returns the offset after it."""
  i += 1
  while True:
    i = _PLAIN_STRING.match(raw, i).end()
    c = raw[i] if i < len(raw) else 0
    if c == 0x22:
      return i + 1
    if c == 0x5C:
      escape, e = i, (raw[i + 1] if i + 1 < len(raw) else 0)
      if e in b'"\\/bfnrt':
        i += 2
        continue
      if e != 0x75:
        raise _Syntax('Invalid escape character in string.', escape)
      code = _hex4(raw, i + 2, escape)
      i += 6
      if 0xD800 <= code <= 0xDBFF:
        if raw[i:i + 2] != b'\\u':
          raise _Syntax('The surrogate pair in string is invalid.', escape)
        if not 0xDC00 <= _hex4(raw, i + 2, escape) <= 0xDFFF:
          raise _Syntax('The surrogate pair in string is invalid.', escape)
        i += 6
      continue
    if c == 0:
      raise _Syntax('Missing a closing quotation mark in string.', i)
    raise _Syntax('Invalid encoding in string.', i)


def _expect(raw: bytes, i: int, word: bytes) -> int:
  for j, ch in enumerate(word):
    if raw[i + j:i + j + 1] != bytes([ch]):
      raise _Syntax('Invalid value.', i + j)
  return i + len(word)


def _scan_number(raw: bytes, i: int) -> int:
  start = i
  if raw[i:i + 1] == b'-':
    i += 1
  c = raw[i:i + 1]
  if c == b'N':
    return _expect(raw, i + 1, b'aN')
  if c == b'I':
    i = _expect(raw, i + 1, b'nf')
    return _expect(raw, i, b'inity') if raw[i:i + 1] == b'i' else i
  if c == b'0':
    i += 1
  elif c.isdigit():
    i = _DIGITS.match(raw, i).end()
  else:
    raise _Syntax('Invalid value.', i)
  if raw[i:i + 1] == b'.':
    if not raw[i + 1:i + 2].isdigit():
      raise _Syntax('Miss fraction part in number.', i + 1)
    i = _DIGITS.match(raw, i + 1).end()
  if raw[i:i + 1] in (b'e', b'E'):
    i += 1
    if raw[i:i + 1] in (b'+', b'-'):
      i += 1
    if not raw[i:i + 1].isdigit():
      raise _Syntax('Miss exponent in number.', i)
    i = _DIGITS.match(raw, i).end()
  if math.isinf(float(raw[start:i])):
    raise _Syntax('Number too big to be stored in double.', start)
  return i


def _scan_member_name(raw: bytes, i: int) -> int:
  if raw[i:i + 1] != b'"':
    raise _Syntax('Missing a name for object member.', i)
  i = _WS.match(raw, _scan_string(raw, i)).end()
  if raw[i:i + 1] != b':':
    raise _Syntax('Missing a colon after a name of object member.', i)
  return _WS.match(raw, i + 1).end()


def _syntax_error(raw: bytes) -> Optional[Tuple[str, int]]:
  """The first error rapidjson (kParseNanAndInfFlag) reports for `raw`, or None."""
  try:
    i, stack, want_value = _WS.match(raw, 0).end(), [], True
    if i == len(raw):
      raise _Syntax(_EMPTY_DOC, i)
    while True:
      if want_value:
        c = raw[i:i + 1]
        if c in (b'[', b'{'):
          i = _WS.match(raw, i + 1).end()
          if raw[i:i + 1] != (b']' if c == b'[' else b'}'):
            stack.append(c)
            if c == b'{':
              i = _scan_member_name(raw, i)
            continue
          i += 1
        elif c == b'"':
          i = _scan_string(raw, i)
        elif c in (b'n', b't', b'f'):
          i = _expect(raw, i + 1, {b'n': b'ull', b't': b'rue', b'f': b'alse'}[c])
        else:
          i = _scan_number(raw, i)
      i = _WS.match(raw, i).end()
      if not stack:
        if i < len(raw):
          raise _Syntax('The document root must not be followed by other values.', i)
        return None
      c, want_value = raw[i:i + 1], True
      if c == b',':
        i = _WS.match(raw, i + 1).end()
        if stack[-1] == b'{':
          i = _scan_member_name(raw, i)
      elif c == (b']' if stack[-1] == b'[' else b'}'):
        stack.pop()
        i, want_value = i + 1, False
      elif stack[-1] == b'[':
        raise _Syntax("Missing a comma or ']' after an array element.", i)
      else:
        raise _Syntax("Missing a comma or '}' after an object member.", i)
  except _Syntax as e:
    return e.args[0], e.args[1]


def _parse_error(raw: bytes, fallback: Tuple[str, int]) -> CodecError:
  message, offset = _syntax_error(raw) or fallback
  return _invalid(f'JSON Parse error: {message} at offset: {offset}')


def _too_big_error(obj: Any) -> CodecError:
  return _parse_error(getattr(obj, 'raw', b''),
                      ('Number too big to be stored in double.', 0))


class _Writer:
  """rapidjson::PrettyWriter (4-space indent) as TF Serving drives it."""

  def __init__(self):
    self.parts: List[str] = []
    self.size = 0
    self.levels: List[List] = []  # [in_array, value_count]
    self.single_line = False  # rapidjson::kFormatSingleLineArray

  def _put(self, text: str):
    self.parts.append(text)
    self.size += len(text)

  def prefix(self):
    if not self.levels:
      return
    level = self.levels[-1]
    if level[0]:
      if level[1]:
        self._put(', ' if self.single_line else ',')
      if not self.single_line:
        self._put('\n' + '    ' * len(self.levels))
    else:
      if level[1]:
        self._put(': ' if level[1] % 2 else ',\n')
      else:
        self._put('\n')
      if level[1] % 2 == 0:
        self._put('    ' * len(self.levels))
    level[1] += 1

  def raw(self, text: str):
    self.prefix()
    self._put(text)

  def items(self, texts: Sequence[str]):
    """Several values into the current array, in single-line mode (row predictions)."""
    if texts:
      self.raw(texts[0])
      self._put(''.join([', ' + t for t in texts[1:]]))
      self.levels[-1][1] += len(texts) - 1

  def start(self, array: bool):
    self.prefix()
    self._put('[' if array else '{')
    self.levels.append([array, 0])

  def end(self):
    array, count = self.levels.pop()
    if count and not (array and self.single_line):
      self._put('\n' + '    ' * len(self.levels))
    self._put(']' if array else '}')

  def text(self) -> str:
    return ''.join(self.parts)


_ESCAPES = {i: f'\\u{i:04X}' for i in range(0x20)}
_ESCAPES.update({0x08: '\\b', 0x09: '\\t', 0x0A: '\\n', 0x0C: '\\f', 0x0D: '\\r',
                 0x22: '\\"', 0x5C: '\\\\'})
_ESCAPES.update({i: '\ufffd' for i in range(0xD800, 0xE000)})  # lone surrogates
_NEEDS_ESCAPE = re.compile('[\x00-\x1f"\\\\\ud800-\udfff]')


def _json_string(text: str) -> str:
  """A JSON string literal escaped like rapidjson's Writer (lone surrogates -> U+FFFD)."""
  if _NEEDS_ESCAPE.search(text):
    text = text.translate(_ESCAPES)
  return '"' + text + '"'


def _is_rj_double(v: Any) -> bool:
  """Whether rapidjson holds this parsed number as a double (floats, ints past 64 bits)."""
  return isinstance(v, float) or (type(v) is int and not -2**63 <= v < 2**64)


def _to_float32(x: float) -> float:
  with np.errstate(over='ignore'):
    return float(np.float32(x))


def _decimal_text(v: float, double: bool) -> str:
  """TF Serving's WriteDecimal for one value (the reference for the vectorised version)."""
  if math.isnan(v):
    return 'NaN'
  if math.isinf(v):
    return '-Infinity' if v < 0 else 'Infinity'
  text = '%g' % v
  back = float(text)
  if back != v if double else _to_float32(back) != v:
    text = ('%.17g' if double else '%.9g') % v
  return text if '.' in text or 'e' in text else text + '.0'


def _rj_double_text(v: float) -> str:
  """rapidjson Writer::Double: shortest digits in rapidjson's Prettify layout."""
  sign = '-' if math.copysign(1.0, v) < 0 else ''
  if v == 0:
    return sign + '0.0'
  mantissa, _, exp = repr(abs(v)).partition('e')
  whole, _, frac = mantissa.partition('.')
  digits = (whole + frac).lstrip('0')
  stripped = digits.rstrip('0')
  k = int(exp or 0) - len(frac) + len(digits) - len(stripped)  # v = digits * 10**k
  digits, length = stripped, len(stripped)
  kk = length + k
  if 0 <= k and kk <= 21:
    body = digits + '0' * k + '.0'
  elif 0 < kk <= 21:
    body = digits[:kk] + '.' + digits[kk:]
  elif -6 < kk <= 0:
    body = '0.' + '0' * -kk + digits
  else:
    body = (digits if length == 1 else digits[0] + '.' + digits[1:]) + f'e{kk - 1}'
  return sign + body


def _json_type(v: Any) -> str:
  if v is None:
    return 'Null'
  if v is True or v is False:
    return 'True' if v else 'False'
  return {dict: 'Object', list: 'Array', str: 'String'}.get(type(v), 'Number')


def _scalar_text(v: Any) -> Optional[str]:
  """rapidjson's text for a scalar inside a value, or None for a non-finite double."""
  if v is None or v is True or v is False:
    return json.dumps(v)
  if isinstance(v, str):
    return _json_string(v)
  if not _is_rj_double(v):
    return str(v)
  try:
    v = float(v)
  except OverflowError:
    return None
  return _rj_double_text(v) if math.isfinite(v) else None


def _value_text(value: Any) -> str:
  """TF Serving's JsonValueToString: PrettyWriter text of a parsed JSON value."""
  if _is_rj_double(value):
    try:
      v = float(value)
    except OverflowError:
      v = math.inf
    is_float = abs(v) <= 3.4028234e38  # rapidjson's Value::IsFloat()
    return _decimal_text(_to_float32(v) if is_float else v, not is_float)
  writer, stack, item = _Writer(), [], value
  while True:
    if isinstance(item, (dict, list)):
      writer.start(isinstance(item, list))
      stack.append(iter(item.items()) if isinstance(item, dict) else iter(item))
    else:
      text = _scalar_text(item)
      if text is None:  # rapidjson's Writer refuses NaN/Inf: the text stops here.
        writer.prefix()
        return writer.text()
      writer.raw(text)
    if writer.size > MAX_ECHO_CHARS:
      return writer.text() + '...'
    while stack:
      entry = next(stack[-1], stack)
      if entry is stack:
        stack.pop()
        writer.end()
        continue
      if writer.levels[-1][0]:
        item = entry
      else:
        writer.raw(_json_string(entry[0]))
        item = entry[1]
      break
    else:
      return writer.text()


# ----------------------------------------------------------------------------------------
# Request bodies.
def _raw_bytes_handler(error: UnicodeEncodeError) -> Tuple[bytes, int]:
  """Encodes surrogateescape'd body bytes back to themselves, other surrogates as CESU."""
  out = bytearray()
  for ch in error.object[error.start:error.end]:
    code = ord(ch)
    out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else ch.encode(
        'utf-8', 'surrogatepass')
  return bytes(out), error.end


codecs.register_error('estimator_export_json_raw', _raw_bytes_handler)


def _str_bytes(text: str) -> bytes:
  """The bytes a JSON string stood for (rapidjson does not validate UTF-8)."""
  try:
    return text.encode('utf-8')
  except UnicodeEncodeError:
    return text.encode('utf-8', 'estimator_export_json_raw')


def parse_json_body(body: bytes) -> Dict[str, Any]:
  """Parses a request body like TF Serving (rapidjson with NaN/Infinity allowed).

  Args:
    body: the HTTP body (bytes; str is encoded as UTF-8).

  Returns:
    The top-level JSON object as a dict (keeps the raw body for late error offsets).

  Raises:
    CodecError: INVALID_ARGUMENT 'JSON Parse error: The document is empty',
      'JSON Parse error: <rapidjson message> at offset: <byte offset>',
      'JSON Value: <value> Is not object', or a nesting-depth refusal.
  """
  raw = body.encode('utf-8') if isinstance(body, str) else bytes(body)
  if not raw:
    raise _invalid('JSON Parse error: The document is empty')
  nul = raw.find(b'\0')  # rapidjson's stream ends at the first NUL,
  data = raw if nul < 0 else raw[:nul]
  bom = 0  # and its UTF-8 MemoryStream skips the bytes of a BOM.
  for byte in b'\xef\xbb\xbf':
    bom += data[bom:bom + 1] == bytes([byte])
  data = b' ' * bom + data[bom:]  # keeps offsets counted from the body's start
  try:
    text = data.decode('utf-8')
  except UnicodeDecodeError:  # rapidjson copies unvalidated bytes into strings.
    text = data.decode('utf-8', 'surrogateescape')
  try:
    obj = _DECODER.decode(text)
  except RecursionError:
    raise _invalid('JSON Parse error: The document nests arrays/objects too deeply to '
                   'parse; a tensor may have at most rank '
                   f'{MAX_TENSOR_RANK}') from None
  except ValueError as e:  # JSONDecodeError, or an integer with too many digits.
    position = getattr(e, 'pos', 0)
    offset = len(text[:position].encode('utf-8', 'estimator_export_json_raw'))
    raise _parse_error(data, ('Invalid value.', offset)) from None
  if '\\u' in text and _LONE_HIGH_SURROGATE.search(text):
    error = _syntax_error(data)
    if error:
      raise _invalid(f'JSON Parse error: {error[0]} at offset: {error[1]}')
  if not isinstance(obj, dict):
    raise _invalid(f'JSON Value: {_value_text(obj)} Is not object')
  document = _JsonDocument(obj)
  document.raw = data
  return document


def peek_signature_name(obj: Mapping[str, Any]) -> str:
  """The request's signature name; absent or '' gives 'serving_default'.

  Call it before resolving the signature (TF Serving checks the type first).

  Raises:
    CodecError: "JSON Value: <body> not formatted correctly. 'signature_name' key must be
      a string value."
  """
  if not isinstance(obj, dict):
    raise _invalid(f'JSON Value: {_value_text(obj)} Is not object')
  name = obj.get('signature_name', '')
  if not isinstance(name, str):
    raise _invalid(f'JSON Value: {_value_text(obj)} not formatted correctly. '
                   "'signature_name' key must be a string value.")
  return name or DEFAULT_SIGNATURE


def _format_error(doc: Any, text: str) -> CodecError:
  return _invalid(f'JSON Value: {_value_text(doc)} {text}')


# ----------------------------------------------------------------------------------------
# JSON values -> tensors (predict).
def _is_b64(v: Any) -> bool:
  return type(v) is dict and len(v) == 1 and isinstance(v.get('b64'), str)


def _is_element_object(v: Any) -> bool:
  return isinstance(v, dict) and not _is_b64(v)


_B64_BODY = re.compile(r'[A-Za-z0-9+/]*={0,2}')


def _b64_decode(v: Any) -> bytes:
  """absl::Base64Unescape of {"b64": "..."}: whitespace skipped, padding optional."""
  if not _is_b64(v):
    raise _invalid(f'JSON Value: {_value_text(v)} not formatted correctly for base64 data')
  text = ''.join(v['b64'].split())
  core = text.rstrip('=')
  if (not _B64_BODY.fullmatch(text) or len(core) % 4 == 1
      or (len(text) != len(core) and len(text) % 4)):
    raise _invalid('Unable to base64 decode')
  try:
    return binascii.a2b_base64(core + '=' * (-len(core) % 4))
  except binascii.Error:
    raise _invalid('Unable to base64 decode') from None


def _type_error(v: Any, enum: int) -> CodecError:
  return _invalid(f'JSON Value: {_value_text(v)} Type: {_json_type(v)} '
                  f'is not of expected type: {_type_name(enum)}')


def _check_float(v: Any, enum: int) -> float:
  """rapidjson IsLosslessDecimal + GetFloat/GetDouble for a float/double input."""
  if type(v) is int and -2**63 <= v < 2**64:
    if abs(v) > (2**24 - 1 if enum == _FLOAT else 2**53 - 1):
      raise _invalid(f'Cannot convert JSON value: {v} to {_type_name(enum)} '
                     'without loss of precision.')
    return float(v)
  try:
    f = float(v)
  except OverflowError:
    raise _NumberTooBig() from None
  if math.isinf(f) and type(v) is not _JsonConstant:
    raise _NumberTooBig()
  if enum == _FLOAT and math.isfinite(f) and abs(f) > _FLT_MAX:
    raise _invalid(f'Cannot convert JSON value: {_value_text(v)} to float '
                   'without loss of precision.')
  return f


def _leaf_value(v: Any, enum: int) -> Any:
  """One JSON leaf as a value of DataType `enum` (TF Serving's AddValueToTensor)."""
  if isinstance(v, dict):
    if enum == _STRING:
      return _b64_decode(v)
    raise _type_error(v, enum)
  if enum in (_FLOAT, _DOUBLE):
    if v is None or isinstance(v, (bool, str)):
      raise _type_error(v, enum)
    return _check_float(v, enum)
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
    return _str_bytes(v)
  raise CodecError(_UNIMPLEMENTED, f'Conversion of JSON Value: {_value_text(v)} '
                   f'to type: {_type_name(enum)}')


def _dense_shape(v: Any) -> List[int]:
  """Shape from the first element at each level (GetDenseTensorShape)."""
  shape = []
  while isinstance(v, list):
    shape.append(len(v))
    if len(shape) > MAX_TENSOR_RANK:
      raise _invalid(f'JSON value nests lists more than {MAX_TENSOR_RANK} deep; tensors '
                     f'of rank above {MAX_TENSOR_RANK} are not supported')
    if not v:
      break
    v = v[0]
  return shape


def _fill_exact(value: Any, enum: int) -> Tuple[List[int], List[Any]]:
  """TF Serving's FillTensorProto, leaf by leaf in document order: (shape, values)."""
  shape, values = _dense_shape(value), []
  rank = len(shape)

  def walk(v, level):
    if not isinstance(v, list):
      if level != rank:
        raise _invalid(f'JSON Value: {_value_text(v)} found at incorrect level: '
                       f'{level + 1} in the JSON DOM. Expected at level: {rank}')
      values.append(_leaf_value(v, enum))
      return
    if level >= rank:
      raise _invalid(f'Encountered list at unexpected level: {level} expected < {rank}')
    if len(v) != shape[level]:
      raise _invalid(f'Encountered list at unexpected size: {len(v)} at level: {level} '
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
    if enum in (_FLOAT, _DOUBLE):
      if not types <= {float, int, _JsonConstant}:
        return None
      values = flat.astype(np.float64)
      finite = np.isfinite(values)
      if not finite.all() and any(type(flat[i]) is not _JsonConstant
                                  for i in np.flatnonzero(~finite)):
        return None
      if enum == _FLOAT and (np.abs(values[finite]) > _FLT_MAX).any():
        return None
      if int in types:
        limit = 2.0**24 - 1 if enum == _FLOAT else 2.0**53 - 1
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
  except (OverflowError, CodecError, _NumberTooBig):
    return None
  return result.reshape(shape)


def _tensor(value: Any, enum: int) -> np.ndarray:
  """One JSON tensor value (columnar input): fast path, else the exact emulation."""
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
    raise _invalid('instances is a plain list, but expecting list of objects as multiple '
                   'input tensors required as per tensorinfo_map')
  objects = _is_element_object(instances[0])
  sizes, shapes, values = {}, {}, {}

  def add_item(item, name):
    if name not in dtypes:
      raise _invalid(f'JSON object: does not have named input: {name}')
    shape, leaves = _fill_exact(item, dtypes[name])
    if name not in sizes:
      sizes[name], shapes[name], values[name] = len(leaves), shape, []
    elif sizes[name] != len(leaves):
      raise _invalid(f'Expecting tensor size: {sizes[name]} but got: {len(leaves)}')
    elif shapes[name] != shape:
      raise _invalid(f'Expecting shape {_shape_text(shapes[name])} '
                     f'but got: {_shape_text(shape)}')
    values[name].extend(leaves)

  for index, element in enumerate(instances):
    if objects:
      if not _is_element_object(element):
        raise _invalid(f'Expecting object but got list at item {index} of input list')
      for key, item in element.items():
        try:
          add_item(item, key)
        except CodecError as e:
          raise _invalid(f'Failed to process element: {index} key: {key} of '
                         f"'instances' list. Error: {_status_text(e)}") from None
      if set(element) != set(names):
        raise _invalid(f"Failed to process element: {index} of 'instances' list. "
                       f'JSON object: {_value_text(element)} keys must be equal to: '
                       f'{",".join(names)}')
    else:
      if _is_element_object(element):
        raise _invalid(f'Expecting value/list but got object at item {index} of input list')
      try:
        add_item(element, names[0])
      except CodecError as e:
        raise _invalid(f"Failed to process element: {index} of 'instances' list. "
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
    shape = [len(block)] + _dense_shape(block[0])
    arrays[name] = _fast_array(block, shape, dtypes[name])
    if arrays[name] is None:
      return None
  return arrays


def _shape_text(shape: Sequence[int]) -> str:
  return '[' + ','.join(str(d) for d in shape) + ']'


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
    raise _invalid('Failed to get input map for signature: ' +
                   (obj.get('signature_name') or 'DEFAULT'))
  try:
    if 'instances' in obj:
      if 'inputs' in obj:
        raise _format_error(obj, "Not formatted correctly expecting only one of 'inputs' "
                            "or 'instances' keys to exist ")
      instances = obj['instances']
      if not isinstance(instances, list):
        raise _format_error(obj, "Excepting 'instances' to be an list/array")
      if not instances:
        raise _format_error(obj, "No values in 'instances' array")
      arrays = _rows_fast(instances, dtypes) or _rows_exact(instances, dtypes)
      return name, arrays, ROW
    if 'inputs' not in obj:
      raise _invalid("Missing 'inputs' or 'instances' key")
    value = obj['inputs']
    if not isinstance(value, dict) or _is_b64(value):
      if len(dtypes) > 1:
        raise _invalid('inputs is a plain value/list, but expecting an object as multiple '
                       'input tensors required as per tensorinfo_map')
      alias = next(iter(dtypes))
      return name, {alias: _tensor(value, dtypes[alias])}, COLUMNAR
    arrays = {}
    for alias in sorted(dtypes):
      if alias not in value:
        raise _invalid(f"Missing named input: {alias} in 'inputs' object.")
      arrays[alias] = _tensor(value[alias], dtypes[alias])
    return name, arrays, COLUMNAR
  except _NumberTooBig:
    raise _too_big_error(obj) from None


# ----------------------------------------------------------------------------------------
# JSON examples -> serialized tf.Example (classify / regress).
def _varint(n: int) -> bytes:
  n &= (1 << 64) - 1
  out = bytearray()
  while n > 0x7F:
    out.append((n & 0x7F) | 0x80)
    n >>= 7
  out.append(n)
  return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited protobuf field."""
  return _varint(number << 3 | 2) + _varint(len(payload)) + payload


_KIND_FIELD = {'bytes': 1, 'float': 2, 'int64': 3}


def _feature_bytes(kind: Optional[str], values: List[Any]) -> bytes:
  """tensorflow.Feature wire bytes (BytesList / packed FloatList / packed Int64List)."""
  if kind is None:
    return b''
  if kind == 'bytes':
    payload = b''.join(_field(1, v) for v in values)
  elif kind == 'float':
    payload = _field(1, struct.pack(f'<{len(values)}f', *values))
  else:
    payload = _field(1, b''.join(_varint(v) for v in values))
  return _field(_KIND_FIELD[kind], payload)


def _feature_value(v: Any, name: str) -> Tuple[str, Any]:
  """(kind, value) of one JSON feature element (TF Serving's AddValueToFeature)."""
  if v is True or v is False:
    return 'int64', int(v)
  if isinstance(v, str):
    return 'bytes', _str_bytes(v)
  if _is_b64(v):
    return 'bytes', _b64_decode(v)
  if v is None or isinstance(v, (dict, list)):
    raise _invalid(f'Feature: {name} has element with unexpected JSON type: '
                   f'{_json_type(v)}')
  if _is_rj_double(v):
    return 'float', _check_float(v, _FLOAT)
  if v > 2**63 - 1:
    raise _invalid(f'Feature: {name} has uint64 element. Only int64 is supported.')
  return 'int64', v


def _example_bytes(value: Any) -> bytes:
  """A JSON object of features -> serialized tensorflow.Example."""
  if not isinstance(value, dict):
    raise _invalid(f'Example must be JSON object but got JSON {_json_type(value)}')
  entries = []
  for name, content in value.items():
    kind, values = None, []
    for element in content if isinstance(content, list) else [content]:
      element_kind, element_value = _feature_value(element, name)
      if kind not in (None, element_kind):
        raise _invalid(f'Unexpected element type in feature: {name} expecting type: {kind}')
      kind = element_kind
      values.append(element_value)
    entry = _field(1, _str_bytes(name)) + _field(2, _feature_bytes(kind, values))
    entries.append(_field(1, entry))
  return _field(1, b''.join(entries)) if entries else b''


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
    CodecError: TF Serving's INVALID_ARGUMENT messages.
  """
  if method not in ('classify', 'regress'):
    raise ValueError(f"method must be 'classify' or 'regress', got {method!r}")
  name = peek_signature_name(obj)
  try:
    context = _example_bytes(obj['context']) if 'context' in obj else b''
    if 'examples' not in obj:
      raise _format_error(obj, "When method is classify, key 'examples' is expected and "
                          'was not found')
    examples = obj['examples']
    if not isinstance(examples, list):
      raise _format_error(obj, "Expecting 'examples' value to be an list/array")
    if not examples:
      raise _format_error(obj, "'examples' value is an empty array")
    return name, [context + _example_bytes(example) for example in examples]
  except _NumberTooBig:
    raise _too_big_error(obj) from None


# ----------------------------------------------------------------------------------------
# Arrays -> response text.
_POW10 = np.array([10.0**i for i in range(23)])
_SPECS = {False: np.array(['%g', '%g.0', '%.9g', '%.9g.0', 'NaN%.0s', 'Infinity%.0s',
                           '-Infinity%.0s'], dtype=object)}
_SPECS[True] = np.array([s.replace('%.9g', '%.17g') for s in _SPECS[False]], dtype=object)


def _six_digits_round_trip(a: np.ndarray, double: bool) -> np.ndarray:
  """Whether '%g' (6 significant digits) of each finite a > 0 reads back as a.

  Rounds to 6 digits with exact powers of ten (|scale| <= 22) so the check is exact;
  values outside that range (tiny or huge) use the reference string check.
  """
  result = np.zeros(a.shape, dtype=bool)
  with np.errstate(all='ignore'):
    exponent = np.floor(np.log10(a)).astype(np.int64)
    for _ in range(2):  # log10 can be one too high just below a power of ten.
      scale = 5 - exponent
      exact = np.abs(scale) <= 22
      power = _POW10[np.minimum(np.abs(scale), 22)]
      digits = np.rint(np.where(scale >= 0, a * power, a / power))
      low = exact & (digits < 1e5)
      exponent = exponent - low
      if not low.any():
        break
    decimal = np.where(scale >= 0, digits / power, digits * power)
    if double:
      result = exact & (decimal == a)
    else:
      result = exact & (decimal.astype(np.float32) == a.astype(np.float32))
  for i in np.flatnonzero(~exact):
    value = float(a[i])
    back = float('%g' % value)
    result[i] = back == value if double else _to_float32(back) == value
  return result


def _float_specs(values: np.ndarray, double: bool) -> np.ndarray:
  """Per-element printf specs reproducing WriteDecimal (object array, C order)."""
  v = values.reshape(-1).astype(np.float64)
  a = np.abs(v)
  finite = np.isfinite(v)
  positive = finite & (a != 0)
  round_trip = ~positive & finite
  round_trip[positive] = _six_digits_round_trip(a[positive], double)
  with np.errstate(invalid='ignore'):
    integral = finite & (np.floor(v) == v)
    suffix = integral & (a < np.where(round_trip, 1e6, 1e17 if double else 1e9))
  codes = np.where(round_trip, 0, 2) + suffix
  codes[np.isnan(v)] = 4
  codes[np.isposinf(v)] = 5
  codes[np.isneginf(v)] = 6
  return _SPECS[double][codes]


def _float_strings(values: np.ndarray, double: bool) -> List[str]:
  """WriteDecimal text of each value (C order); float32 unless `double`."""
  if not double:
    return [token.decode() for token in _float32_tokens(values)]
  specs = _float_specs(values, True)
  if not specs.size:
    return []
  numbers = tuple(values.reshape(-1).astype(np.float64).tolist())
  return ('\0'.join(specs.tolist()) % numbers).split('\0')


# '000'..'999' as little-endian uint32 (3 ASCII digits and a pad byte), and the number
# of trailing zeros of each 3-digit group.
_TRIPLES32 = np.frombuffer(b''.join(b'%03d\0' % i for i in range(1000)), dtype=np.uint32)
_TRAILING_ZEROS = np.array([0] + [len(str(i)) - len(str(i).rstrip('0')) for i in
                                  range(1, 1000)], dtype=np.int8)
_TRAILING_ZEROS[0] = 3


@functools.lru_cache(maxsize=None)
def _layout(negative: bool, precision: int, exponent: int,
            count: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """printf '%.<precision>g' layout (plus TF's '.0') of `count` significant digits.

  Returns (digit columns, digit indices, literal columns, literal bytes) for a row of
  16 bytes; every value sharing these arguments has the same layout.
  """
  parts: List[Any] = [b'-'] if negative else []
  if -4 <= exponent < precision:
    if exponent >= 0:
      parts += list(range(exponent + 1))
      parts += [b'.'] + list(range(exponent + 1, count)) if count > exponent + 1 else [b'.0']
    else:
      parts += [b'0.' + b'0' * (-exponent - 1)] + list(range(count))
  else:
    parts += [0] + ([b'.'] + list(range(1, count)) if count > 1 else [])
    parts.append(b'e%c%02d' % (45 if exponent < 0 else 43, abs(exponent)))
  digit_cols, digit_idx, literal_cols, literal = [], [], [], []
  for part in parts:
    for item in [part] if isinstance(part, int) else part:
      column = len(digit_cols) + len(literal_cols)
      if isinstance(part, int):
        digit_cols.append(column)
        digit_idx.append(item)
      else:
        literal_cols.append(column)
        literal.append(item)
  return (np.array(digit_cols, np.intp), np.array(digit_idx, np.intp),
          np.array(literal_cols, np.intp), np.array(literal, np.uint8))


def _float32_tokens(values: np.ndarray) -> List[bytes]:
  """WriteDecimal<float> text of each value as ASCII bytes, vectorised and exact.

  One exactly scaled rounding gives the 9 significant digits ('%.9g'); the 6-digit
  ('%g') rounding is derived from them, and kept when it reads back as the same float.
  Values whose rounding is not certain from float64 arithmetic (a half-way fraction,
  a scale beyond 10**22) and zeros / non-finite values use the reference formatter.
  """
  values = np.asarray(values, dtype=np.float32).reshape(-1)
  v = values.astype(np.float64)
  out = np.zeros((v.size, 16), dtype=np.uint8)
  a = np.abs(v)
  is_simple = np.isfinite(v) & (a != 0)
  simple = np.flatnonzero(is_simple)
  special = [np.flatnonzero(~is_simple)]
  if simple.size:
    a = a[simple]
    with np.errstate(all='ignore'):
      x = np.floor(np.log10(a)).astype(np.int64)
      for _ in range(2):  # log10 can be one too high just below a power of ten.
        scale = 8 - x
        power = _POW10[np.minimum(np.abs(scale), 22)]
        q = np.where(scale >= 0, a * power, a / power)
        m9 = np.rint(q)
        low = m9 < 1e8
        if not low.any():
          break
        x = x - low
      unsure = (np.abs(scale) > 22) | (m9 < 1e8) | (np.abs(q - np.floor(q) - 0.5) < 1e-6)
      carry = m9 >= 1e9
      m9 = np.where(carry | unsure, 1e8, m9).astype(np.int32)
      x = (x + carry).astype(np.int16)
      rest = m9 % 1000
      m6 = m9 // 1000 + (rest > 500)
      carry6 = m6 >= 10**6
      m6 = np.where(carry6, 10**5, m6)
      x6 = x + carry6
      scale6 = 5 - x6
      power6 = _POW10[np.minimum(np.abs(scale6), 22)]
      d6 = np.where(scale6 >= 0, m6 / power6, m6 * power6)
      six = d6.astype(np.float32) == np.abs(values[simple])
      unsure |= (np.abs(scale6) > 22) | (rest == 500)
    mantissa = np.where(six, m6 * 1000, m9)
    low, mid, high = mantissa % 1000, mantissa // 1000 % 1000, mantissa // 1000000
    zeros = _TRAILING_ZEROS[low] + (low == 0) * (
        _TRAILING_ZEROS[mid] + (mid == 0) * _TRAILING_ZEROS[high])
    int16 = np.int16
    keys = ((v[simple] < 0).astype(int16) * int16(4096) + (~six).astype(int16) * int16(2048)
            + (np.where(six, x6, x) + int16(64)) * int16(16) + (9 - zeros).astype(int16))
    keys[unsure] = -1
    order = np.argsort(keys, kind='stable')  # int16: a radix sort
    ordered = keys[order]
    bounds = np.concatenate([[0], np.flatnonzero(np.diff(ordered)) + 1, [ordered.size]])
    rows = out.view('S16').reshape(-1)
    for begin, end in zip(bounds[:-1].tolist(), bounds[1:].tolist()):
      members, key = order[begin:end], int(ordered[begin])
      if key < 0:
        special.append(simple[members])
        continue
      digit_cols, digit_idx, literal_cols, literal = _layout(
          bool(key >> 12 & 1), 9 if key >> 11 & 1 else 6, (key >> 4 & 127) - 64, key & 15)
      digits = np.stack([_TRIPLES32[high[members]], _TRIPLES32[mid[members]],
                         _TRIPLES32[low[members]]], axis=1).view(np.uint8)
      block = np.zeros((end - begin, 16), dtype=np.uint8)
      block[:, digit_cols] = digits[:, digit_idx + digit_idx // 3]  # skip each pad byte
      block[:, literal_cols] = literal
      rows[simple[members]] = block.view('S16').reshape(-1)
  tokens = out.view('S16').reshape(-1).tolist()
  for i in np.concatenate(special).tolist():
    tokens[i] = _decimal_text(float(v[i]), False).encode()
  return tokens


def _output_kind(array: np.ndarray) -> str:
  kind, size = array.dtype.kind, array.dtype.itemsize
  if kind == 'f' and size in (4, 8):
    return 'double' if size == 8 else 'float'
  if kind in 'iu' and array.dtype != np.uint16:
    return 'int'
  if kind == 'b':
    return 'bool'
  if kind in 'OSU':
    return 'string'
  return 'unsupported'


def _unsupported_name(dtype: np.dtype) -> str:
  return {'float16': 'half', 'bfloat16': 'bfloat16'}.get(dtype.name, dtype.name)


def _output_bytes(value: Any) -> bytes:
  if isinstance(value, (bytes, bytearray, np.bytes_)):
    return bytes(value)
  return str(value).encode('utf-8', 'estimator_export_json_raw')


def _leaf_tokens(array: np.ndarray, bytes_mode: bool, depth: int) -> List[Any]:
  """Leaf texts in C order: ASCII bytes for float32, str otherwise."""
  kind = _output_kind(array)
  flat = array.reshape(-1)
  if not flat.size:
    return []
  if kind == 'float':
    return _float32_tokens(flat)
  if kind == 'double':
    return _float_strings(flat, True)
  if kind == 'int':
    return list(map(str, flat.tolist()))
  if kind == 'bool':
    return np.where(flat, 'true', 'false').tolist()
  if kind != 'string':
    raise _invalid(f'Failed to write JSON value for tensor type: '
                   f'{_unsupported_name(array.dtype)}')
  items = [_output_bytes(v) for v in flat.tolist()]
  if not bytes_mode:
    return [_json_string(v.decode('utf-8', 'replace')) for v in items]
  inner, outer = '    ' * (depth + 1), '    ' * depth
  return [f'{{\n{inner}"b64": "{binascii.b2a_base64(v, newline=False).decode()}"\n'
          f'{outer}}}' for v in items]


def _render(array: np.ndarray, name: str, depth: int, single_line: bool,
            split: bool) -> List[str]:
  """JSON text of `array` (split=False) or of each array[i] (split=True).

  `depth` is the writer's nesting depth where the value(s) go; arrays nested inside push
  further, which sets newline indentation in default mode and the b64 objects' layout.
  """
  shape = array.shape
  dims = shape[1:] if split else shape
  count = shape[0] if split else 1
  tokens = _leaf_tokens(array, name.endswith('_bytes'), depth + len(dims))
  as_bytes = bool(tokens) and isinstance(tokens[0], bytes)
  cast = str.encode if as_bytes else str
  for level in range(len(dims) - 1, -1, -1):
    groups = count * int(np.prod(dims[:level], dtype=np.int64))
    size = dims[level]
    if size == 0:
      tokens = [cast('[]')] * groups
      continue
    if single_line:
      start, sep, stop = '[', ', ', ']'
    else:
      inner, outer = '    ' * (depth + level + 1), '    ' * (depth + level)
      start, sep, stop = '[\n' + inner, ',\n' + inner, '\n' + outer + ']'
    start, sep, stop = cast(start), cast(sep), cast(stop)
    tokens = [start + sep.join(tokens[i * size:(i + 1) * size]) + stop
              for i in range(groups)]
  return [t.decode() for t in tokens] if as_bytes else tokens


def format_predict_response(outputs: Mapping[str, Any], fmt: str) -> str:
  """TF Serving's predict response text.

  Args:
    outputs: alias -> array (numpy, or anything np.asarray takes). float32 / float64 are
      written per WriteDecimal ('%g', else '%.9g' / '%.17g'; '.0' appended; NaN,
      Infinity, -Infinity); ints and bools plain; strings raw, or {"b64": ...} when the
      alias ends in '_bytes'.
    fmt: ROW ('predictions', one entry per dim-0 row) or COLUMNAR ('outputs').

  Returns:
    The JSON text, laid out as rapidjson's PrettyWriter lays it out.

  Raises:
    CodecError: INVALID_ARGUMENT (empty map, rank-0 or inconsistent batch in row format,
      unsupported dtypes such as float16).
  """
  if not outputs:
    raise _invalid('Cannot convert empty tensor map to JSON')
  if fmt not in (ROW, COLUMNAR):
    raise _invalid('Invalid request format')
  items = sorted((alias, np.asarray(value)) for alias, value in outputs.items())
  writer = _Writer()
  writer.start(False)
  several = len(items) > 1
  if fmt == COLUMNAR:
    writer.raw(_json_string('outputs'))
    if several:
      writer.start(False)
    for alias, array in items:
      if several:
        writer.raw(_json_string(alias))
      writer.raw(_render(array, alias, len(writer.levels), False, False)[0])
    if several:
      writer.end()
    writer.end()
    return writer.text()
  batch = -1
  for alias, array in items:
    if array.ndim == 0:
      raise _invalid(f'Tensor name: {alias} has no shape information ')
    if batch >= 0 and array.shape[0] != batch:
      raise _invalid(f'Tensor name: {alias} has inconsistent batch size: '
                     f'{array.shape[0]} expecting: {batch}')
    batch = array.shape[0]
  writer.raw(_json_string('predictions'))
  writer.start(True)
  depth = len(writer.levels) + several
  rows = {alias: _render(array, alias, depth, True, True) for alias, array in items}
  if not several:
    writer.single_line = True
    writer.items(rows[items[0][0]])
    writer.single_line = False
  for index in range(batch if several else 0):
    writer.start(False)
    writer.single_line = True
    for alias, _ in items:
      writer.raw(_json_string(alias))
      writer.raw(rows[alias][index])
    writer.single_line = False
    writer.end()
  writer.end()
  writer.end()
  return writer.text()


def _label_text(label: Any) -> str:
  if isinstance(label, (bytes, np.bytes_)):
    label = bytes(label).decode('utf-8', 'replace')
  return _json_string(str(label))


def format_classify_response(classes: Optional[Any], scores: Optional[Any]) -> str:
  """{"results": [[[label, score], ...], ...]} from [batch, num_classes] arrays.

  Scores only: labels are "". Classes only: scores are 0.0. Scores are written as floats
  (ClassificationResult stores float).
  """
  if classes is None and scores is None:
    raise ValueError('format_classify_response needs classes, scores or both')
  shapes = [np.shape(a) for a in (classes, scores) if a is not None]
  for shape in shapes:
    if len(shape) != 2:
      raise _invalid('Expected Tensor shape: [batch_size num_classes] but got '
                     f'{_shape_text(shape)}')
  if len(shapes) == 2 and shapes[0] != shapes[1]:
    raise _invalid(f'Tensors class and score should match in shape. Got '
                   f'{_shape_text(shapes[0])} vs. {_shape_text(shapes[1])}')
  batch, num = shapes[0]
  if batch == 0:
    raise _invalid('Cannot convert empty ClassificationResults to JSON')
  labels = (np.asarray(classes, dtype=object).reshape(-1).tolist() if classes is not None
            else [''] * (batch * num))
  score_values = (np.asarray(scores, dtype=np.float32) if scores is not None
                  else np.zeros(batch * num, np.float32))
  score_texts = _float_strings(score_values, False)
  writer = _Writer()
  writer.start(False)
  writer.raw(_json_string('results'))
  writer.start(True)
  for row in range(batch):
    writer.single_line = True
    writer.start(True)
    for i in range(row * num, (row + 1) * num):
      writer.start(True)
      writer.raw(_label_text(labels[i]))
      writer.raw(score_texts[i])
      writer.end()
    writer.end()
    writer.single_line = False
  writer.end()
  writer.end()
  return writer.text()


def format_regress_response(outputs: Any) -> str:
  """{"results": [v, ...]} from a [batch] or [batch, 1] array (written as floats)."""
  values = np.asarray(outputs)
  if values.ndim not in (1, 2) or (values.ndim == 2 and values.shape[1] != 1):
    raise _invalid('Expected output Tensor shape to be either [batch_size] or '
                   f'[batch_size, 1] but got {_shape_text(values.shape)}')
  if values.shape[0] == 0:
    raise _invalid('Cannot convert empty RegressionResults to JSON')
  writer = _Writer()
  writer.start(False)
  writer.raw(_json_string('results'))
  writer.single_line = True
  writer.start(True)
  writer.items(_float_strings(values.astype(np.float32), False))
  writer.end()
  writer.end()
  return writer.text()


def format_error(message: str) -> str:
  """{"error": message} as TF Serving writes it (JSON-escaped, always valid UTF-8)."""
  writer = _Writer()
  writer.start(False)
  writer.raw(_json_string('error'))
  writer.raw(_json_string(str(message)))
  writer.end()
  return writer.text()
