"""BERT WordPiece tokenization as TensorFlow ops, for a raw-text serving signature.

`build_tokenizer_fn` returns the `tokenizer_fn` that
`estimator_export.build_text_receiver_fn` calls inside the export graph:

    tokenizer_fn = build_tokenizer_fn('vocab.txt', do_lower_case=True, max_seq_length=128)
    receiver_fn = ee.build_text_receiver_fn(
        tokenizer_fn, features, text_keys=('text_a', 'text_b'), optional_text_keys=('text_b',))

Its ids equal `tokenization.FullTokenizer(vocab_file, do_lower_case).encode(...)` row
by row. How the Python rules become ops:

  * Unicode properties (control, whitespace, punctuation, CJK, the casing
    classes of final sigma, Mn, canonical combining class) are read at graph
    build time from this Python's `unicodedata` (and the very predicates of
    `tokenization`) into a run-length table of code points; in the graph a
    `tf.searchsorted` looks each code point up. No ICU or RE2 Unicode version
    enters the result.
  * `str.lower()` followed by NFD is a per-code-point table (Hangul syllables
    are decomposed arithmetically), plus the final-sigma rule of `str.lower`
    and the canonical reordering of NFD, both computed with core ops.
  * WordPiece is TF Text's `WordpieceTokenizeWithOffsets` (in TF Text 2.12.1,
    which TF Serving 2.15.1 links), over a `StaticHashTable` initialised from
    `vocab_file`; the file becomes a SavedModel asset.
  * Words longer than 100 characters become [UNK] before WordPiece (the op's
    own limit counts bytes).

Graph ops: core TF plus that one TF Text op (see `estimator_export/servability.py`).
"""
import functools
import unicodedata
from typing import Callable, Dict, Tuple

import numpy as np
import tensorflow as tf
import tensorflow_text as tf_text

from bert_example import tokenization
from estimator_export.errors import ReceiverError

MAX_CHARS_PER_WORD = 100
_MAX_UTF8_BYTES_PER_CHAR = 4
_SUFFIX = '##'

# Bit layout of the per-code-point class code.
_BASE_MASK = 3          # bits 0-1: what cleaning does with the character
_OTHER, _DROP, _SPACE, _CJK = 0, 1, 2, 3
_SIGMA_SHIFT = 2        # bits 2-3: class for str.lower()'s final-sigma rule
_NOT_CASED, _CASE_IGNORABLE, _CASED = 0, 1, 2
_PUNCT_BIT = 1 << 4     # tokenization.is_punctuation
_MN_BIT = 1 << 5        # general category Mn (dropped by accent stripping)
_CCC_SHIFT = 8          # bits 8-15: canonical combining class
_CAPITAL_SIGMA, _FINAL_SIGMA = 0x3A3, 0x3C2
_HANGUL_FIRST, _HANGUL_LAST = 0xAC00, 0xD7A3


def _sigma_class(char: str) -> int:
  """Casing class of `char` as str.lower() sees it when placing a final sigma.

  CPython does not expose the Cased / Case_Ignorable properties, so they are
  read off str.lower() itself: 'AΣx' lowers Σ to σ only when x is cased and
  not case-ignorable; 'AΣxB' lowers it to ς only when x is neither.
  """
  if ('A\u03a3' + char).lower()[1] == '\u03c3':
    return _CASED
  if ('A\u03a3' + char + 'B').lower()[1] == '\u03c2':
    return _NOT_CASED
  return _CASE_IGNORABLE


def _class_code(cp: int) -> int:
  if 0xD800 <= cp <= 0xDFFF:
    return _DROP  # Surrogates cannot come out of UTF-8 decoding.
  char = chr(cp)
  if cp in (0, 0xFFFD) or tokenization.is_control(char):
    return _DROP  # Includes every unassigned code point (category Cn).
  if tokenization.is_whitespace(char) or char.isspace():
    base = _SPACE  # isspace: str.split() also splits on U+2028, U+2029.
  elif tokenization.is_cjk(char):
    base = _CJK
  else:
    base = _OTHER
  code = base | (_sigma_class(char) << _SIGMA_SHIFT)
  if tokenization.is_punctuation(char):
    code |= _PUNCT_BIT
  if unicodedata.category(char) == 'Mn':
    code |= _MN_BIT
  return code | (unicodedata.combining(char) << _CCC_SHIFT)


