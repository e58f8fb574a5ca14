"""run_classifier on a tf.estimator cluster: one role per process, chosen by TF_CONFIG.

Every role runs the same command; `tf.estimator.train_and_evaluate` does what
the role needs:

    ps         serves the variables until it is stopped (never returns);
    chief      trains (and initialises variables, writes checkpoints);
    worker     trains asynchronously on the parameter servers' variables;
    evaluator  evaluates each new checkpoint (at most once per
               eval_throttle_secs, always the last) and, with do_export,
               exports it to export_dir through the library's exporter, with
               the same validation, warmup, retention and atomic publish as a
               one-machine export.

Tokenized record files are per task (`train.chief-0.tf_record`, ...), so the
processes never write the same file. Nothing here reads flags.
"""
import dataclasses
import os
import re
import time
from typing import Dict, Mapping, Optional

import tensorflow as tf

import estimator_export as ee
from bert_example import data as data_lib
from bert_example import model as model_lib
from bert_example import pipeline
from bert_example import tokenization
from estimator_export import cluster as cluster_lib
from estimator_export import exporters as exporters_lib


class _ExportDirExporter(ee.ServingExporter):
  """The library's exporter, writing to the user's export_dir (not model_dir/export/NAME).

  Keeps the metrics of the last evaluation, which train_and_evaluate does not
  return in a distributed job.
  """

  def __init__(self, export_dir: str, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._export_dir = export_dir
    self.last_metrics: Dict[str, float] = {}

  def export(self, estimator, export_path, checkpoint_path, eval_result,
             is_the_final_export):
    del export_path  # tf.estimator's <model_dir>/export/<name>; ours is export_dir.
    self.last_metrics = {k: float(v) for k, v in (eval_result or {}).items()}
    return super().export(estimator, self._export_dir, checkpoint_path, eval_result,
                          is_the_final_export)


class _LastMetricsExporter(tf.estimator.Exporter):
  """Exports nothing; keeps the last evaluation's metrics (runs without do_export)."""
  name = 'metrics'

  def __init__(self):
    self.last_metrics: Dict[str, float] = {}

  def export(self, estimator, export_path, checkpoint_path, eval_result,
             is_the_final_export):
    self.last_metrics = {k: float(v) for k, v in (eval_result or {}).items()}
    return None


def check_cluster_settings(s: pipeline.ClassifierSettings, config: Mapping) -> None:
  """Raises ValueError naming what a cluster run cannot do and the fix."""
  if not s.do_train:
    raise ValueError('TF_CONFIG names a cluster but --do_train is not set: a cluster trains. '
                     'Unset TF_CONFIG to evaluate, predict or export on one machine.')
  if s.do_predict:
    raise ValueError('--do_predict does not run in a cluster (TF_CONFIG is set); run it '
                     'afterwards on one machine with the same --output_dir, without TF_CONFIG.')
  del config  # The evaluator is outside the cluster spec: other tasks cannot see it.


def run(s: pipeline.ClassifierSettings, config: Mapping,
        print_fn: pipeline.PrintFn = print) -> Optional[Dict[str, float]]:
  """Runs this process's role of the cluster in `config` (a parsed TF_CONFIG).

  Returns:
    On the evaluator, the last evaluation's metrics (also in eval_results.txt);
    None on the other roles. A parameter server never returns.
  """
  pipeline.check_settings(s)
  check_cluster_settings(s, config)
  task = cluster_lib.task_of(config)
  tf.io.gfile.makedirs(s.output_dir)
  processor = data_lib.get_processor(s.task_name)
  label_list = processor.get_labels()
  train_examples = processor.get_train_examples(s.data_dir)
  num_train_steps = int(len(train_examples) / s.train_batch_size * s.num_train_epochs)
  if num_train_steps < 1:
    raise ValueError(f'{len(train_examples)} training examples, batch '
                     f'{s.train_batch_size} and {s.num_train_epochs} epoch(s) make no '
                     'training step; add data, lower --train_batch_size or raise '
                     '--num_train_epochs.')
  model = pipeline.build_model(s, label_list, num_train_steps)
  run_config = tf.estimator.RunConfig(  # Reads TF_CONFIG: the cluster and this task.
      model_dir=s.output_dir, save_checkpoints_steps=s.save_checkpoints_steps,
      log_step_count_steps=10 ** 9, save_summary_steps=10 ** 9, keep_checkpoint_max=3,
      tf_random_seed=s.seed)
  estimator = model.make_estimator(s.output_dir, config=run_config)
  tokenizer = tokenization.FullTokenizer(s.vocab_file, s.do_lower_case)
  where = ('outside the cluster' if task.type == cluster_lib.EVALUATOR
           else config['cluster'][task.type][task.index])
  print_fn(f'[{task.name}] {num_train_steps} training steps; this task: {where}')
  if task.type == cluster_lib.CHIEF and (s.do_eval or s.do_export):
    print_fn('      evaluation and exports run on the evaluator task (without one, none run)')

  train_input_fn = eval_input_fn = None
  hooks = []
  if task.type in (cluster_lib.CHIEF, cluster_lib.WORKER):
    path = _task_record_file(s, task, 'train', train_examples, label_list, tokenizer,
                             print_fn)
    index = 0 if task.type == cluster_lib.CHIEF else task.index + 1
    seed = None if s.seed is None else s.seed + index  # Each trainer its own order.
    train_input_fn = data_lib.file_based_input_fn_builder(
        path, s.max_seq_length, is_training=True, drop_remainder=True,
        batch_size=s.train_batch_size, seed=seed)
    hooks.append(ee.ProgressHook(s.progress_every, num_train_steps, print_fn=print_fn,
                                 prefix='      '))
  exporter = None
  if task.type == cluster_lib.EVALUATOR:
    examples = processor.get_dev_examples(s.data_dir)
    path = _task_record_file(s, task, 'eval', examples, label_list, tokenizer, print_fn,
                             pad_to=s.eval_batch_size)
    eval_input_fn = data_lib.file_based_input_fn_builder(
        path, s.max_seq_length, is_training=False, drop_remainder=False,
        batch_size=s.eval_batch_size)
    exporter = (_make_exporter(s, model, processor, examples or train_examples)
                if s.do_export else _LastMetricsExporter())
  train_spec = tf.estimator.TrainSpec(train_input_fn or _never_called, max_steps=num_train_steps,
                                      hooks=hooks)
  eval_spec = tf.estimator.EvalSpec(
      eval_input_fn or _never_called, steps=None, exporters=[exporter] if exporter else None,
      start_delay_secs=s.eval_start_delay_secs, throttle_secs=s.eval_throttle_secs)
  if task.type == cluster_lib.PS:
    print_fn(f'[{task.name}] serving variables until stopped')
  started = time.time()
  if task.type == cluster_lib.EVALUATOR:
    _evaluate_until_done(estimator, train_spec, eval_spec, print_fn)
  else:
    tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
  print_fn(f'[{task.name}] done in {time.time() - started:.1f}s')
  if exporter is None:
    return None
  metrics = {k: v for k, v in exporter.last_metrics.items()}
  with tf.io.gfile.GFile(os.path.join(s.output_dir, 'eval_results.txt'), 'w') as f:
    for key in sorted(metrics):
      f.write(f'{key} = {metrics[key]}\n')
  print_fn('      ' + ', '.join(f'{k} {v:.4f}' for k, v in sorted(metrics.items())))
  if s.do_export:
    versions = ee.numeric_versions(s.export_dir) if tf.io.gfile.isdir(s.export_dir) else []
    print_fn(f'      versions in {s.export_dir}: {", ".join(map(str, versions)) or "none"}')
  return metrics


def _evaluate_until_done(estimator, train_spec, eval_spec, print_fn, attempts: int = 10):
  """The evaluator's train_and_evaluate, resumed when the chief deletes a checkpoint under it.

  The chief keeps the newest `keep_checkpoint_max` checkpoints, so one can be
  deleted while the evaluator restores it; the evaluator then starts again on
  the newest (the exporter skips steps already exported).
  """
  for attempt in range(attempts):
    try:
      return tf.estimator.train_and_evaluate(estimator, train_spec, eval_spec)
    except (ValueError, tf.errors.NotFoundError) as e:
      match = re.search(r'(\S*model\.ckpt-\d+)', str(e))
      if attempt == attempts - 1 or not match or tf.io.gfile.glob(match.group(1) + '.*'):
        raise
      print_fn(f'      {match.group(1)} was deleted while being evaluated; evaluating the '
               'newest checkpoint')
  return None


def _never_called(params=None):
  raise RuntimeError('internal: this task has no input of this kind')


def _task_record_file(s, task, split, examples, label_list, tokenizer, print_fn, pad_to=0):
  path = os.path.join(s.output_dir, f'{split}.{task.name}.tf_record')
  count = data_lib.write_tfrecords(examples, label_list, s.max_seq_length, tokenizer, path,
                                   pad_to_multiple=pad_to)
  print_fn(f'      wrote {count} {split} records to {path}')
  return path


def _make_exporter(s, model, processor, sample_examples) -> _ExportDirExporter:
  """The library's exporter for the settings: every evaluation, or the best by a metric."""
  sample_examples = sample_examples[:4]
  samples = model.samples([e.text_a for e in sample_examples],
                          [e.text_b for e in sample_examples] if processor.is_pair else None)
  if 'text' not in s.export_formats:
    samples = {k: v for k, v in samples.items()
               if k not in (model_lib.TEXT_KEY, model_lib.TEXT_A, model_lib.TEXT_B)}
  formats = tuple(s.export_formats)
  options = s.export_options
  aliases = dict(model.signature_aliases(formats))
  aliases.update(options.signature_aliases)
  options = dataclasses.replace(options, signature_aliases=aliases)
  kwargs = dict(keep=options.keep, samples=samples, label_vocabulary=model.label_vocabulary,
                options=options)
  receiver_fn = model.serving_input_receiver_fn(formats)
  if options.keep_best_by:
    # Exports only improving checkpoints: the versions kept are the best `keep` of all.
    return _ExportDirExporter(s.export_dir, 'best', receiver_fn, strategy=exporters_lib.BEST,
                              metric=options.keep_best_by,
                              higher_is_better=options.higher_is_better, **kwargs)
  return _ExportDirExporter(s.export_dir, 'latest', receiver_fn, strategy=exporters_lib.LATEST,
                            **kwargs)
