"""The models a server serves: ModelConfig and TF Serving's `--model_config_file`.

    configs = load_model_config_file('/models/models.config')      # [ModelConfig, ...]
    text = write_models_config(models_config_for_exports({'wide': 'exports/wide'},
                                                         root='/models'), 'models.config')

A `--model_config_file` is a text tensorflow.serving.ModelServerConfig, read
into the real message (model_server_config_pb2 from tensorflow-serving-api)
with protobuf's text_format; a malformed file also logs the line
tensorflow_model_server's C++ parser logs (`Error parsing text-format
tensorflow.serving.ModelServerConfig: LINE:COLUMN: ...`). Only
`model_config_list` is supported (TF Serving aborts on `custom_model_config`
too). The checks and messages are ServerCore's, in its order
(`model_configs_from_protos`, also used by ModelService.HandleReloadConfigRequest):
unique names, an absolute path or URI as base_path, platform "tensorflow".
Relative base paths are refused, not resolved against the config file's
directory: TF Serving refuses them, and a file accepted here must work there.
An empty file means "no models", as in TF Serving. Environment variables are
NOT expanded (TF Serving does not expand them either); `substitute` fills
`${NAME}` placeholders in templates such as the fixture good_model_config.txt.
"""
import collections.abc
import dataclasses
import logging
import os
import posixpath
import re
import tempfile
from typing import (Any, FrozenSet, Iterable, Iterator, List, Mapping, Optional, Sequence,
                    Union)

from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from estimator_export.errors import ConfigError, did_you_mean

logger = logging.getLogger('estimator_export.serving')

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -2**63, 2**63 - 1
TENSORFLOW_PLATFORM = 'tensorflow'


def require_int(name: str, value: Any, minimum: Optional[int] = None,
                 maximum: int = INT64_MAX) -> int:
  """`value` as an int in [minimum, maximum], else ConfigError naming `name`."""
  if isinstance(value, bool) or not isinstance(value, int):
    raise ConfigError(f'{name} must be an integer', field=name, value=value)
  if (minimum is not None and value < minimum) or value > maximum:
    bound = f'>= {minimum}' if maximum == INT64_MAX else f'in [{minimum}, {maximum}]'
    raise ConfigError(f'{name} must be {bound}', field=name, value=value)
  return value


def require_bool(name: str, value: Any) -> bool:
  if not isinstance(value, bool):
    raise ConfigError(f'{name} must be True or False', field=name, value=value)
  return value


def read_text(path: str, what: str) -> str:
  """The text of config file `path`; ConfigError naming it when it cannot be read."""
  try:
    with open(path, encoding='utf-8') as f:
      return f.read()
  except (OSError, UnicodeDecodeError) as e:
    raise ConfigError(f'Could not read the {what} file', value=path,
                      fix=f'check the path and its permissions ({e})') from e


# ----- version policies and ModelConfig -----

@dataclasses.dataclass(frozen=True)
class Latest:
  """Serve the `num_versions` highest numeric versions (TF Serving's default policy, 1)."""
  num_versions: int = 1

  def __post_init__(self):
    require_int('Latest.num_versions', self.num_versions, minimum=1)


@dataclasses.dataclass(frozen=True)
class All:
  """Serve every numeric version under base_path."""


@dataclasses.dataclass(frozen=True)
class Specific:
  """Serve exactly these versions (those missing on disk are simply not served)."""
  versions: FrozenSet[int] = frozenset()

  def __post_init__(self):
    versions = frozenset(require_int('Specific.versions', v, minimum=INT64_MIN)
                         for v in self.versions)
    object.__setattr__(self, 'versions', versions)


VersionPolicy = Union[Latest, All, Specific]


