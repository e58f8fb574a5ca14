"""Tests for bert_example.data: GLUE processors, the demo dataset, vocab, TFRecords."""
import collections
import doctest
import os
import re

from absl import flags
import numpy as np
import pytest
import tensorflow as tf

from bert_example import data
from bert_example import demo_data
from bert_example import tokenization

# ----- GLUE fixtures in the real layouts (rows shortened from the public files) -----

SST2 = {
    'train.tsv': 'sentence\tlabel\nhide new secretions from the parental units \t0\n'
                 'contains no wit , only labored gags \t0\n'
                 'that loves its characters and communicates something rather beautiful \t1\n',
    'dev.tsv': "sentence\tlabel\nit 's a charming and often affecting journey . \t1\n",
    'test.tsv': 'index\tsentence\n0\tuneasy mishmash of styles and genres .\n'
                "1\tthis film 's relationship to actual tension is the same as what christmas-tree "
                'flocking in a spray can is to actual snow .\n',
}
COLA = {
    'train.tsv': "gj04\t1\t\tOur friends won't buy this analysis, let alone the next one we "
                 'propose.\ngj04\t0\t*\tThey drank the pub.\n',
    'dev.tsv': 'gj04\t1\t\tThe sailors rode the breeze clear of the rocks.\n',
    'test.tsv': 'index\tsentence\n0\tBill whistled past the house.\n',
}
_MRPC_HEADER = 'Quality\t#1 ID\t#2 ID\t#1 String\t#2 String\n'
MRPC = {
    'train.tsv': _MRPC_HEADER + '1\t702876\t702977\tAmrozi accused his brother , whom he called '
                 '" the witness " , of deliberately distorting his evidence .\tReferring to him '
                 'as only " the witness " , Amrozi accused his brother of deliberately '
                 'distorting his evidence .\n'
                 "0\t2108705\t2108831\tYucaipa owned Dominick 's before selling the chain to "
                 "Safeway in 1998 for $ 2.5 billion .\tYucaipa bought Dominick 's in 1995 for "
                 '$ 693 million and sold it to Safeway for $ 1.8 billion in 1998 .\n',
    'dev.tsv': _MRPC_HEADER + "1\t1355540\t1355592\tHe said the foodservice pie business doesn "
               "'t fit the company 's long-term growth strategy .\t\" The foodservice pie "
               'business does not fit our long-term growth strategy .\n',
    'test.tsv': 'index\t#1 ID\t#2 ID\t#1 String\t#2 String\n0\t1089874\t1089925\tPCCW \'s chief '
                'operating officer , Mike Butcher , will report directly to him .\tCurrent Chief '
                'Operating Officer Mike Butcher will report to Mr So .\n',
}
_MNLI_COLUMNS = ('index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse'
                 '\tsentence1_parse\tsentence2_parse\tsentence1\tsentence2')


def _mnli_row(index, s1, s2, *labels):
  return '\t'.join([str(index), '31193', '31193n', 'government', '( ( a ) b )', '( c )',
                    '(ROOT (S a))', '(ROOT (S c))', s1, s2, *labels]) + '\n'


MNLI = {
    'train.tsv': _MNLI_COLUMNS + '\tlabel1\tgold_label\n' +
                 _mnli_row(0, 'Conceptually cream skimming has two basic dimensions.',
                           'Product and geography are what make cream skimming work.',
                           'neutral', 'neutral') +
                 _mnli_row(1, 'One of our number will carry out your instructions minutely.',
                           'A member of my team will execute your orders.',
                           'entailment', 'entailment'),
    'dev_matched.tsv': _MNLI_COLUMNS + '\tlabel1\tlabel2\tlabel3\tlabel4\tlabel5\tgold_label\n' +
                       _mnli_row(0, 'The new rights are nice enough', 'Everyone really likes '
                                 'the newest benefits', 'neutral', 'entailment', 'neutral',
                                 'neutral', 'neutral', 'neutral') +
                       _mnli_row(1, 'This site includes a list of all award winners.',
                                 'The Government Executive articles housed on the website are '
                                 'not able to be searched.', 'contradiction', 'contradiction',
                                 'contradiction', 'contradiction', 'contradiction',
                                 'contradiction'),
    'test_matched.tsv': _MNLI_COLUMNS + '\n' + _mnli_row(0, 'Hierbas, ans seco, ans dulce.',
                                                         'Hierbas is a name worth looking '
                                                         'out for.'),
}


