"""What every deploy target shares: the options, the export read once, the server's files and flags.

`plan(export_base, DeployOptions(...))` reads the export base (its versions, the
serving signatures and warmup file of the newest version served) and checks the
options; the targets (compose, kubernetes, kserve, dockerfile) render a `Plan`.
Everything here takes plain values: the command line is estimator_export/cli/deploy.py.
"""
import dataclasses
import math
import os
import re
import urllib.parse
from typing import Dict, List, Mapping, Optional, Tuple

from estimator_export import _saved_model as saved_model_lib
from estimator_export.errors import ConfigError, ExportError
from estimator_export.serving import config as serving_config

TF_SERVING_VERSION = '2.15.1'
TF_SERVING_IMAGE = f'tensorflow/serving:{TF_SERVING_VERSION}'
SERVER_BINARY = '/usr/bin/tensorflow_model_server'
# The Kubernetes version whose schemas the manifests are checked against (tests/test_deploy.py);
# they use only GA APIs (apps/v1, v1, autoscaling/v2), so they apply to 1.23 and later.
KUBERNETES_VERSION = '1.30'
GRPC_PORT, REST_PORT = 8500, 8501
MODELS_ROOT = '/models'      # <MODELS_ROOT>/<model name> holds the numeric versions.
CONFIG_DIR = '/config'       # models.config, batching.config, monitoring.config.
SSL_DIR = '/secrets/tls'     # ssl.config (a Secret in Kubernetes, a secret in compose).
METRICS_PATH = '/monitoring/prometheus/metrics'  # TF Serving's default prometheus_config path.
WARMUP_FILE = f'{saved_model_lib.ASSETS_EXTRA}/tf_serving_warmup_requests'
MODELS_CONFIG, BATCHING_CONFIG, MONITORING_CONFIG, SSL_CONFIG = (
    'models.config', 'batching.config', 'monitoring.config', 'ssl.config')
BATCHING_MODES = ('auto', 'on', 'off')

# DNS-1035 label: what a Service name must be (the stricter of the names used), <= 63 chars.
_DNS_1035 = re.compile(r'^[a-z]([-a-z0-9]*[a-z0-9])?$')
_DNS_1123 = re.compile(r'^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')
_QUANTITY = re.compile(r'^([0-9]+(\.[0-9]*)?|\.[0-9]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$')


class DeployError(ExportError, ValueError):
  """A deploy option or export that cannot become a working deployment (names the fix)."""


@dataclasses.dataclass(frozen=True)
class DeployOptions:
  """How to deploy one exported model; defaults are the sane ones the CLI documents.

  Attributes:
    model_name: the name clients send (ModelSpec.name, /v1/models/NAME).
    name: Kubernetes object name (a DNS-1035 label); default: model_name.
    namespace: metadata.namespace of every object (a DNS-1123 label), if given.
    versions: 'latest' (the newest), 'latest:N', 'all' or 'V1,V2' (those versions).
    image: the TF Serving image.
    batching: 'auto' (on when every signature input has a batch dimension), 'on' or 'off'.
    batching_parameters_file: a text BatchingParameters to use instead of the defaults.
    ssl_config_file: a text SSLConfig (PEM inside): serve gRPC over TLS.
    storage_uri: gs://, s3:// (or other URI) of the export base, for kubernetes (an
      init container copies it) and kserve (its storage initializer does).
    pvc: a PersistentVolumeClaim holding the export base (kubernetes).
    pvc_sub_path: the export base's directory inside the claim.
    host_path: the export base on every node (kubernetes; single-node clusters).
    copy_image: the image copying from storage_uri (default: by scheme).
    service_account: serviceAccountName of the pods (storage credentials).
    replicas, max_replicas, target_cpu_percent: the HorizontalPodAutoscaler's range and
      CPU target (KServe: min/maxReplicas).
    cpu, memory, cpu_limit, memory_limit: the server container's requests and limits
      (memory_limit default: memory; cpu_limit default: none, so batches may burst).
    startup_timeout_seconds: how long a pod may take to load the model before liveness
      checks start.
    canary_traffic_percent: KServe: the share of traffic the newest revision gets.
    kserve_grpc: KServe: expose the gRPC port (h2c) instead of REST.
    prometheus_image: the Prometheus image of the compose file.
  """
  model_name: str
  name: Optional[str] = None
  namespace: Optional[str] = None
  versions: str = 'latest'
  image: str = TF_SERVING_IMAGE
  batching: str = 'auto'
  batching_parameters_file: Optional[str] = None
  ssl_config_file: Optional[str] = None
  storage_uri: Optional[str] = None
  pvc: Optional[str] = None
  pvc_sub_path: Optional[str] = None
  host_path: Optional[str] = None
  copy_image: Optional[str] = None
  service_account: Optional[str] = None
  replicas: int = 2
  max_replicas: int = 5
  target_cpu_percent: int = 70
  cpu: str = '1'
  memory: str = '2Gi'
  cpu_limit: Optional[str] = None
  memory_limit: Optional[str] = None
  startup_timeout_seconds: int = 300
  canary_traffic_percent: Optional[int] = None
  kserve_grpc: bool = False
  prometheus_image: str = 'prom/prometheus:v2.53.0'


