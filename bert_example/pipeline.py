"""Fine-tune, evaluate, predict and export a BERT classifier from plain settings.

`run_classifier.py` turns its absl flags into `ClassifierSettings` and calls
`run`; the demo calls `run` directly. Nothing here reads flags.
"""
import dataclasses
import os
import time
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import tensorflow as tf

import estimator_export as ee
from bert_example import data as data_lib
from bert_example import model as model_lib
from bert_example import modeling
from bert_example import tokenization

PrintFn = Callable[[str], None]
_PROGRESS_FROM = 20000  # Tokenizing fewer examples takes a few seconds: no progress lines.


@dataclasses.dataclass(frozen=True)
class ClassifierSettings:
  """What run_classifier's flags say, as plain values (see its flag help)."""
  task_name: str
  data_dir: str
  vocab_file: str
  bert_config_file: str
  output_dir: str
  init_checkpoint: Optional[str] = None
  do_lower_case: bool = True
  max_seq_length: int = 128
  train_batch_size: int = 32
  eval_batch_size: int = 8
  predict_batch_size: int = 8
  learning_rate: float = 5e-5
  num_train_epochs: float = 3.0
  warmup_proportion: float = 0.1
  save_checkpoints_steps: int = 1000
  do_train: bool = False
  do_eval: bool = False
  do_predict: bool = False
  do_export: bool = False
  export_dir: Optional[str] = None
  export_formats: Sequence[str] = model_lib.FORMATS
  export_options: ee.ExportOptions = dataclasses.field(default_factory=ee.ExportOptions)
  progress_every: int = 20
  seed: Optional[int] = 0
  eval_start_delay_secs: float = 5.0  # Distributed jobs only (bert_example.distributed).
  eval_throttle_secs: float = 30.0


@dataclasses.dataclass
class ClassifierRun:
  """What `run` produced."""
  model: model_lib.BertClassifier
  estimator: tf.estimator.Estimator
  train_steps: int = 0
  train_seconds: float = 0.0
  eval_metrics: Dict[str, float] = dataclasses.field(default_factory=dict)
  predictions_file: Optional[str] = None
  export: Optional[ee.ExportResult] = None


def check_settings(s: ClassifierSettings) -> None:
  """Raises ValueError naming the first inconsistent setting and the fix."""
  if not (s.do_train or s.do_eval or s.do_predict or s.do_export):
    raise ValueError('nothing to do: set at least one of --do_train, --do_eval, '
                     '--do_predict, --do_export.')
  for name in ('vocab_file', 'bert_config_file'):
    path = getattr(s, name)
    if not path or not tf.io.gfile.exists(path):
      raise ValueError(f'--{name}={path!r} does not exist; give the file that came with '
                       'the checkpoint (or one bert_example.convert_checkpoint wrote).')
  if s.do_export and not s.export_dir:
    raise ValueError('--do_export needs --export_dir (TF Serving --model_base_path).')
  if s.max_seq_length < 3:
    raise ValueError(f'--max_seq_length={s.max_seq_length} cannot hold [CLS] a [SEP] b '
                     '[SEP]; use at least 3 (128 is usual).')
  tokenization.validate_case_matches_checkpoint(s.do_lower_case, s.init_checkpoint)
  if s.do_export and not s.do_train and not tf.train.latest_checkpoint(s.output_dir):
    raise ee.CheckpointNotFoundError(
        'nothing to export: no trained checkpoint in --output_dir', value=s.output_dir,
        fix='run with --do_train first (or with it), or point --output_dir at the directory '
        'of a fine-tuned model')


def _record_file(s: ClassifierSettings, split: str, examples, label_list, tokenizer, print_fn,
                 pad_to: int = 0) -> str:
  path = os.path.join(s.output_dir, f'{split}.tf_record')
  started = time.time()

  def progress(done, total):
    print_fn(f'      {split}: {done}/{total} examples tokenized')

  count = data_lib.write_tfrecords(
      examples, label_list, s.max_seq_length, tokenizer, path,
      progress=progress if len(examples) >= _PROGRESS_FROM else None, pad_to_multiple=pad_to)
  print_fn(f'      wrote {count} {split} records to {path} ({time.time() - started:.1f}s)')
  return path


def build_model(s: ClassifierSettings, label_list: Sequence[str], num_train_steps: int,
                bert_config: Optional[modeling.BertConfig] = None
               ) -> model_lib.BertClassifier:
  """The BertClassifier the settings describe."""
  bert_config = bert_config or modeling.BertConfig.from_json_file(s.bert_config_file)
  return model_lib.BertClassifier(
      bert_config, label_list, s.max_seq_length, vocab_file=s.vocab_file,
      do_lower_case=s.do_lower_case, init_checkpoint=s.init_checkpoint,
      learning_rate=s.learning_rate, num_train_steps=max(1, num_train_steps),
      num_warmup_steps=int(num_train_steps * s.warmup_proportion))


