"""Server configuration in TensorFlow Serving 2.15's own file formats and flag values.

    options = ServerOptions(model_name='m', model_base_path='/models/m', port=0)
    options = options_from_flags({'port': 8500, 'rest_api_port': 0, ...})  # flag values
    configs = load_model_config_file('/models/models.config')             # [ModelConfig, ...]
    params = load_batching_parameters_file('batching.config')             # BatchingParameters

This module holds ServerOptions (tensorflow_model_server's flags as one
value) and re-exports the config files' readers, so `serving.config` stays the
one place to import from:

* config_models: ModelConfig, version policies and `--model_config_file`
  (a text ModelServerConfig).
* config_params: BatchingParameters, MonitoringConfig and SSLConfig
  (`--batching_parameters_file`, `--monitoring_config_file`,
  `--ssl_config_file`).

The command line (argparse, every flag of tensorflow_model_server 2.15.1) is
estimator_export/cli/serve.py (the README's table of serve flags says which are implemented).

Where ServerOptions differs from tensorflow_model_server, on purpose:

* `host` (default 127.0.0.1) is ours: TF Serving always binds every interface.
* `port=0` picks a free port (TF Serving refuses a zero gRPC port), and in
  ServerOptions `rest_api_port=None` means "no REST" while 0 picks a free
  port. As a flag value `rest_api_port=0` (the default) still means "no
  REST", as in TF Serving; `options_from_flags` maps it to None.
* `rest_api_port` equal to `port` is an error here; TF Serving logs it and
  runs without REST.
* `saved_model_tags` with an empty or space-padded tag ('serve,', 'serve, gpu')
  is an error here; TF Serving keeps such a tag as written, so no MetaGraph
  matches and every version fails to load.
"""
import dataclasses
import logging
import os
import re
from typing import Any, List, Mapping, Optional, Tuple, Union

from estimator_export import precision
from estimator_export.errors import ConfigError
from estimator_export.serving.config_models import (
    INT32_MAX, INT64_MAX, INT64_MIN, TENSORFLOW_PLATFORM, All, Latest, ModelConfig, Specific,
    VersionPolicy, require_bool, require_int, check_unique_names, load_model_config_file,
    model_config_from_flags, model_configs_from_protos, models_config_for_exports,
    parse_model_config_text, read_text, substitute, validate_model_configs,
    write_models_config)
from estimator_export.serving.config_params import (
    DEFAULT_PROMETHEUS_PATH, BatchingParameters, MonitoringConfig, SSLConfig,
    load_batching_parameters_file, load_monitoring_config_file, load_ssl_config_file,
    parse_batching_parameters, parse_monitoring_config, parse_ssl_config)

__all__ = [
    'All', 'BatchingParameters', 'ConfigError', 'DEFAULT_PROMETHEUS_PATH', 'INT32_MAX',
    'INT64_MAX', 'INT64_MIN', 'Latest', 'ModelConfig', 'MonitoringConfig', 'SSLConfig',
    'ServerOptions', 'Specific', 'TENSORFLOW_PLATFORM', 'VersionPolicy', 'check_unique_names',
    'load_batching_parameters_file', 'load_model_config_file', 'load_monitoring_config_file',
    'load_ssl_config_file', 'model_config_from_flags', 'model_configs_from_protos',
    'models_config_for_exports', 'options_from_flags', 'parse_batching_parameters',
    'parse_grpc_channel_arguments', 'parse_model_config_text', 'parse_monitoring_config',
    'parse_ssl_config', 'substitute', 'validate_model_configs', 'write_models_config',
]

logger = logging.getLogger('estimator_export.serving')

_PATH_FIELDS = ('model_base_path', 'model_config_file', 'batching_parameters_file',
                'monitoring_config_file', 'grpc_socket_path', 'ssl_config_file',
                'tensorflow_session_config_file')
ChannelArgument = Tuple[str, Union[int, str]]


