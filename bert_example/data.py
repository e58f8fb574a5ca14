r"""Data for BERT fine-tuning: GLUE-format processors, the demo dataset, TFRecords.

    python -m bert_example.data --data_dir=/tmp/demo_data   # writes the demo dataset

Processors read the GLUE TSV layouts (SST-2 and CoLA: one sentence; MRPC and
MNLI: sentence pairs) into `InputExample`s; `write_tfrecords` tokenizes them
into tf.Examples and `file_based_input_fn_builder` reads those back for an
Estimator. The demo dataset is generated here from templates and word lists,
so nothing is downloaded.

    >>> processor = get_processor('SST-2')
    >>> processor.get_labels(), processor.is_pair
    (['0', '1'], False)
"""
import collections
import csv
import dataclasses
import io
import os
import random
import sys
import uuid
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from absl import flags
import tensorflow as tf

from bert_example import tokenization
from estimator_export.errors import did_you_mean

SPECIAL_TOKENS = ('[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]')
SPLITS = ('train', 'dev', 'test')


@dataclasses.dataclass(frozen=True)
class InputExample:
  """One example: a sentence (or a pair) and its label name (None if unknown).

  Processors set guid to '<split>-<line number in the file>', so an error about
  an example points at its line.
  """
  guid: str
  text_a: str
  text_b: Optional[str] = None
  label: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class InputFeatures:
  """An example as BERT inputs: three int lists of length max_seq_length and a label id."""
  input_ids: List[int]
  input_mask: List[int]
  segment_ids: List[int]
  label_id: int
  is_real_example: bool = True

  def __post_init__(self):
    lengths = (len(self.input_ids), len(self.input_mask), len(self.segment_ids))
    if len(set(lengths)) != 1:
      raise ValueError(f'input_ids, input_mask and segment_ids must have one length; got '
                       f'{lengths}. Build InputFeatures with convert_example.')


def read_tsv(path: str, quotechar: Optional[str] = None) -> List[List[str]]:
  """Rows of a UTF-8 tab-separated file, one per line ([] for a blank line).

  Args:
    path: the file.
    quotechar: None (GLUE's files: quotes are ordinary characters, so row i is
      line i + 1) or a quote character for csv-style quoted fields.

  Raises:
    FileNotFoundError: naming the file when it does not exist.
    ValueError: naming the file when it is not UTF-8.
  """
  if not tf.io.gfile.exists(path) or tf.io.gfile.isdir(path):
    raise FileNotFoundError(f'{path} does not exist or is a directory; check --data_dir '
                            "(it must hold the task's train / dev / test .tsv files).")
  with tf.io.gfile.GFile(path, 'rb') as f:
    raw = f.read()
  try:
    text = raw.decode('utf-8-sig')  # A leading byte-order mark is not part of the header.
  except UnicodeDecodeError as e:
    raise ValueError(f'{path} is not UTF-8 (byte {e.start}): {e.reason}; convert the file '
                     'to UTF-8.') from e
  if quotechar is not None:
    csv.field_size_limit(max(csv.field_size_limit(), sys.maxsize))
    return list(csv.reader(io.StringIO(text, newline=''), delimiter='\t',
                           quotechar=quotechar))
  lines = text.split('\n')
  if lines and not lines[-1]:
    lines.pop()  # The newline that ends the last line.
  return [line.rstrip('\r').split('\t') if line.rstrip('\r') else [] for line in lines]


@dataclasses.dataclass(frozen=True)
class Layout:
  """Where one split's file keeps its fields (column indexes; -1 is the last column)."""
  header: bool
  columns: int                 # the number of columns of every row
  text_a: int
  text_b: Optional[int] = None
  label: Optional[int] = None  # None: the split is unlabelled
  exact: bool = True           # False: `columns` is a minimum (MNLI's extra label columns)


