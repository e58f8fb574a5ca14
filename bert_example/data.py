r"""Data for BERT fine-tuning: GLUE-format processors, the demo dataset, TFRecords.

    python -m bert_example.data --data_dir=/tmp/demo_data   # writes the demo dataset

Processors read the GLUE TSV layouts (SST-2 and CoLA: one sentence; MRPC and
MNLI: sentence pairs) into `InputExample`s; `write_tfrecords` tokenizes them
into tf.Examples and `file_based_input_fn_builder` reads those back for an
Estimator. The demo dataset is generated here from templates and word lists,
so nothing is downloaded.
"""
import collections
import csv
import dataclasses
import os
import random
import sys
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import tensorflow as tf

from bert_example import tokenization
from estimator_export.errors import did_you_mean

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')


@dataclasses.dataclass(frozen=True)
class InputExample:
  """One example: a sentence (or a pair) and its label name (None if unknown)."""
  guid: str
  text_a: str
  text_b: Optional[str] = None
  label: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class InputFeatures:
  """An example as BERT inputs: three int lists of max_seq_length, and the label id."""
  input_ids: List[int]
  input_mask: List[int]
  segment_ids: List[int]
  label_id: int
  is_real_example: bool = True


def read_tsv(path: str, quotechar: Optional[str] = None) -> List[List[str]]:
  """Rows of a tab-separated file; raises FileNotFoundError naming the file."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path} does not exist; check --data_dir (it must hold the '
                            "task's train.tsv / dev.tsv / test.tsv).")
  with tf.io.gfile.GFile(path, 'r') as f:
    csv.field_size_limit(sys.maxsize)
    return list(csv.reader(f, delimiter='\t', quotechar=quotechar))


class DataProcessor:
  """Reads one task's train/dev/test files into InputExamples."""
  is_pair = False
  train_file, dev_file, test_file = 'train.tsv', 'dev.tsv', 'test.tsv'
  labels: Sequence[str] = ()
  header = True       # train/dev files start with a header row
  test_header = True  # so does test
  min_columns = 1     # rows with fewer columns are malformed

  def get_labels(self) -> List[str]:
    return list(self.labels)

  def get_train_examples(self, data_dir: str) -> List[InputExample]:
    return self._examples(os.path.join(data_dir, self.train_file), 'train', self.header)

  def get_dev_examples(self, data_dir: str) -> List[InputExample]:
    return self._examples(os.path.join(data_dir, self.dev_file), 'dev', self.header)

  def get_test_examples(self, data_dir: str) -> List[InputExample]:
    return self._examples(os.path.join(data_dir, self.test_file), 'test', self.test_header)

  def _examples(self, path: str, split: str, header: bool) -> List[InputExample]:
    rows = read_tsv(path)
    examples = []
    for line, row in enumerate(rows, start=1):
      if header and line == 1:
        continue
      if not row:
        continue
      wanted = self.test_columns if split == 'test' else self.min_columns
      if len(row) < wanted:
        raise ValueError(f'{path} line {line}: {len(row)} column(s), expected at least '
                         f'{wanted} for {type(self).__name__}; is this the right '
                         '--task_name, and is the file tab-separated?')
      examples.append(self.parse(row, f'{split}-{line}', split))
    return examples

  @property
  def test_columns(self) -> int:
    return self.min_columns

  def parse(self, row: List[str], guid: str, split: str) -> InputExample:
    raise NotImplementedError


class Sst2Processor(DataProcessor):
  """SST-2: train/dev 'sentence<TAB>label' with a header; test 'index<TAB>sentence'."""
  labels = ('0', '1')
  min_columns = 2

  def parse(self, row, guid, split):
    if split == 'test':
      return InputExample(guid, row[1])
    return InputExample(guid, row[0], label=row[1])


class ColaProcessor(DataProcessor):
  """CoLA: train/dev have no header, columns (source, label, original label, sentence)."""
  labels = ('0', '1')
  header = False
  min_columns = 4

  @property
  def test_columns(self):
    return 2

  def parse(self, row, guid, split):
    if split == 'test':
      return InputExample(guid, row[1])
    return InputExample(guid, row[3], label=row[1])


