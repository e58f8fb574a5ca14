"""`estimator-export deploy TARGET EXPORT_BASE`: TF Serving 2.15.1 deployment files for it."""
import argparse
import sys

from estimator_export.cli import _common

_TARGETS = ('compose', 'kubernetes', 'kserve', 'dockerfile')


def _int(text: str) -> int:
  try:
    return int(text)
  except ValueError:
    raise argparse.ArgumentTypeError(f'not a whole number: {text!r}') from None


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'deploy', summary='write TF Serving 2.15.1 deployment files for an export: '
      'docker compose, Kubernetes, KServe or a Dockerfile',
      description='Reads the export base (its numeric versions, the serving signatures and '
      'warmup file of the newest version served) and writes, into --output_dir (or stdout '
      'with -, kubernetes and kserve only), what runs tensorflow/serving:2.15.1 on it: '
      'models.config, batching.config (on when every signature input has a batch dimension) '
      'and monitoring.config (Prometheus at /monitoring/prometheus/metrics on the REST port), '
      'with the server flags naming them and --enable_model_warmup. Targets: compose '
      '(docker-compose.yml with the export bind-mounted, plus a Prometheus service); '
      'kubernetes (ConfigMap, Deployment with startup/liveness/readiness probes, Service, '
      'headless Service for gRPC client-side balancing, HorizontalPodAutoscaler; the model '
      'from --pvc, --host_path or --storage_uri); kserve (an InferenceService pinned to '
      'runtimeVersion 2.15.1 - KServe\'s TF runtime defaults to 2.6.2 - reading '
      '--storage_uri); dockerfile (a build context with the served versions baked in). '
      'See deploy/README.md.',
      examples=['estimator-export deploy compose exports/classifier --model_name classifier '
                '--output_dir deploy/compose',
                'estimator-export deploy kubernetes exports/classifier --model_name classifier '
                '--storage_uri gs://bucket/exports/classifier --output_dir - | kubectl apply -f -',
                'estimator-export deploy kserve exports/classifier --model_name classifier '
                '--storage_uri s3://bucket/exports/classifier --canary_traffic_percent 10 '
                '--output_dir deploy/kserve',
                'estimator-export deploy dockerfile exports/classifier --model_name classifier '
                '--output_dir build/ && docker build -t classifier:1 build/'])
  parser.add_argument('target', choices=_TARGETS, metavar='TARGET',
                      help=f'one of {", ".join(_TARGETS)}')
  parser.add_argument('export_base', metavar='EXPORT_BASE',
                      help='the export base directory (the parent of the numeric versions)')
  parser.add_argument('--model_name', required=True,
                      help='the name clients use (/v1/models/NAME, ModelSpec.name)')
  parser.add_argument('--output_dir', required=True, metavar='DIR',
                      help='where to write the files; - prints kubernetes / kserve manifests '
                      'as one YAML stream')
  parser.add_argument('--versions', default='latest',
                      help='version policy: latest (default), latest:N, all, or V1,V2')
  parser.add_argument('--name', help='Kubernetes object name (default: --model_name; a '
                      'DNS-1035 label)')
  parser.add_argument('--namespace', help='metadata.namespace of every object')
  parser.add_argument('--image', default=None,
                      help='TF Serving image (default: tensorflow/serving:2.15.1)')
  parser.add_argument('--batching', choices=('auto', 'on', 'off'), default='auto',
                      help='server-side batching (default: auto: on when every signature '
                      'input has a batch dimension)')
  parser.add_argument('--batching_parameters_file', metavar='FILE',
                      help='a text BatchingParameters to use instead of the defaults')
  parser.add_argument('--ssl_config_file', metavar='FILE',
                      help='a text SSLConfig: gRPC over TLS (kubernetes: from a Secret; '
                      'compose: a secret)')
  parser.add_argument('--storage_uri', help='where pods read the export base: gs:// or s3:// '
                      '(kubernetes: copied by an init container; kserve: required, any URI '
                      'KServe reads)')
  parser.add_argument('--pvc', metavar='CLAIM', help='kubernetes: a PersistentVolumeClaim '
                      'holding the export base (mounted read-only)')
  parser.add_argument('--pvc_sub_path', metavar='DIR',
                      help='kubernetes: the export base directory inside the claim')
  parser.add_argument('--host_path', metavar='PATH',
                      help='kubernetes: the export base on each node (single-node clusters)')
  parser.add_argument('--copy_image', help='kubernetes: the image copying --storage_uri '
                      '(default: google/cloud-sdk for gs://, amazon/aws-cli for s3://)')
  parser.add_argument('--service_account', help='serviceAccountName of the pods (storage '
                      'credentials: Workload Identity, IRSA)')
  parser.add_argument('--replicas', type=_int, default=2,
                      help='minimum replicas (HPA / KServe minReplicas; default: 2)')
  parser.add_argument('--max_replicas', type=_int, default=5,
                      help='maximum replicas (default: 5)')
  parser.add_argument('--target_cpu_percent', type=_int, default=70,
                      help='HPA CPU utilization target (default: 70)')
  parser.add_argument('--cpu', default='1', help='CPU request (default: 1)')
  parser.add_argument('--memory', default='2Gi', help='memory request and limit (default: 2Gi)')
  parser.add_argument('--cpu_limit', help='CPU limit (default: none)')
  parser.add_argument('--memory_limit', help='memory limit (default: --memory)')
  parser.add_argument('--startup_timeout_seconds', type=_int, default=300,
                      help='time a pod may take to load the model (default: 300)')
  parser.add_argument('--canary_traffic_percent', type=_int,
                      help='kserve: the traffic share of the newest revision')
  parser.add_argument('--kserve_grpc', action='store_true',
                      help='kserve: route gRPC (port 9000 as h2c) instead of REST')
  parser.set_defaults(run=run)