class DataProcessor:
  """Reads one task's train/dev/test files into InputExamples.

  A subclass sets `labels`, `is_pair`, `files` (split -> file name) and
  `layouts` (split -> Layout); the reading and the checks are shared.
  """
  is_pair = False
  labels: Tuple[str, ...] = ()
  files = {'train': 'train.tsv', 'dev': 'dev.tsv', 'test': 'test.tsv'}
  layouts: Dict[str, Layout] = {}

  def get_labels(self) -> List[str]:
    return list(self.labels)

  def get_train_examples(self, data_dir: str) -> List[InputExample]:
    return self.get_examples(data_dir, 'train')

  def get_dev_examples(self, data_dir: str) -> List[InputExample]:
    return self.get_examples(data_dir, 'dev')

  def get_test_examples(self, data_dir: str) -> List[InputExample]:
    """The test split; labels are None where the file has none."""
    return self.get_examples(data_dir, 'test')

  def get_examples(self, data_dir: str, split: str) -> List[InputExample]:
    """The examples of `split` ('train', 'dev' or 'test'), in file order."""
    if split not in self.layouts:
      raise ValueError(f'unknown split {split!r}; use one of {", ".join(self.layouts)}.')
    path = os.path.join(data_dir, self.files[split])
    layout = self.layouts[split]
    examples = []
    for line, row in enumerate(read_tsv(path), start=1):
      if not row:
        continue
      if (layout.exact and len(row) != layout.columns) or len(row) < layout.columns:
        raise ValueError(
            f'{path} line {line}: {len(row)} column(s), expected '
            f'{"" if layout.exact else "at least "}{layout.columns} for '
            f'{type(self).__name__} ({split}); is this the right --task_name, and is the '
            'file tab-separated with no tabs inside a sentence?')
      if layout.header and line == 1:
        if layout.label is not None and row[layout.label] in self.labels:
          raise ValueError(f'{path} line 1 looks like data (label {row[layout.label]!r}), '
                           f'but {type(self).__name__} expects a header row there; add the '
                           'GLUE header line or check --task_name.')
        continue
      examples.append(InputExample(
          f'{split}-{line}', row[layout.text_a],
          None if layout.text_b is None else row[layout.text_b],
          None if layout.label is None else row[layout.label]))
    return examples


class Sst2Processor(DataProcessor):
  """SST-2: train/dev 'sentence<TAB>label' with a header; test 'index<TAB>sentence'."""
  labels = ('0', '1')
  layouts = {'train': Layout(True, 2, text_a=0, label=1),
             'dev': Layout(True, 2, text_a=0, label=1),
             'test': Layout(True, 2, text_a=1)}


class ColaProcessor(DataProcessor):
  """CoLA: train/dev have no header, columns (source, label, original label, sentence).

  test.tsv has a header and 'index<TAB>sentence'.
  """
  labels = ('0', '1')
  layouts = {'train': Layout(False, 4, text_a=3, label=1),
             'dev': Layout(False, 4, text_a=3, label=1),
             'test': Layout(True, 2, text_a=1)}


class MrpcProcessor(DataProcessor):
  """MRPC: 'Quality, #1 ID, #2 ID, #1 String, #2 String' with a header (label: Quality)."""
  is_pair = True
  labels = ('0', '1')
  layouts = {'train': Layout(True, 5, text_a=3, text_b=4, label=0),
             'dev': Layout(True, 5, text_a=3, text_b=4, label=0),
             'test': Layout(True, 5, text_a=3, text_b=4)}


class MnliProcessor(DataProcessor):
  """MNLI (matched): sentence1 in column 8, sentence2 in column 9, gold label last.

  train.tsv has 12 columns, dev_matched.tsv 16 (five annotator labels, then the
  gold label), test_matched.tsv 10 (no label).
  """
  is_pair = True
  labels = ('contradiction', 'entailment', 'neutral')
  files = {'train': 'train.tsv', 'dev': 'dev_matched.tsv', 'test': 'test_matched.tsv'}
  layouts = {'train': Layout(True, 11, text_a=8, text_b=9, label=-1, exact=False),
             'dev': Layout(True, 11, text_a=8, text_b=9, label=-1, exact=False),
             'test': Layout(True, 10, text_a=8, text_b=9, exact=False)}


class DemoProcessor(Sst2Processor):
  """The generated demo dataset (SST-2 layout) with label names."""
  labels = ('negative', 'positive')


PROCESSORS = {'sst-2': Sst2Processor, 'sst2': Sst2Processor, 'cola': ColaProcessor,
              'mrpc': MrpcProcessor, 'mnli': MnliProcessor, 'demo': DemoProcessor}


def get_processor(task_name: str) -> DataProcessor:
  """The processor of a task name (case-insensitive, '_' for '-'); ValueError if unknown."""
  key = str(task_name or '').strip().lower().replace('_', '-')
  if key not in PROCESSORS:
    raise ValueError(f'unknown --task_name {task_name!r}; use one of '
                     f'{", ".join(sorted(PROCESSORS))}.' + did_you_mean(key, PROCESSORS))
  return PROCESSORS[key]()


