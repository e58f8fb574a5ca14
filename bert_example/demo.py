r"""The flagship demo: fine-tune BERT, export it for TF Serving, serve it, ask it in plain text.

    python -m bert_example.demo --output_dir demo_output      # what `make demo` runs

1. generates the demo sentiment dataset (train / held-out dev / test);
2. starts from the pretrained all-MiniLM-L6-v2 when its package is installed
   (converted from safetensors), else from a small random BERT (and says so);
3. fine-tunes it with an Estimator, evaluates on the held-out split, and
   exports a validated version with three kinds of signature: token ids
   (serving_default), tf.Examples (examples:classify) and raw text (text);
4. starts the embedded TF Serving-compatible server on free local ports;
5. asks it raw sentences over REST and gRPC and prints the answers next to
   estimator.predict's (they must agree to 1e-5, or the demo fails).
"""
import os
import shutil
import time
import warnings

from absl import app
from absl import flags
from absl import logging
import numpy as np
import tensorflow as tf

import estimator_export as ee
from bert_example import client as client_lib
from bert_example import data as data_lib
from bert_example import demo_data
from bert_example import pipeline
from bert_example import pretrained
from bert_example import servability
from estimator_export.serving.server import create_server

FLAGS = flags.FLAGS
MODEL_NAME = 'bert'
QUERIES = (
    'What a wonderful, moving film!',
    'The plot was dull and the acting was terrible.',
    'I did not enjoy this movie at all.',
    'not bad , actually quite good',
    'Ce film était magnifique ! 🎬',
)
TOLERANCE = 1e-5


def _say(message: str) -> None:
  print(message, flush=True)


def run(output_dir: str, use_pretrained: bool = True, max_seq_length: int = 48,
        num_train_epochs: float = 0.0, train_batch_size: int = 16,
        learning_rate: float = 0.0, num_train: int = 2000) -> dict:
  """Runs the demo; returns timings, metrics and the served answers."""
  started = time.time()
  data_dir = os.path.join(output_dir, 'data')
  _say(f'[1/5] generating the demo sentiment dataset in {data_dir}')
  paths = demo_data.generate_demo_dataset(data_dir, num_train=num_train)
  _say('      ' + ', '.join(f'{os.path.basename(p)}' for p in paths.values()))
  processor = data_lib.get_processor('demo')
  train_examples = processor.get_train_examples(data_dir)

  _say('[2/5] choosing the starting weights')
  start = pretrained.prepare(os.path.join(output_dir, 'pretrained'), train_examples,
                             use_pretrained=use_pretrained, print_fn=_say)
  epochs = num_train_epochs or (1.0 if start.pretrained else 4.0)
  rate = learning_rate or 1e-4

  _say(f'[3/5] fine-tuning {start.description}')
  export_base = os.path.join(output_dir, 'export', MODEL_NAME)
  settings = pipeline.ClassifierSettings(
      task_name='demo', data_dir=data_dir, vocab_file=start.vocab_file,
      bert_config_file=start.bert_config_file, init_checkpoint=start.init_checkpoint,
      do_lower_case=start.do_lower_case, output_dir=os.path.join(output_dir, 'model'),
      max_seq_length=max_seq_length, train_batch_size=train_batch_size,
      eval_batch_size=32, learning_rate=rate, num_train_epochs=epochs,
      do_train=True, do_eval=True, do_export=True, export_dir=export_base,
      export_options=ee.ExportOptions(version='step', keep=3, model_name=MODEL_NAME))
  result = pipeline.run(settings, print_fn=_say)
  accuracy = result.eval_metrics['accuracy']
  report = servability.assert_servable(result.export.path)
  _say(f'      servable by tensorflow_model_server 2.15.1: {len(report.ops_used)} op types, all '
       'in TF 2.15 + TF Text 2.12.1')

  _say(f'[4/5] serving {export_base} with the embedded model server')
  server = create_server(model_name=MODEL_NAME, model_base_path=export_base, port=0,
                         rest_api_port=0)
  try:
    answers = _query(server, result)
  finally:
    server.stop(grace=5)
  elapsed = time.time() - started
  _say(f'done in {elapsed:.0f}s: held-out accuracy {accuracy:.3f} '
       f'({start.description}); {len(QUERIES)} sentences answered identically over REST, '
       'gRPC and estimator.predict.')
  return {'seconds': elapsed, 'accuracy': accuracy, 'pretrained': start.pretrained,
          'train_seconds': result.train_seconds, 'train_steps': result.train_steps,
          'export': result.export, 'answers': answers}