def _write(directory, files):
  os.makedirs(directory, exist_ok=True)
  for name, text in files.items():
    with open(os.path.join(directory, name), 'w', encoding='utf-8') as f:
      f.write(text)
  return str(directory)


def _words(text):
  return re.findall(r'[a-z]+', text.lower())


def _negated(text):
  """Our own negation detector: 'not', 'never', 'neither' or an n't contraction."""
  return bool(re.search(r"\b(not|never|neither)\b|n't\b", text.lower()))


# ----- read_tsv -----

class TestReadTsv:

  def test_lines_bom_crlf_blank_lines_and_literal_quotes(self, tmp_path):
    path = tmp_path / 'x.tsv'
    path.write_bytes('\ufeffa\tb\r\n\r\n"c\t"d e"\n'.encode('utf-8'))
    assert data.read_tsv(str(path)) == [['a', 'b'], [], ['"c', '"d e"']]

  def test_quotechar_reads_quoted_fields(self, tmp_path):
    path = tmp_path / 'x.tsv'
    path.write_text('"a\tb"\tc\n')
    assert data.read_tsv(str(path), quotechar='"') == [['a\tb', 'c']]

  def test_missing_file_is_named(self, tmp_path):
    missing = str(tmp_path / 'nope' / 'train.tsv')
    with pytest.raises(FileNotFoundError, match=re.escape(missing) + '.*--data_dir'):
      data.read_tsv(missing)

  def test_not_utf8_is_named(self, tmp_path):
    path = tmp_path / 'latin1.tsv'
    path.write_bytes('caf\xe9\t1\n'.encode('latin-1'))
    with pytest.raises(ValueError, match=r'latin1\.tsv is not UTF-8'):
      data.read_tsv(str(path))


# ----- processors -----

