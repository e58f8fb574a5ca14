"""`estimator-export serve`: TF Serving's model server, embedded or the real binary.

Every one of tensorflow_model_server 2.15.1's 46 flags (model_servers/main.cc)
is accepted, as `--flag=value` or `--flag value` (booleans also bare). Each is
implemented by the embedded server, accepted and ignored (it has no meaning
there), or refused with an error naming it unless given at TF Serving's
default; the README's table of serve flags says which and why. With the real
binary (--server_binary), the flags given are passed on as `--flag=value`;
the embedded server's own flags (EMBEDDED_FLAGS: --host, the REST limits and
timeouts, --allow_model_reload) and --server_binary are not.
"""
import argparse
import logging
import os
import shutil
from typing import Any, Dict, List, NamedTuple, Optional

from estimator_export.cli import _common

logger = logging.getLogger('estimator_export.serving')

IMPLEMENTED, IGNORED, REFUSED = 'implemented', 'ignored', 'refused'
_CPUS = None  # A default TF Serving derives from the CPU count: any value is its default.
_REAL_BINARY = 'use the real tensorflow_model_server (--server_binary=tensorflow_model_server)'


class Flag(NamedTuple):
  kind: type
  default: Any  # TF Serving's default; _CPUS when it depends on the machine.
  status: str
  help: str
  why: str = ''  # For IGNORED and REFUSED: why, shown in errors and logs.


def _flag_bool(text: str) -> bool:
  """TF's bool flag values: true/false (any case) or 1/0."""
  lowered = text.lower()
  if lowered in ('true', '1'):
    return True
  if lowered in ('false', '0'):
    return False
  raise argparse.ArgumentTypeError(f"Couldn't interpret value {text} (use true or false)")


