"""Versioned, atomic, validated exports ready for TF Serving.

`export_for_serving` wraps `Estimator.export_saved_model`:

1. resolves the checkpoint (explicit, or the latest in model_dir; never a
   warm-start checkpoint) and the integer version (explicit, the checkpoint's
   global step, or a timestamp);
2. removes stale staging directories of exports that died (see below), then
   exports into a hidden, non-numeric staging directory under the base, so
   TF Serving (which only loads numeric directories) never sees it;
3. checks the signatures against what the model_fn asked for: a Classify or
   Regress output tf.estimator would drop is an error, and Classify/Regress
   signatures that tf.estimator builds on a non-Example single string input
   (raw text, image bytes) are removed, because TF Serving would feed them
   serialized Examples;
4. optionally validates (reloads and runs every signature on sample inputs,
   compares predict signatures with each other and with `estimator.predict`),
   writes `assets.extra/tf_serving_warmup_requests` and always writes
   `assets.extra/export_manifest.json`;
5. on a local file system fsyncs every file and directory of the export,
   renames it to `<base>/<version>` in one step and fsyncs the base, so after
   a crash or power loss a numeric directory is either absent or complete;
6. applies retention (newest N or best N by a metric).

A collision with an existing version is an error (on_collision='error'), or
takes the next free integer above the requested one (on_collision='bump').

Staging directories are named `.staging-<what>-<start ms>-<pid>-<random>@<host>`.
One is stale, and the next export to the base removes it, when its owner is
gone: on this host, when process <pid> no longer runs (or is a zombie, or
started after the directory, i.e. the pid was reused); for another host or a
name without an owner, when it is older than STALE_STAGING_SECONDS (24 h), since
no process there can be asked. A running exporter's directory is never removed.

Retention keeps at least two versions, the new one and a fallback that servers
keep serving while they load it, unless `allow_single_version=True`. It may
delete only versions that existed before the export published (listed just
before its rename), so two exporters publishing to one base at once never
delete each other's new version; the base may then briefly hold more than
`keep` versions, until the next export. A version that another exporter's
retention deleted first is skipped.
"""
import dataclasses
import logging
import os
import re
import shutil
import socket
import time
import uuid
from typing import Any, Collection, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from estimator_export import outputs as outputs_lib
from estimator_export import receivers as receivers_lib
from estimator_export import servability
from estimator_export import validate as validate_lib
from estimator_export import warmup as warmup_lib
from estimator_export._saved_model import (checkpoint_step, fsync_dir, fsync_tree,
                                           is_local_path, numeric_versions, read_manifest,
                                           read_saved_model, resolve_checkpoint,
                                           serve_meta_graph, write_manifest, write_saved_model)
from estimator_export.errors import (ExportDirError, ExportError,
                                     SignatureError, VersionExistsError, did_you_mean)
from estimator_export.predictor import Predictor

logger = logging.getLogger('estimator_export')

STAGING_PREFIX = '.staging-'
STALE_STAGING_SECONDS = 24 * 3600
_STAGING_RE = re.compile(r'^\.staging-(?P<what>[a-z0-9]+)-(?P<ms>\d+)-(?P<pid>\d+)-[0-9a-f]+'
                         r'@(?P<host>[^/]+)$')
_PID_REUSE_SLACK_SECONDS = 2.0  # /proc's boot time has whole seconds.
_MAX_BUMPS = 100