def parse_grpc_channel_arguments(text: str) -> Tuple[ChannelArgument, ...]:
  """`--grpc_channel_arguments` as TF Serving reads it (server.cc parseGrpcChannelArgs).

  A comma-separated list of key=value; a value that is a 32-bit integer
  (safe_strto32) is passed as an int, any other as a string. '' means none.

  Raises:
    ConfigError: an item without '='.
  """
  arguments = []
  for item in text.split(',') if text else ():
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise ConfigError('grpc_channel_arguments takes comma-separated key=value pairs',
                        field='grpc_channel_arguments', value=item,
                        fix='e.g. --grpc_channel_arguments=grpc.max_connection_age_ms=2000,'
                            'grpc.http2.max_pings_without_data=0')
    value = value.split('=')[0]  # TF Serving keeps the text up to a second '='.
    if re.fullmatch(r'\s*[+-]?[0-9]+\s*', value) and -2**31 <= int(value) < 2**31:
      arguments.append((key, int(value)))
    else:
      arguments.append((key, value))
  return tuple(arguments)


@dataclasses.dataclass(frozen=True)
class ServerOptions:
  """The embedded server's settings: tensorflow_model_server's flags and defaults.

  Defaults are TF Serving 2.15's (model_servers/main.cc and server.h) except
  where the module docstring says otherwise.

  Attributes:
    port: gRPC port (8500); 0 picks a free port.
    rest_api_port: REST port; None (the default, `--rest_api_port=0`): no
      REST; 0 picks a free port.
    host: interface to bind (ours; TF Serving binds all of them).
    grpc_socket_path: also serve gRPC on this Unix domain socket.
    grpc_channel_arguments: (key, value) channel arguments for the gRPC server
      (see parse_grpc_channel_arguments).
    grpc_max_threads: gRPC worker threads; None: 16.
    ssl_config_file: a text SSLConfig: serve gRPC over TLS.
    model_name: name of the single model of --model_base_path ('default').
    model_base_path: single-model mode: the model's base directory.
    model_config_file: a text ModelServerConfig; when set, model_name and
      model_base_path are ignored (as in TF Serving).
    model_config_file_poll_wait_seconds: re-read the config file this often;
      0: read once at start-up.
    file_system_poll_wait_seconds: look for new versions this often (1).
    enable_batching: batch requests (False).
    batching_parameters_file: a text BatchingParameters; needs enable_batching.
    enable_model_warmup: replay assets.extra/tf_serving_warmup_requests (True).
    num_request_iterations_for_warmup: replays per warmup record; TF Serving's
      default 0 means "unset", i.e. once.
    rest_api_timeout_in_ms: REST request timeout (30000).
    rest_api_enable_cors_support: add CORS headers to REST responses (False).
    monitoring_config_file: a text MonitoringConfig (Prometheus).
    tensorflow_session_config_file: a text tensorflow.ConfigProto for sessions.
    tensorflow_session_parallelism, tensorflow_intra_op_parallelism,
      tensorflow_inter_op_parallelism: session thread counts; 0: TF's choice.
    per_process_gpu_memory_fraction: GPU memory share of each session (0: TF's).
    grpc_max_message_bytes: gRPC send/receive limit; TF Serving hard-codes
      INT32_MAX (no flag).
    max_num_load_retries: retries of a version that failed to load (5).
    load_retry_interval_micros: wait between those retries (one minute).
    saved_model_tags: the tags of the MetaGraph to load from each version,
      as the flag's comma-separated text or a sequence; stored as a tuple.
      A version loads the MetaGraph whose tags equal these as a set; one
      without fails to load with NOT_FOUND. Default: ('serve',).
    mixed_precision: 'bfloat16' turns on grappler's oneDNN bfloat16 auto mixed
      precision in every session, as TF Serving does (see
      estimator_export.precision); '' (default): float32.

  The embedded server's own settings (no TF Serving flag; never passed to the
  real binary):

    rest_api_max_body_bytes: largest REST body (32 MiB); larger is a 413.
    rest_api_max_elements: most tensor elements a REST request decodes to.
    max_inflight_request_bytes: request bytes decoded and run at once over all
      clients (REST and gRPC); further requests wait (up to their timeout).
    rest_api_header_timeout_in_ms, rest_api_body_timeout_in_ms: time a client
      has to send a request's headers, and its body.
    rest_api_keepalive_timeout_in_ms: idle time before a kept-alive REST
      connection is closed.
    allow_model_reload: answer ModelService.HandleReloadConfigRequest (True, as
      TF Serving); False refuses it with PERMISSION_DENIED.
  """
  port: int = 8500
  rest_api_port: Optional[int] = None
  host: str = '127.0.0.1'
  grpc_socket_path: Optional[str] = None
  grpc_channel_arguments: Tuple[ChannelArgument, ...] = ()
  grpc_max_threads: Optional[int] = None
  ssl_config_file: Optional[str] = None
  model_name: str = 'default'
  model_base_path: Optional[str] = None
  model_config_file: Optional[str] = None
  model_config_file_poll_wait_seconds: int = 0
  file_system_poll_wait_seconds: int = 1
  enable_batching: bool = False
  batching_parameters_file: Optional[str] = None
  enable_model_warmup: bool = True
  num_request_iterations_for_warmup: int = 0
  rest_api_timeout_in_ms: int = 30000
  rest_api_enable_cors_support: bool = False
  monitoring_config_file: Optional[str] = None
  tensorflow_session_config_file: Optional[str] = None
  tensorflow_session_parallelism: int = 0
  tensorflow_intra_op_parallelism: int = 0
  tensorflow_inter_op_parallelism: int = 0
  per_process_gpu_memory_fraction: float = 0.0
  grpc_max_message_bytes: int = INT32_MAX
  max_num_load_retries: int = 5
  load_retry_interval_micros: int = 60_000_000
  saved_model_tags: Union[str, Tuple[str, ...]] = ('serve',)
  mixed_precision: str = ''
  rest_api_max_body_bytes: int = 32 * 1024 * 1024
  rest_api_max_elements: int = 16 * 1024 * 1024
  max_inflight_request_bytes: int = 64 * 1024 * 1024
  rest_api_header_timeout_in_ms: int = 10_000
  rest_api_body_timeout_in_ms: int = 60_000
  rest_api_keepalive_timeout_in_ms: int = 60_000
  allow_model_reload: bool = True

  def __post_init__(self):
    for name in _PATH_FIELDS:  # TF Serving's "unset" is the empty string.
      value = getattr(self, name)
      if value is not None:
        value = os.fspath(value)
      object.__setattr__(self, name, value or None)
    require_int('port', self.port, minimum=0, maximum=65535)
    if self.rest_api_port is not None:
      require_int('rest_api_port', self.rest_api_port, minimum=0, maximum=65535)
      if self.rest_api_port and self.rest_api_port == self.port:
        raise ConfigError('server_options.http_port cannot be same as grpc_port. Please use a '
                          'different port for HTTP/REST API.', field='rest_api_port',
                          value=self.rest_api_port,
                          fix='e.g. --port=8500 --rest_api_port=8501')
    if not isinstance(self.model_name, str) or not self.model_name:
      raise ConfigError('model_name must be a non-empty string', field='model_name',
                        value=self.model_name)
    require_int('model_config_file_poll_wait_seconds',
                 self.model_config_file_poll_wait_seconds, minimum=INT64_MIN)
    require_int('file_system_poll_wait_seconds', self.file_system_poll_wait_seconds,
                 minimum=INT64_MIN)
    require_int('num_request_iterations_for_warmup', self.num_request_iterations_for_warmup,
                 minimum=0)
    require_int('rest_api_timeout_in_ms', self.rest_api_timeout_in_ms, minimum=1)
    require_int('grpc_max_message_bytes', self.grpc_max_message_bytes, minimum=1,
                 maximum=INT32_MAX)
    require_int('max_num_load_retries', self.max_num_load_retries, minimum=0)
    require_int('load_retry_interval_micros', self.load_retry_interval_micros, minimum=0)
    for name in ('rest_api_max_body_bytes', 'rest_api_max_elements',
                 'max_inflight_request_bytes', 'rest_api_header_timeout_in_ms',
                 'rest_api_body_timeout_in_ms', 'rest_api_keepalive_timeout_in_ms'):
      require_int(name, getattr(self, name), minimum=1)
    if self.grpc_max_threads is not None:
      require_int('grpc_max_threads', self.grpc_max_threads, minimum=1, maximum=INT32_MAX)
    for name in ('tensorflow_session_parallelism', 'tensorflow_intra_op_parallelism',
                 'tensorflow_inter_op_parallelism'):
      require_int(name, getattr(self, name), minimum=0)
    fraction = self.per_process_gpu_memory_fraction
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not (
        0.0 <= fraction <= 1.0):
      raise ConfigError('per_process_gpu_memory_fraction must be a number in [0, 1]',
                        field='per_process_gpu_memory_fraction', value=fraction)
    object.__setattr__(self, 'grpc_channel_arguments',
                       tuple((str(k), v) for k, v in self.grpc_channel_arguments))
    object.__setattr__(self, 'saved_model_tags', _saved_model_tags(self.saved_model_tags))
    precision.check_mode(self.mixed_precision, 'mixed_precision', _precision_error)
    for name in ('enable_batching', 'enable_model_warmup', 'rest_api_enable_cors_support',
                 'allow_model_reload'):
      require_bool(name, getattr(self, name))
    if self.batching_parameters_file and not self.enable_batching:
      raise ConfigError('server_options.batching_parameters_file is set without setting '
                        'server_options.enable_batching to true.',
                        field='batching_parameters_file', fix='add --enable_batching')
    if (self.tensorflow_intra_op_parallelism > 0 and self.tensorflow_inter_op_parallelism > 0
        and self.tensorflow_session_parallelism > 0):
      raise ConfigError('Either configure server_options.tensorflow_session_parallelism or '
                        '(server_options.tensorflow_intra_op_parallelism, '
                        'server_options.tensorflow_inter_op_parallelism) separately. You cannot '
                        'configure all.', field='tensorflow_session_parallelism',
                        fix='drop --tensorflow_session_parallelism or the other two')

  def model_configs(self) -> List[ModelConfig]:
    """The models to serve: from model_config_file, else from the single-model flags.

    Raises:
      ConfigError: neither is set (TF Serving's "Both ... are empty!"), or the
        config file is unreadable or invalid.
    """
    if self.model_config_file:
      if self.model_base_path:
        logger.warning('--model_config_file is set: --model_name and --model_base_path are '
                       'ignored (as in TF Serving)')
      return load_model_config_file(self.model_config_file)
    return [model_config_from_flags(self.model_name, self.model_base_path or '')]

  def batching_parameters(self) -> Optional[BatchingParameters]:
    """The batching parameters; None when batching is off.

    With --enable_batching and no file, TF Serving's defaults (thread pool
    "model_server_batch_threads").
    """
    if not self.enable_batching:
      return None
    if not self.batching_parameters_file:
      return BatchingParameters(thread_pool_name='model_server_batch_threads')
    params = load_batching_parameters_file(self.batching_parameters_file)
    if params.enable_large_batch_splitting:
      logger.warning('%s: enable_large_batch_splitting is not implemented by the embedded '
                     'batcher: requests are never split, batches hold up to max_batch_size '
                     'rows', self.batching_parameters_file)
    return params

  def monitoring(self) -> Optional[MonitoringConfig]:
    """The monitoring config; None when there is no --monitoring_config_file."""
    if not self.monitoring_config_file:
      return None
    config = load_monitoring_config_file(self.monitoring_config_file)
    if config.prometheus_enable and self.rest_api_port is None:
      logger.warning('Prometheus metrics are served on the REST port, and REST is off '
                     '(--rest_api_port=0): they are not exported')
    return config

  def ssl_config(self) -> Optional[SSLConfig]:
    """The gRPC TLS config; None when there is no --ssl_config_file."""
    if not self.ssl_config_file:
      return None
    return load_ssl_config_file(self.ssl_config_file)

  def session_config(self):
    """The tf.compat.v1.ConfigProto for every session, as server.cc builds it; None: TF's.

    The --tensorflow_session_config_file is read first; then the GPU memory
    fraction and the parallelism flags overwrite their fields (TF Serving
    always writes them, 0 meaning "TensorFlow chooses").
    """
    if not (self.tensorflow_session_config_file or self.tensorflow_session_parallelism
            or self.tensorflow_intra_op_parallelism or self.tensorflow_inter_op_parallelism
            or self.per_process_gpu_memory_fraction or self.mixed_precision):
      return None
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
    config = tf.compat.v1.ConfigProto()
    path = self.tensorflow_session_config_file
    if path:
      try:
        text_format.Parse(read_text(path, 'session config'), config)
      except text_format.ParseError as e:
        raise ConfigError(f"Invalid protobuf file: '{path}': {e}", source=path,
                          line=e.GetLine(), fix='write a text tensorflow.ConfigProto, e.g. '
                          'intra_op_parallelism_threads: 4') from e
    config.gpu_options.per_process_gpu_memory_fraction = self.per_process_gpu_memory_fraction
    if self.tensorflow_intra_op_parallelism or self.tensorflow_inter_op_parallelism:
      intra, inter = self.tensorflow_intra_op_parallelism, self.tensorflow_inter_op_parallelism
    else:
      intra = inter = self.tensorflow_session_parallelism
    config.intra_op_parallelism_threads = intra
    config.inter_op_parallelism_threads = inter
    return precision.apply(config, self.mixed_precision or None)