class MrpcProcessor(DataProcessor):
  """MRPC: 'Quality, #1 ID, #2 ID, #1 String, #2 String' with a header (label: Quality)."""
  is_pair = True
  labels = ('0', '1')
  min_columns = 5

  def parse(self, row, guid, split):
    return InputExample(guid, row[3], row[4], None if split == 'test' else row[0])


class MnliProcessor(DataProcessor):
  """MNLI (matched): sentence1 in column 8, sentence2 in column 9, label last."""
  is_pair = True
  labels = ('contradiction', 'entailment', 'neutral')
  dev_file, test_file = 'dev_matched.tsv', 'test_matched.tsv'
  min_columns = 11

  @property
  def test_columns(self):
    return 10

  def parse(self, row, guid, split):
    return InputExample(guid, row[8], row[9], None if split == 'test' else row[-1])


class DemoProcessor(Sst2Processor):
  """The generated demo dataset (SST-2 layout) with label names."""
  labels = ('negative', 'positive')


PROCESSORS = {'sst-2': Sst2Processor, 'sst2': Sst2Processor, 'cola': ColaProcessor,
              'mrpc': MrpcProcessor, 'mnli': MnliProcessor, 'demo': DemoProcessor}


def get_processor(task_name: str) -> DataProcessor:
  """The processor of a task name (case-insensitive); ValueError for unknown names."""
  key = (task_name or '').lower()
  if key not in PROCESSORS:
    raise ValueError(f'unknown --task_name {task_name!r}; use one of '
                     f'{", ".join(sorted(PROCESSORS))}' + did_you_mean(key, PROCESSORS))
  return PROCESSORS[key]()


# ----- the demo dataset -----

_SUBJECTS = ('the film', 'this movie', 'the plot', 'the acting', 'the soundtrack', 'the ending',
             'the script', 'the cast', 'the director', 'the story', 'the dialogue',
             'the cinematography', 'this sequel', 'the pacing', 'the lead actor', 'the show')
_VERBS = ('was', 'is', 'felt', 'seemed', 'looked', 'turned out')
_POSITIVE = ('great', 'wonderful', 'brilliant', 'moving', 'delightful', 'superb', 'charming',
             'excellent', 'beautiful', 'fun', 'gripping', 'clever', 'touching', 'good',
             'enjoyable', 'fantastic', 'powerful', 'funny', 'stunning', 'fresh')
_NEGATIVE = ('awful', 'boring', 'dull', 'terrible', 'bad', 'clumsy', 'tedious', 'weak',
             'painful', 'messy', 'lifeless', 'predictable', 'bland', 'poor', 'horrible',
             'forgettable', 'silly', 'flat', 'annoying', 'disappointing')
_INTENSIFIERS = ('', '', 'really ', 'very ', 'truly ', 'quite ', 'so ', 'incredibly ')
_NEGATIONS = ('not ', 'never ', "n't ")
_ENDINGS = ('.', '.', '!', '...', ' !', '')
_OPENERS = ('', '', '', 'honestly, ', 'overall, ', 'i think ', 'in the end ', 'frankly ')


def _sentence(rng: random.Random, positive: bool, negate: bool) -> str:
  adjective = rng.choice(_POSITIVE if positive != negate else _NEGATIVE)
  verb = rng.choice(_VERBS)
  negation = ''
  if negate:
    negation = rng.choice(_NEGATIONS)
    if negation == "n't ":
      verb, negation = verb + "n't", ''
      if verb.endswith("outn't"):
        verb, negation = 'turned out', 'not '
  text = (f'{rng.choice(_OPENERS)}{rng.choice(_SUBJECTS)} {verb} {negation}'
          f'{rng.choice(_INTENSIFIERS)}{adjective}{rng.choice(_ENDINGS)}')
  text = ' '.join(text.split())
  if rng.random() < 0.2:
    text = text[0].upper() + text[1:]
  return text


