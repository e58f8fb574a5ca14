r"""SavedModel by hand: a session-trained classifier saved, loaded and run every way.

    python -m examples.savedmodel_basics --output_dir /tmp/savedmodel_basics

The workflow the classic TF1 SavedModel articles walk through, without an
Estimator:

1. builds a softmax classifier in a `tf.Graph` (tf.compat.v1 graph mode, a
   `tf.compat.v1.Session`), with an input placeholder named ``myInput`` and an
   output named ``myOutput``, and trains it for a few hundred steps on three
   Gaussian blobs in 4-D;
2. writes the session's graph and variables as a SavedModel twice:

   a. `tf.compat.v1.saved_model.simple_save`: one MetaGraph tagged {serve},
      one Predict signature called ``serving_default`` from the inputs and
      outputs dicts;
   b. `tf.compat.v1.saved_model.Builder`: one MetaGraph tagged
      {serve, custom_tag} whose only signature is called ``predict`` (built
      with `predict_signature_def`), written with default attrs stripped;

3. loads each back by its tag set with `tf.compat.v1.saved_model.loader.load`
   into a fresh graph and runs it (i) through the SignatureDef (input and
   output tensor names read from the signature, the way a server does it) and
   (ii) straight by tensor names ``myInput:0`` / ``myOutput:0``;
4. runs the Builder export through `estimator_export.Predictor`, both by
   signature and with `run_tensors`, and shows that a tag set is matched as a
   whole: asking for {serve} alone does not find the {serve, custom_tag}
   MetaGraph (the loader's "MetaGraphDef associated with tags ... could not be
   found", which Predictor reports as a ContractError).

Every route answers with the same probabilities as the training session.

Note for serving: TF Serving loads the MetaGraph tagged exactly {serve} unless
started with ``--saved_model_tags=serve,custom_tag``, and clients must then name
the signature (``predict``), since the Builder export has no
``serving_default``.
"""
import os
import shutil
import time
from typing import Any, Dict, Sequence, Tuple
import warnings

from absl import app
from absl import flags
import numpy as np
import tensorflow as tf

import estimator_export as ee
from estimator_export import contract as contract_lib

FLAGS = flags.FLAGS

INPUT_NAME = 'myInput'
OUTPUT_NAME = 'myOutput'
SIGNATURE_NAME = 'predict'
CUSTOM_TAGS = (tf.saved_model.SERVING, 'custom_tag')
NUM_CLASSES = 3
NUM_DIMS = 4


def make_blobs(n: int, seed: int) -> Tuple[np.ndarray, np.ndarray]:
  """n points from three unit-variance Gaussian blobs in 4-D, and their blob ids.

  The blob centres are fixed (not drawn from `seed`), so training and held-out
  sets drawn with different seeds come from the same distribution.
  """
  centres = np.array([[2.0, 0.0, 0.0, 1.0],
                      [-1.0, 2.0, 0.0, -1.0],
                      [-1.0, -2.0, 1.0, 0.0]], np.float32)
  rng = np.random.RandomState(seed)
  labels = rng.randint(0, NUM_CLASSES, size=n).astype(np.int64)
  points = centres[labels] + rng.normal(size=(n, NUM_DIMS)).astype(np.float32)
  return points.astype(np.float32), labels


def build_graph() -> Dict[str, Any]:
  """Builds the classifier in the current default graph; returns its tensors and ops."""
  inputs = tf.compat.v1.placeholder(tf.float32, [None, NUM_DIMS], name=INPUT_NAME)
  labels = tf.compat.v1.placeholder(tf.int64, [None], name='labels')
  weights = tf.compat.v1.get_variable('weights', [NUM_DIMS, NUM_CLASSES],
                                      initializer=tf.compat.v1.zeros_initializer())
  bias = tf.compat.v1.get_variable('bias', [NUM_CLASSES],
                                   initializer=tf.compat.v1.zeros_initializer())
  logits = tf.matmul(inputs, weights) + bias
  probabilities = tf.nn.softmax(logits, name=OUTPUT_NAME)
  loss = tf.reduce_mean(
      tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits))
  train_op = tf.compat.v1.train.GradientDescentOptimizer(0.1).minimize(loss)
  return {'inputs': inputs, 'labels': labels, 'probabilities': probabilities,
          'loss': loss, 'train_op': train_op}