class TestProcessors:

  def test_sst2(self, tmp_path):
    d = _write(tmp_path, SST2)
    p = data.get_processor('SST-2')
    assert isinstance(p, data.Sst2Processor) and not p.is_pair
    assert p.get_labels() == ['0', '1']
    train = p.get_train_examples(d)
    assert [e.label for e in train] == ['0', '0', '1']
    assert train[0] == data.InputExample('train-2', 'hide new secretions from the parental '
                                         'units ', None, '0')
    assert p.get_dev_examples(d)[0].text_a.startswith("it 's a charming")
    test = p.get_test_examples(d)
    assert [(e.guid, e.label) for e in test] == [('test-2', None), ('test-3', None)]
    assert test[0].text_a == 'uneasy mishmash of styles and genres .'

  def test_cola(self, tmp_path):
    d = _write(tmp_path, COLA)
    p = data.get_processor('cola')
    train = p.get_train_examples(d)  # No header: the first line is an example.
    assert [(e.guid, e.label, e.text_b) for e in train] == [('train-1', '1', None),
                                                            ('train-2', '0', None)]
    assert train[1].text_a == 'They drank the pub.'
    assert p.get_dev_examples(d)[0].text_a.startswith('The sailors')
    test = p.get_test_examples(d)
    assert [(e.text_a, e.label) for e in test] == [('Bill whistled past the house.', None)]

  def test_mrpc(self, tmp_path):
    d = _write(tmp_path, MRPC)
    p = data.get_processor('mrpc')
    assert p.is_pair and p.get_labels() == ['0', '1']
    train = p.get_train_examples(d)
    assert [e.label for e in train] == ['1', '0']
    assert train[1].text_a.startswith('Yucaipa owned') and train[1].text_b.startswith(
        'Yucaipa bought')
    assert p.get_dev_examples(d)[0].text_b.startswith('" The foodservice')
    test = p.get_test_examples(d)
    assert test[0].label is None and test[0].text_b.endswith('Mr So .')

  def test_mnli(self, tmp_path):
    d = _write(tmp_path, MNLI)
    p = data.get_processor('MNLI')
    assert p.is_pair and p.get_labels() == ['contradiction', 'entailment', 'neutral']
    train = p.get_train_examples(d)
    assert [(e.text_a[:12], e.text_b[:12], e.label) for e in train] == [
        ('Conceptually', 'Product and ', 'neutral'), ('One of our n', 'A member of ', 'entailment')]
    # dev_matched: five annotator labels then the gold label, which is last.
    assert [e.label for e in p.get_dev_examples(d)] == ['neutral', 'contradiction']
    test = p.get_test_examples(d)
    assert [(e.text_a, e.label) for e in test] == [('Hierbas, ans seco, ans dulce.', None)]

  def test_module_docstring_example(self):
    result = doctest.testmod(data)
    assert result.attempted == 2 and result.failed == 0

  def test_task_names(self):
    assert type(data.get_processor('sst2')) is type(data.get_processor('SST_2')) is (
        data.Sst2Processor)
    assert data.get_processor('demo').get_labels() == ['negative', 'positive']
    assert set(data.PROCESSORS) == {'sst-2', 'sst2', 'cola', 'mrpc', 'mnli', 'demo'}

  def test_unknown_task_suggests(self):
    with pytest.raises(ValueError, match=r"unknown --task_name 'mrcp'.*Did you mean 'mrpc'\?"):
      data.get_processor('mrcp')
    with pytest.raises(ValueError, match=r"'qqp'; use one of cola, demo, mnli, mrpc"):
      data.get_processor('qqp')

  @pytest.mark.parametrize('task, files, name, bad, expected', [
      ('sst-2', SST2, 'train.tsv', 'a\tb\t1', r'line 5: 3 column\(s\), expected 2'),
      ('cola', COLA, 'dev.tsv', 'gj04\t1\tsentence', r'line 2: 3 column\(s\), expected 4'),
      ('mrpc', MRPC, 'test.tsv', '1\t2\tonly one string', r'line 3: 3 column\(s\), expected 5'),
      ('mnli', MNLI, 'dev_matched.tsv', '0\t1\t2\t3\t4\t5\t6\t7\ts1',
       r'line 4: 9 column\(s\), expected at least 11'),
  ])
  def test_malformed_row_names_file_and_line(self, tmp_path, task, files, name, bad, expected):
    files = dict(files)
    files[name] = files[name] + bad + '\n'
    d = _write(tmp_path, files)
    p = data.get_processor(task)
    split = {'train.tsv': 'train', 'test.tsv': 'test'}.get(name, 'dev')
    with pytest.raises(ValueError, match=re.escape(os.path.join(d, name)) + ' ' + expected):
      p.get_examples(d, split)

  def test_missing_header_is_an_error_not_a_dropped_example(self, tmp_path):
    d = _write(tmp_path, {'train.tsv': 'a fine film\t1\nan awful film\t0\n'})
    with pytest.raises(ValueError, match=r"train\.tsv line 1 looks like data \(label '1'\)"):
      data.get_processor('sst-2').get_train_examples(d)

  def test_missing_file_and_split(self, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'dev_matched\.tsv'):
      data.get_processor('mnli').get_dev_examples(str(tmp_path))
    with pytest.raises(ValueError, match=r"unknown split 'valid'"):
      data.get_processor('cola').get_examples(str(tmp_path), 'valid')


# ----- the demo dataset -----

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
  """The default-size demo dataset: (data_dir, {split: [InputExample]})."""
  d = str(tmp_path_factory.mktemp('demo'))
  paths = demo_data.generate_demo_dataset(d)
  assert paths == {s: os.path.join(d, f'{s}.tsv') for s in ('train', 'dev', 'test')}
  p = data.get_processor('demo')
  return d, {s: p.get_examples(d, s) for s in ('train', 'dev', 'test')}


def _lexicon():
  """sentiment word -> polarity, from the generator's word lists (both verb forms)."""
  polarity = {}
  for table in (demo_data._ADJECTIVES, demo_data._ADVERBS, demo_data._VERBS):  # pylint: disable=protected-access
    for positive, items in table.items():
      for item in items:
        for word in ((item,) if isinstance(item, str) else item):
          polarity[word] = positive
  return polarity


def _bag_of_words_model(train):
  """Binary bag-of-words logistic regression (numpy, full-batch gradient descent)."""
  vocab = {w: i for i, w in enumerate(sorted({w for e in train for w in _words(e.text_a)}))}

  def featurize(examples):
    x = np.zeros((len(examples), len(vocab)))
    for row, e in enumerate(examples):
      x[row, [vocab[w] for w in _words(e.text_a) if w in vocab]] = 1.0
    return x

  x = featurize(train)
  y = np.array([e.label == 'positive' for e in train], float)
  w, b = np.zeros(len(vocab)), 0.0
  for _ in range(400):
    g = 1.0 / (1.0 + np.exp(-(x @ w + b))) - y
    w -= 0.5 * (x.T @ g / len(y) + 1e-3 * w)
    b -= 0.5 * g.mean()
  return lambda examples: featurize(examples) @ w + b > 0


