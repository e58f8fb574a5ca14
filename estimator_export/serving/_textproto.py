"""A strict text-format parser driven by real protobuf descriptors, with TF Serving's wording.

    params = _protos.BatchingParameters()
    lines = parse('max_batch_size { value: 8 }', params, source='batching.config')

fills `params` (a real message) and returns where each field was set. Fields,
types, enums and nesting all come from the message's descriptor; nothing here
knows a schema.

Why not google.protobuf.text_format: the C++ parser of tensorflow_model_server
words its errors differently (`Non-repeated field "x" is specified multiple
times.`, `Expected '}' ...`), and the errors here also name the file and line,
give the bad value and the fix ("Did you mean", `write `x { value: ... }``).
The subset read: fields, nested messages (`{}` or `<>`, optional `:`), scalars
(integers in decimal, 0x hex or 0 octal; floats; true/false/1/0; quoted strings
with C escapes, adjacent strings joined; enum names or numbers), repeated
fields one per line or as `[a, b]`, `#` comments, optional `,`/`;` separators.
"""
import dataclasses
import re
from typing import Any, Dict, List, Optional

from google.protobuf import descriptor

from estimator_export.errors import ConfigError, did_you_mean

_FD = descriptor.FieldDescriptor
_INT_RANGES = {
    _FD.TYPE_INT64: (-2**63, 2**63 - 1), _FD.TYPE_SINT64: (-2**63, 2**63 - 1),
    _FD.TYPE_SFIXED64: (-2**63, 2**63 - 1), _FD.TYPE_INT32: (-2**31, 2**31 - 1),
    _FD.TYPE_SINT32: (-2**31, 2**31 - 1), _FD.TYPE_SFIXED32: (-2**31, 2**31 - 1),
    _FD.TYPE_UINT64: (0, 2**64 - 1), _FD.TYPE_FIXED64: (0, 2**64 - 1),
    _FD.TYPE_UINT32: (0, 2**32 - 1), _FD.TYPE_FIXED32: (0, 2**32 - 1),
}
_INT_NAMES = {_FD.TYPE_INT64: 'int64', _FD.TYPE_SINT64: 'int64', _FD.TYPE_SFIXED64: 'int64',
              _FD.TYPE_INT32: 'int32', _FD.TYPE_SINT32: 'int32', _FD.TYPE_SFIXED32: 'int32',
              _FD.TYPE_UINT64: 'uint64', _FD.TYPE_FIXED64: 'uint64',
              _FD.TYPE_UINT32: 'uint32', _FD.TYPE_FIXED32: 'uint32'}


class Lines(dict):
  """Where each field of one parsed message was first set (name -> line).

  `children[name]` holds the Lines of a singular message field.
  """

  def __init__(self):
    super().__init__()
    self.children: Dict[str, 'Lines'] = {}

  def child(self, name: str) -> 'Lines':
    return self.children.get(name, Lines())


@dataclasses.dataclass(frozen=True)
class _Token:
  kind: str  # 'string', 'number', 'ident' or 'symbol'
  text: str
  line: int


_TOKEN = re.compile(r'''
    (?P<space>[ \t\r\f\v]+) | (?P<newline>\n) | (?P<comment>\#[^\n]*)
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:0[xX][0-9a-fA-F]+|[0-9]+\.?[0-9]*(?:[eE][+-]?[0-9]+)?|\.[0-9]+)[fF]?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<symbol>[{}<>:,;\[\]])''', re.VERBOSE)
_ESCAPE = re.compile(r'\\(?:([0-7]{1,3})|x([0-9a-fA-F]{1,2})|(.))')
_SIMPLE_ESCAPES = {'n': '\n', 't': '\t', 'r': '\r', 'a': '\a', 'b': '\b', 'f': '\f', 'v': '\v',
                   '\\': '\\', "'": "'", '"': '"', '?': '?'}
_TRUE, _FALSE = ('true', 'True', 't', '1'), ('false', 'False', 'f', '0')
_FLOAT_WORDS = {'inf': float('inf'), 'infinity': float('inf'), 'nan': float('nan')}


