"""`estimator-export serve`: TF Serving's model server, embedded or the real binary."""
import os
import shutil
import sys

from estimator_export.cli import _common


def add_parser(subparsers) -> None:
  from estimator_export.serving import config as serving_config  # pylint: disable=g-import-not-at-top
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
  serving_config.add_server_arguments(parser)
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
  from estimator_export.serving import config as serving_config  # pylint: disable=g-import-not-at-top
  from estimator_export.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  server = server_lib.create_server(serving_config.options_from_args(args))
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