class _Labels(collections.abc.Mapping):
  """An immutable, hashable `label -> version` mapping."""
  __slots__ = ('_items',)

  def __init__(self, items: Mapping[str, int]):
    self._items = dict(items)

  def __getitem__(self, key: str) -> int:
    return self._items[key]

  def __iter__(self) -> Iterator[str]:
    return iter(self._items)

  def __len__(self) -> int:
    return len(self._items)

  def __hash__(self) -> int:
    return hash(frozenset(self._items.items()))

  def __repr__(self) -> str:
    return repr(self._items)


def _is_relative_uri(path: str) -> bool:
  """ServerCore's UriIsRelativePath: no `scheme://` and not an absolute path ('' included)."""
  return not re.match(r'[A-Za-z][A-Za-z0-9+.-]*://', path) and not path.startswith('/')


def _relative_path_error(name: str, base_path: str, source: Optional[str] = None) -> ConfigError:
  if '${' in base_path:
    fix = ('neither server expands placeholders or environment variables; fill them in '
           'first (e.g. estimator_export.serving.config.substitute)')
  elif not base_path:
    fix = (f'set base_path to the directory that holds the numeric version directories of '
           f'{name}, e.g. "/models/{name}"')
  else:
    anchor = (os.path.dirname(os.path.abspath(source)) if source and os.path.isfile(source)
              else os.getcwd())
    fix = (f'TF Serving does not resolve relative paths; write the absolute path, e.g. '
           f'"{os.path.normpath(os.path.join(anchor, base_path))}"')
  return ConfigError(f'Expected model {name} to have an absolute path or URI; got '
                     f'base_path()={base_path}', source=source, field='base_path', fix=fix)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """One model of a ModelServerConfig's model_config_list.

  Attributes:
    name: the model name clients send in ModelSpec.name / the REST URL.
    base_path: absolute path or URI of the directory holding numeric version
      directories (`<base_path>/<version>/saved_model.pb`).
    model_platform: always 'tensorflow' (the only platform the model server has).
    version_policy: Latest(n), All() or Specific(versions).
    version_labels: label -> version, e.g. {'stable': 1, 'canary': 2}.
  """
  name: str
  base_path: str
  model_platform: str = TENSORFLOW_PLATFORM
  version_policy: VersionPolicy = Latest()
  version_labels: Mapping[str, int] = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    if isinstance(self.base_path, os.PathLike):
      object.__setattr__(self, 'base_path', os.fspath(self.base_path))
    if not isinstance(self.name, str) or not self.name:
      raise ConfigError('A model needs a non-empty name', field='name', value=self.name,
                        fix='set name: "..." (clients address the model by it)')
    if not isinstance(self.base_path, str) or _is_relative_uri(self.base_path):
      raise _relative_path_error(self.name, str(self.base_path))
    if self.model_platform != TENSORFLOW_PLATFORM:
      raise ConfigError(f'Model {self.name} requests unsupported platform {self.model_platform}',
                        field='model_platform',
                        fix='set model_platform: "tensorflow" (the only platform '
                            'tensorflow_model_server serves)')
    if not isinstance(self.version_policy, (Latest, All, Specific)):
      raise ConfigError(f'Model {self.name} has an unknown version policy',
                        field='version_policy', value=self.version_policy,
                        fix='use Latest(num_versions), All() or Specific(versions)')
    labels = {}
    for label, version in dict(self.version_labels).items():
      if not isinstance(label, str) or not label:
        raise ConfigError(f'Model {self.name} has an empty or non-string version label',
                          field='version_labels', value=label)
      labels[label] = require_int(f'version_labels[{label!r}] of model {self.name}', version,
                                   minimum=INT64_MIN)
    object.__setattr__(self, 'version_labels', _Labels(labels))

  @classmethod
  def from_proto(cls, proto: model_server_config_pb2.ModelConfig) -> 'ModelConfig':
    """From a tensorflow.serving.ModelConfig, with TF Serving's defaults and checks.

    An unset policy and `latest { num_versions: 0 }` both mean Latest(1), as in
    TF Serving. `logging_config` is not supported here and is dropped with a
    warning.

    Raises:
      ConfigError: with ServerCore's message (platform, path, ...).
    """
    platform = _platform_of(proto)
    policy_proto = proto.model_version_policy
    which = policy_proto.WhichOneof('policy_choice')
    if which == 'all':
      policy = All()
    elif which == 'specific':
      policy = Specific(frozenset(policy_proto.specific.versions))
    else:
      policy = Latest(max(1, policy_proto.latest.num_versions))
    if proto.HasField('logging_config'):
      logger.warning('Model %s: logging_config is not supported by the embedded server; '
                     'requests are not logged', proto.name)
    return cls(name=proto.name, base_path=proto.base_path, model_platform=platform,
               version_policy=policy, version_labels=dict(proto.version_labels))

  def to_proto(self) -> model_server_config_pb2.ModelConfig:
    """The tensorflow.serving.ModelConfig TF Serving reads (Latest(1) left implicit)."""
    proto = model_server_config_pb2.ModelConfig(name=self.name, base_path=self.base_path,
                                                model_platform=self.model_platform)
    policy = self.version_policy
    if isinstance(policy, All):
      proto.model_version_policy.all.SetInParent()
    elif isinstance(policy, Specific):
      proto.model_version_policy.specific.SetInParent()
      proto.model_version_policy.specific.versions.extend(sorted(policy.versions))
    elif policy.num_versions != 1:
      proto.model_version_policy.latest.num_versions = policy.num_versions
    for label in sorted(self.version_labels):
      proto.version_labels[label] = self.version_labels[label]
    return proto


