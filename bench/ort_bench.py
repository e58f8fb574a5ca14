"""ONNX Runtime beside the project's TF paths on one MiniLM-sized BERT, as ratios from one run.

    python bench/ort_bench.py [--quick] [--layers 6] [--seq 128] [--repeats 20]
                              [--output_dir bench_output]

The peer a user would pick for CPU speed is ONNX Runtime. The bench builds the
MiniLM-sized BERT of freeze_bench.py (6 layers, hidden 384, 12 heads,
intermediate 1536, vocab 30522, seq 128; random weights, nothing downloaded)
as a SavedModel, freezes it with every optimisation (ee.freeze_saved_model),
converts that frozen GraphDef to ONNX in-process (tf2onnx.convert.from_graph_def,
no network) and loads it in ONNX Runtime (CPU execution provider, all graph
optimisations, as many intra-op threads as TF uses: the cores this process
may run on). Outputs must agree with TF (max |diff| < 1e-3, asserted).

Timed at batch 1, 8 and 32, in one interleaved loop (median of --repeats calls each):
  SavedModel          ee.Predictor (the project's session.run of the signature)
  frozen+optimised    ee.FrozenPredictor on the frozen .pb
  bf16                the frozen graph with mixed_precision='bfloat16' (TF Serving's
                      --mixed_precision=bfloat16), only on CPUs with native bf16
                      (estimator_export.precision.NATIVE_BF16_FLAGS); elsewhere it is
                      emulated or not run at all, so it is reported as not measured
  ONNX Runtime        InferenceSession.run (and on ORT's BERT-fused model when
                      onnxruntime.transformers fuses anything; the faster ORT is the peer)
Goal: the fastest TF path within 1.25x of ONNX Runtime at batch 1 and 32. The
plot <output_dir>/ort_bench_latency.png shows latency against batch size per path.

The ORT packages are bench-only: `pip install -e '.[bench]'` (setup.py pins
tf2onnx, onnx and onnxruntime versions that keep TF 2.15's numpy<2,
protobuf<5 and ml_dtypes 0.3; matplotlib for the plot). Results go to
<output_dir>/ort_bench.json.
"""
import argparse
import collections
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
from bench import _common  # pylint: disable=g-import-not-at-top
from bench._common import Row  # pylint: disable=g-import-not-at-top
from bench import freeze_bench  # pylint: disable=g-import-not-at-top
from bert_example import modeling  # pylint: disable=g-import-not-at-top

GOAL = 1.25  # best TF latency / ORT latency, at every batch size.
BATCHES = (1, 8, 32)
GOAL_BATCHES = (1, 32)
OPSET = 17  # ONNX opset tf2onnx targets (LayerNormalization fusion needs >= 17).
AGREE_ATOL = 1e-3
BF16_ATOL = 5e-2  # bfloat16 keeps about 3 significant digits.
INSTALL_HINT = "pip install -e '.[bench]'  (pins tf2onnx, onnx, onnxruntime for TF 2.15)"


def cpu_threads() -> int:
  """The cores this process may run on: TF's default intra-op thread count."""
  return len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()


def to_onnx(frozen: 'ee.FrozenGraph', path: str):
  """Converts the frozen GraphDef to ONNX (tf2onnx, in-process); (model proto, op histogram).

  Raises:
    RuntimeError: tf2onnx could not convert some ops (named in the message).
  """
  from tf2onnx import convert  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  inputs = [entry['name'] for entry in frozen.inputs.values()]
  outputs = [entry['name'] for entry in frozen.outputs.values()]
  try:
    model, _ = convert.from_graph_def(frozen.graph_def, name='minilm', input_names=inputs,
                                      output_names=outputs, opset=OPSET, output_path=path)
  except Exception as e:  # tf2onnx raises plain exceptions naming the unsupported ops.
    raise RuntimeError(f'tf2onnx could not convert the frozen graph: {e}') from e
  ops = collections.Counter(node.op_type for node in model.graph.node)
  return model, ops


def ort_session(path: str, threads: int):
  """An InferenceSession on the CPU EP, all graph optimisations, `threads` intra-op threads."""
  import onnxruntime as ort  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  options = ort.SessionOptions()
  options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
  options.intra_op_num_threads = threads
  options.inter_op_num_threads = 1
  options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
  return ort.InferenceSession(path, options, providers=['CPUExecutionProvider'])


def ort_fuse(path: str, out_path: str, config: modeling.BertConfig):
  """ORT's own BERT fusions (onnxruntime.transformers): (fused op counts, path or None).

  A user after speed runs these too. The path is None when nothing fused (the
  tf2onnx graph may not match ORT's patterns); the counts then say so.
  """
  from onnxruntime.transformers import optimizer  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  model = optimizer.optimize_model(path, model_type='bert',
                                   num_heads=config.num_attention_heads,
                                   hidden_size=config.hidden_size, opt_level=0)
  fused = {k: v for k, v in model.get_fused_operator_statistics().items() if v}
  if not fused:
    return fused, None
  model.save_model_to_file(out_path)
  return fused, out_path