@functools.lru_cache(maxsize=1)
def unicode_tables() -> Dict[str, np.ndarray]:
  """Unicode tables of this Python's unicodedata (built once, ~2 s).

  Returns:
    dict of int32 numpy arrays:
      'starts', 'codes': code point c has class code codes[i] for the last i
        with starts[i] <= c (run-length encoding over 0..0x10FFFF).
      'map_keys', 'map_offsets', 'map_lengths', 'map_values': for each code
        point whose NFD(c.lower()) differs from c (Hangul syllables aside),
        that sequence is map_values[offset:offset + length].
  """
  codes = np.fromiter((_class_code(cp) for cp in range(0x110000)), np.int32, 0x110000)
  change = np.flatnonzero(np.diff(codes)) + 1
  starts = np.concatenate([[0], change]).astype(np.int32)
  keys, offsets, lengths, values = [], [], [], []
  for cp in range(0x110000):
    if codes[cp] & _BASE_MASK == _DROP or _HANGUL_FIRST <= cp <= _HANGUL_LAST:
      continue
    mapped = unicodedata.normalize('NFD', chr(cp).lower())
    if mapped != chr(cp):
      keys.append(cp)
      offsets.append(len(values))
      lengths.append(len(mapped))
      values.extend(ord(c) for c in mapped)
  as32 = lambda x: np.asarray(x, np.int32)
  return {'starts': starts, 'codes': codes[starts], 'map_keys': as32(keys),
          'map_offsets': as32(offsets), 'map_lengths': as32(lengths), 'map_values': as32(values)}


def _gather_clipped(params: tf.Tensor, indices: tf.Tensor) -> tf.Tensor:
  """params[indices] with indices clipped into range (callers mask the misses)."""
  size = tf.shape(params, out_type=indices.dtype)[0]
  return tf.gather(params, tf.clip_by_value(indices, 0, tf.maximum(size - 1, 0)))


def _previous(values: tf.Tensor, fill) -> tf.Tensor:
  """values shifted right by one along axis 0, `fill` first."""
  return tf.concat([tf.fill([1], tf.constant(fill, values.dtype)), values[:-1]], 0)


def _starts_of_groups(group_ids: tf.Tensor) -> tf.Tensor:
  """bool [n]: True where group_ids (int [n], sorted) differs from the previous."""
  return tf.not_equal(group_ids, _previous(group_ids, -1))


def _select(mask: tf.Tensor, *tensors: tf.Tensor):
  """Each tensor [n] restricted to the positions where mask (bool [n]) is True."""
  where = tf.where(mask)[:, 0]
  return tuple(tf.gather(t, where) for t in tensors)


def _splits(lengths: tf.Tensor) -> tf.Tensor:
  """int64 row splits [n + 1] of int lengths [n]."""
  return tf.concat([tf.zeros([1], tf.int64), tf.cumsum(tf.cast(lengths, tf.int64))], 0)


def _rows_of(splits: tf.Tensor) -> tf.Tensor:
  """int64 [splits[-1]]: the row of each value of a ragged with row `splits`."""
  return tf.searchsorted(splits[1:], tf.range(splits[-1]), side='right', out_type=tf.int64)


def _splits_of_rows(rows: tf.Tensor, nrows) -> tf.Tensor:
  """int64 row splits [nrows + 1] of sorted row ids int64 [n] (inverse of _rows_of)."""
  return tf.searchsorted(rows, tf.range(tf.cast(nrows, tf.int64) + 1), side='left',
                         out_type=tf.int64)


def _expand(lengths: tf.Tensor) -> Tuple[tf.Tensor, tf.Tensor]:
  """For lengths int32 [n]: (source int64 [m], k int32 [m]) listing, for each
  i, the pairs (i, 0) ... (i, lengths[i] - 1)."""
  splits = _splits(lengths)
  source = _rows_of(splits)
  k = tf.cast(tf.range(splits[-1]) - tf.gather(splits, source), tf.int32)
  return source, k


class _Pieces:
  """Flat result of tokenizing [batch] texts: values [n] and their rows int64 [n]."""

  def __init__(self, values: tf.Tensor, rows: tf.Tensor, splits: tf.Tensor,
               batch_size: tf.Tensor):
    self.values = values
    self.rows = rows          # row (text, or token for chars) of each value, sorted
    self.splits = splits      # int64 [nrows + 1]
    self.batch_size = batch_size

  def ragged(self, values=None) -> tf.RaggedTensor:
    return tf.RaggedTensor.from_row_splits(self.values if values is None else values,
                                           self.splits, validate=False)