@dataclasses.dataclass(frozen=True)
class SignatureInfo:
  """One serving signature: its method and inputs/outputs as 'name: dtype shape'."""
  method_name: str
  inputs: Tuple[str, ...]
  outputs: Tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class ExportInfo:
  """What the export base holds, as read: versions, and the newest served version's contract.

  Attributes:
    base: the export base as given (normalized).
    versions: every version directory name, oldest first.
    served: the versions the policy serves, oldest first.
    signatures: signature name -> SignatureInfo, of the newest served version.
    warmup: the served versions that hold assets.extra/tf_serving_warmup_requests.
    unbatchable: 'signature/input' names without a batch dimension (batching would fail).
  """
  base: str
  versions: Tuple[str, ...]
  served: Tuple[str, ...]
  signatures: Mapping[str, SignatureInfo]
  warmup: Tuple[str, ...]
  unbatchable: Tuple[str, ...]

  @property
  def newest(self) -> str:
    return self.served[-1]

  def describe(self) -> str:
    """One line for the CLI and the files' headers."""
    warm = ', '.join(self.warmup) if self.warmup else 'none'
    return (f'versions {", ".join(self.versions)}; served {", ".join(self.served)}; '
            f'signatures {", ".join(sorted(self.signatures)) or "none"}; warmup file in: {warm}')


@dataclasses.dataclass(frozen=True)
class Plan:
  """A checked deployment: the options, the export, and the server's config file texts."""
  options: DeployOptions
  export: ExportInfo
  version_policy: object  # serving.config Latest / All / Specific.
  batching_config: Optional[str]  # None: batching off.
  monitoring_config: str
  ssl_config: Optional[str]
  notes: Tuple[str, ...]

  @property
  def model_name(self) -> str:
    return self.options.model_name

  @property
  def name(self) -> str:
    return self.options.name or self.options.model_name

  @property
  def model_dir(self) -> str:
    """Where the container sees the export base."""
    return f'{MODELS_ROOT}/{self.model_name}'

  def models_config(self, base_path: Optional[str] = None) -> str:
    """models.config naming the export at `base_path` (default: the container's model_dir)."""
    text = serving_config.write_models_config([serving_config.ModelConfig(
        name=self.model_name, base_path=base_path or self.model_dir,
        version_policy=self.version_policy)])
    lines = [f'# Export: {self.export.describe()}',
             f'# Signatures of version {self.export.newest}:']
    for sig_name, sig in sorted(self.export.signatures.items()):
      lines.append(f'#   {sig_name} ({sig.method_name}): {"; ".join(sig.inputs)} -> '
                   f'{"; ".join(sig.outputs)}')
    return '\n'.join(lines) + '\n' + text

  def config_files(self, base_path: Optional[str] = None) -> Dict[str, str]:
    """File name -> text of the configuration directory mounted at CONFIG_DIR."""
    files = {MODELS_CONFIG: self.models_config(base_path),
             MONITORING_CONFIG: self.monitoring_config}
    if self.batching_config is not None:
      files[BATCHING_CONFIG] = self.batching_config
    return files

  def server_args(self, *, ports: bool = True, ssl_path: Optional[str] = None) -> List[str]:
    """tensorflow_model_server's flags for this plan (the files under CONFIG_DIR)."""
    args = [f'--port={GRPC_PORT}', f'--rest_api_port={REST_PORT}'] if ports else []
    args.append(f'--model_config_file={CONFIG_DIR}/{MODELS_CONFIG}')
    if self.batching_config is not None:
      args += ['--enable_batching=true',
               f'--batching_parameters_file={CONFIG_DIR}/{BATCHING_CONFIG}']
    args += [f'--monitoring_config_file={CONFIG_DIR}/{MONITORING_CONFIG}',
             '--enable_model_warmup=true']
    if ssl_path:
      args.append(f'--ssl_config_file={ssl_path}')
    return args