# tensorflow_model_server 2.15.1's flags, in main.cc's order, with server.h's defaults.
FLAGS: Dict[str, Flag] = {
    'port': Flag(int, 8500, IMPLEMENTED, 'TCP port for gRPC. 0 picks a free port (TF Serving: '
                 'no TCP port).'),
    'grpc_socket_path': Flag(str, '', IMPLEMENTED, 'Also serve gRPC on this UNIX socket.'),
    'rest_api_port': Flag(int, 0, IMPLEMENTED, 'Port for HTTP/REST; 0 disables REST. Must '
                          'differ from --port.'),
    'rest_api_num_threads': Flag(int, _CPUS, IGNORED, 'Threads for HTTP/REST.',
                                 'REST runs on one asyncio event loop'),
    'rest_api_timeout_in_ms': Flag(int, 30000, IMPLEMENTED, 'Timeout for HTTP/REST API calls.'),
    'rest_api_enable_cors_support': Flag(bool, False, IMPLEMENTED, 'Enable CORS headers in '
                                         'REST responses.'),
    'enable_batching': Flag(bool, False, IMPLEMENTED, 'Batch requests.'),
    'allow_version_labels_for_unavailable_models': Flag(
        bool, False, REFUSED, 'Allow labels for versions not loaded yet.',
        'labels must point at available versions in the embedded manager'),
    'batching_parameters_file': Flag(str, '', IMPLEMENTED, 'A text BatchingParameters used '
                                     'instead of the defaults (needs --enable_batching).'),
    'enable_per_model_batching_parameters': Flag(
        bool, False, REFUSED, "Read batching_params.pbtxt from each SavedModel.",
        'the embedded batcher takes one --batching_parameters_file for all models'),
    'model_config_file': Flag(str, '', IMPLEMENTED, 'A text ModelServerConfig with the models '
                              'to serve.'),
    'model_config_file_poll_wait_seconds': Flag(int, 0, IMPLEMENTED, 'Seconds between polls of '
                                                '--model_config_file; 0: read once.'),
    'model_name': Flag(str, 'default', IMPLEMENTED, 'Name of the model (ignored if '
                       '--model_config_file is set).'),
    'model_base_path': Flag(str, '', IMPLEMENTED, 'Path to export: the directory holding '
                            'numeric version directories (ignored if --model_config_file is '
                            'set, otherwise required).'),
    'num_load_threads': Flag(int, 0, IGNORED, 'Threads loading servables.',
                             'the embedded manager loads versions one at a time'),
    'num_unload_threads': Flag(int, 0, IGNORED, 'Threads unloading servables.',
                               'the embedded manager unloads versions one at a time'),
    'max_num_load_retries': Flag(int, 5, IMPLEMENTED, 'Retries of a failed load (e.g. a '
                                 'version still being copied).'),
    'load_retry_interval_micros': Flag(int, 60_000_000, IMPLEMENTED, 'Microseconds between '
                                       'load retries.'),
    'file_system_poll_wait_seconds': Flag(int, 1, IMPLEMENTED, 'Seconds between polls of the '
                                          'file system for new model versions.'),
    'flush_filesystem_caches': Flag(bool, True, IGNORED, 'Flush file system caches after loads.',
                                    'Python file reads keep no caches to flush'),
    'tensorflow_session_parallelism': Flag(int, 0, IMPLEMENTED, 'Threads of each TensorFlow '
                                           'session (0: TensorFlow chooses).'),
    'tensorflow_session_config_file': Flag(str, '', IMPLEMENTED, 'A text tensorflow.ConfigProto '
                                           'for the sessions.'),
    'tensorflow_intra_op_parallelism': Flag(int, 0, IMPLEMENTED, 'Threads within one op.'),
    'tensorflow_inter_op_parallelism': Flag(int, 0, IMPLEMENTED, 'Ops run at once.'),
    'use_alts_credentials': Flag(bool, False, REFUSED, 'Use Google ALTS credentials.',
                                 'ALTS works on Google Cloud only; use --ssl_config_file for TLS'),
    'ssl_config_file': Flag(str, '', IMPLEMENTED, 'A text SSLConfig: serve gRPC over TLS.'),
    'platform_config_file': Flag(str, '', REFUSED, 'A text PlatformConfigMap.',
                                 'the embedded server has the TensorFlow platform only'),
    'per_process_gpu_memory_fraction': Flag(float, 0.0, IMPLEMENTED, 'GPU memory share of each '
                                            'session (0: TensorFlow chooses).'),
    'saved_model_tags': Flag(str, 'serve', IMPLEMENTED, 'Comma-separated tags of the MetaGraph '
                             'to load; a version without it fails to load.'),
    'grpc_channel_arguments': Flag(str, '', IMPLEMENTED, 'Comma-separated key=value gRPC server '
                                   'arguments (e.g. grpc.max_connection_age_ms=2000).'),
    'grpc_max_threads': Flag(int, _CPUS, IMPLEMENTED, 'Threads handling gRPC requests '
                             '(embedded default: 16).'),
    'enable_model_warmup': Flag(bool, True, IMPLEMENTED, 'Replay assets.extra/'
                                'tf_serving_warmup_requests at load time.'),
    'num_request_iterations_for_warmup': Flag(int, 0, IMPLEMENTED, 'Times each warmup request '
                                              'is replayed (used if > 0).'),
    'version': Flag(bool, False, IMPLEMENTED, 'Print the versions and exit.'),
    'monitoring_config_file': Flag(str, '', IMPLEMENTED, 'A text MonitoringConfig (Prometheus '
                                   'metrics on the REST port).'),
    'remove_unused_fields_from_bundle_metagraph': Flag(
        bool, True, IGNORED, "Trim the loaded MetaGraphDef's unused fields.",
        'a memory saving of the C++ bundle; the embedded server keeps no MetaGraphDef copy'),
    'prefer_tflite_model': Flag(bool, False, REFUSED, 'Serve model.tflite instead of '
                                'saved_model.pb.', 'the embedded server has no TF Lite runtime'),
    'num_tflite_pools': Flag(int, _CPUS, IGNORED, 'TF Lite interpreter pools.',
                             'used with --prefer_tflite_model only, which is refused'),
    'num_tflite_interpreters_per_pool': Flag(int, 1, IGNORED, 'TF Lite interpreters per pool.',
                                             'used with --prefer_tflite_model only, which is '
                                             'refused'),
    'enable_signature_method_name_check': Flag(
        bool, False, REFUSED, "Check SignatureDefs' method_name.",
        'the embedded server does not check method names (TF Serving\'s default)'),
    'xla_cpu_compilation_enabled': Flag(bool, False, REFUSED, 'Enable XLA:CPU JIT.',
                                        'the embedded server runs sessions without XLA JIT'),
    'enable_profiler': Flag(bool, True, IGNORED, 'Enable the profiler service.',
                            'the embedded server registers no profiler service'),
    'thread_pool_factory_config_file': Flag(str, '', REFUSED, 'A text ThreadPoolConfig.',
                                            'the embedded server has no thread pool factories'),
    'mixed_precision': Flag(str, '', IMPLEMENTED, 'Mixed precision mode: "bfloat16" runs '
                            "matmuls in bfloat16 (grappler's oneDNN rewrite; pays on CPUs "
                            'with AVX512_BF16 or AMX).'),
    'skip_initialize_tpu': Flag(bool, False, IGNORED, 'Skip initializing TPUs.',
                                'the embedded server never initializes TPUs'),
    'enable_grpc_healthcheck_service': Flag(
        bool, False, REFUSED, 'Serve grpc.health.v1.Health.',
        'the embedded server has no gRPC health service (grpcio-health-checking is not a '
        'dependency); use ModelService.GetModelStatus or GET /v1/models/NAME'),
}

