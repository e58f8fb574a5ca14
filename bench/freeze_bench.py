"""Frozen + optimised GraphDef vs SavedModel on a BERT-sized graph, as ratios from one run.

    python bench/freeze_bench.py [--quick] [--layers 6] [--seq 128] [--repeats 30]
                                 [--output_dir bench_output]

A MiniLM-sized BERT (6 layers, hidden 384, 12 heads, intermediate 1536, vocab
30522, seq 128; random weights, nothing downloaded) is saved as a SavedModel
whose signature returns the pooled [CLS] output (what a classifier reads),
then frozen from its signature with every optimisation (fold_shapes,
fuse_dense, fold_scales and prune_rows among them: see each pass's note), and
as fp16 and int8.

1. Steady-state latency, FrozenPredictor vs the SavedModel Predictor, batch 1
   and 8 (medians of interleaved calls). Goal: <= 0.85x at both.
2. Cold start (load + first run) in fresh processes, frozen vs SavedModel,
   alternating, median of --cold_starts each. Goal: <= 1.2x.
3. File size fp16 / int8 .pb vs the SavedModel's variables/, with the max
   output difference on samples. Goals: fp16 <= 0.55x, int8 <= 0.30x.
The machine has 2 cores: everything runs sequentially.
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import estimator_export as ee  # pylint: disable=g-import-not-at-top
from bench import _common  # pylint: disable=g-import-not-at-top
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


# Child process of a cold start: load one model, run it once, print the seconds taken. The
# runtime is up first (TensorFlow, the serving op libraries, one session), as in a server.
_COLD_START = """
import sys, time
import numpy as np
import tensorflow as tf
import estimator_export as ee
from estimator_export._op_libraries import register_serving_op_libraries
register_serving_op_libraries()
tf.compat.v1.Session(graph=tf.Graph()).close()
kind, path, seq = sys.argv[1], sys.argv[2], int(sys.argv[3])
feeds = {n: np.ones([1, seq], np.int32) for n in ('input_ids', 'input_mask', 'segment_ids')}
start = time.perf_counter()
load = ee.Predictor.from_saved_model if kind == 'saved' else ee.FrozenPredictor.from_frozen_graph
load(path)(feeds)
print(time.perf_counter() - start)
"""


def cold_start(kind: str, path: str, seq: int) -> float:
  """Seconds from load to first result in a fresh process (TensorFlow already running)."""
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  out = subprocess.run([sys.executable, '-c', _COLD_START, kind, path, str(seq)], check=True,
                       capture_output=True, text=True, env=env, timeout=300,
                       cwd=_common.REPO).stdout
  return float(out.strip().splitlines()[-1])


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='2 layers, fewer calls (smoke run)')
  parser.add_argument('--layers', type=int, default=6)
  parser.add_argument('--seq', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=30,
                      help='interleaved calls per batch size (>= 20 for the goals)')
  parser.add_argument('--cold_starts', type=int, default=5,
                      help='fresh processes per model for the cold start')
  parser.add_argument('--output_dir', default='bench_output', help='where freeze_bench.json goes')
  args = parser.parse_args()
  layers, repeats, colds = (2, 5, 2) if args.quick else (args.layers, args.repeats,
                                                         args.cold_starts)
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  load_before = _common.load_average()
  config = modeling.BertConfig(vocab_size=30522, hidden_size=384,
                               num_hidden_layers=layers, num_attention_heads=12,
                               intermediate_size=1536, max_position_embeddings=512)
  work = tempfile.mkdtemp(prefix='freeze_bench_')
  rows = []
  try:
    export_dir = os.path.join(work, 'saved_model')
    start = time.perf_counter()
    build_saved_model(export_dir, config, args.seq)
    print(f'BERT {layers} layers, hidden 384, seq {args.seq}: SavedModel built in '
          f'{time.perf_counter() - start:.1f}s', flush=True)
    samples = sample(2, args.seq, config.vocab_size, seed=1)
    paths, results = {}, {}
    for mode in (None, 'fp16', 'int8'):
      start = time.perf_counter()
      frozen = ee.freeze_saved_model(export_dir, options=ee.FreezeOptions(
          optimizations=('all',), compression=mode, samples=samples, rtol=1e-4, atol=1e-4))
      name = mode or 'fp32'
      paths[name] = os.path.join(work, f'frozen_{name}.pb')
      frozen.save(paths[name])
      results[name] = frozen
      print(f'  froze {name} in {time.perf_counter() - start:.1f}s: '
            f'{len(frozen.graph_def.node)} nodes', flush=True)
    for step in results['fp32'].optimizations:
      print(f'    {step["name"]}: {step["note"]}; max |diff| '
            f'{step["max_abs_diff"]["pooled_output"]:.1e}')

    saved = ee.Predictor.from_saved_model(export_dir)
    frozen = ee.FrozenPredictor.from_frozen_graph(paths['fp32'])
    check = sample(4, args.seq, config.vocab_size, 4)
    diff = float(np.max(np.abs(saved(check)['pooled_output'] - frozen(check)['pooled_output'])))
    print(f'frozen vs SavedModel on 4 fresh samples: max |diff| {diff:.1e}')
    assert diff < 1e-4, f'the frozen graph disagrees with the SavedModel by {diff}'
    latency = {}
    for batch in (1, 8):
      feeds = sample(batch, args.seq, config.vocab_size, 3)
      for run in (saved, frozen):
        run(feeds)
        run(feeds)
      medians = _common.interleaved_medians(
          {'saved': lambda: saved(feeds), 'frozen': lambda: frozen(feeds)}, repeats)
      ratio = medians['frozen'] / medians['saved']
      latency[batch] = {k: v * 1e3 for k, v in medians.items()}
      rows.append(_common.Row(
          f'1. frozen+optimised / SavedModel, batch {batch}',
          f'SavedModel {medians["saved"] * 1e3:.1f} ms, frozen {medians["frozen"] * 1e3:.1f} '
          f'ms ({repeats} calls)', f'{ratio:.3f}x', '<= 0.85x',
          ratio <= 0.85 if repeats >= 20 else None))
      print(rows[-1].line(), flush=True)
    saved.close()
    frozen.close()

    times = {'saved': [], 'frozen': []}
    for i in range(colds):
      for kind in (('saved', 'frozen') if i % 2 == 0 else ('frozen', 'saved')):
        times[kind].append(cold_start(kind, export_dir if kind == 'saved' else paths['fp32'],
                                      args.seq))
    cold = {k: statistics.median(v) for k, v in times.items()}
    ratio = cold['frozen'] / cold['saved']
    rows.append(_common.Row('2. cold start, frozen / SavedModel',
                            f'SavedModel {cold["saved"]:.2f} s, frozen {cold["frozen"]:.2f} s '
                            f'({colds} processes each)', f'{ratio:.2f}x', '<= 1.2x',
                            ratio <= 1.2))
    print(rows[-1].line(), flush=True)

    variables = dir_bytes(os.path.join(export_dir, 'variables'))
    for name, goal in (('fp16', 0.55), ('int8', 0.30)):
      size = os.path.getsize(paths[name])
      drift = results[name].compression['max_abs_diff']['pooled_output']
      rows.append(_common.Row(f'3. {name} .pb / SavedModel variables/',
                              f'{size / 2**20:.1f} of {variables / 2**20:.1f} MiB; max |diff| '
                              f'{drift:.1e}', f'{size / variables:.3f}x', f'<= {goal:.2f}x',
                              size / variables <= goal))
  finally:
    shutil.rmtree(work, ignore_errors=True)
  _common.finish('freeze_bench', rows, load_before, args.output_dir,
                 {'layers': layers, 'seq': args.seq, 'latency_ms': latency,
                  'cold_start_s': cold, 'passes': results['fp32'].optimizations})


if __name__ == '__main__':
  main()