def _query(server, result: pipeline.ClassifierRun):
  grpc_target = f'127.0.0.1:{server.grpc_port}'
  rest_url = f'http://127.0.0.1:{server.rest_port}'
  with client_lib.make_client('grpc', grpc_target) as grpc_client:
    client_lib.wait_until_available(grpc_client, MODEL_NAME)
    _say(f'      AVAILABLE: gRPC {grpc_target}, REST {rest_url}')
    _say('[5/5] raw text over REST and gRPC (signature "text") vs estimator.predict')
    grpc_answers = client_lib.classify_texts(grpc_client, MODEL_NAME, QUERIES)
  with client_lib.make_client('rest', rest_url) as rest_client:
    rest_answers = client_lib.classify_texts(rest_client, MODEL_NAME, QUERIES)
  expected = pipeline.estimator_probabilities(result.model, result.estimator, QUERIES)
  labels = result.model.label_vocabulary
  for i, query in enumerate(QUERIES):
    rest = np.array([rest_answers[i].probabilities[l] for l in labels])
    grpc = np.array([grpc_answers[i].probabilities[l] for l in labels])
    worst = float(max(np.abs(rest - expected[i]).max(), np.abs(grpc - expected[i]).max()))
    if worst > TOLERANCE:
      raise ee.ValidationError(f'served answer for {query!r} differs from estimator.predict',
                               value=worst, fix='report this: the text signature and the '
                               'Python tokenizer disagree on this sentence')
    _say(f'      {query!r}')
    _say(f'        REST  {rest_answers[i].label:<9} {_fmt(rest, labels)}')
    _say(f'        gRPC  {grpc_answers[i].label:<9} {_fmt(grpc, labels)}')
    _say(f'        estimator.predict   {_fmt(expected[i], labels)}  (max diff {worst:.1e})')
  return rest_answers


def _fmt(probs, labels) -> str:
  return ' '.join(f'{label} {p:.4f}' for label, p in zip(labels, probs))


def main(argv):
  del argv
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  logging.set_verbosity(logging.WARNING)  # The demo prints its own progress.
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  output_dir = os.path.abspath(FLAGS.output_dir)
  if FLAGS.fresh and os.path.isdir(output_dir):
    shutil.rmtree(output_dir)
  run(output_dir, use_pretrained=FLAGS.use_pretrained, max_seq_length=FLAGS.max_seq_length,
      num_train_epochs=FLAGS.num_train_epochs, train_batch_size=FLAGS.train_batch_size,
      learning_rate=FLAGS.learning_rate, num_train=FLAGS.num_train)


def define_flags():
  flags.DEFINE_string('output_dir', 'demo_output', 'Data, checkpoints and exports go here.')
  flags.DEFINE_bool('use_pretrained', True,
                    'Start from all-MiniLM-L6-v2 when its package is installed.')
  flags.DEFINE_integer('max_seq_length', 48, 'Tokens per input.')
  flags.DEFINE_float('num_train_epochs', 0.0,
                     'Epochs (0: 1 from the pretrained model, 4 from scratch).')
  flags.DEFINE_integer('train_batch_size', 16, 'Training batch size.')
  flags.DEFINE_float('learning_rate', 0.0, 'Peak learning rate (0: 1e-4).')
  flags.DEFINE_integer('num_train', 2000, 'Training sentences to generate.')
  flags.DEFINE_bool('fresh', True, 'Start from an empty output_dir.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
