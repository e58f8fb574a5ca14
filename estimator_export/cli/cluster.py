"""`estimator-export cluster`: run a command as a local tf.estimator cluster, or write its TFJob."""
import argparse

from estimator_export.cli import _common


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'cluster', summary='run a training command as a local multi-process '
      'tf.estimator cluster, or write the Kubeflow TFJob for it',
      description='Starts one process per role (a chief, --workers workers, --ps parameter '
      'servers and with --evaluator an evaluator) on free 127.0.0.1 ports, each running the '
      'same COMMAND with its own TF_CONFIG and writing its output to LOGDIR/ROLE-INDEX.log. '
      'Waits for the chief and the evaluator, then stops the parameter servers (they never '
      'exit on their own) and reports how each role ended. A failing role stops the others; '
      'Ctrl-C stops all. Exit 0 when every role but the parameter servers exited 0, 1 when '
      'one failed. tf.estimator.train_and_evaluate runs exporters on the evaluator only, so '
      'exports need --evaluator. TF\'s gRPC servers listen on every interface whatever '
      'address the cluster names. With --tfjob, writes a Kubeflow Training Operator v1 TFJob '
      '(kubeflow.org/v1) running COMMAND in --image instead; the operator sets TF_CONFIG.',
      examples=['estimator-export cluster --workers 1 --ps 1 --evaluator --logdir /tmp/logs '
                '-- python -m bert_example.run_classifier --do_train --do_eval --do_export ...',
                'estimator-export cluster --workers 4 --ps 2 --evaluator --tfjob job.yaml '
                '--image registry.example.com/bert:1 --name bert-sst2 -- python -m '
                'bert_example.run_classifier --do_train --do_eval --do_export ...'])
  parser.add_argument('--workers', type=int, default=1, metavar='N',
                      help='workers besides the chief (default: 1)')
  parser.add_argument('--ps', type=int, default=1, metavar='M',
                      help='parameter servers (default: 1)')
  parser.add_argument('--evaluator', action='store_true',
                      help='also run an evaluator: the task that evaluates each checkpoint '
                      'and runs the exporters')
  parser.add_argument('--logdir', metavar='DIR',
                      help='where each role writes ROLE-INDEX.log (needed without --tfjob)')
  parser.add_argument('--timeout', type=float, metavar='SECONDS',
                      help='stop every role and fail after this long (default: no limit)')
  parser.add_argument('--worker_grace_secs', type=float, default=60.0, metavar='SECONDS',
                      help='how long workers may run on once the chief and evaluator ended '
                      'before they are stopped (default: 60)')
  parser.add_argument('--tfjob', metavar='OUT.yaml',
                      help='write a Kubeflow TFJob manifest to this file (- for stdout) '
                      'instead of running anything')
  parser.add_argument('--image', help='with --tfjob: the container image holding the code')
  parser.add_argument('--name', default='estimator-export-train',
                      help='with --tfjob: metadata.name (default: estimator-export-train)')
  parser.add_argument('--namespace', help='with --tfjob: metadata.namespace')
  parser.add_argument('--restart_policy', default='OnFailure',
                      help='with --tfjob: each replica\'s restartPolicy: Always, OnFailure, '
                      'Never or ExitCode (default: OnFailure)')
  parser.add_argument('user_command', nargs=argparse.REMAINDER, metavar='-- COMMAND',
                      help='the training command every role runs')
  parser.set_defaults(run=run)


def run(args) -> int:
  from estimator_export import cluster  # pylint: disable=g-import-not-at-top
  command = list(args.user_command)
  if command and command[0] == '--':
    command = command[1:]
  if not command:
    raise _common.UsageError('no command to run. Fix: give it after --, e.g. -- python -m '
                             'bert_example.run_classifier --do_train ...')
  for flag, value in (('--workers', args.workers), ('--ps', args.ps)):
    if value < 0:
      raise _common.UsageError(f'{flag}={value} is negative. Fix: give 0 or more')
  if args.tfjob:
    return _write_tfjob(args, command, cluster)
  if not args.logdir:
    raise _common.UsageError('--logdir is required to run a local cluster. Fix: e.g. '
                             '--logdir /tmp/cluster_logs (or --tfjob OUT.yaml to write a TFJob)')
  if not args.evaluator:
    print('cluster: no --evaluator: nothing will evaluate or export (tf.estimator runs '
          'exporters on the evaluator only)', flush=True)
  try:
    result = cluster.run_local_cluster(
        command, args.logdir, workers=args.workers, ps=args.ps, evaluator=args.evaluator,
        print_fn=lambda m: print(m, flush=True), worker_grace_secs=args.worker_grace_secs,
        timeout_secs=args.timeout)
  except KeyboardInterrupt:
    print('cluster: interrupted; every role was stopped', flush=True)
    return 130
  print(f'cluster: {"done" if result.ok else "FAILED"} in {result.seconds:.1f}s', flush=True)
  for role in result.roles:
    print(f'  {role.describe()}')
  if not result.ok:
    print(f'cluster: {result.failed.task.name} failed; see {result.failed.log_path}', flush=True)
    return _common.EXIT_FAILED
  return _common.EXIT_OK


def _write_tfjob(args, command, cluster) -> int:
  if not args.image:
    raise _common.UsageError('--tfjob needs --image. Fix: give the container image holding '
                             'the code, e.g. --image registry.example.com/trainer:1.0')
  try:
    manifest = cluster.tfjob_manifest(args.name, args.image, command, workers=args.workers,
                                      ps=args.ps, evaluator=args.evaluator,
                                      namespace=args.namespace,
                                      restart_policy=args.restart_policy)
  except ValueError as e:
    raise _common.UsageError(str(e)) from None
  text = cluster.dump_manifest(manifest)
  if args.tfjob == '-':
    print(text, end='')
  else:
    with open(args.tfjob, 'w', encoding='utf-8') as f:
      f.write(text)
    roles = ', '.join(f'{name} x{spec["replicas"]}'
                      for name, spec in manifest['spec']['tfReplicaSpecs'].items())
    print(f'cluster: wrote TFJob {args.name} ({roles}) to {args.tfjob}; '
          f'submit it with: kubectl apply -f {args.tfjob}')
  return _common.EXIT_OK