class BertTextTokenizer:
  """In-graph equivalent of `tokenization.FullTokenizer`; build it inside the graph.

  Creates the vocabulary table in the current graph (tf.compat.v1 graph mode:
  run `tf.compat.v1.tables_initializer()` before use; Estimator exports do).
  """

  def __init__(self, vocab_file: str, do_lower_case: bool):
    """Args:
      vocab_file: path of the WordPiece vocabulary (checked: see `check_vocab`).
      do_lower_case: lower-case and strip accents, as for uncased models.
    """
    check_vocab(vocab_file)
    self.do_lower_case = do_lower_case
    self.table = tf.compat.v1.lookup.StaticHashTable(
        tf.compat.v1.lookup.TextFileInitializer(
            vocab_file, tf.string, tf.compat.v1.lookup.TextFileIndex.WHOLE_LINE,
            tf.int64, tf.compat.v1.lookup.TextFileIndex.LINE_NUMBER),
        default_value=-1)
    self._wordpiece = tf_text.WordpieceTokenizer(
        self.table, suffix_indicator=_SUFFIX,
        max_bytes_per_word=MAX_CHARS_PER_WORD * _MAX_UTF8_BYTES_PER_CHAR,
        token_out_type=tf.string, unknown_token=tokenization.UNK_TOKEN)
    tables = unicode_tables()
    self._starts = tf.constant(tables['starts'])
    self._codes = tf.constant(tables['codes'])
    if do_lower_case:
      self._map = {k: tf.constant(v) for k, v in tables.items() if k.startswith('map_')}

  def _classify(self, cps: tf.Tensor) -> tf.Tensor:
    """int32 [n] code points -> int32 [n] class codes."""
    return tf.gather(self._codes, tf.searchsorted(self._starts, cps, side='right') - 1)

  def basic_tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """BasicTokenizer.tokenize (then whitespace split) of each text.

    Args:
      texts: string Tensor [batch] (UTF-8; invalid bytes are dropped).

    Returns:
      string RaggedTensor [batch, (tokens)].
    """
    chars, token_rows, batch = self._basic_tokens(texts)
    words = tf.strings.unicode_encode(chars.ragged(), 'UTF-8')
    return tf.RaggedTensor.from_row_splits(words, _splits_of_rows(token_rows, batch),
                                           validate=False)

  def _basic_tokens(self, texts: tf.Tensor):
    """Returns (chars: _Pieces of int32 code points per token, token_rows int64
    [tokens] (the text of each token), batch size int32 scalar)."""
    texts = tf.convert_to_tensor(texts, tf.string)
    batch = tf.size(texts)
    decoded = tf.strings.unicode_decode(texts, 'UTF-8', errors='replace',
                                        replacement_char=0xFFFD)
    cps = decoded.flat_values
    rows = _rows_of(tf.cast(decoded.row_splits, tf.int64))
    codes = self._classify(cps)
    # Cleaning drops characters without splitting words.
    cps, rows, codes = _select(tf.not_equal(codes & _BASE_MASK, _DROP), cps, rows, codes)
    base = codes & _BASE_MASK
    is_space = tf.equal(base, _SPACE)
    is_cjk = tf.equal(base, _CJK)
    after_break = _previous(is_space | is_cjk, True) | _starts_of_groups(rows)
    new_word = tf.logical_not(is_space) & (after_break | is_cjk)
    cps, rows, codes, new_word = _select(tf.logical_not(is_space), cps, rows, codes, new_word)
    word_ids = tf.cumsum(tf.cast(new_word, tf.int64)) - 1
    (word_rows,) = _select(new_word, rows)
    if self.do_lower_case:
      cps, word_ids = self._lower_and_strip_accents(cps, codes, word_ids)
      codes = self._classify(cps)
    return self._split_punctuation(cps, codes, word_ids, word_rows) + (batch,)

  def _final_sigmas(self, cps, codes, word_ids) -> tf.Tensor:
    """bool [n]: capital sigmas that str.lower() turns into ς (final sigma)."""
    sigma_class = tf.bitwise.right_shift(codes, _SIGMA_SHIFT) & 3
    counted = tf.not_equal(sigma_class, _CASE_IGNORABLE)
    positions = tf.where(counted)[:, 0]
    num_counted = tf.size(positions, out_type=tf.int64)
    before = tf.cumsum(tf.cast(counted, tf.int64), exclusive=True)
    through = before + tf.cast(counted, tf.int64)

    def cased_neighbour(ordinal, exists):
      pos = _gather_clipped(positions, ordinal)
      return (exists & tf.equal(_gather_clipped(word_ids, pos), word_ids)
              & tf.equal(_gather_clipped(sigma_class, pos), _CASED))

    cased_before = cased_neighbour(before - 1, before > 0)
    cased_after = cased_neighbour(through, through < num_counted)
    return tf.equal(cps, _CAPITAL_SIGMA) & cased_before & tf.logical_not(cased_after)

  def _lower_and_strip_accents(self, cps, codes, word_ids):
    """Per word: NFD(word.lower()) without Mn characters; returns (cps, word_ids)."""
    cps = tf.where(self._final_sigmas(cps, codes, word_ids), _FINAL_SIGMA, cps)
    keys = self._map['map_keys']
    slot = tf.searchsorted(keys, cps, side='left')
    hit = tf.equal(_gather_clipped(keys, slot), cps)
    syllable = cps - _HANGUL_FIRST
    hangul = (cps >= _HANGUL_FIRST) & (cps <= _HANGUL_LAST)
    hangul_len = 2 + tf.cast(tf.not_equal(syllable % 28, 0), tf.int32)
    lengths = tf.where(hit, _gather_clipped(self._map['map_lengths'], slot),
                       tf.where(hangul, hangul_len, 1))
    source, k = _expand(lengths)
    src_syllable = tf.gather(syllable, source)
    jamo = tf.where(tf.equal(k, 0), 0x1100 + src_syllable // 588,
                    tf.where(tf.equal(k, 1), 0x1161 + (src_syllable % 588) // 28,
                             0x11A7 + src_syllable % 28))
    mapped = _gather_clipped(self._map['map_values'],
                             tf.gather(_gather_clipped(self._map['map_offsets'], slot), source) + k)
    out = tf.where(tf.gather(hit, source), mapped,
                   tf.where(tf.gather(hangul, source), jamo, tf.gather(cps, source)))
    out_words = tf.gather(word_ids, source)
    # NFD's canonical reordering: stable sort of each run of non-starters by
    # combining class, runs never crossing words.
    out_codes = self._classify(out)
    ccc = tf.cast(tf.bitwise.right_shift(out_codes, _CCC_SHIFT) & 255, tf.int64)
    group_start = tf.equal(ccc, 0) | _starts_of_groups(out_words)
    groups = tf.cumsum(tf.cast(group_start, tf.int64)) - 1
    order = tf.argsort(groups * 256 + ccc, stable=True)
    out, out_codes, out_words = (tf.gather(t, order) for t in (out, out_codes, out_words))
    return _select(tf.equal(out_codes & _MN_BIT, 0), out, out_words)

  def _split_punctuation(self, cps, codes, word_ids, word_rows):
    is_punct = tf.not_equal(codes & _PUNCT_BIT, 0)
    is_space = tf.equal(codes & _BASE_MASK, _SPACE)  # WordpieceTokenizer's split().
    after_break = _previous(is_punct | is_space, True) | _starts_of_groups(word_ids)
    new_token = tf.logical_not(is_space) & (after_break | is_punct)
    cps, word_ids, new_token = _select(tf.logical_not(is_space), cps, word_ids, new_token)
    token_ids = tf.cumsum(tf.cast(new_token, tf.int64)) - 1
    (token_words,) = _select(new_token, word_ids)
    num_tokens = tf.size(token_words, out_type=tf.int64)
    splits = tf.concat([tf.where(new_token)[:, 0], tf.size(cps, out_type=tf.int64)[None]], 0)
    return _Pieces(cps, token_ids, splits, num_tokens), tf.gather(word_rows, token_words)

  def _pieces(self, texts: tf.Tensor) -> _Pieces:
    """Word pieces (string [n]) of the texts, with their text of origin."""
    chars, token_rows, batch = self._basic_tokens(texts)
    words = tf.strings.unicode_encode(chars.ragged(), 'UTF-8')
    too_long = (chars.splits[1:] - chars.splits[:-1]) > MAX_CHARS_PER_WORD
    words = tf.where(too_long, tokenization.UNK_TOKEN, words)
    pieces = self._wordpiece.tokenize(words)  # [tokens, (pieces)], from row splits
    rows = tf.gather(token_rows, _rows_of(pieces.row_splits))
    return _Pieces(pieces.flat_values, rows, _splits_of_rows(rows, batch), batch)

  def tokenize(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """FullTokenizer.tokenize of each text: string RaggedTensor [batch, (pieces)].

    Args:
      texts: string Tensor [batch].
    """
    return self._pieces(texts).ragged()

  def tokenize_to_ids(self, texts: tf.Tensor) -> tf.RaggedTensor:
    """Word-piece ids of each text: int64 RaggedTensor [batch, (pieces)].

    Args:
      texts: string Tensor [batch].
    """
    pieces = self._pieces(texts)
    return pieces.ragged(self.table.lookup(pieces.values))

  def encode(self, text_a: tf.Tensor, text_b: tf.Tensor, max_seq_length: int
             ) -> Dict[str, tf.Tensor]:
    """FullTokenizer.encode of each row, as int32 Tensors [batch, max_seq_length].

    Args:
      text_a: string Tensor [batch].
      text_b: string Tensor [batch] (sentence pairs) or [0] (single sentences);
        any other size fails at run time (InvalidArgumentError).
      max_seq_length: python int >= 2 (>= 3 for pairs, checked at run time).

    Returns:
      {'input_ids', 'input_mask', 'segment_ids'}: int32 Tensors [batch, max_seq_length].
    """
    text_a = tf.convert_to_tensor(text_a, tf.string)
    text_b = tf.convert_to_tensor(text_b, tf.string)
    batch = tf.size(text_a)
    size_b = tf.size(text_b)
    checks = [
        tf.debugging.Assert(tf.equal(size_b, 0) | tf.equal(size_b, batch), [
            'text_b must be empty (single sentences) or have the batch size of text_a '
            '(sentence pairs); got text_b size', size_b, 'and text_a size', batch]),
        tf.debugging.Assert(tf.equal(size_b, 0) | tf.equal(batch, 0) | (max_seq_length >= 3), [
            f'max_seq_length={max_seq_length} cannot hold the 3 special tokens of a sentence '
            'pair; export with a larger max_seq_length']),
    ]
    with tf.control_dependencies(checks):
      pair = tf.cast(tf.greater(size_b, 0), tf.int64)
      padded_b = tf.concat([text_b, tf.fill([tf.maximum(batch - size_b, 0)], '')], 0)
    # Rows 0..batch-1 are text_a, rows batch..2*batch-1 text_b (or '').
    pieces = self._pieces(tf.concat([text_a, padded_b], 0))
    lengths = pieces.splits[1:] - pieces.splits[:-1]
    batch64 = tf.cast(batch, tf.int64)
    len_a, len_b = lengths[:batch64], lengths[batch64:] * pair
    budget = max_seq_length - 2 - pair
    # truncate_pair in closed form: the longer side (text_b on ties) is popped
    # until the total fits; once both shrink they end at ceil/floor(budget / 2).
    keep_a = tf.minimum(len_a, tf.maximum(budget - len_b, (budget + 1) // 2))
    keep_b = tf.minimum(len_b, budget - keep_a)
    # Column of every piece: [CLS] a... [SEP] b... [SEP]; rows >= batch are b.
    is_b = pieces.rows >= batch64
    row = tf.where(is_b, pieces.rows - batch64, pieces.rows)
    position = tf.range(tf.size(pieces.rows, out_type=tf.int64)) - tf.gather(pieces.splits,
                                                                              pieces.rows)
    row_keep_a = tf.gather(keep_a, row)
    kept = position < tf.where(is_b, tf.gather(keep_b, row), row_keep_a)
    column = tf.where(is_b, 2 + row_keep_a + position, 1 + position)
    ids = tf.gather(self.table.lookup(pieces.values), tf.where(kept)[:, 0])
    (row, column) = _select(kept, row, column)
    specials = tf.stack([tokenization.CLS_TOKEN, tokenization.SEP_TOKEN,
                         tokenization.PAD_TOKEN])
    cls_id, sep_id, pad_id = tf.unstack(self.table.lookup(specials))
    rows = tf.range(batch64)
    sep_b_rows, sep_b_columns = _select(tf.fill([batch], pair > 0), rows, 2 + keep_a + keep_b)
    all_rows = tf.concat([row, rows, rows, sep_b_rows], 0)
    all_columns = tf.concat([column, tf.zeros_like(rows), 1 + keep_a, sep_b_columns], 0)
    all_ids = tf.concat([ids, tf.fill([batch], cls_id), tf.fill([batch], sep_id),
                         tf.fill(tf.shape(sep_b_rows), sep_id)], 0)
    shape = tf.stack([batch64, max_seq_length])
    indices = tf.stack([all_rows, all_columns], 1)
    input_ids = tf.scatter_nd(indices, all_ids - pad_id, shape) + pad_id
    total = 2 + keep_a + keep_b + pair
    columns = tf.range(max_seq_length, dtype=tf.int64)[None, :]
    input_mask = columns < total[:, None]
    segment_ids = input_mask & (columns >= (2 + keep_a)[:, None])
    static = [None, max_seq_length]
    return {
        'input_ids': tf.ensure_shape(tf.cast(input_ids, tf.int32), static),
        'input_mask': tf.ensure_shape(tf.cast(input_mask, tf.int32), static),
        'segment_ids': tf.ensure_shape(tf.cast(segment_ids, tf.int32), static),
    }


def check_vocab(vocab_file: str) -> Tuple[str, ...]:
  """Checks that an in-graph table of `vocab_file` gives tokenization's ids.

  Returns:
    The tokens, in id order.

  Raises:
    ReceiverError: (a ValueError) if a required token is missing, a token is
      repeated, or a line has surrounding whitespace (tokenization strips it, a
      TextFileInitializer does not).
  """
  try:
    tokenization.load_vocab(vocab_file)
  except (ValueError, OSError, tf.errors.OpError) as e:
    raise ReceiverError('cannot use the vocabulary for in-graph tokenization',
                        value=vocab_file, fix=f'{e}') from e
  with tf.io.gfile.GFile(vocab_file, 'rb') as f:
    lines = f.read().decode('utf-8').split('\n')
  if lines and lines[-1] == '':
    lines.pop()
  seen = {}
  for number, line in enumerate(lines, 1):
    if line != line.strip():
      raise ReceiverError(f'line {number} of vocabulary {vocab_file} has surrounding whitespace',
                          value=line, fix='write one token per line without spaces or \\r')
    if line in seen:
      raise ReceiverError(f'token on line {number} of vocabulary {vocab_file} repeats line '
                          f'{seen[line]}', value=line, fix='remove the duplicate line')
    seen[line] = number
  return tuple(lines)


def build_tokenizer_fn(vocab_file: str, do_lower_case: bool, max_seq_length: int,
                       text_a_key: str = 'text_a', text_b_key: str = 'text_b'
                       ) -> Callable[[Dict[str, tf.Tensor]], Dict[str, tf.Tensor]]:
  """Returns a tokenizer_fn for `estimator_export.build_text_receiver_fn`.

  Args:
    vocab_file: WordPiece vocabulary; checked now, read in-graph at table
      initialisation (a SavedModel asset once exported).
    do_lower_case: True for uncased models.
    max_seq_length: length of every output row, >= 2.
    text_a_key: key of the first sentences.
    text_b_key: key of the optional second sentences (absent or an empty batch
      for single sentences).

  Raises:
    ReceiverError: for a bad max_seq_length or vocabulary.
  """
  if not isinstance(max_seq_length, int) or max_seq_length < 2:
    raise ReceiverError('max_seq_length cannot hold [CLS] and [SEP]', value=max_seq_length,
                        fix='use an int >= 2 (>= 3 for sentence pairs), e.g. 128')
  check_vocab(vocab_file)
  unicode_tables()  # Built once per process; do it now rather than in the receiver.

  def tokenizer_fn(texts: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    """{text_a_key: string [batch], text_b_key: string [batch] or [0]} ->
    {'input_ids', 'input_mask', 'segment_ids'}: int32 [batch, max_seq_length]."""
    if text_a_key not in texts:
      raise ReceiverError(f'tokenizer_fn needs the text input {text_a_key!r}',
                          value=sorted(texts), fix=f'pass text_keys=({text_a_key!r}, ...)')
    text_b = texts.get(text_b_key)
    if text_b is None:
      text_b = tf.constant([], tf.string)
    tokenizer = BertTextTokenizer(vocab_file, do_lower_case)
    return tokenizer.encode(texts[text_a_key], text_b, max_seq_length)

  return tokenizer_fn