def train(session: tf.compat.v1.Session, model: Dict[str, Any], steps: int,
          batch_size: int = 32, seed: int = 0) -> float:
  """Runs `steps` minibatch SGD steps on fresh blob samples; returns the last loss."""
  points, labels = make_blobs(steps * batch_size, seed)
  session.run(tf.compat.v1.global_variables_initializer())
  loss = float('nan')
  for step in range(steps):
    rows = slice(step * batch_size, (step + 1) * batch_size)
    _, loss = session.run([model['train_op'], model['loss']],
                          {model['inputs']: points[rows], model['labels']: labels[rows]})
    if (step + 1) % 100 == 0 or step + 1 == steps:
      print(f'      step {step + 1}/{steps}  loss {loss:.4f}', flush=True)
  return float(loss)


def save_simple(session: tf.compat.v1.Session, model: Dict[str, Any], export_dir: str):
  """(a) simple_save: tags {serve}, Predict signature 'serving_default'."""
  tf.compat.v1.saved_model.simple_save(
      session, export_dir, inputs={INPUT_NAME: model['inputs']},
      outputs={OUTPUT_NAME: model['probabilities']})


def save_with_builder(session: tf.compat.v1.Session, model: Dict[str, Any],
                      export_dir: str, tags: Sequence[str] = CUSTOM_TAGS):
  """(b) Builder: custom tags and a Predict signature named 'predict'."""
  signature = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def(
      inputs={INPUT_NAME: model['inputs']}, outputs={OUTPUT_NAME: model['probabilities']})
  builder = tf.compat.v1.saved_model.Builder(export_dir)
  builder.add_meta_graph_and_variables(
      session, list(tags), signature_def_map={SIGNATURE_NAME: signature},
      clear_devices=True, strip_default_attrs=True)
  builder.save()


def load_and_run(export_dir: str, tags: Sequence[str], signature_name: str,
                 points: np.ndarray) -> Dict[str, np.ndarray]:
  """Loads a MetaGraph by tags into a fresh graph; runs by signature and by names.

  Returns:
    {'signature': ..., 'tensor_names': ...}: the probabilities each way.
  """
  with tf.Graph().as_default() as graph:
    with tf.compat.v1.Session(graph=graph) as session:
      meta_graph = tf.compat.v1.saved_model.loader.load(session, list(tags), export_dir)
      signature = meta_graph.signature_def[signature_name]
      input_name = signature.inputs[INPUT_NAME].name     # 'myInput:0'
      output_name = signature.outputs[OUTPUT_NAME].name  # 'myOutput:0'
      by_signature = session.run(graph.get_tensor_by_name(output_name),
                                 {graph.get_tensor_by_name(input_name): points})
      by_names = session.run(f'{OUTPUT_NAME}:0', {f'{INPUT_NAME}:0': points})
  print(f'      {os.path.basename(export_dir)} tags {list(tags)}: signature '
        f'{signature_name!r} maps {INPUT_NAME!r} -> {input_name}, '
        f'{OUTPUT_NAME!r} -> {output_name}', flush=True)
  return {'signature': by_signature, 'tensor_names': by_names}


def _indented(text: str, prefix: str = '        ') -> str:
  return '\n'.join(prefix + line for line in text.rstrip('\n').split('\n'))


def accuracy(probabilities: np.ndarray, labels: np.ndarray) -> float:
  return float(np.mean(np.argmax(probabilities, axis=1) == labels))