@dataclasses.dataclass(frozen=True)
class ExportOptions:
  """How an export is versioned, checked and retained.

  Attributes:
    version: an int, 'step' (the checkpoint's global step) or 'timestamp'
      (seconds since the epoch).
    on_collision: 'error' or 'bump' (next free integer above the request).
    keep: keep this many versions after the export (None keeps all). keep=1
      keeps 2 (the new version and a fallback while servers load it) and logs
      a warning, unless `allow_single_version`.
    keep_best_by: with `keep`, keep the best versions by this metric (read
      from each version's manifest) instead of the newest.
    higher_is_better: direction of `keep_best_by`.
    allow_single_version: let keep=1 delete every older version right after
      publishing, before any server has loaded the new one.
    validate: reload the export and run every signature on sample inputs.
    parity: with user samples, also compare with `estimator.predict`.
    rtol, atol: tolerance of the comparisons.
    warmup: write tf_serving_warmup_requests from the samples.
    warmup_records_per_signature: requests per signature in the warmup file.
    model_name: model_spec.name in warmup requests.
    signature_aliases: alias -> existing signature name; each alias is a
      copy of its target under a shorter name (e.g. {'text': 'text:predict'}),
      validated on the target's samples and checked to give its outputs.
    check_servable: before publishing, check every op and attr of the graph
      against what the real TF Serving 2.15.1 links (TF 2.15 + TF Text
      2.12.1); an op it lacks fails the export (UnservableGraphError) and
      nothing is published.
  """
  version: Union[int, str] = 'step'
  on_collision: str = 'error'
  keep: Optional[int] = None
  keep_best_by: Optional[str] = None
  higher_is_better: bool = True
  allow_single_version: bool = False
  validate: bool = True
  parity: bool = True
  rtol: float = 1e-4
  atol: float = 1e-5
  warmup: bool = True
  warmup_records_per_signature: int = 1
  model_name: str = 'default'
  signature_aliases: Mapping[str, str] = dataclasses.field(default_factory=dict)
  check_servable: bool = False

  def __post_init__(self):
    if not (isinstance(self.version, int) and self.version >= 0) and self.version not in (
        'step', 'timestamp'):
      raise ExportError('bad export version', value=self.version,
                        fix="give a non-negative int, 'step' or 'timestamp'")
    if self.on_collision not in ('error', 'bump'):
      raise ExportError('bad on_collision', value=self.on_collision, fix="use 'error' or 'bump'")
    if self.keep is not None and (not isinstance(self.keep, int) or self.keep < 1):
      raise ExportError('keep must be a positive int or None', value=self.keep,
                        fix='e.g. keep=5')
    if self.keep_best_by and self.keep is None:
      raise ExportError('keep_best_by needs keep', value=self.keep_best_by,
                        fix='also give keep=N')
    n = self.warmup_records_per_signature
    if not isinstance(n, int) or n < 1:
      raise ExportError('warmup_records_per_signature must be a positive int', value=n,
                        fix='e.g. 1')


@dataclasses.dataclass(frozen=True)
class ExportResult:
  """What an export produced."""
  path: str
  version: int
  signatures: Mapping[str, str]  # name -> method name
  checkpoint_path: str
  global_step: int
  manifest_path: str
  validated: bool
  warmup_records: int
  removed_signatures: Sequence[str] = ()
  deleted_versions: Sequence[int] = ()
  removed_staging: Sequence[str] = ()  # Stale staging directories this export removed.