class OrtRunner:
  """Runs the ONNX model by the frozen graph's aliases, like FrozenPredictor does."""

  def __init__(self, session, frozen: 'ee.FrozenGraph'):
    self.session = session
    self.feed_names = {alias: entry['name'] for alias, entry in frozen.inputs.items()}
    self.output_keys = sorted(frozen.outputs)
    self.fetch_names = [frozen.outputs[k]['name'] for k in self.output_keys]

  def __call__(self, inputs: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    values = self.session.run(self.fetch_names,
                              {self.feed_names[k]: v for k, v in inputs.items()})
    return dict(zip(self.output_keys, values))


def max_diff(a: Dict[str, np.ndarray], b: Dict[str, np.ndarray]) -> float:
  return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


def plot(latency_ms: Dict[int, Dict[str, float]], path: str, title: str) -> None:
  """Latency (ms, log scale) against batch size, one line per path, as a PNG."""
  import matplotlib  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  matplotlib.use('Agg')  # Files only, no display.
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  figure, axes = pyplot.subplots(figsize=(6.4, 4.0), dpi=100)
  batches = sorted(latency_ms)
  for name in latency_ms[batches[0]]:
    axes.plot(batches, [latency_ms[b][name] for b in batches], marker='o', label=name)
  axes.set_xscale('log', base=2)
  axes.set_yscale('log')
  axes.set_xticks(batches, [str(b) for b in batches])
  axes.set_xlabel('batch size (sequences of 128 tokens)')
  axes.set_ylabel('latency per call, ms (median)')
  axes.set_title(title, fontsize=10)
  axes.grid(True, which='both', alpha=0.3)
  axes.legend()
  figure.tight_layout()
  figure.savefig(path)
  pyplot.close(figure)


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='2 layers, fewer calls (smoke run)')
  parser.add_argument('--layers', type=int, default=6)
  parser.add_argument('--seq', type=int, default=128)
  parser.add_argument('--repeats', type=int, default=20,
                      help='interleaved calls of each path per batch size (>= 20 for the goal)')
  parser.add_argument('--output_dir', default='bench_output',
                      help='where ort_bench.json goes (models stay in a temporary directory)')
  args = parser.parse_args()
  layers, repeats = (2, 5) if args.quick else (args.layers, args.repeats)
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  try:
    import onnxruntime  # pylint: disable=g-import-not-at-top,import-outside-toplevel,unused-import
    import tf2onnx  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  except ImportError as e:
    sys.exit(f'ort_bench needs ONNX Runtime and tf2onnx ({e}); install them with {INSTALL_HINT}')

  def say(text):
    print(text, flush=True)

  load_before = _common.load_average()
  threads = cpu_threads()
  say(f'tensorflow {tf.__version__}, tf2onnx {tf2onnx.__version__}, onnxruntime '
      f'{onnxruntime.__version__}, numpy {np.__version__}; {threads} cores, ORT intra-op '
      f'threads {threads} (TF: default = cores)')
  config = modeling.BertConfig(vocab_size=30522, hidden_size=384, num_hidden_layers=layers,
                               num_attention_heads=12, intermediate_size=1536,
                               max_position_embeddings=512)
  work = tempfile.mkdtemp(prefix='ort_bench_')
  rows: List[Row] = []
  result = {'layers': layers, 'seq': args.seq, 'repeats': repeats, 'threads': threads,
            'versions': {'tensorflow': tf.__version__, 'tf2onnx': tf2onnx.__version__,
                         'onnxruntime': onnxruntime.__version__}}
  try:
    export_dir = os.path.join(work, 'saved_model')
    start = time.perf_counter()
    freeze_bench.build_saved_model(export_dir, config, args.seq)
    samples = freeze_bench.sample(2, args.seq, config.vocab_size, seed=1)
    frozen = ee.freeze_saved_model(export_dir, options=ee.FreezeOptions(
        optimizations=('all',), samples=samples, rtol=1e-4, atol=1e-4))
    pb_path = os.path.join(work, 'frozen.pb')
    frozen.save(pb_path)
    say(f'BERT {layers} layers, hidden 384, seq {args.seq} (random weights): SavedModel + '
        f'frozen ({len(frozen.graph_def.node)} nodes) in {time.perf_counter() - start:.1f}s')
    start = time.perf_counter()
    onnx_path = os.path.join(work, 'model.onnx')
    try:
      _, ops = to_onnx(frozen, onnx_path)
    except RuntimeError as e:
      say(f'ONNX conversion FAILED, ORT not measured: {e}')
      result['conversion_error'] = str(e)
      ops = None
    if ops is not None:
      say(f'tf2onnx (opset {OPSET}): {sum(ops.values())} ONNX nodes in '
          f'{time.perf_counter() - start:.1f}s; ops: '
          + ', '.join(f'{k} {v}' for k, v in sorted(ops.items())))
      result['onnx_ops'] = dict(ops)

    saved = ee.Predictor.from_saved_model(export_dir)
    frozen_predictor = ee.FrozenPredictor.from_frozen_graph(pb_path)
    paths = {'SavedModel': saved, 'frozen+optimised': frozen_predictor}
    if ops is not None:
      paths['ORT'] = OrtRunner(ort_session(onnx_path, threads), frozen)
      try:
        fused, fused_path = ort_fuse(onnx_path, os.path.join(work, 'fused.onnx'), config)
        fuse_note = (f'fused {fused}' if fused else 'no pattern matched the tf2onnx graph '
                     '(Attention, LayerNormalization, Gelu: 0 fused); plain ORT is the peer')
      except ImportError as e:
        fused_path, fuse_note = None, f'not tried ({e}; {INSTALL_HINT})'
      say(f'ORT transformer fusions: {fuse_note}')
      result['ort_fusions'] = fuse_note
      if fused_path:
        paths['ORT fused'] = OrtRunner(ort_session(fused_path, threads), frozen)
    bf16_flag = precision.native_bf16()
    if bf16_flag:
      paths['bf16'] = ee.FrozenPredictor.from_frozen_graph(pb_path, mixed_precision='bfloat16')
      bf16_note = f'measured (CPU has {bf16_flag})'
    else:
      bf16_note = ('not measured: no native bf16 on this CPU (needs '
                   + ' or '.join(precision.NATIVE_BF16_FLAGS) + '); TF would emulate it')
    say(f'bf16: {bf16_note}')
    result['bf16'] = bf16_note

    check = freeze_bench.sample(4, args.seq, config.vocab_size, seed=7)
    reference = saved(check)
    diffs = {name: max_diff(reference, run(check)) for name, run in paths.items()}
    say('max |output diff| vs SavedModel: '
        + ', '.join(f'{k} {v:.2e}' for k, v in diffs.items()))
    result['max_abs_diff'] = diffs
    bad = {k: v for k, v in diffs.items() if not v < (BF16_ATOL if k == 'bf16' else AGREE_ATOL)}
    assert not bad, f'outputs disagree with the SavedModel by more than {AGREE_ATOL}: {bad}'

    result['latency_ms'] = {}
    for batch in BATCHES:
      feeds = freeze_bench.sample(batch, args.seq, config.vocab_size, seed=batch)
      for run in paths.values():  # Warm-up: first runs allocate and tune.
        run(feeds)
        run(feeds)
      medians = _common.interleaved_medians(
          {name: (lambda run=run: run(feeds)) for name, run in paths.items()}, repeats)
      result['latency_ms'][batch] = {k: v * 1e3 for k, v in medians.items()}
      best = min((k for k in medians if not k.startswith('ORT')), key=medians.get)
      measured = ', '.join(f'{k} {v * 1e3:.1f}' for k, v in medians.items())
      say(f'batch {batch}: {measured} ms ({repeats} interleaved calls each)')
      frozen_ratio = medians['frozen+optimised'] / medians['SavedModel']
      rows.append(Row(f'frozen / SavedModel, batch {batch}', measured[:56],
                      f'{frozen_ratio:.2f}x', 'info', None))
      if batch not in GOAL_BATCHES:
        continue
      if 'ORT' in medians:
        peer = min((k for k in medians if k.startswith('ORT')), key=medians.get)
        ratio = medians[best] / medians[peer]
        rows.append(Row(f'{best} / {peer}, batch {batch}',
                        f'{medians[best] * 1e3:.1f} ms vs {medians[peer] * 1e3:.1f} ms',
                        f'{ratio:.2f}x', f'<= {GOAL:.2f}x',
                        ratio <= GOAL if repeats >= 20 else None))
      else:
        rows.append(Row(f'best TF / ORT, batch {batch}', 'ORT not measured', 'n/a',
                        f'<= {GOAL:.2f}x', False))
    if 'bf16' not in paths:
      rows.append(Row('bf16 / fp32, batch 32', bf16_note[:56], 'n/a', '>= 1.4x', None))
    else:
      speedup = result['latency_ms'][32]['frozen+optimised'] / result['latency_ms'][32]['bf16']
      rows.append(Row('bf16 / fp32 throughput, batch 32', f'max |diff| {diffs["bf16"]:.1e}',
                      f'{speedup:.2f}x', '>= 1.4x', speedup >= 1.4 if repeats >= 20 else None))
    png = os.path.join(args.output_dir, 'ort_bench_latency.png')
    os.makedirs(args.output_dir, exist_ok=True)
    plot(result['latency_ms'], png, f'MiniLM-sized BERT ({layers} layers, seq {args.seq}), '
         f'{threads} CPU cores')
    say(f'plot: {png}')
    for run in paths.values():
      if hasattr(run, 'close'):
        run.close()
  finally:
    shutil.rmtree(work, ignore_errors=True)

  note = ' (--quick: fewer than 20 calls, goals not judged)' if repeats < 20 else ''
  if note:
    say(note.strip())
  _common.finish('ort_bench', rows, load_before, args.output_dir, result, say)


if __name__ == '__main__':
  main()