def run(s: ClassifierSettings, print_fn: PrintFn = print) -> ClassifierRun:
  """Does what the settings ask, in order: train, evaluate, predict, export."""
  check_settings(s)
  tf.io.gfile.makedirs(s.output_dir)
  processor = data_lib.get_processor(s.task_name)
  label_list = processor.get_labels()
  tokenizer = tokenization.FullTokenizer(s.vocab_file, s.do_lower_case)
  train_examples = processor.get_train_examples(s.data_dir) if s.do_train else []
  num_train_steps = int(len(train_examples) / s.train_batch_size * s.num_train_epochs)
  if s.do_train and num_train_steps < 1:
    raise ValueError(f'{len(train_examples)} training examples, batch '
                     f'{s.train_batch_size} and {s.num_train_epochs} epoch(s) make no '
                     'training step; add data, lower --train_batch_size or raise '
                     '--num_train_epochs.')
  model = build_model(s, label_list, num_train_steps)
  config = tf.estimator.RunConfig(model_dir=s.output_dir,
                                  save_checkpoints_steps=s.save_checkpoints_steps,
                                  log_step_count_steps=10 ** 9, save_summary_steps=10 ** 9,
                                  keep_checkpoint_max=2, tf_random_seed=s.seed)
  estimator = model.make_estimator(s.output_dir, config=config)
  result = ClassifierRun(model=model, estimator=estimator)

  if s.do_train:
    print_fn(f'[train] {len(train_examples)} examples, batch {s.train_batch_size}, '
             f'{s.num_train_epochs:g} epoch(s): {num_train_steps} steps')
    path = _record_file(s, 'train', train_examples, label_list, tokenizer, print_fn)
    input_fn = data_lib.file_based_input_fn_builder(
        path, s.max_seq_length, is_training=True, drop_remainder=True,
        batch_size=s.train_batch_size, seed=s.seed)
    started = time.time()
    estimator.train(input_fn, max_steps=num_train_steps,
                    hooks=[ee.ProgressHook(s.progress_every, num_train_steps,
                                           print_fn=print_fn, prefix='      ')])
    result.train_steps = num_train_steps
    result.train_seconds = time.time() - started
    if model.init_report is not None:
      print_fn('      ' + str(model.init_report).split('\n')[0])
    print_fn(f'      trained in {result.train_seconds:.1f}s')

  if s.do_eval:
    examples = processor.get_dev_examples(s.data_dir)
    print_fn(f'[eval] {len(examples)} held-out examples')
    path = _record_file(s, 'eval', examples, label_list, tokenizer, print_fn,
                        pad_to=s.eval_batch_size)
    input_fn = data_lib.file_based_input_fn_builder(
        path, s.max_seq_length, is_training=False, drop_remainder=False,
        batch_size=s.eval_batch_size)
    metrics = estimator.evaluate(input_fn)
    result.eval_metrics = {k: float(v) for k, v in metrics.items()}
    with tf.io.gfile.GFile(os.path.join(s.output_dir, 'eval_results.txt'), 'w') as f:
      for key in sorted(result.eval_metrics):
        f.write(f'{key} = {result.eval_metrics[key]}\n')
    print_fn('      ' + ', '.join(f'{k} {v:.4f}' for k, v in sorted(result.eval_metrics.items())
                                  if k != 'global_step'))

  if s.do_predict:
    examples = processor.get_test_examples(s.data_dir)
    print_fn(f'[predict] {len(examples)} test examples')
    result.predictions_file = predict_to_tsv(s, estimator, examples, label_list, tokenizer,
                                             print_fn)

  if s.do_export:
    print_fn(f'[export] to {s.export_dir} with formats {", ".join(s.export_formats)}')
    sample_examples = (processor.get_dev_examples(s.data_dir) or train_examples)[:4]
    samples = model.samples([e.text_a for e in sample_examples],
                            [e.text_b for e in sample_examples] if processor.is_pair else None)
    if 'text' not in s.export_formats:
      samples = {k: v for k, v in samples.items()
                 if k not in (model_lib.TEXT_KEY, model_lib.TEXT_A, model_lib.TEXT_B)}
    result.export = model.export_for_serving(
        estimator, s.export_dir, formats=tuple(s.export_formats), samples=samples,
        metrics={k: v for k, v in result.eval_metrics.items() if k != 'global_step'},
        options=s.export_options)
    print_fn(f'      version {result.export.version} at {result.export.path}: '
             f'{", ".join(result.export.signatures)}')
  return result


def predict_to_tsv(s: ClassifierSettings, estimator, examples, label_list, tokenizer,
                   print_fn: PrintFn) -> str:
  """Writes test_results.tsv: one row of class probabilities per example."""
  path = _record_file(s, 'predict', examples, label_list, tokenizer, print_fn)
  input_fn = data_lib.file_based_input_fn_builder(
      path, s.max_seq_length, is_training=False, drop_remainder=False,
      batch_size=s.predict_batch_size)
  ids_only = lambda params=None: input_fn(params).map(
      lambda features, labels: {k: features[k] for k in model_lib.ID_FEATURES})
  out = os.path.join(s.output_dir, 'test_results.tsv')
  rows = 0
  with tf.io.gfile.GFile(out, 'w') as f:
    f.write('\t'.join(['guid', 'label'] + list(label_list)) + '\n')
    for example, pred in zip(examples, estimator.predict(ids_only)):
      probs = pred['probabilities']
      f.write('\t'.join([example.guid, label_list[int(np.argmax(probs))]] +
                        [f'{p:.6f}' for p in probs]) + '\n')
      rows += 1
  print_fn(f'      wrote {rows} predictions to {out}')
  return out


def estimator_probabilities(model: model_lib.BertClassifier, estimator,
                            texts_a: Sequence[str], texts_b: Optional[Sequence[str]] = None
                           ) -> np.ndarray:
  """estimator.predict's probabilities (float32 [n, num_labels]) for raw sentences."""
  feats = model.samples(texts_a, texts_b)
  ids = {k: feats[k] for k in model_lib.ID_FEATURES}

  def input_fn(params=None):
    del params
    return tf.data.Dataset.from_tensor_slices(ids).batch(len(texts_a))

  preds: List[np.ndarray] = [p['probabilities'] for p in estimator.predict(input_fn)]
  return np.stack(preds)