def _tokenize(text: str, source: str) -> List[_Token]:
  tokens, line, pos = [], 1, 0
  while pos < len(text):
    match = _TOKEN.match(text, pos)
    if not match:
      raise ConfigError(f'Unexpected character {text[pos]!r}', source=source, line=line,
                        fix='write `field: value` or `field { ... }` (text proto format)')
    kind = match.lastgroup
    if kind == 'newline':
      line += 1
    elif kind not in ('space', 'comment'):
      tokens.append(_Token(kind, match.group(), line))
    pos = match.end()
  return tokens


def _unquote(token: _Token, source: str) -> str:
  def replace(match):
    octal, hexa, char = match.groups()
    if octal:
      return chr(int(octal, 8))
    if hexa:
      return chr(int(hexa, 16))
    if char in _SIMPLE_ESCAPES:
      return _SIMPLE_ESCAPES[char]
    raise ConfigError(f'Invalid escape sequence \\{char} in a string', source=source,
                      line=token.line)
  return _ESCAPE.sub(replace, token.text[1:-1])


def _parse_int(text: str) -> Optional[int]:
  """An integer literal (decimal, 0x hex, 0-prefixed octal, as in protobuf), else None."""
  if re.fullmatch(r'-?0[xX][0-9a-fA-F]+', text):
    return int(text, 16)
  if re.fullmatch(r'-?0[0-7]+', text):
    return int(text, 8)
  if re.fullmatch(r'-?(?:0|[1-9][0-9]*)', text):
    return int(text)
  return None


def parse(text: str, message, source: str = '<string>') -> Lines:
  """Parses text-format `text` into the real protobuf `message`.

  Returns:
    Where each field was set, for errors raised later about its value.

  Raises:
    ConfigError: naming `source` and the line: syntax, an unknown field (with
      "Did you mean"), a scalar written for a message field, a bad value, or a
      singular field set twice.
  """
  return _Parser(text, source).parse(message)