def _platform_of(proto: model_server_config_pb2.ModelConfig) -> str:
  """ServerCore::GetPlatform: model_platform, or the deprecated model_type."""
  if proto.model_type != model_server_config_pb2.MODEL_TYPE_UNSPECIFIED:
    if proto.model_platform:
      raise ConfigError('Illegal setting both ModelServerConfig::model_type (deprecated) and '
                        'ModelServerConfig::model_platform.', field='model_type',
                        fix=f'remove model_type from model {proto.name}')
    if proto.model_type == model_server_config_pb2.TENSORFLOW:
      return TENSORFLOW_PLATFORM
    raise ConfigError(f'ModelServerConfig::model_type choice {proto.model_type} not supported.',
                      field='model_type', fix='use model_platform: "tensorflow"')
  if not proto.model_platform:
    raise ConfigError('Illegal setting neither ModelServerConfig::model_type (deprecated) nor '
                      'ModelServerConfig::model_platform.', field='model_platform',
                      fix=f'add model_platform: "tensorflow" to the config of model {proto.name}')
  return proto.model_platform


# ----- model config files -----

_NO_MODELS = 'Both server_options.model_base_path and server_options.model_config_file are empty!'
_PLACEHOLDER = re.compile(r'\$\{([A-Za-z_][A-Za-z0-9_]*)\}')
_GENERATED_HEADER = ('# tensorflow.serving.ModelServerConfig (text format), written by '
                     'estimator_export.\n# Serve with: tensorflow_model_server '
                     '--model_config_file=<this file>\n')


def check_unique_names(names: Iterable[str], source: Optional[str] = None):
  """ServerCore's list-level check (ValidateModelConfigList): every model name appears once.

  Raises:
    ConfigError: `Illegal to list model X multiple times in config list`.
  """
  seen = set()
  for name in names:
    if name in seen:
      raise ConfigError(f'Illegal to list model {name} multiple times in config list',
                        source=source, field='name', fix='give every model a unique name')
    seen.add(name)


def validate_model_configs(configs: Sequence[ModelConfig], source: Optional[str] = None):
  """Checks a list of ModelConfigs as ServerCore does: unique names (see check_unique_names)."""
  check_unique_names((config.name for config in configs), source)


