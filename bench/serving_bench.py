"""Serving benchmarks: ratios against a bare session.run measured in the same run.

    python bench/serving_bench.py [--quick] [--output_dir DIR] [--repeats 30] [--layers 6]
        [--seq_len 128]

The model is a MiniLM-shaped encoder (6 layers, hidden 384, 12 heads,
intermediate 1536, vocab 30522; random weights) exported as a TF1 SavedModel
with int32 input_ids [batch, seq_len] -> pooled float32 [batch, 384]. The
embedded server runs in another process (`estimator-export serve`), as TF
Serving would; the client is this process. Each comparison interleaves the
baseline and the measured call and reports medians:

1. gRPC Predict vs in-process session.run, batch 1 and 32 (goal <= 1.10x at 1).
2. REST predict vs in-process session.run, batch 1 and 32 (goal <= 1.20x at 1).
3. 32 concurrent batch-1 gRPC clients: throughput with --enable_batching vs
   without (goal >= 1.3x), and vs bare batch-32 session.run (goal >= 90%).
4. Time for a new version to become AVAILABLE (load + warmup) vs bare
   loader.load + first run (goal <= 1.5x).
It ends with the goal table (bench._common.finish) and writes serving_bench.json
to --output_dir. --quick: 2 layers, seq 64, fewer repeats, 2 s of throughput
(a smoke run).
"""
import argparse
import concurrent.futures
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

import grpc  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import get_model_status_pb2  # pylint: disable=g-import-not-at-top
from tensorflow_serving.apis import model_service_pb2_grpc  # pylint: disable=g-import-not-at-top

from bench import _common  # pylint: disable=g-import-not-at-top
from bench._common import (Row, grpc_channel, grpc_predict_fn, median_ratio,  # pylint: disable=g-import-not-at-top
                           start_server, stop_server)

VOCAB, HIDDEN, HEADS, INTERMEDIATE = 30522, 384, 12, 1536


def build_encoder(export_dir: str, layers: int, seq_len: int):
  """Writes a MiniLM-shaped encoder SavedModel (random weights)."""
  graph = tf.Graph()
  with graph.as_default():
    rng = np.random.RandomState(0)

    def weight(name, shape):
      return tf.compat.v1.get_variable(
          name, initializer=(rng.randn(*shape) * 0.02).astype(np.float32))

    ids = tf.compat.v1.placeholder(tf.int32, [None, seq_len], name='input_ids')
    x = tf.gather(weight('word_embeddings', [VOCAB, HIDDEN]), ids)
    x += weight('position_embeddings', [seq_len, HIDDEN])[None]
    head = HIDDEN // HEADS

    def norm(t):
      mean, var = tf.nn.moments(t, [-1], keepdims=True)
      return (t - mean) * tf.math.rsqrt(var + 1e-12)

    def split(t):
      return tf.transpose(tf.reshape(t, [-1, seq_len, HEADS, head]), [0, 2, 1, 3])

    for i in range(layers):
      q, k, v = (split(tf.einsum('bsh,hd->bsd', x, weight(f'l{i}_{n}', [HIDDEN, HIDDEN])))
                 for n in 'qkv')
      attn = tf.nn.softmax(tf.matmul(q, k, transpose_b=True) / np.sqrt(head))
      ctx = tf.reshape(tf.transpose(tf.matmul(attn, v), [0, 2, 1, 3]), [-1, seq_len, HIDDEN])
      x = norm(x + tf.einsum('bsh,hd->bsd', ctx, weight(f'l{i}_o', [HIDDEN, HIDDEN])))
      up = tf.nn.gelu(tf.einsum('bsh,hd->bsd', x, weight(f'l{i}_up', [HIDDEN, INTERMEDIATE])),
                      approximate=False)
      x = norm(x + tf.einsum('bsd,dh->bsh', up, weight(f'l{i}_down', [INTERMEDIATE, HIDDEN])))
    pooled = tf.tanh(tf.matmul(x[:, 0], weight('pooler', [HIDDEN, HIDDEN])), name='pooled')
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      builder = tf.compat.v1.saved_model.Builder(export_dir)
      sig = tf.compat.v1.saved_model.predict_signature_def({'input_ids': ids},
                                                           {'pooled': pooled})
      builder.add_meta_graph_and_variables(sess, ['serve'], {'serving_default': sig})
      builder.save()


