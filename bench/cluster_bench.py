"""Distributed training benchmark: a local tf.estimator cluster vs one process, same run.

    python bench/cluster_bench.py [--quick] [--output_dir DIR] [--steps 300] [--workers 1]
        [--ps 1] [--hidden 128]

Trains bert_example's classifier (2 layers, hidden --hidden, seq 64, batch 16)
on the demo data for --steps global steps, twice, with the same command:
  1. one process (no TF_CONFIG): the baseline;
  2. `estimator_export.cluster.run_local_cluster`: a chief and --workers workers
     (asynchronous between-graph training) with --ps parameter servers, all on
     this machine; no evaluator (training only).
Steps/s is global steps over the chief's training time (its `train_and_evaluate`,
which includes tf.estimator's fixed 5 s start delay of worker 0). Prints the
cluster's steps/s as a ratio of the single process's. On a machine with fewer
cores than processes the ratio shows the cost of the parameter-server round
trips; the gain needs one core (or machine) per trainer, so the row is
informational here. It ends with the goal table (bench._common.finish) and
writes cluster_bench.json to --output_dir. --quick: 60 steps (a smoke run).
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench import _common  # pylint: disable=g-import-not-at-top
from bench._common import Row  # pylint: disable=g-import-not-at-top
from bert_example import data as data_lib  # pylint: disable=g-import-not-at-top
from bert_example import demo_data  # pylint: disable=g-import-not-at-top
from bert_example import modeling  # pylint: disable=g-import-not-at-top
from estimator_export import cluster  # pylint: disable=g-import-not-at-top

BATCH, SEQ = 16, 64


def _setup(root: str, hidden: int, steps: int):
  data_dir = os.path.join(root, 'data')
  demo_data.generate_demo_dataset(data_dir, num_train=640, num_dev=16, num_test=8)
  vocab = os.path.join(root, 'vocab.txt')
  size = data_lib.build_vocab(data_lib.get_processor('demo').get_train_examples(data_dir), vocab)
  config = modeling.BertConfig(vocab_size=size, hidden_size=hidden, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=4 * hidden,
                               max_position_embeddings=SEQ)
  config_file = os.path.join(root, 'bert_config.json')
  with open(config_file, 'w') as f:
    f.write(config.to_json_string())
  epochs = steps * BATCH / 640
  return ['--task_name=demo', f'--data_dir={data_dir}', f'--vocab_file={vocab}',
          f'--bert_config_file={config_file}', f'--max_seq_length={SEQ}',
          f'--train_batch_size={BATCH}', f'--num_train_epochs={epochs}',
          f'--save_checkpoints_steps={10 ** 6}', '--do_train']


def _seconds(pattern: str, text: str) -> float:
  match = re.search(pattern, text)
  if not match:
    raise RuntimeError(f'no {pattern!r} in the output:\n{text[-3000:]}')
  return float(match.group(1))


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--quick', action='store_true', help='60 steps (a smoke run)')
  parser.add_argument('--output_dir', default='bench_output',
                      help='where cluster_bench.json goes ("" for nowhere)')
  parser.add_argument('--steps', type=int, default=None, help='default 300 (quick 60)')
  parser.add_argument('--workers', type=int, default=1, help='workers besides the chief')
  parser.add_argument('--ps', type=int, default=1)
  parser.add_argument('--hidden', type=int, default=128)
  args = parser.parse_args()
  steps = args.steps or (60 if args.quick else 300)
  load_before = _common.load_average()
  env = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '3'}
  env.pop('TF_CONFIG', None)
  with tempfile.TemporaryDirectory() as root:
    flags = _setup(root, args.hidden, steps)
    base = [sys.executable, '-m', 'bert_example.run_classifier'] + flags
    started = time.monotonic()
    single = subprocess.run(base + [f'--output_dir={root}/single'], env=env, cwd=REPO,
                            capture_output=True, text=True, timeout=1800, check=True)
    single_wall = time.monotonic() - started
    single_secs = _seconds(r'trained in ([\d.]+)s', single.stdout)
    result = cluster.run_local_cluster(
        base + [f'--output_dir={root}/cluster'], os.path.join(root, 'logs'),
        workers=args.workers, ps=args.ps, evaluator=False, env=env, cwd=REPO,
        print_fn=lambda m: None, timeout_secs=1800)
    if not result.ok:
      raise RuntimeError(f'cluster failed: {result.failed.describe()}\n' +
                         open(result.failed.log_path).read()[-3000:])
    chief_secs = _seconds(r'\[chief-0\] done in ([\d.]+)s',
                          open(result.role('chief-0').log_path).read())
  trainers = 1 + args.workers
  single_rate, cluster_rate = steps / single_secs, steps / chief_secs
  print(f'BERT 2 layers, hidden {args.hidden}, seq {SEQ}, batch {BATCH}, {steps} steps, '
        f'{os.cpu_count()} cores')
  print(f'  one process:                         {single_rate:7.2f} steps/s '
        f'({single_secs:.1f}s training, {single_wall:.1f}s with start-up)')
  print(f'  cluster: chief + {args.workers} worker(s) + {args.ps} ps:  {cluster_rate:7.2f} '
        f'steps/s ({chief_secs:.1f}s training, {result.seconds:.1f}s with start-up)')
  row = Row(f'cluster ({trainers} trainers, {args.ps} ps) vs one process',
            f'one process {single_rate:.2f} steps/s, cluster {cluster_rate:.2f} steps/s',
            f'{cluster_rate / single_rate:.2f}x', 'info', None)
  _common.finish('cluster_bench', [row], load_before, args.output_dir or None,
                 {'steps': steps, 'trainers': trainers, 'ps': args.ps, 'quick': args.quick,
                  'note': f'{trainers} trainers and {args.ps} ps on {os.cpu_count()} cores: '
                          'a speed-up needs a core or machine per trainer'})


if __name__ == '__main__':
  main()
