"""Export and prediction benchmarks, as ratios against baselines measured in the same run.

    python bench/export_bench.py [--quick] [--output_dir DIR] [--skip_bert] [--repeats N]

1. `export_for_serving` (signature checks, validation of every signature on
   the reloaded SavedModel, parity with the Estimator's model_fn on the
   checkpoint, warmup written and replayed, manifest, fsync, atomic publish,
   retention) vs bare `Estimator.export_saved_model` with the same receiver,
   timed interleaved (rotating order), medians:
   a. on bert_example's BertClassifier of the MiniLM shape (6 layers, hidden
      384, 12 heads, intermediate 1536, vocab 30522, seq 128; random weights,
      no network) exported with formats raw + example + text. Goal: <= 1.5x.
   b. on a toy 3-layer MLP, where the fixed costs of building and running
      graphs dominate: the ratio is reported, with what each step costs.
   Each export_for_serving is also split into steps (exclusive wall time of
   the library functions it calls, wrapped by this script only while it
   runs; see STEPS), printed as ms and as a share of the bare export.
2. Per-request latency at batch 1 on the toy: the persistent `Predictor` vs
   `estimator.predict` (which rebuilds the graph and restores the checkpoint
   on every call, as users of tf.estimator do per request). Goal: >= 40x.
3. The Predictor vs a bare `session.run` on the same loaded SavedModel
   (the floor: Predictor overhead should be small).
The machine has 2 cores shared with other work, so everything is a ratio
measured in one run. --quick: fewer repeats and a 1-layer BERT (a smoke run).
"""
import argparse
import collections
import contextlib
import functools
import importlib
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import estimator_export as ee  # pylint: disable=g-import-not-at-top
from bench import _common  # pylint: disable=g-import-not-at-top
from bench._common import Row  # pylint: disable=g-import-not-at-top


class MLPClassifier(ee.ServingModelMixin):
  """A 3-layer MLP over 64 features, 10 classes."""
  feature_spec = ee.FeatureSpec([ee.Feature('x', 'float32', (64,)),
                                 ee.Feature('label', 'int32', training_only=True)])
  label_vocabulary = tuple(f'class_{i}' for i in range(10))
  hidden = 256

  def predictions(self, features, mode, params):
    h = features['x']
    for i in range(3):
      h = tf.compat.v1.layers.dense(h, self.hidden, tf.nn.relu, name=f'dense_{i}')
    logits = tf.compat.v1.layers.dense(h, 10, name='logits')
    return {'logits': logits, 'probabilities': tf.nn.softmax(logits)}

  def loss(self, predictions, labels, features, mode, params):
    return tf.compat.v1.losses.sparse_softmax_cross_entropy(features['label'],
                                                            predictions['logits'])


# ----- where export_for_serving spends its time -----