def run(output_dir: str, steps: int) -> Dict[str, Any]:
  """Trains, saves two ways, loads and runs every way.

  Args:
    output_dir: where the two SavedModels go (must not hold them already).
    steps: training steps.

  Returns:
    A dict with 'simple_save_dir', 'builder_dir', 'tags', 'labels' (held-out
    blob ids), 'predictions' (route name -> probabilities [n, 3] on the
    held-out points), 'accuracy' (of the training session on them), 'loss'
    and 'wrong_tags_error' (the message of the failed {serve}-only load).
  """
  simple_dir = os.path.join(output_dir, 'simple_save')
  builder_dir = os.path.join(output_dir, 'builder')
  points, labels = make_blobs(300, seed=1)
  predictions = {}

  t0 = time.time()
  print(f'[1/4] training a softmax classifier for {steps} steps (graph mode, session)',
        flush=True)
  with tf.Graph().as_default() as graph:
    model = build_graph()
    with tf.compat.v1.Session(graph=graph) as session:
      loss = train(session, model, steps)
      predictions['session'] = session.run(model['probabilities'],
                                           {model['inputs']: points})
      print(f'      trained in {time.time() - t0:.1f}s: held-out accuracy '
            f'{accuracy(predictions["session"], labels):.3f}', flush=True)

      print(f'[2/4] saving: (a) simple_save -> {simple_dir}', flush=True)
      save_simple(session, model, simple_dir)
      print(f'      (b) Builder with tags {list(CUSTOM_TAGS)} -> {builder_dir}', flush=True)
      save_with_builder(session, model, builder_dir)
  for export_dir in (simple_dir, builder_dir):
    tag_sets = contract_lib.show(export_dir).strip().replace('\n', ' ')
    print(f'      {os.path.basename(export_dir)}: {tag_sets}', flush=True)
  print(f'      saved_model_cli show --dir {builder_dir} --tag_set '
        f'{",".join(CUSTOM_TAGS)} --signature_def {SIGNATURE_NAME}:', flush=True)
  print(_indented(contract_lib.show(builder_dir, tag_set=CUSTOM_TAGS,
                                   signature_def=SIGNATURE_NAME)), flush=True)

  print('[3/4] loading each by its tags into a fresh graph:', flush=True)
  for prefix, export_dir, tags, signature_name in (
      ('simple_save', simple_dir, (tf.saved_model.SERVING,),
       tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY),
      ('builder', builder_dir, CUSTOM_TAGS, SIGNATURE_NAME)):
    for route, probabilities in load_and_run(export_dir, tags, signature_name,
                                             points).items():
      predictions[f'{prefix}/loader/{route}'] = probabilities

  print('[4/4] through estimator_export.Predictor:', flush=True)
  with ee.Predictor.from_saved_model(builder_dir, signature_name=SIGNATURE_NAME,
                                     tags=CUSTOM_TAGS) as predictor:
    print(f'      {predictor!r}', flush=True)
    predictions['builder/predictor/signature'] = predictor({INPUT_NAME: points})[OUTPUT_NAME]
    predictions['builder/predictor/run_tensors'] = predictor.run_tensors(
        {f'{INPUT_NAME}:0': points}, [f'{OUTPUT_NAME}:0'])[0]
  try:
    ee.Predictor.from_saved_model(builder_dir, signature_name=SIGNATURE_NAME).close()
    wrong_tags_error = ''
  except ee.ContractError as e:
    wrong_tags_error = str(e)
    print(f'      tags [\'serve\'] alone: ContractError (the tag set must match as a '
          f'whole): {e.what}', flush=True)

  reference = predictions['session']
  for route, probabilities in predictions.items():
    same = np.allclose(probabilities, reference, rtol=1e-5, atol=1e-6)
    print(f'      {route:32s} accuracy {accuracy(probabilities, labels):.3f}  '
          f'{"same as" if same else "DIFFERS from"} the training session', flush=True)
  return {'simple_save_dir': simple_dir, 'builder_dir': builder_dir, 'tags': CUSTOM_TAGS,
          'labels': labels, 'predictions': predictions,
          'accuracy': accuracy(reference, labels), 'loss': loss,
          'wrong_tags_error': wrong_tags_error}


def main(argv):
  del argv
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  warnings.filterwarnings('ignore', category=DeprecationWarning)
  output_dir = os.path.abspath(FLAGS.output_dir)
  if FLAGS.fresh and os.path.isdir(output_dir):
    shutil.rmtree(output_dir)
  run(output_dir, FLAGS.steps)
  print('done.')


def define_flags():
  flags.DEFINE_string('output_dir', 'savedmodel_basics_output',
                      'Where the two SavedModels go.')
  flags.DEFINE_integer('steps', 300, 'Training steps.')
  flags.DEFINE_bool('fresh', True, 'Start from an empty output_dir.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