def model_configs_from_protos(entries: Sequence[model_server_config_pb2.ModelConfig],
                              source: Optional[str] = None) -> List[ModelConfig]:
  """tensorflow.serving.ModelConfig protos -> ModelConfigs, with ServerCore's checks in its order.

  Duplicate names, then relative base paths (ValidateModelConfigList), then
  each entry's platform and policy (ModelConfig.from_proto).

  Raises:
    ConfigError: with ServerCore's message, located in `source` when given.
  """
  check_unique_names((entry.name for entry in entries), source)
  for entry in entries:
    if _is_relative_uri(entry.base_path):
      raise _relative_path_error(entry.name, entry.base_path, source)
  configs = []
  for entry in entries:
    try:
      configs.append(ModelConfig.from_proto(entry))
    except ConfigError as e:
      if source is None:
        raise
      raise e.located(source) from e
  return configs


def _log_parse_error(error: text_format.ParseError, full_name: str):
  """Logs the line protobuf's C++ TextFormat parser logs for a malformed file.

  tensorflow_model_server parses config files with TextFormat::ParseFromString,
  whose default error collector logs `Error parsing text-format <message
  type>: <line>:<column>: <message>`; scripts and TF Serving's own tests look
  for that line.
  """
  message = re.sub(r'^\d+:\d+ : ', '', str(error))
  line, column = error.GetLine(), error.GetColumn()
  where = f'{line}:{column}: ' if line is not None and column is not None else ''
  logger.error('Error parsing text-format %s: %s%s', full_name, where, message)


def parse_model_config_text(text: Union[str, bytes], source: str = '<string>'
                           ) -> List[ModelConfig]:
  """Parses a text ModelServerConfig (a `--model_config_file`) into ModelConfigs.

  Checks run in ServerCore's order: duplicate names, then base paths, then
  platforms. `${VAR}` is not expanded (see `substitute`).

  Args:
    text: the file's contents.
    source: the file name, used in error messages.

  Returns:
    The models of model_config_list in file order ([] for an empty config,
    which TF Serving accepts and serves nothing from).

  Raises:
    ConfigError: `Invalid protobuf file: '<source>': <protobuf's error>` when
      the text does not parse (TF Serving's C++ log line is logged too), or a
      ServerCore message for a bad model list.
  """
  proto = model_server_config_pb2.ModelServerConfig()
  try:
    text_format.Parse(text, proto)
  except text_format.ParseError as e:
    _log_parse_error(e, proto.DESCRIPTOR.full_name)
    error = ConfigError(f"Invalid protobuf file: '{source}': {e}",
                        fix='write a text ModelServerConfig: model_config_list { config { '
                            'name: "m" base_path: "/models/m" model_platform: "tensorflow" } }')
    error.source, error.line = source, e.GetLine()
    raise error from e
  which = proto.WhichOneof('config')
  if which == 'custom_model_config':
    raise ConfigError('ModelServer does not yet support custom model config.', source=source,
                      field='custom_model_config',
                      fix='list the models under model_config_list { config { ... } }')
  if which is None:
    logger.warning('%s holds no model_config_list: no models will be served', source)
    return []
  return model_configs_from_protos(list(proto.model_config_list.config), source)


def load_model_config_file(path: str) -> List[ModelConfig]:
  """Reads and parses a `--model_config_file` (see parse_model_config_text)."""
  return parse_model_config_text(read_text(path, 'model config'), source=path)


def substitute(text: str, mapping: Mapping[str, Any]) -> str:
  """Replaces `${NAME}` placeholders with `str(mapping[NAME])`; for templates and tests.

  The servers (this one and TF Serving) never expand environment variables in
  config files; upstream tests fill good_model_config.txt's placeholders this
  way before use. Values are inserted verbatim (no quoting or escaping).

  Raises:
    ConfigError: a placeholder has no value in `mapping`.
  """
  missing = sorted({m.group(1) for m in _PLACEHOLDER.finditer(text)} - set(mapping))
  if missing:
    raise ConfigError('No value for placeholder(s) ' + ', '.join(f'${{{n}}}' for n in missing),
                      fix=f'pass {", ".join(missing)} in the mapping')
  return _PLACEHOLDER.sub(lambda m: str(mapping[m.group(1)]), text)