def metadata_path(model_name: str) -> str:
  """The REST path answering 200 only while a version of the model is AVAILABLE.

  TF Serving's status path /v1/models/NAME answers 200 while a version is LOADING, or
  has ENDed after a failed load; the metadata path answers 404 then.
  """
  return f'/v1/models/{urllib.parse.quote(model_name, safe="")}/metadata'


def check_k8s_name(value: Optional[str], flag: str, dns1035: bool = True,
                   max_length: int = 63) -> None:
  """Raises DeployError unless `value` is a DNS-1035 (or DNS-1123) label of <= max_length."""
  pattern = _DNS_1035 if dns1035 else _DNS_1123
  if value is not None and pattern.match(value) and len(value) <= max_length:
    return
  kind = 'DNS-1035' if dns1035 else 'DNS-1123'
  start = 'a lower-case letter' if dns1035 else 'a lower-case letter or digit'
  suggestion = re.sub(r'[^a-z0-9-]+', '-', (value or '').lower()).strip('-')
  if dns1035:
    suggestion = suggestion.lstrip('0123456789-')
  suggestion = suggestion[:max_length].rstrip('-') or 'model'
  raise DeployError(f'{flag} is not a Kubernetes name (a {kind} label: lower-case letters, '
                    f'digits and "-", starting with {start}, ending with a letter or digit, at '
                    f'most {max_length} characters)', value=value,
                    fix=f'give {flag} {suggestion}')


def check_quantity(value: str, flag: str) -> str:
  if not isinstance(value, str) or not _QUANTITY.match(value):
    raise DeployError(f'{flag} is not a Kubernetes quantity', value=value,
                      fix=f'give e.g. {flag} 500m or 2 (CPU), 512Mi or 4Gi (memory)')
  return value


def cpu_count(quantity: str) -> int:
  """Whole CPUs in a CPU quantity ('500m' -> 1, '2' -> 2); at least 1."""
  if quantity.endswith('m'):
    return max(1, math.ceil(float(quantity[:-1]) / 1000))
  return max(1, math.ceil(float(quantity)))


def _version_policy(spec: str, versions: List[str]):
  numbers = sorted(int(v) for v in versions)
  fix = 'give --versions latest, latest:N, all, or versions of the base such as ' + ','.join(
      str(n) for n in numbers[-2:])
  text = (spec or '').strip()
  if text == 'latest':
    return serving_config.Latest(), numbers[-1:]
  if text == 'all':
    return serving_config.All(), numbers
  if text.startswith('latest:'):
    count = text[len('latest:'):]
    if not count.isdigit() or int(count) < 1:
      raise DeployError('--versions latest:N needs a whole number N >= 1', value=spec, fix=fix)
    return serving_config.Latest(int(count)), numbers[-int(count):]
  wanted = [v.strip() for v in text.split(',') if v.strip()]
  if not wanted or not all(saved_model_lib.is_version_name(v) for v in wanted):
    raise DeployError('--versions is not a version policy', value=spec, fix=fix)
  missing = sorted({int(v) for v in wanted} - set(numbers))
  if missing:
    raise DeployError(f'--versions names versions the export base does not hold (it holds '
                      f'{", ".join(str(n) for n in numbers)})', value=missing, fix=fix)
  chosen = sorted({int(v) for v in wanted})
  return serving_config.Specific(frozenset(chosen)), chosen


