"""rapidjson's syntax errors for a request body: the first error's message and byte offset.

TF Serving parses REST bodies with rapidjson (kParseNanAndInfFlag) and answers a
malformed body with 'JSON Parse error: <message> at offset: <byte offset>'. Python's
json module finds the same errors but words them differently and counts characters, so
after it fails this scanner walks the body once more as rapidjson would and reports
rapidjson's text and offset. It keeps only a stack of open brackets (memory bounded by
the nesting depth, not the body) and passes string bytes through unvalidated, as
rapidjson does.

Why not python-rapidjson (evaluated at 1.25, cp311 manylinux wheel): it has no
dependencies, so it installs beside protobuf<5 and numpy<2, and its parse errors carry
the same messages and offsets for 19 of the 20 bodies the codec tests assert (the
exception: a body of only a UTF-8 BOM, 'Invalid value.' at 0 instead of 'The document
is empty.' at 3). But it decodes the body as UTF-8 before parsing and raises
UnicodeDecodeError (bytes) or UnicodeEncodeError (surrogate-escaped str) on non-UTF-8
string bytes, which TF Serving copies through; and it only reports errors from a full
parse that builds Python objects (about 81 MB peak for an 8 MB body of numbers). So the
scanner stays, and the codec adds no dependency.

Big bodies are mostly numbers, and Python's json module builds one float object per
number (32 bytes, plus 8 for its list slot): a 32 MiB body of `1.5, ` grew the server by
1.7 GB. So before json runs, `pack_numeric_arrays` finds each long array that is a
rectangular nest of plain JSON numbers (the usual tensor) and keeps it as its compact text
(`PackedArray`); the rest of the body, with a string marker in its place, goes to json.
The tensor is then converted straight from that text by numpy (np.fromstring), with no
Python object per element. Anything the packer cannot vouch for (NaN, strings, ragged or
empty lists, odd spacing) is left to json and the exact rules, so messages do not change.
`count_values` counts the scalars of a body with numpy, before anything is built, for the
server's element cap.
"""
import math
import re
import secrets
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from estimator_export.serving._json_text import MAX_TENSOR_RANK
from estimator_export.serving._json_text import PackedArray

