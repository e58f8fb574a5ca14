"""Output arrays -> TF Serving 2.15's response text (predict, classify, regress, errors).

Floats are written as TF Serving's WriteDecimal writes them ('%g', else '%.9g' for
float32 / '%.17g' for double, '.0' appended to integral values, NaN/Infinity), laid out
as rapidjson's PrettyWriter lays them out. Custom code because the bytes must equal TF
Serving's: Python's repr and json.dumps pick other digits and another layout. float32
outputs, the common case, are formatted by a vectorised exact formatter checked against
the reference `decimal_text`. Big outputs are written in blocks of rows (`_joined`),
so no list ever holds one string per element (a 6.7M-element response took ~1 GB so).
"""
import binascii
import functools
from typing import Any, List, Mapping, Optional, Tuple

import numpy as np

from estimator_export.serving._json_text import COLUMNAR
from estimator_export.serving._json_text import CodecError
from estimator_export.serving._json_text import INTERNAL
from estimator_export.serving._json_text import ROW
from estimator_export.serving._json_text import Writer
from estimator_export.serving._json_text import decimal_text
from estimator_export.serving._json_text import invalid
from estimator_export.serving._json_text import json_string
from estimator_export.serving._json_text import shape_text
from estimator_export.serving._json_text import to_float32

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
    result[i] = back == value if double else to_float32(back) == value
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
    tokens[i] = decimal_text(float(v[i]), False).encode()
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
    raise invalid(f'Failed to write JSON value for tensor type: '
                   f'{_unsupported_name(array.dtype)}')
  items = [_output_bytes(v) for v in flat.tolist()]
  if not bytes_mode:
    return [json_string(v.decode('utf-8', 'replace')) for v in items]
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


_BLOCK = 1 << 16  # leaves rendered per block


def _joined(array: np.ndarray, name: str, depth: int, single_line: bool,
            split: bool) -> str:
  """''.join-free equivalent of _render: the text of `array`, or (split) of its rows
  joined with ', ' (row predictions), rendered in blocks of about _BLOCK leaves.
  """
  if array.ndim == 0 or array.size <= _BLOCK:
    parts = _render(array, name, depth, single_line, split)
    return ', '.join(parts) if split else parts[0]
  if split:
    start, sep, stop, inner = '', ', ', '', depth
  elif single_line:
    start, sep, stop, inner = '[', ', ', ']', depth + 1
  else:
    indent, outdent = '    ' * (depth + 1), '    ' * depth
    start, sep, stop, inner = '[\n' + indent, ',\n' + indent, '\n' + outdent + ']', depth + 1
  row = array.size // array.shape[0]
  if row > _BLOCK:
    pieces = [_joined(array[i], name, inner, single_line, False)
              for i in range(array.shape[0])]
  else:
    step = max(1, _BLOCK // max(row, 1))
    pieces = [sep.join(_render(array[i:i + step], name, inner, single_line, True))
              for i in range(0, array.shape[0], step)]
  return start + sep.join(pieces) + stop


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
    raise invalid('Cannot convert empty tensor map to JSON')
  if fmt not in (ROW, COLUMNAR):
    raise invalid('Invalid request format')
  items = sorted((alias, np.asarray(value)) for alias, value in outputs.items())
  writer = Writer()
  writer.start(False)
  several = len(items) > 1
  if fmt == COLUMNAR:
    writer.raw(json_string('outputs'))
    if several:
      writer.start(False)
    for alias, array in items:
      if several:
        writer.raw(json_string(alias))
      writer.raw(_joined(array, alias, len(writer.levels), False, False))
    if several:
      writer.end()
    writer.end()
    return writer.text()
  batch = -1
  for alias, array in items:
    if array.ndim == 0:
      raise invalid(f'Tensor name: {alias} has no shape information ')
    if batch >= 0 and array.shape[0] != batch:
      raise invalid(f'Tensor name: {alias} has inconsistent batch size: '
                     f'{array.shape[0]} expecting: {batch}')
    batch = array.shape[0]
  writer.raw(json_string('predictions'))
  writer.start(True)
  depth = len(writer.levels) + several
  if not several:
    writer.single_line = True
    if batch:
      writer.raw(_joined(items[0][1], items[0][0], depth, True, True))
      writer.levels[-1][1] += batch - 1
    writer.single_line = False
  rows = {alias: _render(array, alias, depth, True, True) for alias, array in items
          } if several else {}
  for index in range(batch if several else 0):
    writer.start(False)
    writer.single_line = True
    for alias, _ in items:
      writer.raw(json_string(alias))
      writer.raw(rows[alias][index])
    writer.single_line = False
    writer.end()
  writer.end()
  writer.end()
  return writer.text()


def _label_text(label: Any) -> str:
  if isinstance(label, (bytes, np.bytes_)):
    label = bytes(label).decode('utf-8', 'replace')
  return json_string(str(label))


def format_classify_response(classes: Optional[Any], scores: Optional[Any]) -> str:
  """{"results": [[[label, score], ...], ...]} from [batch, num_classes] arrays.

  Scores only: labels are "". Classes only: scores are 0.0. Scores are written as floats
  (ClassificationResult stores float).
  """
  if classes is None and scores is None:
    raise CodecError(INTERNAL, 'format_classify_response got neither classes nor scores: got '
                     'classes=None, scores=None. Fix: pass the classify signature\'s classes '
                     'and/or scores outputs')
  shapes = [np.shape(a) for a in (classes, scores) if a is not None]
  for shape in shapes:
    if len(shape) != 2:
      raise invalid('Expected Tensor shape: [batch_size num_classes] but got '
                     f'{shape_text(shape)}')
  if len(shapes) == 2 and shapes[0] != shapes[1]:
    raise invalid(f'Tensors class and score should match in shape. Got '
                   f'{shape_text(shapes[0])} vs. {shape_text(shapes[1])}')
  batch, num = shapes[0]
  if batch == 0:
    raise invalid('Cannot convert empty ClassificationResults to JSON')
  labels = (np.asarray(classes, dtype=object).reshape(-1).tolist() if classes is not None
            else [''] * (batch * num))
  score_values = (np.asarray(scores, dtype=np.float32) if scores is not None
                  else np.zeros(batch * num, np.float32))
  score_texts = _float_strings(score_values, False)
  writer = Writer()
  writer.start(False)
  writer.raw(json_string('results'))
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
    raise invalid('Expected output Tensor shape to be either [batch_size] or '
                   f'[batch_size, 1] but got {shape_text(values.shape)}')
  if values.shape[0] == 0:
    raise invalid('Cannot convert empty RegressionResults to JSON')
  writer = Writer()
  writer.start(False)
  writer.raw(json_string('results'))
  writer.single_line = True
  writer.start(True)
  writer.items(_float_strings(values.astype(np.float32), False))
  writer.end()
  writer.end()
  return writer.text()


def format_error(message: str) -> str:
  """{"error": message} as TF Serving writes it (JSON-escaped, always valid UTF-8)."""
  writer = Writer()
  writer.start(False)
  writer.raw(json_string('error'))
  writer.raw(json_string(str(message)))
  writer.end()
  return writer.text()
