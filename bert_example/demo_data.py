r"""The generated demo sentiment dataset (SST-2 layout, labels negative/positive).

    python -m bert_example.demo_data --data_dir=/tmp/demo_data

Sentences come from templates and word lists written here; nothing is
downloaded. Read them with `bert_example.data.get_processor('demo')`.
"""
import collections
import os
import random
from typing import Dict, Optional, Tuple

from absl import flags
import tensorflow as tf

from bert_example.data import SPLITS, DemoProcessor, write_atomically

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
    write_atomically(paths[split], ('\n'.join(lines) + '\n').encode('utf-8'))
  return paths


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