# The embedded server's own flags: not TF Serving's, never passed to the real binary.
EMBEDDED_FLAGS: Dict[str, Flag] = {
    'host': Flag(str, '127.0.0.1', IMPLEMENTED, 'Interface to bind both servers to (TF Serving '
                 'binds every interface).'),
    'rest_api_max_body_bytes': Flag(int, 32 * 1024 * 1024, IMPLEMENTED, 'Largest REST request '
                                    'body; a larger one is refused with 413.'),
    'rest_api_max_elements': Flag(int, 16 * 1024 * 1024, IMPLEMENTED, 'Most tensor elements '
                                  'one REST request may decode to; more is a 400.'),
    'max_inflight_request_bytes': Flag(int, 64 * 1024 * 1024, IMPLEMENTED, 'Request bytes '
                                       'decoded and run at once, over all clients; more '
                                       'requests wait their turn.'),
    'rest_api_header_timeout_in_ms': Flag(int, 10_000, IMPLEMENTED, 'Time a REST client has '
                                          "to send a request's headers."),
    'rest_api_body_timeout_in_ms': Flag(int, 60_000, IMPLEMENTED, 'Time a REST client has to '
                                        "send a request's body."),
    'rest_api_keepalive_timeout_in_ms': Flag(int, 60_000, IMPLEMENTED, 'Idle time before a '
                                             'kept-alive REST connection is closed.'),
    'allow_model_reload': Flag(bool, True, IMPLEMENTED, 'Answer ModelService.'
                               'HandleReloadConfigRequest; false refuses it with '
                               'PERMISSION_DENIED.'),
}


def add_server_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
  """Defines tensorflow_model_server's 46 flags, and the embedded server's own, on `parser`.

  A flag not given is None in the namespace (so the real binary gets only
  what was given); `options_from_args` applies TF Serving's defaults.
  """
  for name, flag in FLAGS.items():
    default = 'depends on the CPU count' if flag.default is _CPUS else repr(flag.default)
    note = '' if flag.status == IMPLEMENTED else f' [{flag.status} by the embedded server]'
    _add_flag(parser, name, flag.kind, f'{flag.help} (default: {default}){note}')
  for name, flag in EMBEDDED_FLAGS.items():
    _add_flag(parser, name, flag.kind,
              f'{flag.help} (default: {_render(flag.default)}) [embedded server only]')
  return parser


def _add_flag(parser: argparse.ArgumentParser, name: str, kind: type, help_text: str) -> None:
  """`--name=value` (booleans also bare, as TF's flags), None in the namespace when not given."""
  if kind is bool:
    parser.add_argument(f'--{name}', nargs='?', const=True, type=_flag_bool,
                        metavar='true|false', help=help_text)
  else:
    parser.add_argument(f'--{name}', type=kind, help=help_text,
                        metavar={int: 'N', float: 'X', str: 'VALUE'}[kind])


def given_flags(namespace: argparse.Namespace) -> Dict[str, Any]:
  """The TF Serving flags given on the command line (name -> value), in main.cc's order."""
  return {name: getattr(namespace, name) for name in FLAGS
          if getattr(namespace, name, None) is not None}


def check_supported(values: Dict[str, Any]) -> None:
  """Refuses flags the embedded server cannot honour; logs the ignored ones.

  Raises:
    UsageError: a refused flag with a value other than TF Serving's default.
  """
  for name, value in values.items():
    flag = FLAGS[name]
    if flag.status == REFUSED and value != flag.default:
      raise _common.UsageError(
          f'--{name}={_render(value)} is not supported by the embedded server ({flag.why}). '
          f'Fix: drop --{name} (or give its default, {_render(flag.default)}), or '
          f'{_REAL_BINARY}')
    if flag.status == IGNORED and flag.default is not _CPUS and value != flag.default:
      logger.warning('--%s=%s is accepted and ignored by the embedded server: %s', name,
                     _render(value), flag.why)