EMPTY_DOC = 'The document is empty.'
_WS = re.compile(rb'[ \t\n\r]*')
_DIGITS = re.compile(rb'[0-9]*')
_PLAIN_STRING = re.compile(rb'[^"\\\x00-\x1f]*')
_HEX4 = re.compile(rb'[0-9A-Fa-f]{4}')
# A \uD800-\uDBFF escape not followed by a low surrogate's: Python's json takes it.
LONE_HIGH_SURROGATE = re.compile(
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


def syntax_error(raw: bytes) -> Optional[Tuple[str, int]]:
  """The first error rapidjson (kParseNanAndInfFlag) reports for `raw`, or None."""
  try:
    i, stack, want_value = _WS.match(raw, 0).end(), [], True
    if i == len(raw):
      raise _Syntax(EMPTY_DOC, i)
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


# ----------------------------------------------------------------------------------------
# Counting scalars (the element cap) and packing numeric arrays (memory), with numpy.
_TOKEN_CHARS = np.zeros(256, dtype=bool)
_TOKEN_CHARS[np.frombuffer(b'0123456789+-.' + bytes(range(65, 91)) + bytes(range(97, 123)),
                           dtype=np.uint8)] = True
_COUNT_CHUNK = 1 << 22


def count_values(raw: bytes) -> int:
  """How many scalars (numbers, strings, true/false/null, NaN...) a JSON text holds.

  Object keys are not counted. Exact for valid JSON (an invalid body gets some count; its
  parse error comes later). Runs in 4 MiB numpy chunks: no Python object per value.
  """
  data = np.frombuffer(raw, dtype=np.uint8)
  count, in_string, was_token, last_plain = 0, 0, False, -1
  for start in range(0, data.size, _COUNT_CHUNK):
    chunk = data[start:start + _COUNT_CHUNK]
    quote = chunk == 0x22
    after_backslash = np.empty_like(quote)
    after_backslash[0] = start > 0 and data[start - 1] == 0x5C
    after_backslash[1:] = chunk[:-1] == 0x5C
    if (quote & after_backslash).any():  # An odd run of backslashes escapes the quote.
      index = np.arange(start, start + chunk.size)
      plain = np.maximum.accumulate(np.where(chunk != 0x5C, index, -1))
      plain = np.maximum(plain, last_plain)
      escaped = quote & ((index - 1 - np.concatenate([[last_plain], plain[:-1]])) % 2 == 1)
      quote &= ~escaped
      last_plain = int(plain[-1])
    elif chunk.size:
      nonzero = np.flatnonzero(chunk != 0x5C)
      last_plain = start + int(nonzero[-1]) if nonzero.size else last_plain
    state = np.bitwise_xor.accumulate(quote.view(np.uint8)) ^ in_string
    in_string = int(state[-1])
    outside = state == 0
    count += int(np.count_nonzero(quote & ~outside))  # opening quotes: every string
    count -= int(np.count_nonzero((chunk == 0x3A) & outside))  # a colon per key
    token = _TOKEN_CHARS[chunk] & outside
    count += int(np.count_nonzero(token[1:] & ~token[:-1])) + int(token[0] and not was_token)
    was_token = bool(token[-1])
  return count


PACK_MIN_BYTES = 4096  # smaller arrays cost little as Python objects
_RUN = re.compile(rb'\[[\[\]0-9eE.+\-, \t\n\r]*')
_NUMBER = rb'-?(?:0|[1-9][0-9]*+)(?:\.[0-9]++)?+(?:[eE][+-]?+[0-9]++)?+'
_NUMBERS = re.compile(rb'\[*+' + _NUMBER + rb'\]*+(?:,\[*+' + _NUMBER + rb'\]*+)*+')
# Number characters -> '0', JSON whitespace -> ' ' (fast substring checks, not regexes).
_CLASSES = bytes(0x30 if c in b'0123456789.eE+-' else 0x20 if c in b' \t\n\r' else c
                 for c in range(256))
_VALIDATE_CHUNK = 1 << 20


def _rectangular_shape(structure: bytes) -> Optional[Tuple[int, ...]]:
  """The shape of a nest of lists written as brackets and commas only, if rectangular."""
  rank = len(structure) - len(structure.lstrip(b'['))
  if not 1 <= rank <= MAX_TENSOR_RANK:
    return None
  shape: List[int] = []
  unit = b''  # the text of one list at the level being measured, inner levels first
  for level in range(rank - 1, -1, -1):
    end = structure.find(b']' * (rank - level))  # the first list at `level` ends here
    if end < 0:
      return None
    length = end + (rank - level) - level  # that list's text, brackets included
    if level == rank - 1:
      size = length - 1
    else:
      size, rest = divmod(length - 1, len(unit) + 1)
      if rest:
        return None
    shape.append(size)
    unit = b'[' + (b','.join([unit] * size) if unit else b',' * (size - 1)) + b']'
  return tuple(reversed(shape)) if unit == structure else None


def _pack(span: bytes) -> Optional[PackedArray]:
  """A PackedArray of `span` when it is a non-empty rectangular array of JSON numbers."""
  classes = span.translate(_CLASSES)
  while b'  ' in classes:
    classes = classes.replace(b'  ', b' ')
  if b'0 0' in classes:  # whitespace inside a number
    return None
  classes = classes.replace(b' ', b'')
  if (b'[,' in classes or b'[]' in classes or b',,' in classes or b',]' in classes
      or b'0' * 300 in classes):  # an empty slot, or a number too long to vouch for
    return None
  compact = span.translate(None, b' \t\n\r')
  shape = _rectangular_shape(compact.translate(None, b'0123456789.eE+-'))
  if shape is None:
    return None
  start = 0
  while start < len(compact):
    end = compact.find(b',', start + _VALIDATE_CHUNK)
    end = len(compact) if end < 0 else end
    if not _NUMBERS.fullmatch(compact, start, end):
      return None
    start = end + 1
  return PackedArray(compact, shape)


def restore_packed(obj: Any, packs: Dict[str, PackedArray]) -> Optional[Any]:
  """Puts the PackedArrays back in place of their markers; None if one was a key."""
  if type(obj) is str:
    return packs.get(obj, obj)
  stack = [obj] if isinstance(obj, (dict, list)) else []
  while stack:
    container = stack.pop()
    if isinstance(container, dict):
      if any(key in packs for key in container):
        return None
      items = container.items()
    else:
      items = enumerate(container)
    for key, value in items:
      if type(value) is str:
        if value in packs:
          container[key] = packs[value]
      elif isinstance(value, (dict, list)):
        stack.append(value)
  return obj


def unpack(value: Any) -> Any:
  """`value` with every PackedArray inside it turned into lists (for the exact rules)."""
  if isinstance(value, PackedArray):
    return value.tolist()
  if isinstance(value, list):
    return [unpack(v) for v in value] if any(
        isinstance(v, (PackedArray, list, dict)) for v in value) else value
  if isinstance(value, dict):
    return {k: unpack(v) for k, v in value.items()}
  return value


def pack_numeric_arrays(raw: bytes, min_bytes: Optional[int] = None
                        ) -> Tuple[bytes, Dict[str, PackedArray]]:
  """Cuts the long numeric arrays out of a JSON text.

  Returns:
    (text with a JSON string marker in place of each array, {marker: PackedArray}); the
    text is `raw` itself when nothing was packed. Arrays shorter than `min_bytes`
    (default PACK_MIN_BYTES) are left to json. A marker is a string that no client can
    send by chance (NUL and a random nonce). A run of number characters inside a string
    becomes a marker there too, which makes the text invalid JSON (a backslash outside a
    string), and a marker in the place of an object key is a dict key: the caller then
    parses `raw` unchanged.
  """
  min_bytes = PACK_MIN_BYTES if min_bytes is None else min_bytes
  pieces, packs, last = [], {}, 0
  nonce = secrets.token_hex(8)
  for match in _RUN.finditer(raw):
    span = match.group().rstrip(b', \t\n\r')
    while span.count(b']') > span.count(b'[') and span.endswith(b']'):
      span = span[:-1].rstrip(b', \t\n\r')  # a list that ends an enclosing one
    if len(span) < min_bytes:
      continue
    packed = _pack(span)
    if packed is None:
      continue
    marker = f'\x00{nonce}:{len(packs)}'
    packs[marker] = packed
    pieces += [raw[last:match.start()], b'"\\u0000' + marker[1:].encode() + b'"']
    last = match.start() + len(span)
  if not packs:
    return raw, packs
  pieces.append(raw[last:])
  return b''.join(pieces), packs
