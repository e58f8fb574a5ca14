"""Frozen + optimised GraphDef vs SavedModel on a BERT-sized graph, as ratios from one run.

    python bench/freeze_bench.py [--quick] [--layers 6] [--seq 128] [--repeats 30]

A MiniLM-sized BERT (6 layers, hidden 384, 12 heads, intermediate 1536, vocab
30522, seq 128; random weights, nothing downloaded) is saved as a SavedModel,
then frozen from its signature with every optimisation, and as fp16 and int8.

1. Steady-state latency, FrozenPredictor vs the SavedModel Predictor, batch 1
   and 8 (medians, runs interleaved). Goal at batch 1: <= 0.92x.
2. Cold start (load + first run), frozen vs SavedModel.
3. File size fp32 / fp16 / int8 .pb vs the SavedModel's variables/, with the
   max output difference on samples. Goals: fp16 <= 0.55x, int8 <= 0.30x.
The machine has 2 cores: everything runs sequentially in this one process.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import estimator_export as ee  # pylint: disable=g-import-not-at-top
from bert_example import modeling  # pylint: disable=g-import-not-at-top


def build_saved_model(export_dir: str, config: modeling.BertConfig, seq: int) -> None:
  """Random-weight BERT with a Predict signature: 3 int32 [batch, seq] -> pooled, sequence."""
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session() as session:
    tf.compat.v1.set_random_seed(0)
    names = ('input_ids', 'input_mask', 'segment_ids')
    inputs = {n: tf.compat.v1.placeholder(tf.int32, [None, seq], name=n) for n in names}
    model = modeling.BertModel(config, False, inputs['input_ids'], inputs['input_mask'],
                               inputs['segment_ids'])
    outputs = {'pooled_output': tf.identity(model.get_pooled_output(), 'pooled_output')}
    session.run(tf.compat.v1.global_variables_initializer())
    signature = tf.compat.v1.saved_model.predict_signature_def(inputs, outputs)
    builder = tf.compat.v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING],
                                         signature_def_map={'serving_default': signature})
    builder.save()


def sample(batch: int, seq: int, vocab: int, seed: int):
  rng = np.random.RandomState(seed)
  mask = np.ones([batch, seq], np.int32)
  mask[:, seq * 3 // 4:] = 0
  return {'input_ids': rng.randint(0, vocab, size=[batch, seq]).astype(np.int32),
          'input_mask': mask, 'segment_ids': np.zeros([batch, seq], np.int32)}


def dir_bytes(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, f))
             for root, _, files in os.walk(path) for f in files)


def steady_latency(saved, frozen, feeds, repeats: int):
  """Median seconds per call for (saved, frozen), calls interleaved after 3 warm-ups."""
  for _ in range(3):
    saved(feeds)
    frozen(feeds)
  times = {'saved': [], 'frozen': []}
  for _ in range(repeats):
    for name, predict in (('saved', saved), ('frozen', frozen)):
      start = time.perf_counter()
      predict(feeds)
      times[name].append(time.perf_counter() - start)
  return statistics.median(times['saved']), statistics.median(times['frozen'])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='fewer repeats (about 2 minutes)')
  parser.add_argument('--layers', type=int, default=6)
  parser.add_argument('--seq', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=30)
  args = parser.parse_args()
  repeats = 10 if args.quick else args.repeats
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  config = modeling.BertConfig(vocab_size=30522, hidden_size=384,
                               num_hidden_layers=args.layers, num_attention_heads=12,
                               intermediate_size=1536, max_position_embeddings=512)
  work = tempfile.mkdtemp(prefix='freeze_bench_')
  export_dir = os.path.join(work, 'saved_model')
  start = time.perf_counter()
  build_saved_model(export_dir, config, args.seq)
  print(f'BERT {args.layers} layers, hidden 384, seq {args.seq}: SavedModel built in '
        f'{time.perf_counter() - start:.1f}s at {export_dir}')
  samples = sample(2, args.seq, config.vocab_size, seed=1)
  frozen_paths, results = {}, {}
  for mode in (None, 'fp16', 'int8'):
    start = time.perf_counter()
    frozen = ee.freeze_saved_model(export_dir, options=ee.FreezeOptions(
        optimizations=('all',), compression=mode, samples=samples, rtol=1e-4, atol=1e-4))
    name = mode or 'fp32'
    frozen_paths[name] = os.path.join(work, f'frozen_{name}.pb')
    frozen.save(frozen_paths[name])
    results[name] = frozen
    print(f'  froze {name} in {time.perf_counter() - start:.1f}s: '
          f'{len(frozen.graph_def.node)} nodes; '
          + '; '.join(f'{s["name"]}: {s["note"]}' for s in frozen.optimizations))

  variables = dir_bytes(os.path.join(export_dir, 'variables'))
  print(f'\n[size] SavedModel variables/ {variables / 2**20:.1f} MiB')
  for name, path in frozen_paths.items():
    size = os.path.getsize(path)
    diff = results[name].compression['max_abs_diff']['pooled_output'] if name != 'fp32' else (
        results[name].optimizations[-1]['max_abs_diff']['pooled_output'])
    goal = {'fp16': ' (goal <= 0.55x)', 'int8': ' (goal <= 0.30x)'}.get(name, '')
    print(f'  {name}: {size / 2**20:.1f} MiB = {size / variables:.3f}x{goal}; '
          f'max |output diff| {diff:.2e}')

  start = time.perf_counter()
  saved = ee.Predictor.from_saved_model(export_dir)
  saved(sample(1, args.seq, config.vocab_size, 2))
  cold_saved = time.perf_counter() - start
  start = time.perf_counter()
  frozen = ee.FrozenPredictor.from_frozen_graph(frozen_paths['fp32'])
  frozen(sample(1, args.seq, config.vocab_size, 2))
  cold_frozen = time.perf_counter() - start
  print(f'\n[cold start] load + first run: SavedModel {cold_saved:.2f}s, frozen '
        f'{cold_frozen:.2f}s = {cold_frozen / cold_saved:.2f}x')

  print(f'\n[latency] steady state, median of {repeats} interleaved calls')
  for batch in (1, 8):
    feeds = sample(batch, args.seq, config.vocab_size, 3)
    t_saved, t_frozen = steady_latency(saved, frozen, feeds,
                                       repeats if batch == 1 else max(5, repeats // 3))
    goal = ' (goal <= 0.92x)' if batch == 1 else ''
    print(f'  batch {batch}: SavedModel {t_saved * 1e3:.1f} ms, frozen+optimised '
          f'{t_frozen * 1e3:.1f} ms = {t_frozen / t_saved:.3f}x{goal}')
  out_saved = saved(sample(2, args.seq, config.vocab_size, 4))['pooled_output']
  out_frozen = frozen(sample(2, args.seq, config.vocab_size, 4))['pooled_output']
  print(f'  frozen vs SavedModel max |diff| {np.max(np.abs(out_saved - out_frozen)):.2e}')
  saved.close()
  frozen.close()
  print(f'\n(files in {work})')


if __name__ == '__main__':
  main()