def _precision_error(message: str, value: Any, fix: str) -> ConfigError:
  return ConfigError(f'server_options.{message}', field='mixed_precision', value=value, fix=fix)


def _saved_model_tags(value: Union[str, Tuple[str, ...]]) -> Tuple[str, ...]:
  """--saved_model_tags as TF Serving splits it (on ','), duplicates dropped, checked."""
  tags = value.split(',') if isinstance(value, str) else list(value)
  for tag in tags:
    if not isinstance(tag, str) or not tag or tag != tag.strip():
      raise ConfigError('saved_model_tags has an empty or space-padded tag; TF Serving matches '
                        'tags exactly, so no MetaGraph would load', field='saved_model_tags',
                        value=value,
                        fix='give comma-separated tags without spaces, e.g. '
                            '--saved_model_tags=serve,gpu')
  return tuple(dict.fromkeys(tags))


def options_from_flags(values: Mapping[str, Any]) -> ServerOptions:
  """ServerOptions from tensorflow_model_server flag values (name -> parsed value).

  Names missing from `values` keep their defaults. As in TF Serving,
  `rest_api_port=0` means no REST (None here) and `grpc_channel_arguments` is
  the flag's comma-separated text.

  Raises:
    ConfigError: an unknown name, or invalid or conflicting values.
  """
  fields = {field.name for field in dataclasses.fields(ServerOptions)}
  unknown = sorted(set(values) - fields)
  if unknown:
    raise ConfigError('Not a ServerOptions field', value=unknown,
                      fix=f'use names from {sorted(fields)}')
  values = dict(values)
  if values.get('rest_api_port') == 0:
    values['rest_api_port'] = None
  if isinstance(values.get('grpc_channel_arguments'), str):
    values['grpc_channel_arguments'] = parse_grpc_channel_arguments(
        values['grpc_channel_arguments'])
  return ServerOptions(**values)
