"""One exception hierarchy for the package.

Every error says what was wrong, shows the bad value, and says how to fix it::

    raise FeatureError("unsupported dtype for feature 'age'", value="complex64",
                       fix="use one of int64, float32, string ...")

renders as ``unsupported dtype for feature 'age': got 'complex64'. Fix: use one of ...``.
"""
import difflib
from typing import Any, Iterable, Optional

_NO_VALUE = object()


class EstimatorExportError(Exception):
  """The one root of every error estimator_export raises.

  Its families: `ExportError` (exporting, freezing, contracts, config files; these carry
  `what`, `value` and `fix`), `serving.status.ServingError` (a request the server refuses,
  with TF Serving's status code), `client.ServingClientError` (a failed client call) and
  `ClientInputError` (a value the client cannot turn into a request).
  """


class ExportError(EstimatorExportError):
  """An error of the export side: what was wrong, the bad value and the fix."""

  def __init__(self, message: str, *, value: Any = _NO_VALUE, fix: Optional[str] = None):
    self.what = message
    self.value = None if value is _NO_VALUE else value
    self.fix = fix
    text = message
    if value is not _NO_VALUE:
      text += f": got {value!r}"
    if fix:
      text += f". Fix: {fix}"
    super().__init__(text)


class FeatureError(ExportError, ValueError):
  """A feature declaration is malformed (dtype, shape, default, nesting)."""


class ReceiverError(ExportError, ValueError):
  """A serving input receiver cannot be built or does not match the model."""


class SignatureError(ExportError, ValueError):
  """export_outputs or signatures that TF Serving would reject or never see."""


class TagSetError(ExportError, ValueError):
  """A MetaGraph tag set to export is malformed (empty, a blank tag, given twice)."""


class CheckpointNotFoundError(ExportError, FileNotFoundError):
  """No checkpoint to export from."""


class ExportDirError(ExportError, OSError):
  """The export base directory is unusable (a file, unwritable, ...)."""


class VersionExistsError(ExportError, FileExistsError):
  """The requested version directory already exists; exports never overwrite."""


class ValidationError(ExportError):
  """A written export failed its checks (a signature failed to run, or parity)."""


class ContractError(ExportError):
  """A SavedModel cannot be read as a serving contract."""


class FreezeError(ExportError):
  """A graph cannot be frozen, optimised or compressed, or the result differs from the model."""


class ClientInputError(ExportError, ValueError, TypeError):
  """A value the client cannot put into a request (a ragged list, mixed feature values, ...).

  Raised before anything is sent. It is a ValueError and a TypeError because the
  client raised those bare before; callers that catch either still do.
  """


class ConfigError(ExportError, ValueError):
  """A server configuration file, flag or value is invalid.

  Rendered as `<source>:<line>: <message>[: got <value>][. Fix: <fix>]`, with
  whatever location is known.

  Attributes:
    message: what is wrong, without the location.
    source: the file (or '<string>') the bad value came from, if known.
    line: 1-based line in `source`, if known.
    field: the name of the offending field, if one is to blame.
  """

  def __init__(self, message: str, *, source: Optional[str] = None, line: Optional[int] = None,
               field: Optional[str] = None, **details: Any):
    self.message = message
    self.source = source
    self.line = line
    self.field = field
    self._details = details  # ExportError's `value` and `fix`.
    if source and line is not None:
      where = f'{source}:{line}'
    elif line is not None:
      where = f'line {line}'
    else:
      where = source or ''
    text = f'{where}: {message}' if where else message
    if 'value' in details:
      text += f': got {details["value"]!r}'
    if details.get('fix'):  # TF's messages often end in '.' or '!': no '..' before Fix.
      text += (' ' if text.endswith(('.', '!', '?')) else '. ') + f'Fix: {details["fix"]}'
    super().__init__(text)
    self.what = message
    self.value = details.get('value')
    self.fix = details.get('fix')

  def located(self, source: str, line: Optional[int] = None) -> 'ConfigError':
    """This error attributed to `source` (and `line`), keeping any location it has."""
    return ConfigError(self.message, source=self.source or source,
                       line=self.line if self.line is not None else line, field=self.field,
                       **self._details)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
  """Returns ' Did you mean 'x'?' for the closest candidate, or ''."""
  close = difflib.get_close_matches(name, list(candidates), n=1)
  return f" Did you mean {close[0]!r}?" if close else ""