class _Parser:
  """Recursive descent over the tokens of one text-format message."""

  def __init__(self, text: str, source: str):
    self._source = source
    self._tokens = _tokenize(text, source)
    self._pos = 0

  def parse(self, message) -> Lines:
    return self._fields(message, closing=None)

  def _error(self, message: str, line: Optional[int], **details) -> ConfigError:
    if line is None:  # End of input: point at the last line with a token.
      line = self._tokens[-1].line if self._tokens else 1
    return ConfigError(message, source=self._source, line=line, **details)

  def _peek(self) -> Optional[_Token]:
    return self._tokens[self._pos] if self._pos < len(self._tokens) else None

  def _next(self, expected: str) -> _Token:
    token = self._peek()
    if token is None:
      raise self._error(f'Unexpected end of input; expected {expected}', None)
    self._pos += 1
    return token

  def _accept(self, *symbols: str) -> Optional[_Token]:
    token = self._peek()
    if token is not None and token.kind == 'symbol' and token.text in symbols:
      self._pos += 1
      return token
    return None

  def _fields(self, message, closing: Optional[str]) -> Lines:
    lines = Lines()
    while True:
      if self._peek() is None:
        if closing:
          raise self._error(f"Expected '{closing}' to close "
                            f'{message.DESCRIPTOR.full_name}, got end of input', None)
        return lines
      if closing and self._accept(closing):
        return lines
      self._field(message, lines)
      self._accept(',', ';')

  def _field(self, message, lines: Lines):
    desc = message.DESCRIPTOR
    token = self._next('a field name')
    if token.kind != 'ident':
      raise self._error(f'Expected a field name of {desc.full_name}', token.line,
                        value=token.text)
    name = token.text
    field = desc.fields_by_name.get(name)
    if field is None:
      raise self._error(f'{desc.full_name} has no field named "{name}"', token.line,
                        fix=f'use one of: {", ".join(desc.fields_by_name)}.'
                            + did_you_mean(name, desc.fields_by_name))
    repeated = field.label == _FD.LABEL_REPEATED
    if not repeated and name in lines:
      raise self._error(f'Non-repeated field "{name}" is specified multiple times.', token.line,
                        fix=f'keep one "{name}" (first set on line {lines[name]})')
    lines.setdefault(name, token.line)
    if field.type == _FD.TYPE_MESSAGE:
      if field.message_type.GetOptions().map_entry:
        raise self._error(f'Map field "{name}" is not supported in this file', token.line)
      self._message_value(message, field, token, lines)
      return
    if not self._accept(':'):
      after = self._peek()
      raise self._error(f'Expected ":" after field "{name}"', token.line,
                        value=after.text if after else '<end of input>',
                        fix=f'write `{name}: <value>`')
    if repeated and self._accept('['):
      values = []
      while not self._accept(']'):
        if values and not self._accept(','):
          raise self._error(f'Expected "," or "]" in the list of "{name}"', token.line)
        values.append(self._scalar(field))
      getattr(message, name).extend(values)
    elif repeated:
      getattr(message, name).append(self._scalar(field))
    else:
      setattr(message, name, self._scalar(field))

  def _message_value(self, message, field, token: _Token, lines: Lines):
    name = field.name
    self._accept(':')
    opener = self._accept('{', '<')
    if opener is None:
      after = self._peek()
      example = 'value: ...' if 'value' in field.message_type.fields_by_name else '...'
      raise self._error(f'Field "{name}" is a {field.message_type.full_name} message',
                        token.line, value=after.text if after else '<end of input>',
                        fix=f'write `{name} {{ {example} }}`')
    if field.label == _FD.LABEL_REPEATED:
      target = getattr(message, name).add()
    else:
      target = getattr(message, name)
      target.SetInParent()
    child = self._fields(target, '}' if opener.text == '{' else '>')
    lines.children.setdefault(name, child)

  def _scalar(self, field) -> Any:
    name, kind = field.name, field.type
    token = self._next(f'a value for "{name}"')
    if kind in _INT_RANGES:
      value = _parse_int(token.text) if token.kind == 'number' else None
      low, high = _INT_RANGES[kind]
      if value is None or not low <= value <= high:
        raise self._error(f'Field "{name}" expects an {_INT_NAMES[kind]} integer', token.line,
                          value=token.text)
      return value
    if kind == _FD.TYPE_BOOL:
      if token.kind in ('ident', 'number') and token.text in _TRUE + _FALSE:
        return token.text in _TRUE
      raise self._error(f'Field "{name}" expects true or false', token.line, value=token.text)
    if kind in (_FD.TYPE_FLOAT, _FD.TYPE_DOUBLE):
      return self._float(token, name)
    if kind == _FD.TYPE_ENUM:
      return self._enum(token, field)
    if token.kind != 'string':
      raise self._error(f'Field "{name}" expects a quoted string', token.line, value=token.text)
    parts = [_unquote(token, self._source)]
    while self._peek() is not None and self._peek().kind == 'string':  # "a" "b" == "ab"
      parts.append(_unquote(self._next('a string'), self._source))
    text = ''.join(parts)
    return text.encode('latin-1') if kind == _FD.TYPE_BYTES else text

  def _float(self, token: _Token, name: str) -> float:
    if token.kind == 'number':
      return float(token.text.rstrip('fF'))
    if token.kind == 'ident' and token.text.lower() in _FLOAT_WORDS:
      return _FLOAT_WORDS[token.text.lower()]
    raise self._error(f'Field "{name}" expects a number', token.line, value=token.text)

  def _enum(self, token: _Token, field) -> int:
    enum = field.enum_type
    if token.kind == 'ident' and token.text in enum.values_by_name:
      return enum.values_by_name[token.text].number
    number = _parse_int(token.text) if token.kind == 'number' else None
    if number is not None and number in enum.values_by_number:
      return number
    raise self._error(f'Unknown enumeration value of "{token.text}" for field "{field.name}".',
                      token.line, fix=f'use one of: {", ".join(enum.values_by_name)}.'
                      + did_you_mean(token.text, enum.values_by_name))