def generate_demo_dataset(data_dir: str, num_train: int = 2000, num_dev: int = 400,
                          num_test: int = 200, seed: int = 0) -> Dict[str, str]:
  """Writes train.tsv, dev.tsv and test.tsv of labelled sentiment sentences (SST-2 layout).

  Labels are balanced; a negation flips the label ("was not good" is
  negative), so single words do not decide it. No sentence is in two
  splits. Deterministic for a seed. Returns {'train': path, 'dev': ..., 'test': ...}.
  """
  rng = random.Random(seed)
  seen = set()
  splits = {}
  for split, n in (('train', num_train), ('dev', num_dev), ('test', num_test)):
    rows = []
    attempts = 0
    while len(rows) < n:
      attempts += 1
      if attempts > 50 * n + 1000:
        raise ValueError(f'could not generate {n} distinct {split} sentences; ask for fewer.')
      positive = len(rows) % 2 == 0
      text = _sentence(rng, positive, negate=rng.random() < 0.3)
      if text.lower() in seen:
        continue
      seen.add(text.lower())
      rows.append((text, DemoProcessor.labels[int(positive)]))
    rng.shuffle(rows)
    splits[split] = rows
  tf.io.gfile.makedirs(data_dir)
  paths = {}
  for split, rows in splits.items():
    path = os.path.join(data_dir, f'{split}.tsv')
    if split == 'test':
      lines = ['index\tsentence'] + [f'{i}\t{t}' for i, (t, _) in enumerate(rows)]
    else:
      lines = ['sentence\tlabel'] + [f'{t}\t{label}' for t, label in rows]
    _write_atomically(path, ('\n'.join(lines) + '\n').encode('utf-8'))
    paths[split] = path
  return paths


def build_vocab(examples: Iterable[InputExample], vocab_file: str, do_lower_case: bool = True,
                min_count: int = 1, max_size: int = 8000) -> int:
  """Writes a WordPiece vocab for a model trained from scratch; returns its size.

  Order: [PAD] [UNK] [CLS] [SEP] [MASK] (so [PAD] is 0), every character seen
  and its '##' continuation, then whole words by frequency.
  """
  basic = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
  words = collections.Counter()
  for example in examples:
    for text in (example.text_a, example.text_b):
      if text:
        words.update(basic.tokenize(text))
  chars = sorted({c for w in words for c in w})
  tokens = list(SPECIAL_TOKENS)
  tokens += chars + [f'##{c}' for c in chars]
  for word, count in sorted(words.items(), key=lambda kv: (-kv[1], kv[0])):
    if len(tokens) >= max_size:
      break
    if count >= min_count and len(word) > 1:
      tokens.append(word)
  _write_atomically(vocab_file, ('\n'.join(tokens) + '\n').encode('utf-8'))
  return len(tokens)


# ----- TFRecords -----

def convert_example(example: InputExample, label_list: Sequence[str], max_seq_length: int,
                    tokenizer: tokenization.FullTokenizer) -> InputFeatures:
  """Tokenizes one example; an unknown label is a ValueError naming it."""
  if example.label is None:
    label_id = 0  # Test examples: the label is unknown and unused.
  elif example.label in label_list:
    label_id = list(label_list).index(example.label)
  else:
    raise ValueError(f'example {example.guid} has label {example.label!r}, which is not '
                     f'one of the task\'s labels {list(label_list)}; check --task_name.')
  ids, mask, segments = tokenizer.encode(example.text_a, example.text_b, max_seq_length)
  return InputFeatures(ids, mask, segments, label_id)