def _labels(examples):
  return np.array([e.label == 'positive' for e in examples])


class TestDemoDataset:

  def test_layout_sizes_and_balance(self, demo):
    d, splits = demo
    with open(os.path.join(d, 'train.tsv'), encoding='utf-8') as f:
      assert f.readline() == 'sentence\tlabel\n'
    with open(os.path.join(d, 'test.tsv'), encoding='utf-8') as f:
      lines = f.read().splitlines()
    assert lines[0] == 'index\tsentence' and lines[1].startswith('0\t')
    assert {s: len(e) for s, e in splits.items()} == {'train': 2000, 'dev': 400, 'test': 200}
    for split in ('train', 'dev'):
      labels = [e.label for e in splits[split]]
      assert set(labels) == {'negative', 'positive'}
      assert abs(labels.count('positive') - labels.count('negative')) <= 1
    assert all(e.label is None for e in splits['test'])

  def test_deterministic_for_a_seed(self, demo, tmp_path):
    d, _ = demo
    again = demo_data.generate_demo_dataset(str(tmp_path / 'a'), seed=0)
    other = demo_data.generate_demo_dataset(str(tmp_path / 'b'), num_train=50, num_dev=10,
                                       num_test=5, seed=1)
    for split, path in again.items():
      with open(path, 'rb') as f, open(os.path.join(d, f'{split}.tsv'), 'rb') as g:
        assert f.read() == g.read()
    with open(other['train'], encoding='utf-8') as f:
      assert f.read().splitlines()[1:] != open(again['train'], encoding='utf-8').read(
      ).splitlines()[1:51]

  def test_varied_text(self, demo):
    sentences = [e.text_a for e in demo[1]['train']]
    assert any(s[0].isupper() for s in sentences) and any(s[0].islower() for s in sentences)
    assert any(re.search(r'\b[A-Z]{3,}\b', s) for s in sentences)  # "GREAT"
    assert {s[-1] for s in sentences} >= {'.', '!', 'e', 'd'}  # punctuation or none
    lexicon = _lexicon()
    tables = demo_data._ADVERBS  # pylint: disable=protected-access
    adverbs = {w for words in tables.values() for w in words}
    verbs = {w for w in lexicon if w not in adverbs and w.endswith('ed')}
    kinds = collections.Counter()
    for s in sentences:
      words = set(_words(s))
      kinds['what a'] += bool({'what'} & words)
      kinds['and'] += 'and' in words
      kinds['neither'] += 'neither' in words
      kinds['adverb'] += bool(adverbs & words)
      kinds['verb'] += bool(verbs & words)
    assert min(kinds.values()) > 0.01 * len(sentences), kinds
    assert kinds['what a'] + kinds['and'] + kinds['adverb'] + kinds['verb'] < len(sentences)

  def test_splits_are_disjoint_and_held_out(self, demo):
    splits = demo[1]
    normal = {s: {' '.join(_words(e.text_a)) for e in ex} for s, ex in splits.items()}
    assert not normal['train'] & normal['dev'] and not normal['train'] & normal['test']
    assert not normal['dev'] & normal['test']
    lexicon = _lexicon()
    heads = demo_data._SUBJECTS + demo_data._NOUNS  # pylint: disable=protected-access

    def combination(text):
      """(kind, head, first sentiment word): what the splits must not share."""
      low = ' '.join(_words(text))
      kind = ('exclaim' if re.search(r'\bwhat an? ', low) else
              'pair' if re.search(r'\b(and|neither)\b', low) else 'other')
      head = max((h for h in heads if re.search(rf'\b{h}\b', low)), key=len)
      return kind, head, next(w for w in _words(text) if w in lexicon)

    seen = {s: {combination(e.text_a) for e in ex} for s, ex in splits.items()}
    assert not seen['train'] & seen['dev'] and not seen['train'] & seen['test']
    train_words = {w for e in splits['train'] for w in _words(e.text_a)}
    for split in ('dev', 'test'):  # Held-out combinations, not held-out words.
      assert {w for e in splits[split] for w in _words(e.text_a)} <= train_words

  def test_negation_flips_the_label(self, demo):
    lexicon = _lexicon()
    labelled = demo[1]['train'] + demo[1]['dev']
    negated = {True: 0, False: 0}
    for e in labelled:
      polarities = {lexicon[w] for w in _words(e.text_a) if w in lexicon}
      assert len(polarities) == 1, e
      flipped = _negated(e.text_a)
      assert (e.label == 'positive') == (polarities.pop() != flipped), e
      if flipped:
        negated[e.label == 'positive'] += 1
    share = sum(negated.values()) / len(labelled)
    assert 0.08 < share < 0.25, share
    assert min(negated.values()) > 0.3 * max(negated.values())  # both labels get negated

  def test_learnable_by_bag_of_words(self, demo):
    splits = demo[1]
    predict = _bag_of_words_model(splits['train'])
    accuracy = np.mean(predict(splits['dev']) == _labels(splits['dev']))
    assert accuracy > 0.8, accuracy

  def test_not_solvable_from_single_words(self, demo):
    splits = demo[1]
    dev, labels = splits['dev'], _labels(splits['dev'])
    vocab = sorted({w for e in dev for w in _words(e.text_a)})
    present = np.array([[w in set(_words(e.text_a)) for w in vocab] for e in dev])
    best_word = max(np.mean(present == labels[:, None], axis=0).max(),
                    np.mean(present != labels[:, None], axis=0).max())
    assert best_word < 0.65, best_word  # no single word gives the label away
    # A word-sentiment model is right without negation and wrong with it.
    correct = _bag_of_words_model(splits['train'])(dev) == labels
    negated = np.array([_negated(e.text_a) for e in dev])
    assert correct[~negated].mean() > 0.95 and correct[negated].mean() < 0.4, (
        correct[~negated].mean(), correct[negated].mean())

  def test_bad_sizes(self, tmp_path):
    with pytest.raises(ValueError, match=r'num_dev must be an int >= 0, got -1'):
      demo_data.generate_demo_dataset(str(tmp_path), num_dev=-1)