# (step label, module of estimator_export, attribute path): the functions
# export_for_serving calls, as it calls them (through that module's name).
# A path missing from the code under test is skipped, so the table also runs
# against older or newer versions of export.py.
STEPS: Tuple[Tuple[str, str, str], ...] = (
    ('prepare (base, stale staging, checkpoint)', 'export', '_prepare_base'),
    ('prepare (base, stale staging, checkpoint)', 'export', 'clean_stale_staging'),
    ('prepare (base, stale staging, checkpoint)', 'export', 'clean_partial_versions'),
    ('prepare (base, stale staging, checkpoint)', 'export', 'resolve_checkpoint'),
    ('prepare (base, stale staging, checkpoint)', 'export', 'custom_receiver.adapt_receiver_fn'),
    ('signatures: settle + rewrite saved_model.pb', 'export', '_settle_signatures'),
    ('sample feeds', 'export', 'validate_lib.sample_feeds'),
    ('warmup: build + write requests', 'export', '_warmup_logs'),
    ('warmup: build + write requests', 'export', 'warmup_lib.write_warmup_requests'),
    ('warmup: read file back', 'export', 'warmup_lib.read_warmup_requests'),
    ('checks: wait for the served side, compare', '_export_checks', 'check_written_export'),
    ('validation: other (tag sets)', 'tag_sets', 'run_every_tag_set'),
    ('validation: load SavedModel', 'predictor', 'Predictor.from_saved_model'),
    ('validation: run every signature', 'validate', 'run_signatures'),
    ('validation: signatures + warmup, prefetched', '_shared_runs',
     'SharedRuns.prefetch'),
    ('warmup: replay', 'warmup', 'replay_warmup'),
    ('consistency checks (aliases, raw vs Example)', 'validate', 'check_same_outputs'),
    ('consistency checks (aliases, raw vs Example)', 'validate', 'check_consistency'),
    ('consistency checks (aliases, raw vs Example)', 'validate', 'compare_parity'),
    ('parity: the model_fn on the checkpoint', 'validate', 'check_parity'),
    ('parity: the model_fn on the checkpoint', '_export_checks', 'predict_once'),
    ('manifest', 'export', '_write_manifest'),
    ('fingerprint (sha256 of the model files)', 'export', 'content_fingerprint'),
    ('fingerprint (sha256 of the model files)', '_export_checks', 'content_fingerprint'),
    ('example requests (assets.extra/requests)', 'export',
     'example_requests_lib.write_example_requests'),
    ('fsync', 'export', 'fsync_tree'),
    ('publish (rename, fsync base)', 'export', '_publish'),
    ('remove directories (staging, retained-out versions)', 'export', '_rmtree'),
    ('retention', 'export', 'apply_retention'),
)
BARE_STEP = 'export_saved_model (tf.estimator)'
OTHER_STEP = 'other (glue, logging)'
WORKER = '  || '  # Prefix of steps run in another thread, overlapping the ones above.


class StepTimer:
  """Exclusive wall time per step label of the wrapped calls, while `active`.

  A wrapped call's time counts for its label minus the time of wrapped calls
  inside it (in the same thread), so the steps of the calling thread add up to
  the export's wall time (the rest is OTHER_STEP). Steps in other threads
  (WORKER-prefixed labels) overlap those and are shown beside them.
  """

  def __init__(self):
    self.active = False
    self._local = threading.local()
    self._main = threading.get_ident()
    self._lock = threading.Lock()
    self.totals: Dict[str, float] = collections.defaultdict(float)

  def wrap(self, label: str, fn: Callable) -> Callable:
    @functools.wraps(fn)
    def timed(*args, **kwargs):
      if not self.active:
        return fn(*args, **kwargs)
      stack = self._local.__dict__.setdefault('stack', [])
      stack.append(0.0)
      start = time.perf_counter()
      try:
        return fn(*args, **kwargs)
      finally:
        elapsed = time.perf_counter() - start
        inner = stack.pop()
        where = label if threading.get_ident() == self._main else WORKER + label
        with self._lock:
          self.totals[where] += elapsed - inner
        if stack:
          stack[-1] += elapsed
    return timed

  @contextlib.contextmanager
  def patched(self, estimator: tf.estimator.Estimator) -> Iterator[List[str]]:
    """Wraps STEPS (those that exist) and estimator.export_saved_model; yields what it wrapped."""
    undo = []
    for label, module, path in STEPS:
      try:
        owner = importlib.import_module(f'estimator_export.{module}')
        *parents, attr = path.split('.')
        for parent in parents:
          owner = getattr(owner, parent)
        original = getattr(owner, attr)
      except (ImportError, AttributeError):
        continue
      static = owner.__dict__.get(attr) if isinstance(owner, type) else original
      setattr(owner, attr, self.wrap(label, original))
      undo.append((owner, attr, static, f'{module}.{path}'))
    estimator.export_saved_model = self.wrap(BARE_STEP, estimator.export_saved_model)
    try:
      yield [what for *_, what in undo]
    finally:
      del estimator.export_saved_model
      for owner, attr, static, _ in reversed(undo):
        setattr(owner, attr, static)

  def timed(self, fn: Callable[[], object]) -> Dict[str, float]:
    """Runs fn with recording on; returns label -> seconds, OTHER_STEP included."""
    self.totals.clear()
    self._main = threading.get_ident()
    self.active = True
    start = time.perf_counter()
    try:
      fn()
    finally:
      self.active = False
    total = time.perf_counter() - start
    steps = dict(self.totals)
    steps[OTHER_STEP] = total - sum(v for k, v in steps.items() if not k.startswith(WORKER))
    return steps


