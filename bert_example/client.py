r"""Query a served BERT classifier with raw text or token ids, over gRPC or REST.

    python -m bert_example.client --server=127.0.0.1:8500 --model_name=bert \
        --text="a wonderful, moving film" --text="the plot was dull"
    python -m bert_example.client --protocol=rest --server=http://127.0.0.1:8501 \
        --model_name=bert --text="is this a pair?" --text_b="yes it is"
    python -m bert_example.client --model_name=bert --vocab_file=vocab.txt \
        --max_seq_length=128 --text="tokenized here, sent as ids"

With --vocab_file the sentences are tokenized here and sent to the ids
signature (serving_default); without it they go to the `text` signature (or
`text_pair` with --text_b) and are tokenized by the server. Works against tensorflow_model_server and the
embedded server alike.
"""
import dataclasses
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import numpy as np

from bert_example import model as model_lib
from bert_example import tokenization
from estimator_export.client import GrpcClient, RestClient, ServingClientError

FLAGS = flags.FLAGS


@dataclasses.dataclass(frozen=True)
class Answer:
  """One sentence's answer: the label name and each label's probability."""
  text: str
  label: str
  probabilities: Dict[str, float]

  def __str__(self) -> str:
    probs = ', '.join(f'{k} {v:.3f}' for k, v in self.probabilities.items())
    return f'{self.label:>10}  ({probs})  {self.text!r}'


def make_client(protocol: str, server: str, timeout: float = 30.0):
  """A GrpcClient ('host:port') or RestClient ('http://host:port')."""
  if protocol == 'grpc':
    return GrpcClient(server, timeout=timeout)
  if protocol == 'rest':
    return RestClient(server if '://' in server else f'http://{server}', timeout=timeout)
  raise ValueError(f"protocol must be 'grpc' or 'rest', got {protocol!r}")


def text_request(texts_a: Sequence[str], texts_b: Optional[Sequence[str]] = None
                ) -> Tuple[str, Dict[str, np.ndarray]]:
  """(signature, inputs): `text` {text: string [batch]}, or `text_pair` {text_a, text_b}."""
  if not texts_b:
    return model_lib.TEXT_SIGNATURE, {model_lib.TEXT_KEY: model_lib.string_array(texts_a)}
  if len(texts_b) != len(texts_a):
    raise ValueError(f'{len(texts_b)} --text_b for {len(texts_a)} --text; give one second '
                     'sentence per sentence, or none.')
  return model_lib.PAIR_SIGNATURE, {model_lib.TEXT_A: model_lib.string_array(texts_a),
                                    model_lib.TEXT_B: model_lib.string_array(texts_b)}


def wait_until_available(client, model_name: str, timeout: float = 120.0) -> None:
  """Polls GetModelStatus until a version of model_name is AVAILABLE (TimeoutError after)."""
  deadline = time.time() + timeout
  while True:
    try:
      if any(v['state'] == 'AVAILABLE' for v in client.status(model_name)):
        return
    except ServingClientError:
      pass  # Not loaded yet (NOT_FOUND) or the server is still starting.
    if time.time() > deadline:
      raise TimeoutError(f'model {model_name!r} not AVAILABLE after {timeout:.0f}s; see the '
                         'server log for its load error')
    time.sleep(0.1)


def classify_texts(client, model_name: str, texts_a: Sequence[str],
                   texts_b: Optional[Sequence[str]] = None,
                   tokenizer: Optional[tokenization.FullTokenizer] = None,
                   max_seq_length: int = 128) -> List[Answer]:
  """Sends the sentences (as text, or as ids with a tokenizer); returns the answers.

  Label names come from the model's outputs, so no label list is needed here.
  """
  if tokenizer is None:
    signature, inputs = text_request(texts_a, texts_b)
    outputs = client.predict(model_name, inputs, signature_name=signature)
  else:
    outputs = client.predict(model_name, model_lib.encode_ids(tokenizer, max_seq_length,
                                                              texts_a, texts_b or None))
  return answers_from_outputs(outputs, texts_a)


def answers_from_outputs(outputs: Dict[str, np.ndarray], texts: Sequence[str]) -> List[Answer]:
  """Answers from a predict response (probabilities, label_name, all_label_names)."""
  probs = np.asarray(outputs['probabilities'])
  return [Answer(text=text, label=_text(outputs['label_name'][row]),
                 probabilities={_text(n): float(p) for n, p in
                                zip(outputs['all_label_names'][row], probs[row])})
          for row, text in enumerate(texts)]


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def main(argv):
  del argv
  if not FLAGS.text:
    print('client: error: give at least one --text', file=sys.stderr)
    return 2
  tokenizer = (tokenization.FullTokenizer(FLAGS.vocab_file, FLAGS.do_lower_case)
               if FLAGS.vocab_file else None)
  try:
    with make_client(FLAGS.protocol, FLAGS.server, FLAGS.timeout) as client:
      answers = classify_texts(client, FLAGS.model_name, FLAGS.text, FLAGS.text_b, tokenizer,
                               FLAGS.max_seq_length)
  except (ServingClientError, ValueError) as e:
    print(f'client: error: {e}', file=sys.stderr)
    return 1
  for answer in answers:
    print(answer)
  return 0


def define_flags():
  flags.DEFINE_enum('protocol', 'grpc', ['grpc', 'rest'], 'How to reach the server.')
  flags.DEFINE_string('server', '127.0.0.1:8500',
                      'gRPC host:port, or the REST base URL (http://127.0.0.1:8501).')
  flags.DEFINE_string('model_name', 'bert', 'The served model\'s name.')
  flags.DEFINE_multi_string('text', [], 'A sentence to classify (repeat for a batch).')
  flags.DEFINE_multi_string('text_b', [], 'Second sentences of pairs, one per --text.')
  flags.DEFINE_string('vocab_file', None,
                      'Tokenize here and send ids to serving_default (default: send text).')
  flags.DEFINE_bool('do_lower_case', True, 'Tokenizer casing, with --vocab_file.')
  flags.DEFINE_integer('max_seq_length', 128, 'Sequence length, with --vocab_file.')
  flags.DEFINE_float('timeout', 30.0, 'Seconds per request.')


if __name__ == '__main__':
  define_flags()
  app.run(main)