# ----- build_vocab -----

@pytest.fixture(scope='module')
def demo_vocab(demo, tmp_path_factory):
  path = str(tmp_path_factory.mktemp('vocab') / 'vocab.txt')
  size = data.build_vocab(demo[1]['train'], path)
  return path, size


def _lines(path):
  with open(path, encoding='utf-8') as f:
    return f.read().splitlines()


class TestBuildVocab:

  def test_order_and_size(self, demo_vocab):
    path, size = demo_vocab
    tokens = _lines(path)
    assert len(tokens) == size == len(set(tokens))
    assert tokens[:5] == ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
    chars = [t for t in tokens if len(t) == 1]
    assert tokens[5:5 + 2 * len(chars)] == chars + ['##' + c for c in chars]
    assert {'a', 'z', '!', "'", ',', '.'} <= set(chars)
    assert tokenization.load_vocab(path)['[PAD]'] == 0

  def test_every_demo_sentence_tokenizes_without_unk(self, demo, demo_vocab):
    tokenizer = tokenization.FullTokenizer(demo_vocab[0], do_lower_case=True)
    for split in ('train', 'dev', 'test'):  # The vocab saw only train.
      for e in demo[1][split]:
        assert '[UNK]' not in tokenizer.tokenize(e.text_a), e
    assert tokenizer.tokenize('What a WONDERFUL film!') == ['what', 'a', 'wonderful', 'film',
                                                            '!']

  def test_words_by_frequency_min_count_and_max_size(self, tmp_path):
    examples = [data.InputExample('1', 'bb bb bb cc cc', 'dd'), data.InputExample('2', 'CC!')]
    path = str(tmp_path / 'v.txt')
    size = data.build_vocab(examples, path)
    tokens = _lines(path)
    chars = ['!', 'b', 'c', 'd']
    assert tokens == list(data.SPECIAL_TOKENS) + chars + ['##' + c for c in chars] + [
        'bb', 'cc', 'dd'] and size == 16
    assert data.build_vocab(examples, path, min_count=2) == 15 and _lines(path)[-1] == 'cc'
    assert data.build_vocab(examples, path, max_size=14) == 14 and _lines(path)[-1] == 'bb'
    tokenizer = tokenization.FullTokenizer(path)
    assert tokenizer.tokenize('dd cd') == ['d', '##d', 'c', '##d']  # rare words via characters
    assert data.build_vocab(examples, path, do_lower_case=False) == 19  # + 'C', '##C', 'CC'
    assert 'CC' in _lines(path) and '##C' in _lines(path)

  def test_errors(self, tmp_path):
    examples = [data.InputExample('1', 'abc')]
    with pytest.raises(ValueError, match=r'max_size=5 .* use max_size >= 11'):
      data.build_vocab(examples, str(tmp_path / 'v.txt'), max_size=5)
    with pytest.raises(ValueError, match=r'min_count must be >= 1, got 0'):
      data.build_vocab(examples, str(tmp_path / 'v.txt'), min_count=0)