def export_for_serving(estimator: tf.estimator.Estimator, export_dir_base: str,
                       serving_input_receiver_fn: receivers_lib.ServingReceiverFn,
                       *, checkpoint_path: Optional[str] = None,
                       samples: Optional[Mapping[str, Any]] = None,
                       label_vocabulary: Optional[Sequence[str]] = None,
                       metrics: Optional[Mapping[str, float]] = None,
                       assets_extra: Optional[Mapping[str, str]] = None,
                       options: Optional[ExportOptions] = None,
                       **option_overrides) -> ExportResult:
  """Exports `estimator` for TF Serving as `<export_dir_base>/<version>`.

  Args:
    estimator: a tf.estimator.Estimator (or TPUEstimator with use_tpu=False).
    export_dir_base: the model's base path, as given to TF Serving.
    serving_input_receiver_fn: built with `estimator_export.receivers`.
    checkpoint_path: a checkpoint prefix or directory; default: the latest
      checkpoint in estimator.model_dir.
    samples: feature name (or receiver input key) -> array [batch, ...]; used
      for validation, parity with estimator.predict and warmup. Without them,
      validation runs on default/zero values (no parity check).
    label_vocabulary: recorded in the manifest.
    metrics: recorded in the manifest (retention by `keep_best_by` reads them).
    assets_extra: extra files: destination path in assets.extra -> source.
    options: ExportOptions; keyword overrides (e.g. version=3) apply on top.

  Returns:
    ExportResult with the final path and version.
  """
  options = dataclasses.replace(options or ExportOptions(), **option_overrides)
  if not isinstance(serving_input_receiver_fn, receivers_lib.ServingReceiverFn):
    raise ExportError('serving_input_receiver_fn must come from estimator_export.receivers',
                      value=type(serving_input_receiver_fn).__name__,
                      fix='build it with build_raw/example/text/image/combined_receiver_fn')
  started = time.time()
  base = _prepare_base(export_dir_base)
  cleaned = clean_stale_staging(base)
  ckpt = resolve_checkpoint(estimator.model_dir, checkpoint_path)
  step = checkpoint_step(ckpt)
  version = _requested_version(options.version, step)
  _check_collision(base, version, options.on_collision)
  staging = os.path.join(base, staging_name('export'))
  tf.io.gfile.makedirs(staging)
  try:
    logger.info('export: writing SavedModel from %s (step %d)', ckpt, step)
    written = estimator.export_saved_model(staging, serving_input_receiver_fn,
                                           assets_extra=dict(assets_extra or {}) or None,
                                           checkpoint_path=ckpt)
    written = written.decode() if isinstance(written, bytes) else written
    aliases = dict(options.signature_aliases)
    sig_defs, removed = _settle_signatures(written, serving_input_receiver_fn, aliases)
    signatures = {name: sig_defs[name].method_name for name in sorted(sig_defs)}
    logger.info('export: signatures %s', ', '.join(signatures))
    spec = serving_input_receiver_fn.feature_spec
    kinds = validate_lib.kinds_of(serving_input_receiver_fn)
    feeds = validate_lib.sample_feeds(
        {n: s for n, s in sig_defs.items() if n not in aliases}, spec, samples, kinds)
    feeds.update({alias: feeds[target] for alias, target in aliases.items()})
    logs = _warmup_logs(sig_defs, feeds, options) if options.warmup else []
    if logs:
      warmup_lib.write_warmup_requests(written, logs)
      logger.info('export: wrote %d warmup request(s)', len(logs))
    if options.validate:
      logger.info('export: validating %d signature(s)', len(signatures))
      with Predictor.from_saved_model(written) as predictor:
        outputs = validate_lib.run_signatures(predictor, feeds)
        for alias, target in aliases.items():
          validate_lib.check_same_outputs(outputs.pop(alias), outputs[target], alias, target)
        validate_lib.check_consistency(outputs, options.rtol, options.atol, kinds)
        if samples is not None and options.parity:
          compared = validate_lib.check_parity(estimator, ckpt, spec, samples, outputs,
                                               options.rtol, options.atol, kinds)
          logger.info('export: parity with estimator.predict on %d output(s)', compared)
        if logs:  # Replay the file exactly as TF Serving will read it.
          warmup_lib.replay_warmup(predictor, warmup_lib.read_warmup_requests(written))
    if options.check_servable:
      logger.info('export: %s', servability.assert_servable(written))
    manifest_path = _write_manifest(written, estimator, ckpt, step, version, spec, signatures,
                                    removed, label_vocabulary, metrics, options)
    logger.debug('export: fsynced %d file(s) of %s', fsync_tree(written), written)
    final, published_before = _publish(written, base, version, options.on_collision)
  finally:
    _rmtree(staging)
  version = int(os.path.basename(final))
  logger.info('export: published version %d', version)
  deleted = apply_retention(base, options.keep, options.keep_best_by, options.higher_is_better,
                            protect=version, published_before=published_before,
                            allow_single_version=options.allow_single_version)
  logger.info('export: version %d ready at %s (%.1fs)', version, final, time.time() - started)
  return ExportResult(path=final, version=version, signatures=signatures,
                      checkpoint_path=ckpt, global_step=step,
                      manifest_path=manifest_path.replace(written, final, 1),
                      validated=options.validate, warmup_records=len(logs),
                      removed_signatures=tuple(removed), deleted_versions=tuple(deleted),
                      removed_staging=tuple(cleaned))


