"""`python -m bert_example.client` against a served BERT export, as a user runs it.

A 1-layer BERT (hidden 16) is fine-tuned for a few steps on the demo data and exported
with its ids, tf.Example and raw-text signatures; the embedded server serves it on
127.0.0.1. The client runs as a subprocess (gRPC and REST; text, text pairs and
locally tokenized ids); every line it prints must name the label and probabilities
estimator.predict gives for that sentence.
"""
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from bert_example import pipeline
from tests import bert_serving

pytest.importorskip('tensorflow_text', reason='the text signature needs tensorflow-text')

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = 'bert'
SEQ = 16
# One printed answer: '{label:>10}  (name p, name p)  {text!r}' (bert_example.client.Answer).
ANSWER = re.compile(r"^ *(\S+)  \((.*)\)  (['\"].*['\"])$")


@pytest.fixture(scope='module')
def served(tmp_path_factory):
  """(run, server): the tiniest BERT the pipeline trains, exported and served."""
  with bert_serving.trained_and_served(
      str(tmp_path_factory.mktemp('bert_client')), MODEL, SEQ, num_train=96, num_dev=8,
      num_test=4, hidden_size=16, num_hidden_layers=1, intermediate_size=32,
      max_position_embeddings=SEQ, train_batch_size=16, learning_rate=5e-3) as served_model:
    yield served_model


def _client(*args, expect_code=0):
  proc = subprocess.run([sys.executable, '-m', 'bert_example.client', *args], cwd=REPO,
                        capture_output=True, text=True, timeout=180,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
  assert proc.returncode == expect_code, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc


def _check_answers(stdout, run, texts_a, texts_b=None):
  """Each printed line: the sentence, estimator.predict's label and probabilities (3 places)."""
  lines = [line for line in stdout.splitlines() if line.strip()]
  assert len(lines) == len(texts_a), stdout
  expected = pipeline.estimator_probabilities(run.model, run.estimator, texts_a, texts_b)
  labels = list(run.model.label_vocabulary)
  for line, text, probs in zip(lines, texts_a, expected):
    match = ANSWER.match(line)
    assert match, line
    label, pairs, shown = match.groups()
    assert shown == repr(text)
    printed = dict(pair.rsplit(' ', 1) for pair in pairs.split(', '))
    assert list(printed) == labels
    np.testing.assert_allclose([float(printed[n]) for n in labels], probs, atol=0.0011)
    assert label == labels[int(np.argmax(probs))]


TEXTS = ['a truly great film', 'the acting was awful']


def test_text_over_grpc(served):
  run, server = served
  proc = _client(f'--server=127.0.0.1:{server.grpc_port}', f'--model_name={MODEL}',
                 *[f'--text={t}' for t in TEXTS])
  _check_answers(proc.stdout, run, TEXTS)


def test_text_pairs_over_rest(served):
  run, server = served
  texts_b = ['i loved it', 'never again']
  proc = _client('--protocol=rest', f'--server=http://127.0.0.1:{server.rest_port}',
                 f'--model_name={MODEL}', *[f'--text={t}' for t in TEXTS],
                 *[f'--text_b={t}' for t in texts_b])
  _check_answers(proc.stdout, run, TEXTS, texts_b)


def test_ids_tokenized_by_the_client(served):
  run, server = served
  proc = _client(f'--server=127.0.0.1:{server.grpc_port}', f'--model_name={MODEL}',
                 f'--vocab_file={run.model.vocab_file}', f'--max_seq_length={SEQ}',
                 *[f'--text={t}' for t in TEXTS])
  _check_answers(proc.stdout, run, TEXTS)


def test_unknown_model_is_an_error_without_traceback(served):
  _, server = served
  proc = _client(f'--server=127.0.0.1:{server.grpc_port}', '--model_name=nope', '--text=hi',
                 expect_code=1)
  assert proc.stdout == ''
  assert proc.stderr.strip().splitlines()[-1].startswith('client: error: ')
  assert 'nope' in proc.stderr and 'Traceback' not in proc.stderr
