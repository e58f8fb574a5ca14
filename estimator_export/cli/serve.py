"""`estimator-export serve`: TF Serving's model server, embedded or the real binary."""
import argparse
import dataclasses
import os
import shutil
import sys

from estimator_export.cli import _common


_FLAG_HELP = {
    'port': 'TCP port for gRPC (8500). 0 picks a free port.',
    'rest_api_port': 'Port for HTTP/REST; 0 (the default) disables REST. Must differ from --port.',
    'host': 'Interface to bind both servers to (not a TF Serving flag).',
    'model_name': 'Name of the model (ignored if --model_config_file is set).',
    'model_base_path': 'Path to export: the directory holding numeric version directories '
                       '(ignored if --model_config_file is set, otherwise required).',
    'model_config_file': 'A text ModelServerConfig with the models to serve.',
    'model_config_file_poll_wait_seconds': 'Seconds between polls of --model_config_file; '
                                           '0: read once.',
    'file_system_poll_wait_seconds': 'Seconds between polls of the file system for new '
                                     'model versions.',
    'enable_batching': 'Batch requests.',
    'batching_parameters_file': 'A text BatchingParameters used instead of the defaults '
                                '(needs --enable_batching).',
    'enable_model_warmup': 'Replay assets.extra/tf_serving_warmup_requests at load time.',
    'num_request_iterations_for_warmup': 'Times each warmup request is replayed (used if > 0).',
    'rest_api_timeout_in_ms': 'Timeout for HTTP/REST API calls.',
    'rest_api_enable_cors_support': 'Enable CORS headers in REST responses.',
    'monitoring_config_file': 'A text MonitoringConfig (Prometheus metrics on the REST port).',
}


def _flag_bool(text: str) -> bool:
  """TF's bool flag values: true/false (any case) or 1/0."""
  lowered = text.lower()
  if lowered in ('true', '1'):
    return True
  if lowered in ('false', '0'):
    return False
  raise argparse.ArgumentTypeError(f"Couldn't interpret value {text} (use true or false)")


def add_server_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Defines tensorflow_model_server's flags (and --host) on `parser`.

  Each flag takes `--flag=value` or `--flag value`; booleans also take the
  bare `--flag` (true). Turn the parsed namespace into options with
  `options_from_args`.

  Returns:
    `parser`.
  """
  from estimator_export.serving.config import ServerOptions  # pylint: disable=g-import-not-at-top
  defaults = ServerOptions()
  for field in dataclasses.fields(ServerOptions):
    name = field.name
    if name not in _FLAG_HELP:
      continue
    default = getattr(defaults, name)
    if field.type is bool:
      parser.add_argument(f'--{name}', nargs='?', const=True, default=default, type=_flag_bool,
                          metavar='true|false', help=f'{_FLAG_HELP[name]} (default: {default})')
    elif name == 'rest_api_port':
      parser.add_argument(f'--{name}', type=int, default=0, metavar='PORT',
                          help=_FLAG_HELP[name])
    else:
      kind = int if isinstance(default, int) else str
      parser.add_argument(f'--{name}', type=kind, default=default if default is not None else '',
                          metavar='N' if kind is int else 'VALUE',
                          help=f'{_FLAG_HELP[name]} (default: {default!r})')
  return parser


def options_from_args(namespace: argparse.Namespace):
  """ServerOptions from parsed flags (see serving.config.options_from_flags)."""
  from estimator_export.serving import config as serving_config  # pylint: disable=g-import-not-at-top
  return serving_config.options_from_flags(
      {name: getattr(namespace, name) for name in _FLAG_HELP if hasattr(namespace, name)})


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'serve',
      summary="serve models over TF Serving's gRPC and REST APIs (tensorflow_model_server "
      'flags)',
      description='Serves SavedModel versions with the gRPC and REST APIs of TF Serving 2.15, '
      "taking tensorflow_model_server's flags. With --server_binary=auto the real "
      'tensorflow_model_server runs when it is on the PATH; otherwise the embedded, '
      'wire-compatible server does (it binds 127.0.0.1 unless --host says otherwise).',
      examples=['estimator-export serve --port=8500 --rest_api_port=8501 '
                '--model_name=classifier --model_base_path=/models/classifier',
                'estimator-export serve --model_config_file=models.config '
                '--enable_batching --batching_parameters_file=batching.config'])
  add_server_arguments(parser)
  parser.add_argument('--server_binary', choices=('auto', 'embedded', 'tensorflow_model_server'),
                      default='auto', help='auto: the real tensorflow_model_server when it is on '
                      'the PATH, else the embedded server')
  parser.set_defaults(run=run)


def run(args) -> int:
  import logging  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  real = shutil.which('tensorflow_model_server')
  if args.server_binary == 'tensorflow_model_server' or (args.server_binary == 'auto' and real):
    if not real:
      raise _common.UsageError('tensorflow_model_server is not on the PATH. Fix: install it, '
                               'or use --server_binary=embedded')
    argv = [a for a in sys.argv[2:] if not a.startswith(('--host', '--server_binary'))]
    print(f'estimator-export serve: running {real} (it binds all interfaces)', flush=True)
    os.execv(real, [real] + argv)
  from estimator_export.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  server = server_lib.create_server(options_from_args(args))
  rest = f', REST on {args.host}:{server.rest_port}' if server.rest_port else ''
  print(f'estimator-export serve: gRPC on {args.host}:{server.grpc_port}{rest} '
        f'(models: {", ".join(server.manager.model_names())})', flush=True)

  def shutdown(signum, frame):
    del signum, frame
    server.stop(grace=5.0)

  signal.signal(signal.SIGINT, shutdown)
  signal.signal(signal.SIGTERM, shutdown)
  server.wait()
  return _common.EXIT_OK
