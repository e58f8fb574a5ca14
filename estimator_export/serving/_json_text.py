"""What the JSON codec's modules share: CodecError, and rapidjson's text of values.

TF Serving echoes request values in its messages and writes every response with
rapidjson's PrettyWriter; `Writer`, `json_string` and `value_text` reproduce that text
byte for byte, and `decimal_text` is TF Serving's WriteDecimal for one number. Custom
code: no library writes rapidjson's layout (4-space indent, single-line arrays, its
number formatting), and TF Serving's messages quote it exactly.
"""
import codecs
import json
import math
import re
from typing import Any, List, Optional, Sequence, Tuple

import grpc
import numpy as np

from estimator_export.serving.status import ServingError

ROW, COLUMNAR = 'row', 'columnar'
MAX_TENSOR_RANK = 32
MAX_ECHO_CHARS = 64 * 1024
INVALID, UNIMPLEMENTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED
INTERNAL = grpc.StatusCode.INTERNAL  # the server called the codec wrongly (its bug)


class CodecError(ServingError):
  """A request or response that TF Serving's JSON layer rejects.

  Attributes:
    code: grpc.StatusCode (INVALID_ARGUMENT -> HTTP 400, UNIMPLEMENTED -> 501).
    message: TF Serving's exact message, for `{"error": message}`.
  """


def invalid(message: str) -> CodecError:
  return CodecError(INVALID, message)


class NumberTooBig(Exception):
  """A number that rapidjson refuses to parse ('Number too big to be stored in double.')."""


class JsonConstant(float):
  """The literals NaN / Infinity / -Infinity (told apart from overflowed numbers)."""


class PackedArray:
  """A non-empty rectangular JSON array of plain numbers, kept as its text (no objects).

  parse_json_body puts one where a long numeric array was (see _json_syntax); tensors are
  converted from `text` by numpy, everything else sees it through `tolist` or `head`.

  Attributes:
    text: the array's JSON text without whitespace, e.g. b'[[1,2.5],[3,4]]'.
    shape: its dimensions, e.g. (2, 2).
  """
  __slots__ = ('text', 'shape')

  def __init__(self, text: bytes, shape: Tuple[int, ...]):
    self.text = text
    self.shape = tuple(shape)

  @property
  def size(self) -> int:
    return int(np.prod(self.shape, dtype=np.int64))

  def tolist(self) -> List[Any]:
    """The nested lists of Python ints and floats that json would have built."""
    return json.loads(self.text)

  def head(self, count: int) -> List[Any]:
    """tolist() of the first `count` numbers only, in nested lists cut after them."""
    end = -1
    for _ in range(count):
      end = self.text.find(b',', end + 1)
      if end < 0:
        return self.tolist()
    values = json.loads(b'[' + self.text[:end].translate(None, b'[]') + b']')

    def nest(flat, shape):
      if len(shape) == 1:
        return flat
      inner = int(np.prod(shape[1:], dtype=np.int64))
      return [nest(flat[i:i + inner], shape[1:]) for i in range(0, len(flat), inner)]

    return nest(values, self.shape)


class Writer:
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


def json_string(text: str) -> str:
  """A JSON string literal escaped like rapidjson's Writer (lone surrogates -> U+FFFD)."""
  if _NEEDS_ESCAPE.search(text):
    text = text.translate(_ESCAPES)
  return '"' + text + '"'


def is_rj_double(v: Any) -> bool:
  """Whether rapidjson holds this parsed number as a double (floats, ints past 64 bits)."""
  return isinstance(v, float) or (type(v) is int and not -2**63 <= v < 2**64)


def to_float32(x: float) -> float:
  with np.errstate(over='ignore'):
    return float(np.float32(x))


def decimal_text(v: float, double: bool) -> str:
  """TF Serving's WriteDecimal for one value (the reference for the vectorised version)."""
  if math.isnan(v):
    return 'NaN'
  if math.isinf(v):
    return '-Infinity' if v < 0 else 'Infinity'
  text = '%g' % v
  back = float(text)
  if back != v if double else to_float32(back) != v:
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


def json_type(v: Any) -> str:
  if v is None:
    return 'Null'
  if v is True or v is False:
    return 'True' if v else 'False'
  return {dict: 'Object', list: 'Array', PackedArray: 'Array', str: 'String'}.get(
      type(v), 'Number')


def _scalar_text(v: Any) -> Optional[str]:
  """rapidjson's text for a scalar inside a value, or None for a non-finite double."""
  if v is None or v is True or v is False:
    return json.dumps(v)
  if isinstance(v, str):
    return json_string(v)
  if not is_rj_double(v):
    return str(v)
  try:
    v = float(v)
  except OverflowError:
    return None
  return _rj_double_text(v) if math.isfinite(v) else None


def value_text(value: Any) -> str:
  """TF Serving's JsonValueToString: PrettyWriter text of a parsed JSON value."""
  if is_rj_double(value):
    try:
      v = float(value)
    except OverflowError:
      v = math.inf
    is_float = abs(v) <= 3.4028234e38  # rapidjson's Value::IsFloat()
    return decimal_text(to_float32(v) if is_float else v, not is_float)
  writer, stack, item = Writer(), [], value
  while True:
    if isinstance(item, PackedArray):  # every number writes >= 2 characters
      item = item.head(MAX_ECHO_CHARS // 2 + 2)
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
        writer.raw(json_string(entry[0]))
        item = entry[1]
      break
    else:
      return writer.text()


def _raw_bytes_handler(error: UnicodeEncodeError) -> Tuple[bytes, int]:
  """Encodes surrogateescape'd body bytes back to themselves, other surrogates as CESU."""
  out = bytearray()
  for ch in error.object[error.start:error.end]:
    code = ord(ch)
    out += bytes([code - 0xDC00]) if 0xDC80 <= code <= 0xDCFF else ch.encode(
        'utf-8', 'surrogatepass')
  return bytes(out), error.end


codecs.register_error('estimator_export_json_raw', _raw_bytes_handler)


def str_bytes(text: str) -> bytes:
  """The bytes a JSON string stood for (rapidjson does not validate UTF-8)."""
  try:
    return text.encode('utf-8')
  except UnicodeEncodeError:
    return text.encode('utf-8', 'estimator_export_json_raw')


def shape_text(shape: Sequence[int]) -> str:
  return '[' + ','.join(str(d) for d in shape) + ']'