def compare_exports(name: str, estimator, bare_fn: Callable[[str], object],
                    full_fn: Callable[[str, int], object], work: str, repeats: int,
                    say) -> Tuple[float, float, Dict[str, float]]:
  """Interleaved medians of bare and full exports, and the median of each step.

  Args:
    name: what is exported (directory names, messages).
    bare_fn: export_dir_base -> bare export_saved_model into it.
    full_fn: (export_dir_base, version) -> export_for_serving (retention keeps 2).
    repeats: timed calls of each (after one untimed call of each), alternating
      which goes first.

  Returns:
    (bare seconds, full seconds, step label -> median seconds).
  """
  timer = StepTimer()
  runs: List[Dict[str, float]] = []
  versions = iter(range(1, 10 ** 6))
  bare_base, full_base = os.path.join(work, f'{name}_bare'), os.path.join(work, f'{name}_full')
  times = {'bare': [], 'full': []}

  def bare():
    # A fresh base per bare export (tf.estimator sleeps to get a new timestamp when
    # two exports in one base fall within the same second), removed untimed.
    shutil.rmtree(bare_base, ignore_errors=True)
    start = time.perf_counter()
    bare_fn(bare_base)
    return time.perf_counter() - start

  def full():
    start = time.perf_counter()
    runs.append(timer.timed(lambda: full_fn(full_base, next(versions))))
    return time.perf_counter() - start

  with timer.patched(estimator) as wrapped:
    bare()
    full()  # One untimed call of each: first-call costs (op registration, imports).
    runs.clear()
    say(f'  {name}: {repeats} interleaved exports of each; steps from {len(wrapped)} wrapped '
        'functions')
    for i in range(repeats):
      for kind in (('bare', 'full') if i % 2 == 0 else ('full', 'bare')):
        times[kind].append(bare() if kind == 'bare' else full())
  shutil.rmtree(bare_base, ignore_errors=True)
  labels = sorted({label for run in runs for label in run})
  steps = {label: statistics.median(run.get(label, 0.0) for run in runs) for label in labels}
  return statistics.median(times['bare']), statistics.median(times['full']), steps


def breakdown(name: str, bare: float, full: float, steps: Mapping[str, float], say
             ) -> Dict[str, float]:
  """Prints the steps of export_for_serving (ms, share of the bare export); returns label -> ms."""
  say(f'\n{name}: export_for_serving {full * 1e3:.0f} ms = {full / bare:.2f}x bare '
      f'export_saved_model {bare * 1e3:.0f} ms; median per step:')
  main = sorted((k for k in steps if not k.startswith(WORKER)), key=lambda k: -steps[k])
  worker = sorted((k for k in steps if k.startswith(WORKER)), key=lambda k: -steps[k])
  for label in main + worker:
    say(f'  {label:<52} {steps[label] * 1e3:9.1f} ms  {steps[label] / bare:6.2f}x bare')
  overhead = sum(steps[k] for k in main if k != BARE_STEP)
  say(f'  {"(calling thread, besides export_saved_model)":<52} {overhead * 1e3:9.1f} ms  '
      f'{overhead / bare:6.2f}x bare')
  if worker:
    say(f'  ({WORKER.strip()}: in a worker thread, overlapping the calling thread\'s '
        '"checks: wait" step)')
  return {label: round(steps[label] * 1e3, 2) for label in main + worker}


