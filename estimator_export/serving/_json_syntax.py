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
"""
import math
import re
from typing import Optional, Tuple

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
