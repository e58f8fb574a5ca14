r"""Fine-tune BERT on a GLUE-format task, evaluate, predict and export for TF Serving.

    python -m bert_example.run_classifier \
      --task_name=sst-2 --data_dir=glue/SST-2 \
      --vocab_file=uncased_L-12_H-768_A-12/vocab.txt \
      --bert_config_file=uncased_L-12_H-768_A-12/bert_config.json \
      --init_checkpoint=uncased_L-12_H-768_A-12/bert_model.ckpt \
      --max_seq_length=128 --train_batch_size=32 --learning_rate=2e-5 \
      --num_train_epochs=3 --do_train --do_eval \
      --output_dir=/tmp/sst2 --do_export --export_dir=/models/sst2

The flags are google-research/bert's, plus the library's export flags
(--do_export, --export_dir, --export_formats=raw,example,text, --export_version,
--exports_to_keep, ...). Flags are defined by `define_flags()`, called from
`__main__` only, so importing this module defines nothing.

With a cluster in TF_CONFIG, every role (chief, workers, parameter servers,
evaluator) runs this same command and `tf.estimator.train_and_evaluate` does
the role's part; the evaluator evaluates each new checkpoint (see
--eval_throttle_secs) and with --do_export exports it to --export_dir,
keeping --exports_to_keep versions (the best by --export_keep_best_by if set).
`estimator-export cluster` starts such a cluster on one machine:

    estimator-export cluster --workers 1 --ps 1 --evaluator --logdir /tmp/logs -- \
      python -m bert_example.run_classifier --do_train --do_eval --do_export ...

Without TF_CONFIG it trains, evaluates, predicts and exports in one process.
"""
import sys

from absl import app
from absl import flags

import estimator_export as ee
from bert_example import distributed
from bert_example import pipeline
from estimator_export import cluster
from estimator_export import flags as export_flags
from estimator_export.hooks import show_export_progress

FLAGS = flags.FLAGS


def define_flags(flag_values: flags.FlagValues = FLAGS) -> None:
  """Defines the BERT and export flags in `flag_values`."""
  fv = flag_values
  flags.DEFINE_string('task_name', None, 'sst-2, cola, mrpc, mnli or demo.', flag_values=fv)
  flags.DEFINE_string('data_dir', None, 'Directory of the task\'s .tsv files.', flag_values=fv)
  flags.DEFINE_string('vocab_file', None, 'WordPiece vocabulary of the checkpoint.',
                      flag_values=fv)
  flags.DEFINE_string('bert_config_file', None, 'bert_config.json of the checkpoint.',
                      flag_values=fv)
  flags.DEFINE_string('init_checkpoint', None,
                      'Google-layout BERT checkpoint to start from (see '
                      'bert_example.convert_checkpoint for Hugging Face safetensors).',
                      flag_values=fv)
  flags.DEFINE_bool('do_lower_case', True, 'Lower-case input (uncased checkpoints).',
                    flag_values=fv)
  flags.DEFINE_integer('max_seq_length', 128, 'Tokens per input after WordPiece.',
                       flag_values=fv)
  flags.DEFINE_integer('train_batch_size', 32, 'Training batch size.', flag_values=fv)
  flags.DEFINE_integer('eval_batch_size', 8, 'Evaluation batch size.', flag_values=fv)
  flags.DEFINE_integer('predict_batch_size', 8, 'Prediction batch size.', flag_values=fv)
  flags.DEFINE_float('learning_rate', 5e-5, 'Peak learning rate of Adam.', flag_values=fv)
  flags.DEFINE_float('num_train_epochs', 3.0, 'Training epochs.', flag_values=fv)
  flags.DEFINE_float('warmup_proportion', 0.1, 'Share of training with linear warmup.',
                     flag_values=fv)
  flags.DEFINE_integer('save_checkpoints_steps', 1000, 'Checkpoint every N steps.',
                       flag_values=fv)
  flags.DEFINE_bool('do_train', False, 'Fine-tune on train.tsv.', flag_values=fv)
  flags.DEFINE_bool('do_eval', False, 'Evaluate on the dev set.', flag_values=fv)
  flags.DEFINE_bool('do_predict', False, 'Write test_results.tsv for the test set.',
                    flag_values=fv)
  flags.DEFINE_string('output_dir', None, 'Checkpoints and results.', flag_values=fv)
  export_flags.define_export_flags(fv)
  export_flags.define_eval_timing_flags(fv)
  fv.set_default('export_formats', ['raw', 'example', 'text'])
  for name in ('task_name', 'data_dir', 'vocab_file', 'bert_config_file', 'output_dir'):
    flags.mark_flag_as_required(name, flag_values=fv)


def settings_from_flags(fv: flags.FlagValues) -> pipeline.ClassifierSettings:
  """Plain settings from parsed flags (the only place flags are read)."""
  export = export_flags.export_settings_from_flags(fv)
  timing = export_flags.eval_timing_from_flags(fv)
  return pipeline.ClassifierSettings(
      task_name=fv.task_name, data_dir=fv.data_dir, vocab_file=fv.vocab_file,
      bert_config_file=fv.bert_config_file, output_dir=fv.output_dir,
      init_checkpoint=fv.init_checkpoint, do_lower_case=fv.do_lower_case,
      max_seq_length=fv.max_seq_length, train_batch_size=fv.train_batch_size,
      eval_batch_size=fv.eval_batch_size, predict_batch_size=fv.predict_batch_size,
      learning_rate=fv.learning_rate, num_train_epochs=fv.num_train_epochs,
      warmup_proportion=fv.warmup_proportion,
      save_checkpoints_steps=fv.save_checkpoints_steps, do_train=fv.do_train,
      do_eval=fv.do_eval, do_predict=fv.do_predict, do_export=export.do_export,
      export_dir=export.export_dir, export_formats=export.formats,
      export_options=export.options, eval_start_delay_secs=timing.start_delay_secs,
      eval_throttle_secs=timing.throttle_secs)


def main(argv):
  del argv
  show_export_progress()
  print_fn = lambda m: print(m, flush=True)
  try:
    tf_config = cluster.read_tf_config()
    if tf_config is None:
      pipeline.run(settings_from_flags(FLAGS), print_fn=print_fn)
    else:
      distributed.run(settings_from_flags(FLAGS), tf_config, print_fn=print_fn)
  except (ValueError, ee.ExportError) as e:  # Bad settings or data: say what to do.
    print(f'run_classifier: error: {e}', file=sys.stderr)
    return 2
  return 0


if __name__ == '__main__':
  define_flags()
  app.run(main)