# ----- the models -----

def toy_setup(work: str, hidden: int):
  """(model, estimator trained 10 steps, data) of the MLP."""
  MLPClassifier.hidden = hidden
  model = MLPClassifier()
  estimator = model.make_estimator(os.path.join(work, 'toy_model'))
  rng = np.random.RandomState(0)
  data = {'x': rng.randn(256, 64).astype(np.float32),
          'label': rng.randint(0, 10, 256).astype(np.int32)}
  estimator.train(lambda: tf.data.Dataset.from_tensor_slices(data).repeat().batch(32),
                  max_steps=10)
  return model, estimator, data


def measure_toy_export(work: str, hidden: int, repeats: int, say):
  """1b. Toy MLP: rows and breakdown."""
  model, estimator, data = toy_setup(work, hidden)
  receiver = model.serving_input_receiver_fn('combined')
  samples = {'x': data['x'][:4]}
  say(f'toy: 3x{hidden} MLP, 64 inputs, 10 classes, combined receiver (raw + tf.Example)')
  bare, full, steps = compare_exports(
      'toy', estimator, lambda base: estimator.export_saved_model(base, receiver),
      lambda base, version: model.export_for_serving(estimator, base, receiver,
                                                     samples=samples, version=version,
                                                     keep=2),
      work, repeats, say)
  row = Row('1b. toy MLP: export_for_serving vs bare', f'bare {bare * 1e3:.0f} ms, '
            f'export_for_serving {full * 1e3:.0f} ms', f'{full / bare:.2f}x', 'report', None)
  return row, breakdown('toy MLP', bare, full, steps, say), (model, estimator, data)


def measure_bert_export(work: str, layers: int, repeats: int, say):
  """1a. MiniLM-sized BERT (random weights): row and breakdown."""
  from bench import bert_bench  # pylint: disable=g-import-not-at-top
  from bert_example import model as model_lib  # pylint: disable=g-import-not-at-top
  config, vocab, _, weights = bert_bench.prepare_weights(work, True, layers)
  model = model_lib.BertClassifier(config, bert_bench.LABELS, bert_bench.SEQ_LEN,
                                   vocab_file=vocab)
  model_dir = os.path.join(work, 'bert_model')
  bert_bench.write_initial_checkpoint(model, model_dir)
  estimator = model.make_estimator(model_dir)
  receiver = model.serving_input_receiver_fn(model_lib.FORMATS)
  samples = model.samples(list(bert_bench.SENTENCES))
  say(f'BERT: BertClassifier, {config.num_hidden_layers} layers, hidden {config.hidden_size}, '
      f'{config.num_attention_heads} heads, intermediate {config.intermediate_size}, vocab '
      f'{config.vocab_size}, seq {bert_bench.SEQ_LEN}; {weights}; formats '
      f'{"+".join(model_lib.FORMATS)}')
  bare, full, steps = compare_exports(
      'bert', estimator, lambda base: estimator.export_saved_model(base, receiver),
      lambda base, version: model.export_for_serving(
          estimator, base, formats=model_lib.FORMATS, samples=samples,
          options=ee.ExportOptions(version=version, keep=2, model_name=bert_bench.MODEL_NAME)),
      work, repeats, say)
  what = f'1a. BERT ({config.num_hidden_layers} layers): export_for_serving vs bare'
  minilm = config.num_hidden_layers == bert_bench.MINILM_SHAPE['num_hidden_layers']
  row = Row(what, f'bare {bare * 1e3:.0f} ms, export_for_serving {full * 1e3:.0f} ms',
            f'{full / bare:.2f}x', '<= 1.5x' if minilm else 'info',
            full / bare <= 1.5 if minilm else None)  # The goal is for the MiniLM shape.
  return row, breakdown(f'BERT {config.num_hidden_layers} layers', bare, full, steps, say)