# ----- checkpoint, version, directories -----

def _requested_version(version, step: int) -> int:
  if version == 'step':
    return step
  if version == 'timestamp':
    return int(time.time())
  return int(version)


def _prepare_base(export_dir_base: str) -> str:
  """The base as an absolute path (local) or URL, created (and made durable) if missing."""
  base = os.fspath(export_dir_base)
  base = os.path.abspath(base) if '://' not in base else base.rstrip('/')
  if tf.io.gfile.exists(base) and not tf.io.gfile.isdir(base):
    raise ExportDirError('export base is a file, not a directory', value=base,
                         fix='give a directory path (TF Serving --model_base_path); move '
                         'or delete the file')
  missing = []
  parent = base
  while is_local_path(parent) and not tf.io.gfile.exists(parent):
    missing.append(parent)
    parent = os.path.dirname(parent)
  try:
    tf.io.gfile.makedirs(base)
    for created in reversed(missing):  # Each new directory's entry in its parent.
      fsync_dir(os.path.dirname(created))
  except (OSError, tf.errors.OpError) as e:
    reason = e.strerror if isinstance(e, OSError) else e.message
    raise ExportDirError('cannot create export base', value=base,
                         fix=f'check permissions ({reason})') from e
  return base


def _check_collision(base: str, version: int, on_collision: str):
  if on_collision == 'error' and tf.io.gfile.exists(os.path.join(base, str(version))):
    raise VersionExistsError(
        'export version already exists; exports never overwrite', value=version,
        fix=f'choose another version, delete {os.path.join(base, str(version))}, or pass '
        "on_collision='bump' to take the next free number")


def _publish(written: str, base: str, version: int, on_collision: str
            ) -> Tuple[str, List[int]]:
  """Renames the finished (fsynced) export to <base>/<version> in one step, durably.

  Returns:
    The version's path, and the versions that existed just before the rename:
    retention may delete only those, never a concurrent exporter's new version.
  """
  before = numeric_versions(base)
  for _ in range(_MAX_BUMPS):
    target = os.path.join(base, str(version))
    if not tf.io.gfile.exists(target):
      try:
        tf.io.gfile.rename(written, target)  # Atomic locally; fails if target appeared.
      except tf.errors.OpError:
        if not tf.io.gfile.exists(target):
          raise
      else:
        fsync_dir(base)  # The new entry survives a power loss before anything is deleted.
        return target, before
    if on_collision == 'error':
      _check_collision(base, version, on_collision)
    version += 1
  raise VersionExistsError('no free version after bumping', value=version,
                           fix='clean up the export base')


def _retained(keep: Optional[int], allow_single_version: bool) -> Optional[int]:
  if keep == 1 and not allow_single_version:
    logger.warning('export: keep=1 would delete the version servers are on before they have '
                   'loaded the new one; keeping 2 (pass allow_single_version=True, or '
                   '--export_allow_single_version, to keep only 1)')
    return 2
  return keep