def options_from_args(namespace: argparse.Namespace):
  """ServerOptions from parsed flags: the implemented ones, TF Serving's defaults for the rest.

  Raises:
    ConfigError: invalid or conflicting values (see serving.config.options_from_flags).
  """
  from estimator_export.serving import config as serving_config  # pylint: disable=g-import-not-at-top
  values = {name: value for name, value in given_flags(namespace).items()
            if FLAGS[name].status == IMPLEMENTED and name != 'version'}
  for name in EMBEDDED_FLAGS:
    if getattr(namespace, name, None) is not None:
      values[name] = getattr(namespace, name)
  return serving_config.options_from_flags(values)


def _render(value: Any) -> str:
  if isinstance(value, bool):
    return 'true' if value else 'false'
  return str(value)


def real_server_argv(namespace: argparse.Namespace) -> List[str]:
  """The tensorflow_model_server arguments for the flags given, as `--flag=value`."""
  return [f'--{name}={_render(value)}' for name, value in given_flags(namespace).items()]


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'serve',
      summary="serve models over TF Serving's gRPC and REST APIs (tensorflow_model_server "
      'flags)',
      description='Serves SavedModel versions with the gRPC and REST APIs of TF Serving 2.15, '
      "taking tensorflow_model_server's flags. With --server_binary=auto the real "
      'tensorflow_model_server runs when it is on the PATH; otherwise the embedded, '
      'wire-compatible server does (it binds 127.0.0.1 unless --host says otherwise). '
      "Each flag's help says whether the embedded server implements, ignores or refuses it "
      "(the README's table of serve flags says why).",
      examples=['estimator-export serve --port=8500 --rest_api_port=8501 '
                '--model_name=classifier --model_base_path=/models/classifier',
                'estimator-export serve --model_config_file=models.config '
                '--enable_batching --batching_parameters_file=batching.config'])
  add_server_arguments(parser)
  parser.add_argument('--server_binary', choices=('auto', 'embedded', 'tensorflow_model_server'),
                      default='auto', help='auto: the real tensorflow_model_server when it is on '
                      'the PATH, else the embedded server')
  parser.set_defaults(run=run)


def _real_binary(args) -> Optional[str]:
  real = shutil.which('tensorflow_model_server')
  if args.server_binary == 'tensorflow_model_server' and not real:
    raise _common.UsageError('tensorflow_model_server is not on the PATH. Fix: install it, '
                             'or use --server_binary=embedded')
  return real if args.server_binary != 'embedded' else None


def run(args) -> int:
  import signal  # pylint: disable=g-import-not-at-top
  real = _real_binary(args)
  if real:
    argv = real_server_argv(args)
    ours = [f'--{name}' for name in EMBEDDED_FLAGS if getattr(args, name, None) is not None]
    if ours:
      logger.warning('%s: embedded server flags, not passed to %s', ', '.join(ours), real)
    print(f'estimator-export serve: running {real} (it binds all interfaces)', flush=True)
    os.execv(real, [real] + argv)
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  values = given_flags(args)
  check_supported(values)
  if values.get('version'):
    return _print_version()
  from estimator_export.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  server = server_lib.create_server(options_from_args(args))
  host = server.options.host
  rest = f', REST on {host}:{server.rest_port}' if server.rest_port else ''
  socket_path = server.options.grpc_socket_path
  unix = f', gRPC on unix:{socket_path}' if socket_path else ''
  print(f'estimator-export serve: gRPC on {host}:{server.grpc_port}{rest}{unix} '
        f'(models: {", ".join(server.manager.model_names())})', flush=True)

  def shutdown(signum, frame):
    del signum, frame
    server.stop(grace=5.0)

  signal.signal(signal.SIGINT, shutdown)
  signal.signal(signal.SIGTERM, shutdown)
  server.wait()
  return _common.EXIT_OK


def _print_version() -> int:
  """--version, worded like tensorflow_model_server's."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from estimator_export import __version__  # pylint: disable=g-import-not-at-top
  print(f'TensorFlow ModelServer: estimator_export {__version__} embedded server '
        f'(TF Serving 2.15 APIs)\nTensorFlow Library: {tf.__version__}', flush=True)
  return _common.EXIT_OK
