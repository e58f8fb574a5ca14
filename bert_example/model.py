"""A BERT sentence(-pair) classifier as an estimator_export model class.

    model = BertClassifier(bert_config, label_list=['negative', 'positive'],
                           max_seq_length=128, vocab_file='vocab.txt',
                           init_checkpoint='bert_model.ckpt', num_train_steps=1000)
    estimator = model.make_estimator('/tmp/bert')
    estimator.train(train_input_fn, max_steps=1000)
    result = model.export_for_serving(estimator, '/models/bert',
                                      samples=model.samples(['a great film']))

The export has three kinds of signature:
  serving_default / predict   token ids: input_ids, input_mask, segment_ids,
                               int32 [batch, max_seq_length];
  examples:*                   serialized tf.Examples of those features, with
                               examples:classify (classes are label names);
  text                         raw sentences: text, string [batch];
  text_pair                    raw sentence pairs: text_a and text_b, string
                               [batch] each; both tokenized in-graph with the
                               vocabulary shipped as a SavedModel asset.
Every predict signature returns probabilities (float32 [batch, num_labels]),
label_id (int32 [batch]), label_name (string [batch]), logits, and
all_label_names (string [batch, num_labels]: the name of each probability).

The training-only features label_ids and is_real_example never appear in a
serving signature.
"""
import dataclasses
from typing import Any, Dict, Optional, Sequence

import numpy as np
import tensorflow as tf

import estimator_export as ee
from bert_example import checkpoint as checkpoint_lib
from bert_example import modeling
from bert_example import optimization
from bert_example import tokenization

ModeKeys = tf.estimator.ModeKeys

TEXT_KEY, TEXT_A, TEXT_B = 'text', 'text_a', 'text_b'
TEXT_SIGNATURE, PAIR_SIGNATURE = 'text', 'text_pair'
ID_FEATURES = ('input_ids', 'input_mask', 'segment_ids')
FORMATS = ('raw', 'example', 'text')