def apply_retention(base: str, keep: Optional[int], keep_best_by: Optional[str] = None,
                    higher_is_better: bool = True, protect: Optional[int] = None, *,
                    published_before: Optional[Collection[int]] = None,
                    allow_single_version: bool = False) -> List[int]:
  """Deletes versions beyond the newest (or best) `keep`; returns those it deleted.

  `protect` (the version just published) is always kept and counts as one of
  the `keep`, even when it is older or worse than the others. keep=1 keeps 2
  unless `allow_single_version`. With `published_before`, only those versions
  may be deleted (see the module docstring: concurrent exporters). A version
  that vanishes meanwhile (another exporter's retention) is skipped, not an error.
  """
  keep = _retained(keep, allow_single_version)
  versions = numeric_versions(base)
  if keep is None or len(versions) <= keep:
    return []
  if keep_best_by:
    def score(v):
      try:
        manifest = read_manifest(os.path.join(base, str(v)))
      except (tf.errors.NotFoundError, FileNotFoundError):
        manifest = {}  # Deleted meanwhile.
      value = manifest.get('metrics', {}).get(keep_best_by)
      if value is None:
        return -np.inf
      return value if higher_is_better else -value
    ranked = sorted(versions, key=lambda v: (score(v), v), reverse=True)
  else:
    ranked = sorted(versions, reverse=True)
  if protect in ranked:
    ranked.remove(protect)
    ranked.insert(0, protect)
  doomed = sorted(v for v in ranked[keep:]
                  if published_before is None or v in published_before)
  hidden = {}
  for v in doomed:
    path = os.path.join(base, str(v))
    hide = os.path.join(base, staging_name(f'delete{v}'))
    try:
      tf.io.gfile.rename(path, hide)  # Disappears for TF Serving at once, then is removed.
    except tf.errors.NotFoundError:
      continue  # Another exporter's retention took it first.
    hidden[v] = hide
  if hidden:
    fsync_dir(base)  # A half-removed version must never reappear after a power loss.
  for v, hide in hidden.items():
    _rmtree(hide)
    logger.info('export: retention deleted version %d', v)
  return sorted(hidden)


# ----- staging directories -----

def _host() -> str:
  return re.sub(r'[^A-Za-z0-9._-]', '_', socket.gethostname()) or 'unknown-host'


def staging_name(what: str) -> str:
  """A hidden, non-numeric directory name that records its owner (see module docstring)."""
  return (f'{STAGING_PREFIX}{what}-{int(time.time() * 1000)}-{os.getpid()}-'
          f'{uuid.uuid4().hex[:8]}@{_host()}')


def _process_state(pid: int) -> Optional[Tuple[str, float]]:
  """(state letter, start time in seconds since the epoch) from Linux /proc, or None."""
  try:
    with open(f'/proc/{pid}/stat', encoding='ascii', errors='replace') as f:
      fields = f.read().rpartition(')')[2].split()  # After the command name.
    with open('/proc/stat', encoding='ascii') as f:
      boot = next(int(line.split()[1]) for line in f if line.startswith('btime '))
    return fields[0], boot + int(fields[19]) / os.sysconf('SC_CLK_TCK')
  except (OSError, ValueError, IndexError, StopIteration):
    return None


def _owner_running(pid: int, since: float) -> bool:
  """Whether process `pid` of this host runs and is the one that started at `since`."""
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    pass  # It exists, under another user.
  state = _process_state(pid)
  if state is None:
    return os.path.exists(f'/proc/{pid}') or not os.path.isdir('/proc')
  letter, started = state
  return letter not in 'ZX' and started <= since + _PID_REUSE_SLACK_SECONDS


def staging_is_stale(base: str, name: str, now: Optional[float] = None) -> bool:
  """Whether staging directory `name` under `base` belongs to no running exporter."""
  match = _STAGING_RE.match(name)
  if match and match['host'] == _host():
    return not _owner_running(int(match['pid']), int(match['ms']) / 1000)
  stamps = [int(match['ms']) / 1000] if match else []
  try:
    mtime = tf.io.gfile.stat(os.path.join(base, name)).mtime_nsec / 1e9
    if mtime > 0:
      stamps.append(mtime)
  except tf.errors.OpError:
    pass
  now = time.time() if now is None else now
  return bool(stamps) and now - max(stamps) > STALE_STAGING_SECONDS


def clean_stale_staging(base: str) -> List[str]:
  """Removes the stale staging directories under `base`; returns their names."""
  removed = []
  for name in sorted(n.rstrip('/') for n in tf.io.gfile.listdir(base)):
    if name.startswith(STAGING_PREFIX) and staging_is_stale(base, name):
      _rmtree(os.path.join(base, name))
      removed.append(name)
      logger.warning('export: removed stale staging directory %s (its exporter is gone)',
                     os.path.join(base, name))
  return removed


def _rmtree(path: str) -> None:
  """Removes a directory tree; parts already removed (by a concurrent exporter) are fine."""
  if is_local_path(path):
    shutil.rmtree(path[len('file://'):] if path.startswith('file://') else path,
                  ignore_errors=True)
    return
  try:
    tf.io.gfile.rmtree(path)
  except tf.errors.OpError:
    pass