def _options(args):
  from estimator_export import deploy  # pylint: disable=g-import-not-at-top
  values = dict(model_name=args.model_name, name=args.name, namespace=args.namespace,
                versions=args.versions, batching=args.batching,
                batching_parameters_file=args.batching_parameters_file,
                ssl_config_file=args.ssl_config_file, storage_uri=args.storage_uri,
                pvc=args.pvc, pvc_sub_path=args.pvc_sub_path, host_path=args.host_path,
                copy_image=args.copy_image, service_account=args.service_account,
                replicas=args.replicas, max_replicas=args.max_replicas,
                target_cpu_percent=args.target_cpu_percent, cpu=args.cpu, memory=args.memory,
                cpu_limit=args.cpu_limit, memory_limit=args.memory_limit,
                startup_timeout_seconds=args.startup_timeout_seconds,
                canary_traffic_percent=args.canary_traffic_percent,
                kserve_grpc=args.kserve_grpc)
  if args.image:
    values['image'] = args.image
  return deploy.DeployOptions(**values)


_NEXT = {
    'compose': 'docker compose -f {out}/docker-compose.yml up -d',
    'kubernetes': 'kubectl apply -f {out}',
    'kserve': 'kubectl apply -f {out}',
    'dockerfile': 'docker build -t IMAGE {out}',
}


def run(args) -> int:
  from estimator_export import deploy  # pylint: disable=g-import-not-at-top
  if args.output_dir == '-' and args.target not in deploy.STREAMABLE:
    raise _common.UsageError(f'{args.target} writes several files (not all YAML), so it cannot '
                             'go to stdout. Fix: give --output_dir DIR')
  plan = deploy.plan(args.export_base, _options(args))
  files = deploy.render(args.target, plan)
  for note in plan.notes:
    print(f'deploy: note: {note}', file=sys.stderr)
  if args.output_dir == '-':
    sys.stdout.write(deploy.stream(files))
    return _common.EXIT_OK
  written = deploy.write_files(files, args.output_dir)
  print(f'deploy: model {plan.model_name!r}: {plan.export.describe()}')
  print(f'deploy: wrote {", ".join(written)} to {args.output_dir}')
  print('deploy: next: ' + _NEXT[args.target].format(out=args.output_dir))
  return _common.EXIT_OK