class BertClassifier(ee.ServingModelMixin):
  """BERT encoder + a softmax layer on the pooled [CLS] output.

  Variables use Google's names (bert/..., output_weights, output_bias), so a
  fine-tuned checkpoint is laid out like google-research/bert's.
  """
  default_signature = 'predict'

  def __init__(self, bert_config: modeling.BertConfig, label_list: Sequence[str],
               max_seq_length: int, vocab_file: Optional[str] = None,
               do_lower_case: bool = True, init_checkpoint: Optional[str] = None,
               learning_rate: float = 5e-5, num_train_steps: int = 100,
               num_warmup_steps: int = 10, classifier_dropout: float = 0.1):
    """Args:
      bert_config: the encoder's BertConfig.
      label_list: class names; label id i is label_list[i].
      max_seq_length: sequence length of every input.
      vocab_file: WordPiece vocabulary; needed for the `text` signature.
      do_lower_case: the tokenizer's casing (must match the checkpoint).
      init_checkpoint: Google-layout BERT checkpoint to start training from.
      learning_rate, num_train_steps, num_warmup_steps: the optimiser schedule.
      classifier_dropout: dropout on the pooled output while training.
    """
    if len(label_list) < 2:
      raise ValueError(f'label_list needs at least two labels, got {list(label_list)}.')
    if max_seq_length > bert_config.max_position_embeddings:
      raise ValueError(f'max_seq_length={max_seq_length} exceeds the model\'s '
                       f'max_position_embeddings={bert_config.max_position_embeddings}; '
                       'use a shorter --max_seq_length.')
    self.bert_config = bert_config
    self.label_vocabulary = tuple(label_list)
    self.max_seq_length = max_seq_length
    self.vocab_file = vocab_file
    self.do_lower_case = do_lower_case
    self.init_checkpoint = init_checkpoint
    self.learning_rate = learning_rate
    self.num_train_steps = num_train_steps
    self.num_warmup_steps = num_warmup_steps
    self.classifier_dropout = classifier_dropout
    self.init_report: Optional[checkpoint_lib.InitReport] = None
    seq = (max_seq_length,)
    self.feature_spec = ee.FeatureSpec([
        ee.Feature('input_ids', 'int32', shape=seq, description='WordPiece ids'),
        ee.Feature('input_mask', 'int32', shape=seq, description='1 on real tokens'),
        ee.Feature('segment_ids', 'int32', shape=seq, description='0: text_a, 1: text_b'),
        ee.Feature('label_ids', 'int32', training_only=True),
        ee.Feature('is_real_example', 'float32', default=1.0, training_only=True),
    ])
    self._tokenizer = None

  @property
  def tokenizer(self) -> tokenization.FullTokenizer:
    """The Python tokenizer of vocab_file (what the `text` signature does in-graph)."""
    if self._tokenizer is None:
      if not self.vocab_file:
        raise ValueError('BertClassifier has no vocab_file; pass vocab_file= to tokenize.')
      self._tokenizer = tokenization.FullTokenizer(self.vocab_file, self.do_lower_case)
    return self._tokenizer

  # ----- the model -----
  def predictions(self, features, mode, params):
    is_training = mode == ModeKeys.TRAIN
    bert = modeling.BertModel(self.bert_config, is_training=is_training,
                              input_ids=features['input_ids'],
                              input_mask=features['input_mask'],
                              token_type_ids=features['segment_ids'])
    pooled = bert.get_pooled_output()  # float32 [batch, hidden_size]
    num_labels = len(self.label_vocabulary)
    weights = tf.compat.v1.get_variable(
        'output_weights', [num_labels, self.bert_config.hidden_size],
        initializer=tf.compat.v1.truncated_normal_initializer(stddev=0.02))
    bias = tf.compat.v1.get_variable('output_bias', [num_labels],
                                     initializer=tf.compat.v1.zeros_initializer())
    if is_training and self.classifier_dropout:
      pooled = tf.nn.dropout(pooled, rate=self.classifier_dropout)
    logits = tf.nn.bias_add(tf.matmul(pooled, weights, transpose_b=True), bias)
    label_id = tf.argmax(logits, axis=-1, output_type=tf.int32)
    names = tf.constant(list(self.label_vocabulary), dtype=tf.string)
    if self.init_checkpoint and mode != ModeKeys.PREDICT:
      self.init_report = checkpoint_lib.init_from_checkpoint(self.init_checkpoint)
    all_names = tf.tile(names[tf.newaxis, :], [tf.shape(logits)[0], 1])
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits, axis=-1),
            'label_id': label_id, 'label_name': tf.gather(names, label_id),
            'all_label_names': all_names}

  def loss(self, predictions, labels, features, mode, params):
    weights = features.get('is_real_example')
    if weights is None:
      weights = tf.ones_like(features['label_ids'], dtype=tf.float32)
    return tf.compat.v1.losses.sparse_softmax_cross_entropy(
        features['label_ids'], predictions['logits'], weights=weights)

  def train_op(self, loss, params):
    return optimization.create_train_op(loss, self.learning_rate, self.num_train_steps,
                                        self.num_warmup_steps)

  def eval_metric_ops(self, predictions, labels, features, params):
    weights = features.get('is_real_example')
    per_example = tf.compat.v1.losses.sparse_softmax_cross_entropy(
        features['label_ids'], predictions['logits'],
        reduction=tf.compat.v1.losses.Reduction.NONE)
    return {'accuracy': tf.compat.v1.metrics.accuracy(features['label_ids'],
                                                      predictions['label_id'], weights),
            'eval_loss': tf.compat.v1.metrics.mean(per_example, weights)}

  # ----- serving -----
  def tokenizer_fn(self, text_a_key: str = TEXT_A):
    """The in-graph tokenizer: {text_a_key[, text_b]} strings [batch] -> id features."""
    if not self.vocab_file:
      raise ValueError("the 'text' format needs vocab_file; pass vocab_file= to "
                       'BertClassifier or leave text out of the export formats.')
    from bert_example import text_ops  # pylint: disable=g-import-not-at-top
    return text_ops.build_tokenizer_fn(self.vocab_file, self.do_lower_case,
                                       self.max_seq_length, text_a_key, TEXT_B)

  def text_receivers(self) -> Dict[str, ee.ServingReceiverFn]:
    """{'text': sentences, 'text_pair': sentence pairs}, tokenized in-graph.

    Two receivers rather than one with an optional second input, because TF
    Serving's Predict requires every input of a signature in each request.
    """
    spec = self.feature_spec
    return {TEXT_SIGNATURE: ee.build_text_receiver_fn(self.tokenizer_fn(TEXT_KEY), spec,
                                                      text_keys=(TEXT_KEY,)),
            PAIR_SIGNATURE: ee.build_text_receiver_fn(self.tokenizer_fn(TEXT_A), spec,
                                                      text_keys=(TEXT_A, TEXT_B))}

  def serving_input_receiver_fn(self, kind: Any = FORMATS, **kwargs):
    """Receivers for `kind`: a sequence of FORMATS (primary first) or a mixin kind.

    ('raw', 'example', 'text') gives serving_default on ids, examples:* on
    tf.Examples, and text:* / text_pair:* on raw sentences and pairs.
    """
    if isinstance(kind, str):
      if kind not in ('text',):
        return super().serving_input_receiver_fn(kind, **kwargs)
      kind = (kind,)
    formats = tuple(kind)
    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
      raise ee.ReceiverError('unknown export format(s) for BERT', value=unknown or formats,
                             fix=f'use some of {", ".join(FORMATS)}, primary first')
    spec = self.feature_spec
    alternatives = {}
    for f in formats[1:]:
      if f == 'raw':
        alternatives['raw'] = ee.build_raw_receiver_fn(spec, **kwargs)
      elif f == 'example':
        alternatives['examples'] = ee.build_example_receiver_fn(spec)
      else:
        alternatives.update(self.text_receivers())
    if formats[0] == 'text':
      text = self.text_receivers()
      primary = text.pop(TEXT_SIGNATURE)
      alternatives.update(text)
    elif formats[0] == 'example':
      primary = ee.build_example_receiver_fn(spec)
    else:
      primary = ee.build_raw_receiver_fn(spec, **kwargs)
    if not alternatives:
      return primary
    return ee.build_combined_receiver_fn(primary, alternatives)

  def signature_aliases(self, formats: Sequence[str] = FORMATS) -> Dict[str, str]:
    """{'text': 'text:predict', 'text_pair': ...} when text is an alternative receiver."""
    if 'text' in tuple(formats)[1:]:
      return {name: f'{name}:predict' for name in (TEXT_SIGNATURE, PAIR_SIGNATURE)}
    return {}

  def samples(self, texts_a: Sequence[str], texts_b: Optional[Sequence[str]] = None
             ) -> Dict[str, np.ndarray]:
    """Export samples: the sentences (for text, text_pair) and their ids (for the rest)."""
    out = encode_ids(self.tokenizer, self.max_seq_length, texts_a, texts_b)
    out[TEXT_A] = string_array(texts_a)
    out[TEXT_B] = string_array(texts_b if texts_b is not None else texts_a)
    if texts_b is None:  # Single sentences: `text` gets them, and their ids match.
      out[TEXT_KEY] = out[TEXT_A]
    return out

  def export_for_serving(self, estimator, export_dir_base: str, receiver_fn=None,
                         formats: Sequence[str] = FORMATS, **kwargs) -> ee.ExportResult:
    """Exports with `formats` (default: ids, tf.Examples and text); see the module doc."""
    if receiver_fn is None:
      receiver_fn = self.serving_input_receiver_fn(tuple(formats))
    options = kwargs.pop('options', None) or ee.ExportOptions()
    aliases = dict(self.signature_aliases(formats))
    aliases.update(options.signature_aliases)
    kwargs['options'] = dataclasses.replace(options, signature_aliases=aliases)
    return super().export_for_serving(estimator, export_dir_base, receiver_fn, **kwargs)


def encode_ids(tokenizer: tokenization.FullTokenizer, max_seq_length: int,
               texts_a: Sequence[str], texts_b: Optional[Sequence[str]] = None
              ) -> Dict[str, np.ndarray]:
  """The ids signature's inputs for sentences (or pairs): int32 [n, max_seq_length] each."""
  if texts_b is not None and len(texts_b) != len(texts_a):
    raise ValueError(f'{len(texts_b)} second sentences for {len(texts_a)} first sentences; '
                     'give one second sentence per first sentence, or none.')
  encoded = [tokenizer.encode(a, None if texts_b is None else texts_b[i], max_seq_length)
             for i, a in enumerate(texts_a)]
  return {name: np.array([e[i] for e in encoded], np.int32)
          for i, name in enumerate(ID_FEATURES)}


def string_array(texts: Sequence[tokenization.TextLike]) -> np.ndarray:
  """object [n] of UTF-8 bytes: what the text signatures take."""
  return np.array([tokenization.to_text(t).encode('utf-8') for t in texts], object)