def _int_feature(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _to_example(features: InputFeatures) -> bytes:
  return tf.train.Example(features=tf.train.Features(feature={
      'input_ids': _int_feature(features.input_ids),
      'input_mask': _int_feature(features.input_mask),
      'segment_ids': _int_feature(features.segment_ids),
      'label_ids': _int_feature([features.label_id]),
      'is_real_example': _int_feature([int(features.is_real_example)]),
  })).SerializeToString()


def write_tfrecords(examples: Sequence[InputExample], label_list: Sequence[str],
                    max_seq_length: int, tokenizer: tokenization.FullTokenizer,
                    output_file: str, progress: Optional[Callable[[int, int], None]] = None,
                    pad_to_multiple: int = 0) -> int:
  """Writes the examples as tf.Examples (atomically); returns the records written.

  Args:
    examples: the examples, in order.
    label_list: label names; label_ids are indexes into it.
    max_seq_length: the length of every id list.
    tokenizer: a FullTokenizer.
    output_file: the TFRecord path (written to a temp name, then renamed).
    progress: called as progress(done, total) every 10% and at the end.
    pad_to_multiple: append fake examples (is_real_example=0) up to a
      multiple of this, for fixed-size eval batches.
  """
  total = len(examples)
  padding = (-total) % pad_to_multiple if pad_to_multiple else 0
  every = max(1, total // 10)
  tmp = f'{output_file}.tmp-{uuid.uuid4().hex}'
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for done, example in enumerate(examples, start=1):
        writer.write(_to_example(convert_example(example, label_list, max_seq_length,
                                                 tokenizer)))
        if progress and (done % every == 0 or done == total):
          progress(done, total)
      fake = InputFeatures([0] * max_seq_length, [0] * max_seq_length, [0] * max_seq_length,
                           0, is_real_example=False)
      for _ in range(padding):
        writer.write(_to_example(fake))
    tf.io.gfile.rename(tmp, output_file, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
  return total + padding


def file_based_input_fn_builder(input_file: str, seq_length: int, is_training: bool,
                                drop_remainder: bool, batch_size: Optional[int] = None,
                                shuffle_buffer: int = 1000, seed: Optional[int] = None):
  """An Estimator input_fn over write_tfrecords' output.

  The input_fn yields (features, labels): features has input_ids, input_mask,
  segment_ids (int32 [batch, seq_length]), label_ids (int32 [batch]) and
  is_real_example (float32 [batch]); labels is label_ids. Training repeats
  and shuffles. The batch size is `batch_size` or params['batch_size'].
  """
  spec = {
      'input_ids': tf.io.FixedLenFeature([seq_length], tf.int64),
      'input_mask': tf.io.FixedLenFeature([seq_length], tf.int64),
      'segment_ids': tf.io.FixedLenFeature([seq_length], tf.int64),
      'label_ids': tf.io.FixedLenFeature([1], tf.int64),
      'is_real_example': tf.io.FixedLenFeature([1], tf.int64),
  }

  def decode(record):
    parsed = tf.io.parse_single_example(record, spec)
    features = {k: tf.cast(parsed[k], tf.int32) for k in ('input_ids', 'input_mask',
                                                          'segment_ids')}
    features['label_ids'] = tf.cast(parsed['label_ids'][0], tf.int32)
    features['is_real_example'] = tf.cast(parsed['is_real_example'][0], tf.float32)
    return features, features['label_ids']

  def input_fn(params=None):
    size = batch_size or (params or {}).get('batch_size')
    if not size:
      raise ValueError('no batch size: pass batch_size= or params["batch_size"].')
    dataset = tf.data.TFRecordDataset(input_file)
    if is_training:
      dataset = dataset.repeat().shuffle(shuffle_buffer, seed=seed)
    return dataset.map(decode).batch(size, drop_remainder=drop_remainder)

  return input_fn


def _write_atomically(path: str, content: bytes) -> None:
  tmp = f'{path}.tmp-{uuid.uuid4().hex}'
  with tf.io.gfile.GFile(tmp, 'wb') as f:
    f.write(content)
  tf.io.gfile.rename(tmp, path, overwrite=True)


def main(argv):
  del argv
  from absl import flags  # pylint: disable=g-import-not-at-top
  fv = flags.FLAGS
  paths = generate_demo_dataset(fv.data_dir, fv.num_train, fv.num_dev, fv.num_test, fv.seed)
  for split, path in paths.items():
    print(f'{split}: {path}')


def define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  flags.DEFINE_string('data_dir', None, 'Where to write the demo dataset.', required=True)
  flags.DEFINE_integer('num_train', 2000, 'Training sentences.')
  flags.DEFINE_integer('num_dev', 400, 'Held-out sentences.')
  flags.DEFINE_integer('num_test', 200, 'Unlabelled test sentences.')
  flags.DEFINE_integer('seed', 0, 'Random seed.')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