# ----- features, TFRecords and the input_fn -----

SEQ = 12
EXAMPLES = [
    data.InputExample('dev-2', 'the film was great !', label='positive'),
    data.InputExample('dev-3', 'i did not love the plot', label='negative'),
    data.InputExample('dev-4', 'what a dull show', 'the cast was not bad', label='negative'),
    data.InputExample('dev-5', 'the ending was so clever and funny and fresh and moving',
                      label='positive'),
    data.InputExample('test-2', 'the story is boring'),
]
LABELS = ['negative', 'positive']


@pytest.fixture(scope='module')
def tokenizer(demo_vocab):
  return tokenization.FullTokenizer(demo_vocab[0])


def _read_records(path):
  records = []
  for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
    feature = tf.train.Example.FromString(raw).features.feature
    records.append({k: list(feature[k].int64_list.value) for k in feature})
  return records


class TestConvertExample:

  def test_ids_and_label(self, tokenizer):
    f = data.convert_example(EXAMPLES[2], LABELS, SEQ, tokenizer)
    assert (f.input_ids, f.input_mask, f.segment_ids) == tokenizer.encode(
        'what a dull show', 'the cast was not bad', SEQ)
    assert f.label_id == 0 and f.is_real_example and len(f.input_ids) == SEQ
    assert data.convert_example(EXAMPLES[0], LABELS, SEQ, tokenizer).label_id == 1
    assert data.convert_example(EXAMPLES[4], LABELS, SEQ, tokenizer).label_id == 0  # no label

  def test_unknown_label(self, tokenizer):
    bad = data.InputExample('train-7', 'fine', label='1')
    with pytest.raises(ValueError, match=r"example train-7 has label '1', which is not one of "
                                         r"the labels \['negative', 'positive'\]"):
      data.convert_example(bad, LABELS, SEQ, tokenizer)

  def test_features_lengths_checked(self):
    with pytest.raises(ValueError, match=r'one length; got \(2, 1, 2\)'):
      data.InputFeatures([1, 2], [1], [0, 0], 0)


class TestTFRecords:

  def test_round_trip_with_padding_and_progress(self, tmp_path, tokenizer):
    path = str(tmp_path / 'out' / 'eval.tf_record')
    calls = []
    count = data.write_tfrecords(EXAMPLES, LABELS, SEQ, tokenizer, path,
                                 progress=lambda done, total: calls.append((done, total)),
                                 pad_to_multiple=4)
    assert count == 8
    assert calls == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert os.listdir(tmp_path / 'out') == ['eval.tf_record']  # no temp file left
    records = _read_records(path)
    assert len(records) == 8
    for record, example in zip(records, EXAMPLES):
      ids, mask, segments = tokenizer.encode(example.text_a, example.text_b, SEQ)
      assert record == {'input_ids': ids, 'input_mask': mask, 'segment_ids': segments,
                        'label_ids': [LABELS.index(example.label) if example.label else 0],
                        'is_real_example': [1]}
    for record in records[5:]:
      assert record == {'input_ids': [0] * SEQ, 'input_mask': [0] * SEQ,
                        'segment_ids': [0] * SEQ, 'label_ids': [0], 'is_real_example': [0]}

  def test_progress_about_every_tenth(self, tmp_path, tokenizer):
    calls = []
    data.write_tfrecords(EXAMPLES * 5, LABELS, SEQ, tokenizer, str(tmp_path / 'r'),
                         progress=lambda done, total: calls.append(done))
    assert calls == [2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 25]
    assert data.write_tfrecords([], LABELS, SEQ, tokenizer, str(tmp_path / 'e'),
                                progress=lambda *a: calls.append(a)) == 0
    assert calls[-1] == (0, 0)

  def test_failure_leaves_nothing(self, tmp_path, tokenizer):
    path = str(tmp_path / 'r')
    bad = EXAMPLES[:2] + [data.InputExample('train-9', 'x', label='neutral')]
    with pytest.raises(ValueError, match='train-9'):
      data.write_tfrecords(bad, LABELS, SEQ, tokenizer, path)
    assert os.listdir(tmp_path) == []
    with pytest.raises(ValueError, match='pad_to_multiple must be >= 0'):
      data.write_tfrecords(EXAMPLES, LABELS, SEQ, tokenizer, path, pad_to_multiple=-8)