def model_config_from_flags(model_name: str = 'default', model_base_path: str = ''
                           ) -> ModelConfig:
  """The single model of `--model_name` / `--model_base_path` (BuildSingleModelConfig).

  Raises:
    ConfigError: no base path (TF Serving's "Both ... are empty!"), or a relative one.
  """
  if not model_base_path:
    raise ConfigError(_NO_MODELS, fix='pass --model_base_path=/models/NAME (the directory '
                                      'that holds the numeric version directories) or '
                                      '--model_config_file=/path/to/models.config')
  return ModelConfig(name=model_name, base_path=model_base_path)


def _write_atomically(path: str, text: str):
  """Writes via a temporary file and a rename: a polling server never reads half a file."""
  directory = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix='.models.config.', dir=directory)
  try:
    with os.fdopen(fd, 'w', encoding='utf-8') as f:
      f.write(text)
    os.chmod(tmp, 0o644)  # Readable by a container's server user.
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.unlink(tmp)
    raise


def write_models_config(configs: Iterable[ModelConfig], path: Optional[str] = None) -> str:
  """The text ModelServerConfig (`models.config`) that TF Serving reads for `configs`.

  The text parses back (here and with the real proto) to equal ModelConfigs.

  Args:
    configs: the models, in order; names must be unique.
    path: if given, the text is also written there, atomically (temporary file
      + rename), so a server polling the file never reads a partial config.

  Returns:
    The text.

  Raises:
    ConfigError: duplicate names.
  """
  configs = list(configs)
  validate_model_configs(configs)
  proto = model_server_config_pb2.ModelServerConfig()
  proto.model_config_list.SetInParent()
  proto.model_config_list.config.extend(config.to_proto() for config in configs)
  text = _GENERATED_HEADER + text_format.MessageToString(proto)
  if path:
    _write_atomically(path, text)
  return text


def models_config_for_exports(
    base_dirs: Mapping[str, str],
    policy: Union[VersionPolicy, Mapping[str, VersionPolicy], None] = None,
    labels: Optional[Mapping[str, Mapping[str, int]]] = None,
    root: Optional[str] = None) -> List[ModelConfig]:
  """ModelConfigs for several exported models, ready for `write_models_config`.

      write_models_config(models_config_for_exports(
          {'wide': 'exports/wide', 'deep': 'exports/deep'}, root='/models',
          policy={'deep': All()}, labels={'deep': {'stable': 7, 'canary': 8}}),
          'exports/models.config')

  Args:
    base_dirs: model name -> export base directory (the parent of the numeric
      version directories). Absolute paths and URIs are used as they are.
    policy: one policy for every model, or model name -> policy; Latest(1)
      for models not named.
    labels: model name -> {label: version}.
    root: resolves relative base dirs as `<root>/<base dir>` (POSIX), e.g.
      '/models' when the directories are mounted there in a container;
      without it they are resolved against the current directory.

  Raises:
    ConfigError: a policy or label names an unknown model, or a bad value.
  """
  if isinstance(policy, collections.abc.Mapping):
    policies, shared_policy = policy, Latest()
  else:
    policies, shared_policy = {}, policy if policy is not None else Latest()
  labels = labels or {}
  for what, names in (('policy', policies), ('labels', labels)):
    unknown = sorted(set(names) - set(base_dirs))
    if unknown:
      raise ConfigError(f'{what} names models that are not in base_dirs', value=unknown,
                        fix=f'use names from {sorted(base_dirs)}'
                            + did_you_mean(unknown[0], base_dirs))
  configs = []
  for name, base_dir in base_dirs.items():
    base_path = os.fspath(base_dir)
    if _is_relative_uri(base_path):
      base_path = (posixpath.join(root, base_path) if root
                   else os.path.abspath(base_path))
    configs.append(ModelConfig(name=name, base_path=base_path,
                               version_policy=policies.get(name, shared_policy),
                               version_labels=labels.get(name, {})))
  return configs


