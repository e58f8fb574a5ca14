"""Tests for bert_example.data: GLUE processors, the demo dataset, vocab, TFRecords."""
import collections
import os

import numpy as np
import pytest
import tensorflow as tf

from bert_example import data as data_lib
from bert_example import tokenization


def _write(path, rows):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(''.join('\t'.join(r) + '\n' for r in rows))


@pytest.fixture(scope='module')
def demo(tmp_path_factory):
  d = str(tmp_path_factory.mktemp('demo'))
  paths = data_lib.generate_demo_dataset(d, num_train=600, num_dev=200, num_test=50)
  p = data_lib.get_processor('demo')
  return d, paths, p.get_train_examples(d), p.get_dev_examples(d), p.get_test_examples(d)


class TestProcessors:

  def test_sst2(self, tmp_path):
    _write(str(tmp_path / 'train.tsv'), [['sentence', 'label'], ['a fine film', '1'],
                                         ['dull', '0']])
    _write(str(tmp_path / 'test.tsv'), [['index', 'sentence'], ['0', 'what a ride']])
    p = data_lib.get_processor('SST-2')
    train = p.get_train_examples(str(tmp_path))
    assert [(e.text_a, e.text_b, e.label) for e in train] == [('a fine film', None, '1'),
                                                              ('dull', None, '0')]
    assert [(e.text_a, e.label) for e in p.get_test_examples(str(tmp_path))] == [
        ('what a ride', None)]
    assert p.get_labels() == ['0', '1'] and not p.is_pair
    assert data_lib.get_processor('sst2').get_labels() == ['0', '1']

  def test_cola_has_no_header(self, tmp_path):
    _write(str(tmp_path / 'train.tsv'), [['gj04', '1', '', 'The sailor dog barked.'],
                                         ['gj04', '0', '*', 'Barked dog the.']])
    _write(str(tmp_path / 'test.tsv'), [['index', 'sentence'], ['0', 'Dogs bark.']])
    p = data_lib.get_processor('cola')
    assert [(e.text_a, e.label) for e in p.get_train_examples(str(tmp_path))] == [
        ('The sailor dog barked.', '1'), ('Barked dog the.', '0')]
    assert p.get_test_examples(str(tmp_path))[0].text_a == 'Dogs bark.'

  def test_mrpc_pairs(self, tmp_path):
    header = ['Quality', '#1 ID', '#2 ID', '#1 String', '#2 String']
    _write(str(tmp_path / 'dev.tsv'), [header, ['1', '11', '12', 'He said so.', 'So he said.']])
    p = data_lib.get_processor('mrpc')
    (e,) = p.get_dev_examples(str(tmp_path))
    assert (e.text_a, e.text_b, e.label) == ('He said so.', 'So he said.', '1') and p.is_pair

  def test_mnli_matched_files(self, tmp_path):
    header = ['index', 'promptID', 'pairID', 'genre', 'b1', 'b2', 'p1', 'p2', 'sentence1',
              'sentence2', 'label1', 'gold_label']
    row = ['0', '1', '2', 'fiction', '', '', '', '', 'A man sleeps.', 'Nobody sleeps.',
           'contradiction', 'contradiction']
    _write(str(tmp_path / 'dev_matched.tsv'), [header, row])
    _write(str(tmp_path / 'test_matched.tsv'), [header[:10], row[:10]])
    p = data_lib.get_processor('mnli')
    (e,) = p.get_dev_examples(str(tmp_path))
    assert (e.text_a, e.text_b, e.label) == ('A man sleeps.', 'Nobody sleeps.', 'contradiction')
    assert p.get_test_examples(str(tmp_path))[0].label is None
    assert p.get_labels() == ['contradiction', 'entailment', 'neutral']

  def test_malformed_row_names_file_and_line(self, tmp_path):
    _write(str(tmp_path / 'train.tsv'), [['sentence', 'label'], ['ok', '1'], ['no label']])
    with pytest.raises(ValueError, match=r'train.tsv line 3: 1 column\(s\), expected at least 2'):
      data_lib.get_processor('sst-2').get_train_examples(str(tmp_path))

  def test_missing_file(self, tmp_path):
    with pytest.raises(FileNotFoundError, match=r'dev.tsv does not exist; check --data_dir'):
      data_lib.get_processor('mrpc').get_dev_examples(str(tmp_path))

  def test_unknown_task(self):
    with pytest.raises(ValueError, match=r"unknown --task_name 'mrcp'.*Did you mean 'mrpc'"):
      data_lib.get_processor('mrcp')