# ----- the demo dataset -----
# A sentence has one head (a subject or noun) and one sentiment item (an
# adjective, adverb or verb); the (template, head, item) combinations are
# partitioned between the splits, so dev and test hold combinations never
# seen in training, while every word appears in training.

_SUBJECTS = ('the film', 'this movie', 'the plot', 'the acting', 'the soundtrack', 'the ending',
             'the script', 'the cast', 'the director', 'the story', 'the dialogue',
             'the cinematography', 'this sequel', 'the pacing', 'the lead actor', 'the show')
_NOUNS = ('film', 'movie', 'story', 'ending', 'performance', 'show', 'sequel', 'script')
_ADJECTIVES = {
    True: ('great', 'wonderful', 'brilliant', 'moving', 'delightful', 'superb', 'charming',
           'excellent', 'beautiful', 'fun', 'gripping', 'clever', 'touching', 'good',
           'enjoyable', 'fantastic', 'powerful', 'funny', 'stunning', 'fresh'),
    False: ('awful', 'boring', 'dull', 'terrible', 'bad', 'clumsy', 'tedious', 'weak',
            'painful', 'messy', 'lifeless', 'predictable', 'bland', 'poor', 'horrible',
            'forgettable', 'silly', 'flat', 'annoying', 'disappointing')}
_ADVERBS = {True: ('beautifully', 'brilliantly', 'wonderfully', 'superbly', 'skillfully',
                   'cleverly', 'gracefully', 'lovingly'),
            False: ('poorly', 'badly', 'clumsily', 'lazily', 'sloppily', 'carelessly',
                    'awkwardly', 'horribly')}
_PARTICIPLES = ('made', 'written', 'acted', 'shot', 'directed', 'edited', 'crafted', 'done')
_VERBS = {True: (('loved', 'love'), ('enjoyed', 'enjoy'), ('liked', 'like'),
                 ('adored', 'adore'), ('admired', 'admire'), ('treasured', 'treasure')),
          False: (('hated', 'hate'), ('disliked', 'dislike'), ('loathed', 'loathe'),
                  ('despised', 'despise'), ('detested', 'detest'), ('resented', 'resent'))}
# A linking verb and its negated forms.
_COPULAS = (('was', ('was not', "wasn't", 'was never')), ('is', ('is not', "isn't", 'is never')),
            ('felt', ('did not feel', "didn't feel", 'never felt')),
            ('seemed', ('did not seem', "didn't seem", 'never seemed')),
            ('looked', ('did not look', "didn't look")),
            ('turned out', ('did not turn out', "didn't turn out")))
_INTENSIFIERS = ('really', 'very', 'truly', 'quite', 'so', 'incredibly', 'extremely',
                 'remarkably')
_VERB_INTENSIFIERS = ('really', 'truly', 'absolutely', 'genuinely')
_OPENERS = ('honestly,', 'overall,', 'i think', 'in the end,', 'frankly', 'to be fair,',
            'for me,')
_ENDINGS = ('.', '.', '!', '!!', '...', ' .', ' !', '')
# template -> (weight, negatable, heads, items by polarity)
_TEMPLATES = {
    'copula': (0.35, True, _SUBJECTS, _ADJECTIVES),
    'adverb': (0.15, True, _SUBJECTS, _ADVERBS),
    'opinion': (0.2, True, _SUBJECTS, _VERBS),
    'exclaim': (0.1, False, _NOUNS, _ADJECTIVES),
    'pair': (0.2, True, _SUBJECTS, _ADJECTIVES),
}
_NEGATION_RATE = 0.15       # of negatable sentences: about 13% of all are negated
_HELD_OUT = {'dev': 0.2, 'test': 0.1}


def _maybe(rng: random.Random, p: float, text: str) -> str:
  return text if rng.random() < p else ''


