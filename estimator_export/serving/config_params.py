"""TF Serving's other config files: BatchingParameters, MonitoringConfig and SSLConfig.

    params = load_batching_parameters_file('batching.config')       # BatchingParameters
    monitoring = load_monitoring_config_file('monitoring.config')   # MonitoringConfig
    ssl = load_ssl_config_file('ssl.config')                        # SSLConfig

`--batching_parameters_file`, `--monitoring_config_file` and `--ssl_config_file`
are text protos. Each is read into the real message (_protos builds the
classes tensorflow-serving-api lacks) by _textproto's descriptor-driven parser,
which is strict like the C++ one: unknown fields, a scalar written for a
wrapper field (`max_batch_size: 8` instead of `max_batch_size { value: 8 }`),
or a singular field given twice fail, naming the file and line. The message is
then turned into a validated, immutable dataclass with TF Serving's defaults
and checks; `from_proto` does that for a message built in code.
"""
import dataclasses
import logging
from typing import Optional, Tuple

from estimator_export.errors import ConfigError
from estimator_export.serving import _protos
from estimator_export.serving import _textproto
from estimator_export.serving.config_models import require_bool, require_int, read_text

logger = logging.getLogger('estimator_export.serving')

DEFAULT_PROMETHEUS_PATH = '/monitoring/prometheus/metrics'  # PrometheusExporter::kPrometheusPath

# ----- BatchingParameters -----

_INT64_FIELDS = ('max_batch_size', 'batch_timeout_micros', 'max_enqueued_batches',
                 'num_batch_threads', 'max_execution_batch_size')


@dataclasses.dataclass(frozen=True)
class BatchingParameters:
  """tensorflow.serving.BatchingParameters (session_bundle_config.proto), validated.

  Defaults are those TF Serving uses for unset fields (the batching library's
  option structs): BasicBatchScheduler / SharedBatchScheduler QueueOptions
  (max_batch_size 1000, batch_timeout_micros 0, max_enqueued_batches 10) and
  SharedBatchScheduler::Options (num_batch_threads = the machine's parallelism,
  represented as None; thread pool "batch_threads", or
  "model_server_batch_threads" with --enable_batching and no file).

  Attributes:
    max_batch_size: largest batch, and largest request accepted, in rows.
    batch_timeout_micros: how long an open batch waits for more requests.
    max_enqueued_batches: queue length in batches; a full queue → UNAVAILABLE.
    num_batch_threads: threads running batches; None: one per CPU.
    thread_pool_name: informational only (the embedded server does not name pools).
    allowed_batch_sizes: sizes batches are padded up to; strictly increasing,
      the last equal to max_batch_size (to max_execution_batch_size with splitting).
    pad_variable_length_inputs: pad inputs whose non-batch dims differ.
    enable_large_batch_splitting: split requests over several batches (parsed
      and validated; the embedded batcher does not split, see batching.py).
    max_execution_batch_size: with splitting, the largest executed batch
      (None: max_batch_size).
  """
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: Optional[int] = None
  thread_pool_name: Optional[str] = None
  allowed_batch_sizes: Tuple[int, ...] = ()
  pad_variable_length_inputs: bool = False
  enable_large_batch_splitting: bool = False
  max_execution_batch_size: Optional[int] = None

  def __post_init__(self):
    require_int('max_batch_size', self.max_batch_size, minimum=1)
    require_int('batch_timeout_micros', self.batch_timeout_micros, minimum=0)
    require_int('max_enqueued_batches', self.max_enqueued_batches, minimum=0)
    if self.num_batch_threads is not None:
      require_int('num_batch_threads', self.num_batch_threads, minimum=1)
    if self.max_execution_batch_size is not None:
      require_int('max_execution_batch_size', self.max_execution_batch_size, minimum=1)
    if self.thread_pool_name is not None and not isinstance(self.thread_pool_name, str):
      raise ConfigError('thread_pool_name must be a string', field='thread_pool_name',
                        value=self.thread_pool_name)
    require_bool('pad_variable_length_inputs', self.pad_variable_length_inputs)
    require_bool('enable_large_batch_splitting', self.enable_large_batch_splitting)
    sizes = tuple(require_int('allowed_batch_sizes', s, minimum=1)
                  for s in self.allowed_batch_sizes)
    object.__setattr__(self, 'allowed_batch_sizes', sizes)
    self._check_allowed_batch_sizes(sizes)

  def _check_allowed_batch_sizes(self, sizes: Tuple[int, ...]):
    """batching_session.cc's checks, with its messages."""
    if not sizes:
      return
    if any(b <= a for a, b in zip(sizes, sizes[1:])):
      raise ConfigError('allowed_batch_sizes entries must be monotonically increasing',
                        field='allowed_batch_sizes', value=list(sizes),
                        fix='list each size once, smallest first')
    last, limit = sizes[-1], self.max_batch_size
    if not self.enable_large_batch_splitting:
      if last != limit:
        raise ConfigError(f'Last entry in allowed_batch_sizes must match max_batch_size; last '
                          f'entry was {last}; expected {limit}', field='allowed_batch_sizes',
                          fix=f'end allowed_batch_sizes with {limit}, or set max_batch_size '
                              f'{{ value: {last} }}')
      return
    if last > limit:
      raise ConfigError(f'Last entry in allowed_batch_sizes must be less than or equal to '
                        f'max_batch_size; last entry was {last}; expected {limit}',
                        field='allowed_batch_sizes')
    execution = self.execution_batch_size
    if last != execution:
      raise ConfigError(f'Last entry in allowed_batch_sizes must be equal to '
                        f'max_execution_batch_size; last entry was {last}; expected {execution}',
                        field='allowed_batch_sizes',
                        fix=f'end allowed_batch_sizes with {execution}')

  @property
  def execution_batch_size(self) -> int:
    """The largest batch that runs: max_execution_batch_size with splitting, else max_batch_size."""
    if self.enable_large_batch_splitting and self.max_execution_batch_size is not None:
      return self.max_execution_batch_size
    return self.max_batch_size



  @classmethod
  def from_proto(cls, proto) -> 'BatchingParameters':
    """From a tensorflow.serving.BatchingParameters message (_protos.BatchingParameters).

    Unset wrapper fields keep TF Serving's defaults; `max_batch_size {}` means 0.

    Raises:
      ConfigError: a bad value, naming the field.
    """
    values = {}
    for name in _INT64_FIELDS + ('thread_pool_name', 'enable_large_batch_splitting'):
      if proto.HasField(name):
        values[name] = getattr(proto, name).value
    values['allowed_batch_sizes'] = tuple(proto.allowed_batch_sizes)
    values['pad_variable_length_inputs'] = proto.pad_variable_length_inputs
    return cls(**values)