def _tensor_text(name: str, info) -> str:
  from tensorflow.core.framework import types_pb2  # pylint: disable=g-import-not-at-top
  dtype = types_pb2.DataType.Name(info.dtype).replace('DT_', '').lower()
  if info.tensor_shape.unknown_rank:
    return f'{name}: {dtype} (any shape)'
  return f'{name}: {dtype} [{", ".join(str(d.size) for d in info.tensor_shape.dim)}]'


def _batchable(info) -> bool:
  """Whether TF Serving's batching can concatenate this input along dimension 0."""
  shape = info.tensor_shape
  return shape.unknown_rank or (len(shape.dim) >= 1 and shape.dim[0].size == -1)


def read_export(base: str, versions: str = 'latest'):
  """Reads the export base: versions, the newest served version's signatures and warmup.

  Returns:
    (ExportInfo, version policy).

  Raises:
    DeployError: no version directory, no SavedModel in the newest served version, or
      a --versions value the base cannot satisfy.
  """
  base = saved_model_lib.normalize_path(base)
  try:
    names = saved_model_lib.version_names(base)
  except Exception as e:  # tf.errors.OpError: gs:// without credentials or network, ...
    raise DeployError(f'cannot list the export base ({type(e).__name__}: {e})', value=base,
                      fix='check the path, its credentials and network access') from e
  if not names:
    what = 'does not exist' if not _isdir(base) else 'holds no numeric version directory'
    raise DeployError(f'the export base {what} (TF Serving serves <base>/<version>/'
                      'saved_model.pb)', value=base,
                      fix='give the directory export_for_serving wrote into (the parent of '
                          'the numeric version directories), not a version directory itself')
  by_number = {int(n): n for n in names}
  policy, served = _version_policy(versions, names)
  served_names = tuple(by_number[n] for n in served)
  newest_dir = os.path.join(base, served_names[-1])
  try:
    signature_defs = saved_model_lib.serve_signature_defs(newest_dir)
  except (ExportError, OSError) as e:
    raise DeployError(f'the newest served version has no readable SavedModel ({e})',
                      value=newest_dir, fix='export it again, or pick other --versions') from e
  signatures, unbatchable = {}, []
  for sig_name, sig in sorted(signature_defs.items()):
    signatures[sig_name] = SignatureInfo(
        sig.method_name, tuple(_tensor_text(k, v) for k, v in sorted(sig.inputs.items())),
        tuple(_tensor_text(k, v) for k, v in sorted(sig.outputs.items())))
    unbatchable += [f'{sig_name}/{k}' for k, v in sorted(sig.inputs.items()) if not _batchable(v)]
  warmup = tuple(v for v in served_names if _exists(os.path.join(base, v, WARMUP_FILE)))
  ordered = tuple(by_number[n] for n in sorted(by_number))
  return ExportInfo(base, ordered, served_names, signatures, warmup, tuple(unbatchable)), policy