def _render(rng: random.Random, template: str, head: str, item, polarity: bool,
            negate: bool) -> str:
  """One sentence; `item` has sentiment `polarity`, which `negate` flips."""
  items = _TEMPLATES[template][3][polarity]
  word = item if isinstance(item, str) else item[0]
  if rng.random() < 0.05:
    word = word.upper()  # "the film was GREAT!"
  copula, negated = rng.choice(_COPULAS)
  intensifier = _maybe(rng, 0.35, rng.choice(_INTENSIFIERS))
  if template == 'copula':
    verb = rng.choice(negated) if negate else copula
    parts = [head, verb, intensifier, word]
  elif template == 'adverb':
    verb = rng.choice(_COPULAS[rng.randrange(2)][1]) if negate else rng.choice(('was', 'is'))
    parts = [head, verb, word, rng.choice(_PARTICIPLES)]
  elif template == 'opinion':
    subject = 'I' if rng.random() < 0.5 else 'i'
    if negate:
      form = rng.choice(('did not', "didn't", 'never'))
      verb = item[0] if form == 'never' else item[1]
      parts = [subject, form, verb, head, _maybe(rng, 0.3, 'at all')]
    else:
      parts = [subject, _maybe(rng, 0.35, rng.choice(_VERB_INTENSIFIERS)), word, head]
  elif template == 'exclaim':
    modifier = f'{intensifier} {word}'.strip()
    article = 'an' if modifier[0].lower() in 'aeiou' else 'a'
    parts = ['what', article, modifier, head]
  else:  # 'pair': two adjectives of one polarity
    other = rng.choice([w for w in items if w != item])
    if negate:
      parts = [head, copula, 'neither', word, 'nor', other]
    else:
      parts = [head, copula, intensifier, word, 'and', other]
  opener = '' if template == 'exclaim' else _maybe(rng, 0.25, rng.choice(_OPENERS))
  text = ' '.join(p for p in [opener] + parts if p)
  text += '!' if template == 'exclaim' else rng.choice(_ENDINGS)
  if rng.random() < 0.2:
    text = text[0].upper() + text[1:]
  return text


def _partition(rng: random.Random) -> Dict[str, Dict[Tuple[str, bool], list]]:
  """split -> (template, polarity) -> the (head, item) combinations of that split."""
  plan = {split: collections.defaultdict(list) for split in SPLITS}
  for template, (_, _, heads, items) in _TEMPLATES.items():
    for polarity in (True, False):
      for item in items[polarity]:
        order = list(heads)
        rng.shuffle(order)
        n_dev = max(1, round(_HELD_OUT['dev'] * len(order)))
        n_test = max(1, round(_HELD_OUT['test'] * len(order)))
        chunks = {'dev': order[:n_dev], 'test': order[n_dev:n_dev + n_test],
                  'train': order[n_dev + n_test:]}
        for split, chosen in chunks.items():
          plan[split][(template, polarity)].extend((head, item) for head in chosen)
  return plan


def generate_demo_dataset(data_dir: str, num_train: int = 2000, num_dev: int = 400,
                          num_test: int = 200, seed: int = 0) -> Dict[str, str]:
  """Writes train.tsv, dev.tsv and test.tsv of sentiment sentences (SST-2 layout).

  train/dev have the header 'sentence<TAB>label' and the labels 'negative' /
  'positive' (alternating, then shuffled: balanced to within one); test.tsv
  is 'index<TAB>sentence'. Sentences come from five templates ("the plot was
  really dull", "the film was beautifully shot", "I did not enjoy the
  ending at all", "what a clever script!", "the cast was neither weak nor
  bland"); about 13% are negated, which flips the label, so single words do
  not decide it. Dev and test use (template, subject, sentiment word)
  combinations held out of training; no sentence is in two splits. Every
  word of dev and test occurs in train. Deterministic for a seed.

  Returns:
    {'train': path, 'dev': path, 'test': path}.
  """
  sizes = {'train': num_train, 'dev': num_dev, 'test': num_test}
  for split, n in sizes.items():
    if not isinstance(n, int) or n < 0:
      raise ValueError(f'num_{split} must be an int >= 0, got {n!r}.')
  rng = random.Random(seed)
  plan = _partition(rng)
  names = list(_TEMPLATES)
  weights = [_TEMPLATES[t][0] for t in names]
  seen = set()
  rows_by_split = {}
  for split, n in sizes.items():
    rows = []
    attempts = 0
    while len(rows) < n:
      attempts += 1
      if attempts > 50 * n + 1000:
        raise ValueError(f'could not generate {n} distinct {split} sentences; ask for fewer '
                         f'(num_{split}={n}).')
      positive = len(rows) % 2 == 0
      template = rng.choices(names, weights)[0]
      negate = _TEMPLATES[template][1] and rng.random() < _NEGATION_RATE
      polarity = positive != negate
      head, item = rng.choice(plan[split][(template, polarity)])
      text = _render(rng, template, head, item, polarity, negate)
      if text.lower() in seen:
        continue
      seen.add(text.lower())
      rows.append((text, DemoProcessor.labels[int(positive)]))
    rng.shuffle(rows)
    rows_by_split[split] = rows
  tf.io.gfile.makedirs(data_dir)
  paths = {}
  for split, rows in rows_by_split.items():
    if split == 'test':
      lines = ['index\tsentence'] + [f'{i}\t{text}' for i, (text, _) in enumerate(rows)]
    else:
      lines = ['sentence\tlabel'] + [f'{text}\t{label}' for text, label in rows]
    paths[split] = os.path.join(data_dir, f'{split}.tsv')
    _write_atomically(paths[split], ('\n'.join(lines) + '\n').encode('utf-8'))
  return paths