class TestDemoDataset:

  def test_deterministic_and_disjoint(self, demo, tmp_path):
    d, paths, train, dev, test = demo
    again = data_lib.generate_demo_dataset(str(tmp_path), num_train=600, num_dev=200,
                                           num_test=50)
    for split in ('train', 'dev', 'test'):
      with open(paths[split]) as a, open(again[split]) as b:
        assert a.read() == b.read()
    sets = [{e.text_a.lower() for e in s} for s in (train, dev, test)]
    assert (len(train), len(dev), len(test)) == (600, 200, 50)
    assert not (sets[0] & sets[1]) and not (sets[0] & sets[2]) and not (sets[1] & sets[2])
    assert all(e.label is None for e in test)
    del d

  def test_balanced_and_negation_flips(self, demo):
    _, _, train, _, _ = demo
    counts = collections.Counter(e.label for e in train)
    assert counts['positive'] == counts['negative'] == 300
    negated = [e for e in train if any(n in e.text_a.split() or n in e.text_a
                                       for n in ('not', 'never', "n't"))]
    flipped = [e for e in negated if e.label == 'negative' and
               any(w in e.text_a for w in data_lib._POSITIVE)]  # pylint: disable=protected-access
    assert len(negated) > 100 and flipped

  def test_learnable_but_not_from_one_word(self, demo):
    _, _, train, dev, _ = demo
    basic = tokenization.BasicTokenizer()
    words = sorted({w for e in train for w in basic.tokenize(e.text_a)})
    index = {w: i for i, w in enumerate(words)}

    def bag(examples):  # Words, and words of negated sentences ("not ... good").
      x = np.zeros((len(examples), 2 * len(words) + 1), np.float32)
      for r, e in enumerate(examples):
        tokens = [t for t in basic.tokenize(e.text_a) if t in index]
        negated = bool({'not', 'never', 't'} & set(tokens))
        for t in tokens:
          x[r, index[t] + (len(words) if negated else 0)] = 1
      x[:, -1] = 1
      return x, np.array([e.label == 'positive' for e in examples], np.float32)

    xt, yt = bag(train)
    xd, yd = bag(dev)
    w = np.zeros(xt.shape[1], np.float32)
    for _ in range(500):  # Plain logistic regression by gradient descent.
      p = 1 / (1 + np.exp(-xt @ w))
      w -= 1.0 * xt.T @ (p - yt) / len(yt)
    assert np.mean((xd @ w > 0) == yd) > 0.8
    # The best rule on a single word's presence is well below that.
    best = max(max(np.mean(xd[:, i] == yd), np.mean(xd[:, i] != yd)) for i in range(len(words)))
    assert best < 0.75


class TestVocab:

  def test_special_tokens_first_and_no_unknowns(self, demo, tmp_path):
    _, _, train, dev, _ = demo
    vocab = str(tmp_path / 'vocab.txt')
    size = data_lib.build_vocab(train, vocab)
    with open(vocab) as f:
      tokens = f.read().split('\n')[:-1]
    assert len(tokens) == size and tokens[:5] == list(data_lib.SPECIAL_TOKENS)
    tokenizer = tokenization.FullTokenizer(vocab)
    for e in train + dev:
      assert '[UNK]' not in tokenizer.tokenize(e.text_a), e.text_a

  def test_max_size(self, demo, tmp_path):
    _, _, train, _, _ = demo
    assert data_lib.build_vocab(train, str(tmp_path / 'v.txt'), max_size=120) == 120


class TestTFRecords:

  def test_round_trip_with_padding(self, demo, tmp_path):
    d, _, train, _, _ = demo
    vocab = str(tmp_path / 'vocab.txt')
    data_lib.build_vocab(train, vocab)
    tokenizer = tokenization.FullTokenizer(vocab)
    examples = train[:10]
    calls = []
    path = str(tmp_path / 'eval.tf_record')
    n = data_lib.write_tfrecords(examples, ['negative', 'positive'], 16, tokenizer, path,
                                 progress=lambda done, total: calls.append((done, total)),
                                 pad_to_multiple=4)
    assert n == 12 and calls[-1] == (10, 10) and os.listdir(tmp_path) == ['vocab.txt',
                                                                          'eval.tf_record']
    input_fn = data_lib.file_based_input_fn_builder(path, 16, is_training=False,
                                                    drop_remainder=False, batch_size=12)
    features, labels = next(iter(input_fn()))
    for i, e in enumerate(examples):
      ids, mask, segments = tokenizer.encode(e.text_a, None, 16)
      assert features['input_ids'][i].numpy().tolist() == ids
      assert features['input_mask'][i].numpy().tolist() == mask
      assert features['segment_ids'][i].numpy().tolist() == segments
      assert int(labels[i]) == ['negative', 'positive'].index(e.label)
    assert features['input_ids'].dtype == tf.int32
    assert features['is_real_example'].numpy().tolist() == [1.0] * 10 + [0.0] * 2
    del d

  def test_training_input_repeats(self, demo, tmp_path):
    _, _, train, _, _ = demo
    vocab = str(tmp_path / 'vocab.txt')
    data_lib.build_vocab(train, vocab)
    path = str(tmp_path / 'train.tf_record')
    data_lib.write_tfrecords(train[:5], ['negative', 'positive'], 8,
                             tokenization.FullTokenizer(vocab), path)
    input_fn = data_lib.file_based_input_fn_builder(path, 8, is_training=True,
                                                    drop_remainder=True, seed=1)
    batches = list(input_fn({'batch_size': 4}).take(3))
    assert [b[0]['input_ids'].shape.as_list() for b in batches] == [[4, 8]] * 3

  def test_unknown_label(self, tmp_path):
    vocab = str(tmp_path / 'vocab.txt')
    data_lib.build_vocab([data_lib.InputExample('x', 'fine')], vocab)
    bad = data_lib.InputExample('train-7', 'fine', label='great')
    with pytest.raises(ValueError, match=r"example train-7 has label 'great'.*\['0', '1'\]"):
      data_lib.write_tfrecords([bad], ['0', '1'], 8, tokenization.FullTokenizer(vocab),
                               str(tmp_path / 'r'))
    assert sorted(os.listdir(tmp_path)) == ['vocab.txt']  # Nothing half-written.