def parse_batching_parameters(text: str, source: str = '<string>') -> BatchingParameters:
  """Parses a text BatchingParameters (a `--batching_parameters_file`).

      max_batch_size { value: 128 }
      batch_timeout_micros { value: 1000 }
      allowed_batch_sizes: [32, 64, 128]   # or one `allowed_batch_sizes: 32` per line
      pad_variable_length_inputs: true

  Raises:
    ConfigError: naming the file and line: syntax, unknown field, a scalar for
      a wrapper field, or a bad value (e.g. allowed_batch_sizes not ending in
      max_batch_size).
  """
  proto = _protos.BatchingParameters()
  lines = _textproto.parse(text, proto, source)
  try:
    params = BatchingParameters.from_proto(proto)
  except ConfigError as e:
    raise e.located(source, lines.get(e.field)) from e
  if params.thread_pool_name is not None:
    logger.info('%s: thread_pool_name %r is accepted and ignored (the embedded server keeps '
                'one pool per servable)', source, params.thread_pool_name)
  return params


def load_batching_parameters_file(path: str) -> BatchingParameters:
  """Reads and parses a `--batching_parameters_file`."""
  return parse_batching_parameters(read_text(path, 'batching parameters'), source=path)


# ----- MonitoringConfig -----

@dataclasses.dataclass(frozen=True)
class MonitoringConfig:
  """tensorflow.serving.MonitoringConfig (monitoring_config.proto).

  Metrics are served on the REST port only (as in TF Serving), at
  `prometheus_path`.

  Attributes:
    prometheus_enable: export Prometheus metrics.
    prometheus_path: the URL path; '' in a file means the default.
  """
  prometheus_enable: bool = False
  prometheus_path: str = DEFAULT_PROMETHEUS_PATH

  def __post_init__(self):
    require_bool('prometheus_enable', self.prometheus_enable)
    if not isinstance(self.prometheus_path, str) or not self.prometheus_path.startswith('/'):
      raise ConfigError('prometheus_path must be a URL path starting with "/"',
                        field='prometheus_path', value=self.prometheus_path,
                        fix=f'use e.g. "{DEFAULT_PROMETHEUS_PATH}"')


  @classmethod
  def from_proto(cls, proto) -> 'MonitoringConfig':
    """From a tensorflow.serving.MonitoringConfig message; path '' means the default."""
    prometheus = proto.prometheus_config
    return cls(prometheus_enable=prometheus.enable,
               prometheus_path=prometheus.path or DEFAULT_PROMETHEUS_PATH)