def build_vocab(examples: Iterable[InputExample], vocab_file: str, do_lower_case: bool = True,
                min_count: int = 1, max_size: int = 8000) -> int:
  """Writes a WordPiece vocab for a model trained from scratch; returns its size.

  Order: [PAD] [UNK] [CLS] [SEP] [MASK] (so [PAD] is id 0), every character
  seen and its '##' continuation (so any word of those characters tokenizes
  without [UNK]), then whole words (as BasicTokenizer splits them) seen at
  least min_count times, most frequent first, until max_size tokens.

  Raises:
    ValueError: if max_size cannot hold the special tokens and characters.
  """
  if min_count < 1:
    raise ValueError(f'min_count must be >= 1, got {min_count}.')
  basic = tokenization.BasicTokenizer(do_lower_case=do_lower_case)
  words = collections.Counter()
  for example in examples:
    for text in (example.text_a, example.text_b):
      if text:
        words.update(basic.tokenize(text))
  chars = sorted({c for word in words for c in word})
  tokens = list(SPECIAL_TOKENS) + chars + [f'##{c}' for c in chars]
  if len(tokens) > max_size:
    raise ValueError(f'max_size={max_size} cannot hold the {len(SPECIAL_TOKENS)} special '
                     f'tokens and {len(chars)} characters (x2 with "##"); use max_size >= '
                     f'{len(tokens)}.')
  frequent = sorted((w for w, n in words.items() if n >= min_count and len(w) > 1),
                    key=lambda w: (-words[w], w))
  tokens += frequent[:max_size - len(tokens)]
  _write_atomically(vocab_file, ('\n'.join(tokens) + '\n').encode('utf-8'))
  return len(tokens)


# ----- TFRecords -----

def convert_example(example: InputExample, label_list: Sequence[str], max_seq_length: int,
                    tokenizer: tokenization.FullTokenizer) -> InputFeatures:
  """Tokenizes one example into max_seq_length ids, mask and segment ids.

  A label of None (an unlabelled test example) becomes label_id 0.

  Raises:
    ValueError: naming the label, the example and the known labels, when the
      label is not in label_list.
  """
  labels = list(label_list)
  if example.label is None:
    label_id = 0
  elif example.label in labels:
    label_id = labels.index(example.label)
  else:
    raise ValueError(f'example {example.guid} has label {example.label!r}, which is not one '
                     f'of the labels {labels}; check --task_name and the label column.')
  ids, mask, segments = tokenizer.encode(example.text_a, example.text_b, max_seq_length)
  return InputFeatures(ids, mask, segments, label_id)


def _int_feature(values) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=list(values)))