def measure_predictor(work: str, toy, requests: int) -> Sequence[Row]:
  """2 and 3: Predictor vs estimator.predict and vs bare session.run, batch 1 (toy)."""
  model, estimator, data = toy
  base = os.path.join(work, 'toy_predict')
  result = model.export_for_serving(estimator, base, model.serving_input_receiver_fn('combined'),
                                    samples={'x': data['x'][:4]}, version=1)
  one = {'x': data['x'][:1]}

  def estimator_request():
    next(estimator.predict(lambda: tf.data.Dataset.from_tensor_slices(one).batch(1),
                           yield_single_examples=False))

  block = 100
  with ee.Predictor.from_saved_model(result.path) as predictor:
    predictor(one)  # First call builds the callable.
    sig = predictor.signature_def
    feed_name = sig.inputs['x'].name
    fetch_names = [sig.outputs[k].name for k in predictor.output_keys]
    session = predictor.session
    session.run(fetch_names, {feed_name: one['x']})
    t_block, per_estimator, _ = _common.median_ratio(
        lambda: [predictor(one) for _ in range(block)], estimator_request, requests)
    t_session, t_predictor, overhead = _common.median_ratio(
        lambda: [session.run(fetch_names, {feed_name: one['x']}) for _ in range(block)],
        lambda: [predictor(one) for _ in range(block)], max(3, requests // 2))
  per_predictor = t_block / block
  ratio = per_estimator / per_predictor
  return [Row('2. toy: Predictor vs estimator.predict, batch 1',
              f'estimator.predict {per_estimator * 1e3:.1f} ms, Predictor '
              f'{per_predictor * 1e3:.3f} ms', f'{ratio:.0f}x', '>= 40x', ratio >= 40),
          Row('3. toy: Predictor vs bare session.run, batch 1',
              f'session.run {t_session / block * 1e3:.3f} ms, Predictor '
              f'{t_predictor / block * 1e3:.3f} ms', f'{overhead:.2f}x', 'info', None)]


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help='fewer repeats and a 1-layer BERT (a smoke run)')
  parser.add_argument('--output_dir', default='bench_output',
                      help='where export_bench.json goes ("" for nowhere)')
  parser.add_argument('--repeats', type=int, default=None,
                      help='interleaved exports of each kind on BERT (default 20; quick 2); '
                      'the toy gets twice as many')
  parser.add_argument('--skip_bert', action='store_true', help='only the toy MLP')
  parser.add_argument('--bert_layers', type=int, default=None,
                      help='encoder layers of the BERT (default 6, the MiniLM shape; quick 1)')
  parser.add_argument('--requests', type=int, default=None,
                      help='estimator.predict calls, each against 100 Predictor calls '
                      '(default 10; quick 3)')
  parser.add_argument('--hidden', type=int, default=256)
  args = parser.parse_args()
  tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)
  repeats = args.repeats or (2 if args.quick else 20)
  requests = args.requests or (3 if args.quick else 10)
  layers = args.bert_layers or (1 if args.quick else 6)
  if min(repeats, requests, layers) < 1:
    parser.error('--repeats, --requests and --bert_layers must be at least 1')

  def say(text):
    print(text, flush=True)

  load_before = _common.load_average()
  work = tempfile.mkdtemp(prefix='export_bench_')
  rows: List[Row] = []
  steps = {}
  try:
    toy_row, steps['toy'], toy = measure_toy_export(work, args.hidden, 2 * repeats, say)
    rows.append(toy_row)
    if not args.skip_bert:
      bert_row, steps['bert'] = measure_bert_export(work, layers, repeats, say)
      rows.insert(0, bert_row)
    rows.extend(measure_predictor(work, toy, requests))
  finally:
    shutil.rmtree(work, ignore_errors=True)
  _common.finish('export_bench', rows, load_before, args.output_dir or None,
                 {'steps_ms': steps, 'repeats': repeats, 'quick': args.quick}, say)


if __name__ == '__main__':
  main()