@pytest.fixture(scope='module')
def record_file(tmp_path_factory, tokenizer):
  path = str(tmp_path_factory.mktemp('records') / 'r.tf_record')
  data.write_tfrecords(EXAMPLES, LABELS, SEQ, tokenizer, path, pad_to_multiple=3)
  return path, _read_records(path)


class TestInputFn:

  def test_eval_batches(self, record_file):
    path, records = record_file
    input_fn = data.file_based_input_fn_builder(path, SEQ, is_training=False,
                                                drop_remainder=False)
    batches = list(input_fn({'batch_size': 4}).as_numpy_iterator())
    assert [len(labels) for _, labels in batches] == [4, 2]
    features = {k: np.concatenate([f[k] for f, _ in batches]) for k in batches[0][0]}
    assert {k: v.dtype for k, v in features.items()} == {
        'input_ids': np.int32, 'input_mask': np.int32, 'segment_ids': np.int32,
        'label_ids': np.int32, 'is_real_example': np.float32}
    for key in ('input_ids', 'input_mask', 'segment_ids'):
      np.testing.assert_array_equal(features[key], [r[key] for r in records])
    np.testing.assert_array_equal(features['label_ids'], [r['label_ids'][0] for r in records])
    np.testing.assert_array_equal(np.concatenate([l for _, l in batches]), features['label_ids'])
    np.testing.assert_array_equal(features['is_real_example'], [1, 1, 1, 1, 1, 0])

  def test_training_repeats_and_shuffles_with_static_batch(self, record_file):
    path, records = record_file
    input_fn = data.file_based_input_fn_builder(path, SEQ, is_training=True,
                                                drop_remainder=True, batch_size=3, seed=3)
    dataset = input_fn()
    assert dataset.element_spec[0]['input_ids'].shape.as_list() == [3, SEQ]
    assert dataset.element_spec[0]['label_ids'].shape.as_list() == [3]
    first = [row.tolist() for f, _ in dataset.take(6).as_numpy_iterator()
             for row in f['input_ids']]
    assert len(first) == 18  # three passes over six records
    file_order = [r['input_ids'] for r in records]
    assert sorted(first[:6]) == sorted(file_order)  # the first pass is a permutation
    assert first[:6] != file_order or first[6:12] != file_order

  def test_errors(self, record_file, tmp_path):
    input_fn = data.file_based_input_fn_builder(record_file[0], SEQ, False, False)
    with pytest.raises(ValueError, match=r'params\["batch_size"\]'):
      input_fn({})
    missing = str(tmp_path / 'none.tf_record')
    with pytest.raises(FileNotFoundError, match=re.escape(missing)):
      data.file_based_input_fn_builder(missing, SEQ, False, False, batch_size=2)()


# ----- python -m bert_example.data -----

class TestMain:

  def test_generates_and_prints_paths(self, tmp_path, capsys):
    fv = flags.FlagValues()
    demo_data.define_flags(fv)
    fv(['data', f'--data_dir={tmp_path}', '--num_train=20', '--num_dev=6', '--num_test=4'])
    demo_data.main(['demo_data'], flag_values=fv)
    out = capsys.readouterr().out.splitlines()
    assert out == [f'{s}: {tmp_path / (s + ".tsv")}' for s in ('train', 'dev', 'test')]
    assert len(data.get_processor('demo').get_dev_examples(str(tmp_path))) == 6

  def test_data_dir_required(self):
    fv = flags.FlagValues()
    demo_data.define_flags(fv)
    with pytest.raises(flags.IllegalFlagValueError, match='data_dir'):
      fv(['data'])