def load_seconds(log_path: str, version: int) -> float:
  """Seconds from 'Loading servable version' to 'Successfully loaded' in a server log."""
  stamps = {}
  with open(log_path) as f:
    for line in f:
      for key in ('Loading servable version', 'Successfully loaded servable version'):
        if key in line and f'version: {version}}}' in line:
          day, clock = line.split()[:2]
          stamps[key] = time.mktime(time.strptime(f'{day} {clock[:8]}', '%Y-%m-%d %H:%M:%S')) \
              + int(clock[9:12]) / 1000
  return stamps['Successfully loaded servable version'] - stamps['Loading servable version']


def grpc_predictor(channel):
  """A function sending one Predict of input_ids [batch, seq_len] to model 'enc'."""
  predict = grpc_predict_fn(channel, 'enc', timeout=60)
  return lambda batch: predict({'input_ids': batch})


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true',
                      help='2 layers, seq 64, fewer repeats, 2 s of throughput (a smoke run)')
  parser.add_argument('--output_dir', default='bench_output',
                      help='where serving_bench.json goes ("" for nowhere)')
  parser.add_argument('--repeats', type=int, default=None, help='default 30 (quick 8)')
  parser.add_argument('--layers', type=int, default=None, help='default 6 (quick 2)')
  parser.add_argument('--seq_len', type=int, default=None, help='default 128 (quick 64)')
  args = parser.parse_args()
  repeats = args.repeats or (8 if args.quick else 30)
  layers = args.layers or (2 if args.quick else 6)
  seq_len = args.seq_len or (64 if args.quick else 128)
  seconds = 2.0 if args.quick else 5.0
  load_before = _common.load_average()
  rows = []

  def add(row: Row):
    rows.append(row)
    print(row.line(), flush=True)

  work = tempfile.mkdtemp(prefix='serving_bench_')
  base = os.path.join(work, 'enc')
  print(f'building a MiniLM-shaped encoder ({layers} layers, seq {seq_len}) ...', flush=True)
  build_encoder(os.path.join(base, '1'), layers, seq_len)

  session = tf.compat.v1.Session(graph=tf.Graph())
  with session.graph.as_default():
    tf.compat.v1.saved_model.loader.load(session, ['serve'], os.path.join(base, '1'))
  rng = np.random.RandomState(1)
  batches = {n: rng.randint(0, VOCAB, size=(n, seq_len)).astype(np.int32) for n in (1, 32)}
  bare = {n: (lambda b=b: session.run('pooled:0', {'input_ids:0': b})) for n, b in batches.items()}
  for fn in bare.values():
    fn()

  server, grpc_port, rest_port = start_server(base)
  channel = grpc_channel(grpc_port)
  grpc_call = grpc_predictor(channel)

  def rest_call(batch):
    body = json.dumps({'inputs': {'input_ids': batch.tolist()}}).encode()
    req = urllib.request.Request(f'http://127.0.0.1:{rest_port}/v1/models/enc:predict',
                                 data=body, method='POST')
    with urllib.request.urlopen(req, timeout=60) as resp:
      return resp.read()

  try:
    for n in (1, 32):
      grpc_call(batches[n])
      rest_call(batches[n])
      b, m, r = median_ratio(bare[n], lambda n=n: grpc_call(batches[n]), repeats)
      add(Row(f'1. gRPC Predict vs session.run, batch {n}', f'session.run {b * 1e3:.2f} ms, '
              f'gRPC {m * 1e3:.2f} ms', f'{r:.2f}x', '<= 1.10x' if n == 1 else 'info',
              r <= 1.10 if n == 1 else None))
      b, m, r = median_ratio(bare[n], lambda n=n: rest_call(batches[n]), repeats)
      add(Row(f'2. REST predict vs session.run, batch {n}', f'session.run {b * 1e3:.2f} ms, '
              f'REST {m * 1e3:.2f} ms', f'{r:.2f}x', '<= 1.20x' if n == 1 else 'info',
              r <= 1.20 if n == 1 else None))

    def throughput(call, clients=32):
      done = []
      deadline = time.perf_counter() + seconds

      def client():
        count = 0
        while time.perf_counter() < deadline:
          call(batches[1])
          count += 1
        done.append(count)

      with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for _ in range(clients):
          pool.submit(client)
      return sum(done) / seconds

    unbatched = throughput(grpc_call)
    batching_file = os.path.join(work, 'batching.config')
    with open(batching_file, 'w') as f:
      f.write('max_batch_size { value: 32 }\nbatch_timeout_micros { value: 5000 }\n'
              'max_enqueued_batches { value: 100 }\nnum_batch_threads { value: 2 }\n')
    server2, grpc_port2, _ = start_server(base, batching_file=batching_file)
    try:
      grpc_call2 = grpc_predictor(grpc_channel(grpc_port2))
      grpc_call2(batches[1])
      batched = throughput(grpc_call2)
    finally:
      stop_server(server2)
    bare32 = 32 / statistics.median(
        [(lambda s: (bare[32](), time.perf_counter() - s)[1])(time.perf_counter())
         for _ in range(10)])
    add(Row('3a. 32 clients x batch 1: batching vs not', f'no batching {unbatched:.1f} req/s, '
            f'batching {batched:.1f} req/s', f'{batched / unbatched:.2f}x', '>= 1.3x',
            batched / unbatched >= 1.3))
    add(Row('3b. 32 clients with batching vs bare batch 32', f'batching {batched:.1f} rows/s, '
            f'session.run {bare32:.1f} rows/s', f'{100 * batched / bare32:.0f}%', '>= 90%',
            batched / bare32 >= 0.9))

    model_stub = model_service_pb2_grpc.ModelServiceStub(channel)
    new_version = os.path.join(work, 'staging')
    shutil.copytree(os.path.join(base, '1'), new_version)
    os.rename(new_version, os.path.join(base, '2'))
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = 'enc'
    status_request.model_spec.version.value = 2
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
      try:
        reply = model_stub.GetModelStatus(status_request, timeout=10)
        if reply.model_version_status[0].state == get_model_status_pb2.ModelVersionStatus.AVAILABLE:
          break
      except grpc.RpcError:
        pass
      time.sleep(0.01)
    else:
      raise RuntimeError(f'version 2 not AVAILABLE after 300 s; see {server.log_path}')
    available = load_seconds(server.log_path, 2)
    start = time.perf_counter()
    fresh = tf.compat.v1.Session(graph=tf.Graph())
    with fresh.graph.as_default():
      tf.compat.v1.saved_model.loader.load(fresh, ['serve'], os.path.join(base, '2'))
    fresh.run('pooled:0', {'input_ids:0': batches[1]})
    bare_load = time.perf_counter() - start
    add(Row('4. new version: load to AVAILABLE vs bare load', f'bare load + first run '
            f'{bare_load * 1e3:.0f} ms, server {available * 1e3:.0f} ms',
            f'{available / bare_load:.2f}x', '<= 1.5x', available / bare_load <= 1.5))
  finally:
    stop_server(server)
    shutil.rmtree(work, ignore_errors=True)
  _common.finish('serving_bench', rows, load_before, args.output_dir or None,
                 {'layers': layers, 'seq_len': seq_len, 'repeats': repeats,
                  'quick': args.quick})


if __name__ == '__main__':
  main()