def _isdir(path: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile.isdir(path)


def _exists(path: str) -> bool:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  return tf.io.gfile.exists(path)


def default_batching_config(cpu: str) -> str:
  """A starting point for online serving: small batches, 1 ms wait, one thread per CPU."""
  return ('# tensorflow.serving.BatchingParameters (text format), written by estimator_export.\n'
          '# Tune: max_batch_size up for throughput, batch_timeout_micros down for latency.\n'
          'max_batch_size { value: 32 }\n'
          'batch_timeout_micros { value: 1000 }\n'
          'max_enqueued_batches { value: 100 }\n'
          f'num_batch_threads {{ value: {cpu_count(cpu)} }}\n')


def monitoring_config_text() -> str:
  return ('# tensorflow.serving.MonitoringConfig (text format), written by estimator_export.\n'
          f'prometheus_config {{ enable: true, path: "{METRICS_PATH}" }}\n')


def _read_config(path: str, loader, flag: str) -> str:
  try:
    loader(path)  # Parses and validates as both servers would.
  except ConfigError as e:
    raise DeployError(f'{flag} is not valid ({e})', value=path,
                      fix='fix the file (see TF Serving\'s text format for it)') from e
  with open(path, encoding='utf-8') as f:
    return f.read()


def _batching(options: DeployOptions, info: ExportInfo, notes: List[str]) -> Optional[str]:
  if options.batching not in BATCHING_MODES:
    raise DeployError('--batching must be auto, on or off', value=options.batching,
                      fix='give --batching auto (on when the signatures allow it), on or off')
  if options.batching == 'off':
    return None
  if info.unbatchable:
    if options.batching == 'on':
      raise DeployError('batching needs a batch dimension (-1) first in every signature '
                        'input, and these have none', value=list(info.unbatchable),
                        fix='give --batching off, or export inputs shaped [None, ...]')
    notes.append('batching off: inputs without a batch dimension: '
                 + ', '.join(info.unbatchable))
    return None
  if options.batching_parameters_file:
    return _read_config(options.batching_parameters_file,
                        serving_config.load_batching_parameters_file,
                        '--batching_parameters_file')
  return default_batching_config(options.cpu)


def _check_numbers(options: DeployOptions) -> None:
  for flag, value, low in (('--replicas', options.replicas, 1),
                           ('--max_replicas', options.max_replicas, 1),
                           ('--target_cpu_percent', options.target_cpu_percent, 1),
                           ('--startup_timeout_seconds', options.startup_timeout_seconds, 1)):
    if not isinstance(value, int) or value < low:
      raise DeployError(f'{flag} must be a whole number >= {low}', value=value,
                        fix=f'give {flag} {max(low, 2)}')
  if options.max_replicas < options.replicas:
    raise DeployError('--max_replicas is below --replicas', value=options.max_replicas,
                      fix=f'give --max_replicas {options.replicas} or more')
  percent = options.canary_traffic_percent
  if percent is not None and not 0 <= percent <= 100:
    raise DeployError('--canary_traffic_percent must be 0 to 100', value=percent,
                      fix='give e.g. --canary_traffic_percent 10')
  for flag, value in (('--cpu', options.cpu), ('--memory', options.memory),
                      ('--cpu_limit', options.cpu_limit),
                      ('--memory_limit', options.memory_limit)):
    if value is not None:
      check_quantity(value, flag)


def plan(export_base: str, options: DeployOptions) -> Plan:
  """Reads the export and checks the options shared by every target.

  Raises:
    DeployError: no versions, bad --versions, bad numbers or quantities, a bad
      batching / SSL file, or batching forced on a model that cannot batch.
  """
  if not options.model_name or '/' in options.model_name or ':' in options.model_name:
    raise DeployError('--model_name must be a non-empty name without "/" or ":" (it is a '
                      'path segment of /v1/models/NAME:predict)', value=options.model_name,
                      fix='give e.g. --model_name classifier')
  _check_numbers(options)
  info, policy = read_export(export_base, options.versions)
  notes = []
  batching = _batching(options, info, notes)
  if not info.warmup:
    notes.append(f'no {WARMUP_FILE} in version {info.newest}: the first requests after each '
                 'load will be slow (export with warmup samples to avoid it)')
  ssl = None
  if options.ssl_config_file:
    ssl = _read_config(options.ssl_config_file, serving_config.load_ssl_config_file,
                       '--ssl_config_file')
  return Plan(options, info, policy, batching, monitoring_config_text(), ssl, tuple(notes))