def _serialize(features: InputFeatures) -> bytes:
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

  Each record has int64 features input_ids, input_mask, segment_ids
  [max_seq_length], label_ids [1] and is_real_example [1].

  Args:
    examples: the examples, in order.
    label_list: label names; label_ids are indexes into it.
    max_seq_length: the length of every id list.
    tokenizer: a FullTokenizer.
    output_file: the TFRecord path (written to a temp name beside it, then renamed).
    progress: called as progress(done, total) about every 10% and at the end.
    pad_to_multiple: append all-zero fake examples (is_real_example=0) up to a
      multiple of this, for fixed-size eval batches; 0 for none.
  """
  if pad_to_multiple < 0:
    raise ValueError(f'pad_to_multiple must be >= 0, got {pad_to_multiple}.')
  examples = list(examples)
  total = len(examples)
  padding = (-total) % pad_to_multiple if pad_to_multiple else 0
  every = max(1, total // 10)
  parent = os.path.dirname(output_file)
  if parent:
    tf.io.gfile.makedirs(parent)
  tmp = f'{output_file}.tmp-{uuid.uuid4().hex}'
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for done, example in enumerate(examples, start=1):
        writer.write(_serialize(convert_example(example, label_list, max_seq_length,
                                                tokenizer)))
        if progress and done % every == 0 and done != total:
          progress(done, total)
      zeros = [0] * max_seq_length
      for _ in range(padding):
        writer.write(_serialize(InputFeatures(zeros, zeros, zeros, 0, is_real_example=False)))
    tf.io.gfile.rename(tmp, output_file, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)
  if progress:
    progress(total, total)
  return total + padding


def file_based_input_fn_builder(input_file: str, seq_length: int, is_training: bool,
                                drop_remainder: bool, batch_size: Optional[int] = None,
                                shuffle_buffer: int = 1000, seed: Optional[int] = None):
  """Builds an Estimator input_fn over write_tfrecords' output.

  Args:
    input_file: the TFRecord file.
    seq_length: the max_seq_length it was written with.
    is_training: shuffle (buffer `shuffle_buffer`, `seed`) and repeat forever.
    drop_remainder: drop a last partial batch (static batch size, as TPUs need).
    batch_size: the batch size; None to take params['batch_size'].
  """
  spec = {
      'input_ids': tf.io.FixedLenFeature([seq_length], tf.int64),
      'input_mask': tf.io.FixedLenFeature([seq_length], tf.int64),
      'segment_ids': tf.io.FixedLenFeature([seq_length], tf.int64),
      'label_ids': tf.io.FixedLenFeature([1], tf.int64),
      'is_real_example': tf.io.FixedLenFeature([1], tf.int64),
  }

  def decode(records):
    parsed = tf.io.parse_example(records, spec)
    features = {k: tf.cast(parsed[k], tf.int32)
                for k in ('input_ids', 'input_mask', 'segment_ids')}
    features['label_ids'] = tf.cast(parsed['label_ids'][:, 0], tf.int32)
    features['is_real_example'] = tf.cast(parsed['is_real_example'][:, 0], tf.float32)
    return features, features['label_ids']

  def input_fn(params=None):
    """A tf.data.Dataset of (features, labels).

    features: input_ids, input_mask, segment_ids (int32 Tensors of shape
    [batch, seq_length]), label_ids (int32 [batch]) and is_real_example
    (float32 [batch], 0.0 on padding examples); labels: label_ids.
    """
    size = batch_size or (params or {}).get('batch_size')
    if not size or size < 1:
      raise ValueError(f'batch size {size!r}: pass batch_size= to '
                       'file_based_input_fn_builder or params["batch_size"] >= 1.')
    if not tf.io.gfile.exists(input_file):
      raise FileNotFoundError(f'{input_file} does not exist; write it with write_tfrecords.')
    dataset = tf.data.TFRecordDataset(input_file)
    if is_training:
      dataset = dataset.shuffle(shuffle_buffer, seed=seed).repeat()
    dataset = dataset.batch(size, drop_remainder=drop_remainder)
    return dataset.map(decode, num_parallel_calls=tf.data.AUTOTUNE).prefetch(1)

  return input_fn


def _write_atomically(path: str, content: bytes) -> None:
  tmp = f'{path}.tmp-{uuid.uuid4().hex}'
  try:
    with tf.io.gfile.GFile(tmp, 'wb') as f:
      f.write(content)
    tf.io.gfile.rename(tmp, path, overwrite=True)
  finally:
    if tf.io.gfile.exists(tmp):
      tf.io.gfile.remove(tmp)


def define_flags(flag_values: Optional[flags.FlagValues] = None) -> None:
  """Defines this script's flags (in flag_values, default the global FLAGS)."""
  fv = flags.FLAGS if flag_values is None else flag_values
  flags.DEFINE_string('data_dir', None, 'Where to write the demo dataset.', flag_values=fv)
  flags.DEFINE_integer('num_train', 2000, 'Training sentences.', flag_values=fv)
  flags.DEFINE_integer('num_dev', 400, 'Held-out sentences.', flag_values=fv)
  flags.DEFINE_integer('num_test', 200, 'Unlabelled test sentences.', flag_values=fv)
  flags.DEFINE_integer('seed', 0, 'Random seed.', flag_values=fv)
  flags.mark_flag_as_required('data_dir', flag_values=fv)


def main(argv, flag_values: Optional[flags.FlagValues] = None) -> None:
  """Generates the demo dataset the flags describe and prints its paths."""
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments {argv[1:]}; pass --data_dir=DIR.')
  fv = flags.FLAGS if flag_values is None else flag_values
  paths = generate_demo_dataset(fv.data_dir, fv.num_train, fv.num_dev, fv.num_test, fv.seed)
  for split, path in paths.items():
    print(f'{split}: {path}')


if __name__ == '__main__':
  from absl import app  # pylint: disable=g-import-not-at-top
  define_flags()
  app.run(main)
