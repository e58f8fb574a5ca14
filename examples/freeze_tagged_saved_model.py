r"""Freeze a SavedModel that has a custom tag and no SignatureDef, as freeze_graph did.

    python -m examples.freeze_tagged_saved_model --output_dir /tmp/freeze_tagged

The freeze_graph article's SavedModel: written by tf.compat.v1.saved_model.Builder
with the tag `my_model` and add_meta_graph_and_variables without a
signature_def_map. There is no signature to take outputs from, so they are named:

1. builds a tiny graph (Placeholder 'x' float32 [batch, 4] -> dense+relu ->
   dense -> 'probabilities' float32 [batch, 3] and 'class_id' int64 [batch])
   and saves it with Builder under the tag `my_model`, no SignatureDef;
2. shows that freezing by signature fails, naming what to pass instead;
3. freezes it from the command line with freeze_graph's flags:
     python -m estimator_export.cli freeze --input_saved_model_dir DIR \
       --saved_model_tags my_model --output_node_names probabilities,class_id \
       --output_graph frozen.pb --optimize=all
   (the input is the Placeholder the outputs depend on, 'x');
4. loads frozen.pb with import_graph_def and checks it answers like the
   SavedModel (loaded by its tag) on the same samples.
"""
import os

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from examples._common import import_frozen_graph
from examples._common import prepare_output_dir
from examples._common import run_cli

FLAGS = flags.FLAGS

TAG = 'my_model'
OUTPUTS = ('probabilities', 'class_id')


def save_tagged_model(export_dir: str) -> None:
  """Writes the tiny graph as a SavedModel tagged only `my_model`, with no SignatureDef."""
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
    x = tf.compat.v1.placeholder(tf.float32, [None, 4], name='x')
    init = tf.compat.v1.random_normal_initializer(stddev=0.5, seed=0)
    w1 = tf.compat.v1.get_variable('hidden/kernel', [4, 8], initializer=init)
    b1 = tf.compat.v1.get_variable('hidden/bias', [8], initializer=init)
    w2 = tf.compat.v1.get_variable('logits/kernel', [8, 3], initializer=init)
    b2 = tf.compat.v1.get_variable('logits/bias', [3], initializer=init)
    hidden = tf.nn.relu(tf.matmul(x, w1) + b1)
    logits = tf.matmul(hidden, w2) + b2
    tf.nn.softmax(logits, name='probabilities')
    tf.argmax(logits, axis=1, name='class_id')
    session.run(tf.compat.v1.global_variables_initializer())
    builder = tf.compat.v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(session, [TAG])  # No signature_def_map.
    builder.save()


def run_saved_model(export_dir: str, x: np.ndarray):
  """The SavedModel's outputs on x, loaded by its tag and run by tensor names."""
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as session:
    tf.compat.v1.saved_model.loader.load(session, [TAG], export_dir)
    return session.run([name + ':0' for name in OUTPUTS], {'x:0': x})


def freeze_with_cli(export_dir: str, output_graph: str) -> str:
  """Runs `python -m estimator_export.cli freeze` on the SavedModel; returns its stdout."""
  return run_cli(['freeze',
                  '--input_saved_model_dir', export_dir, '--saved_model_tags', TAG,
                  '--output_node_names', ','.join(OUTPUTS), '--output_graph', output_graph,
                  '--optimize=all'])


def run_frozen_graph(graph_path: str, x: np.ndarray):
  """The frozen graph's outputs on x: import_graph_def, then run by tensor names."""
  with tf.compat.v1.Session(graph=import_frozen_graph(graph_path)) as session:
    return session.run([name + ':0' for name in OUTPUTS], {'x:0': x})


def run(output_dir: str):
  """Saves, freezes from the command line and compares; returns what each step produced."""
  export_dir = os.path.join(output_dir, 'saved_model')
  save_tagged_model(export_dir)
  print(f'[1/4] saved {export_dir} with tag {TAG!r} and no SignatureDef')
  try:
    ee.freeze_saved_model(export_dir, tags=TAG)
    by_signature_error = None
  except ee.SignatureError as e:
    by_signature_error = str(e)
  print(f'[2/4] freezing by signature fails, as it must: {by_signature_error}')
  graph_path = os.path.join(output_dir, 'frozen.pb')
  cli_output = freeze_with_cli(export_dir, graph_path)
  manifest = ee.read_frozen_manifest(graph_path)
  print(f'[3/4] froze with --saved_model_tags={TAG} --output_node_names={",".join(OUTPUTS)}: '
        f'{os.path.getsize(graph_path)} bytes, inputs {sorted(manifest["inputs"])}, outputs '
        f'{sorted(manifest["outputs"])}')
  for line in cli_output.splitlines():
    print(f'      | {line}')
  samples = np.random.RandomState(1).randn(8, 4).astype(np.float32)
  saved = dict(zip(OUTPUTS, run_saved_model(export_dir, samples)))
  frozen = dict(zip(OUTPUTS, run_frozen_graph(graph_path, samples)))
  same = (np.allclose(frozen['probabilities'], saved['probabilities'], rtol=1e-6, atol=1e-7)
          and np.array_equal(frozen['class_id'], saved['class_id']))
  print(f'[4/4] frozen.pb vs the SavedModel on {len(samples)} samples: '
        f'{"same outputs" if same else "DIFFERS"}; classes {frozen["class_id"].tolist()}')
  return {'export_dir': export_dir, 'graph_path': graph_path, 'manifest': manifest,
          'by_signature_error': by_signature_error, 'cli_output': cli_output,
          'samples': samples, 'saved': saved, 'frozen': frozen, 'same': same}


def main(argv):
  del argv
  output_dir = prepare_output_dir(FLAGS.output_dir)
  result = run(output_dir)
  if not result['same']:
    raise SystemExit('the frozen graph differs from the SavedModel')
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'freeze_tagged_output', 'Where everything is written.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