# ----- signatures -----

def _settle_signatures(export_dir: str, receiver_fn: receivers_lib.ServingReceiverFn,
                       aliases: Optional[Mapping[str, str]] = None):
  """Checks the exported signatures against the plan; removes misfed ones; adds aliases."""
  proto = read_saved_model(export_dir)
  mg = serve_meta_graph(proto)
  receivers = receiver_fn.parts()
  examples = [n for n, fn in receivers.items() if fn.is_single_string_input]
  removed = []
  for name in list(mg.signature_def):
    method = mg.signature_def[name].method_name
    receiver = name.split(':', 1)[0] if ':' in name else ''
    if method != outputs_lib.PREDICT_METHOD and receiver not in examples:
      del mg.signature_def[name]
      removed.append(name)
      logger.info('export: removed %s signature %r: its input is not serialized '
                  'tf.Examples, which TF Serving would send it', method, name)
  recorded = mg.collection_def.get(outputs_lib.PLAN_COLLECTION)
  if recorded is not None:
    planned = outputs_lib.plan_signatures(
        outputs_lib.recorded_outputs(recorded.bytes_list.value),
        {n: fn.input_keys for n, fn in receivers.items()}, examples)
    missing = sorted(set(planned) - set(mg.signature_def))
    if missing:
      raise SignatureError('signatures missing from the export', value=missing,
                           fix='check the tf.estimator log for signatures it excluded')
    del mg.collection_def[outputs_lib.PLAN_COLLECTION]
  if outputs_lib.DEFAULT_KEY not in mg.signature_def:
    raise SignatureError("the export has no 'serving_default' signature",
                         value=sorted(mg.signature_def),
                         fix='make the default export output a predict output, or use an '
                         'example receiver as the primary receiver')
  for alias, target in sorted((aliases or {}).items()):
    if alias in mg.signature_def:
      raise SignatureError('signature alias names an existing signature', value=alias,
                           fix=f'choose a name other than {sorted(mg.signature_def)}')
    if target not in mg.signature_def:
      raise SignatureError(f'signature alias {alias!r} targets no signature', value=target,
                           fix=f'the export has {sorted(mg.signature_def)}' +
                           did_you_mean(target, mg.signature_def))
    mg.signature_def[alias].CopyFrom(mg.signature_def[target])
  write_saved_model(export_dir, proto)
  return dict(mg.signature_def), removed


# ----- warmup -----

def _warmup_logs(sig_defs, feeds, options):
  logs = []
  for name in sorted(sig_defs):
    inputs = feeds[name]
    n = min(len(v) for v in inputs.values())
    for i in range(min(options.warmup_records_per_signature, n)):
      row = {k: np.asarray(v, dtype=object if isinstance(v[0], bytes) else None)[i:i + 1]
             for k, v in inputs.items()}
      logs.append(warmup_lib.request_log_for_signature(name, sig_defs[name], row,
                                                       model_name=options.model_name))
  return logs


# ----- manifest -----

def _write_manifest(export_dir, estimator, ckpt, step, version, spec, signatures, removed,
                    label_vocabulary, metrics, options) -> str:
  manifest = {
      'format': 'estimator_export.manifest/1',
      'version': version,
      'created_unix': round(time.time(), 3),
      'checkpoint': {'path': ckpt, 'global_step': step},
      'model_dir': estimator.model_dir,
      'estimator': type(estimator).__name__,
      'versions': {'tensorflow': tf.__version__, 'estimator': _estimator_version()},
      'features': spec.to_json(),
      'signatures': dict(signatures),
      'removed_signatures': list(removed),
      'label_vocabulary': list(label_vocabulary) if label_vocabulary is not None else None,
      'metrics': {k: float(v) for k, v in (metrics or {}).items()},
      'validated': options.validate,
  }
  return write_manifest(export_dir, manifest)


def _estimator_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version('tensorflow-estimator')
  except Exception:  # pylint: disable=broad-except
    return 'unknown'