def parse_monitoring_config(text: str, source: str = '<string>') -> MonitoringConfig:
  """Parses a text MonitoringConfig (`prometheus_config { enable: true, path: "/x" }`).

  Raises:
    ConfigError: naming the file and line.
  """
  proto = _protos.MonitoringConfig()
  lines = _textproto.parse(text, proto, source)
  try:
    return MonitoringConfig.from_proto(proto)
  except ConfigError as e:
    field = {'prometheus_path': 'path', 'prometheus_enable': 'enable'}.get(e.field)
    raise e.located(source, lines.child('prometheus_config').get(field)) from e


def load_monitoring_config_file(path: str) -> MonitoringConfig:
  """Reads and parses a `--monitoring_config_file`."""
  return parse_monitoring_config(read_text(path, 'monitoring config'), source=path)


# ----- SSLConfig -----

@dataclasses.dataclass(frozen=True)
class SSLConfig:
  """tensorflow.serving.SSLConfig (ssl_config.proto): TLS for the gRPC server.

  As in TF Serving's BuildServerCredentials, the fields hold PEM text (not
  file names).

  Attributes:
    server_key: the server's private key (PEM).
    server_cert: the server's certificate chain (PEM).
    custom_ca: root certificates to verify clients with (PEM); '' for none.
    client_verify: require and verify a client certificate.
  """
  server_key: str = ''
  server_cert: str = ''
  custom_ca: str = ''
  client_verify: bool = False

  def __post_init__(self):
    for name in ('server_key', 'server_cert', 'custom_ca'):
      if not isinstance(getattr(self, name), str):
        raise ConfigError(f'{name} must be PEM text', field=name, value=getattr(self, name))
    require_bool('client_verify', self.client_verify)
    if not self.server_key or not self.server_cert:
      missing = 'server_key' if not self.server_key else 'server_cert'
      raise ConfigError(f'SSLConfig needs both server_key and server_cert; {missing} is empty',
                        field=missing, fix=f'set {missing}: "-----BEGIN ..." (the PEM text)')
    if self.client_verify and not self.custom_ca:
      raise ConfigError('client_verify needs custom_ca to verify client certificates with',
                        field='client_verify',
                        fix='set custom_ca: "<PEM root certificates>", or client_verify: false')

  @classmethod
  def from_proto(cls, proto) -> 'SSLConfig':
    """From a tensorflow.serving.SSLConfig message."""
    return cls(server_key=proto.server_key, server_cert=proto.server_cert,
               custom_ca=proto.custom_ca, client_verify=proto.client_verify)

  def server_credentials(self):
    """grpc.ServerCredentials as TF Serving builds them from this config."""
    import grpc  # pylint: disable=g-import-not-at-top
    return grpc.ssl_server_credentials(
        [(self.server_key.encode('utf-8'), self.server_cert.encode('utf-8'))],
        root_certificates=self.custom_ca.encode('utf-8') if self.custom_ca else None,
        require_client_auth=self.client_verify)


def parse_ssl_config(text: str, source: str = '<string>') -> SSLConfig:
  """Parses a text SSLConfig (`server_key: "-----BEGIN ..." server_cert: "..."`).

  Raises:
    ConfigError: naming the file and line.
  """
  proto = _protos.SSLConfig()
  lines = _textproto.parse(text, proto, source)
  try:
    return SSLConfig.from_proto(proto)
  except ConfigError as e:
    raise e.located(source, lines.get(e.field)) from e


def load_ssl_config_file(path: str) -> SSLConfig:
  """Reads and parses an `--ssl_config_file`."""
  return parse_ssl_config(read_text(path, 'SSL config'), source=path)
