"""Versioned, atomic, validated exports ready for TF Serving.

`export_for_serving` wraps `Estimator.export_saved_model`:

1. resolves the checkpoint (explicit, or the latest in model_dir; never a
   warm-start checkpoint) and the integer version (explicit, the checkpoint's
   global step, or a timestamp);
2. removes stale staging directories of exports that died (see below), then
   exports into a hidden, non-numeric staging directory: under the base when
   it is local, so TF Serving (which only loads numeric directories) never
   sees it; in the local temporary directory otherwise;
3. checks the signatures against what the model_fn asked for: a Classify or
   Regress output tf.estimator would drop is an error, and Classify/Regress
   signatures that tf.estimator builds on a non-Example single string input
   (raw text, image bytes) are removed, because TF Serving would feed them
   serialized Examples;
4. optionally validates (reloads and runs every signature on sample inputs,
   compares predict signatures with each other and with `estimator.predict`),
   writes `assets.extra/tf_serving_warmup_requests`, and always writes example
   requests (`assets.extra/requests/`, see example_requests) and
   `assets.extra/export_manifest.json` with a sha256 fingerprint of the model's
   files, taken after the last change to saved_model.pb;
5. publishes it as `<base>/<version>` (see "File systems" below);
6. applies retention (newest N or best N by a metric).

File systems. Every path goes through tf.io.gfile, so the base may be local
(a path or a file:// URI, which is the same) or a URL of any file system TF
registers: gs://, hdfs://, s3:// (with tensorflow-io), ram://. A URL is never
made into a local path. What a publish guarantees depends on the base:

* Local: every file and directory of the export is fsynced, renamed to
  `<base>/<version>` in one step, and the base fsynced, so even after a crash
  or power loss a numeric directory is either absent or complete, and a
  reader never sees a partial one. Retention renames a version away (one
  step) before deleting it.
* Non-local: no atomic directory rename exists (an object store renames
  object by object; ram:// leaves the files under the old name), so the
  export is staged and validated on local disk and then copied file by file
  straight to `<base>/<version>`, saved_model.pb last. A reader can see the
  directory before it is whole; it then finds no saved_model.pb and fails to
  load, which TF Serving (and the embedded server) retries until the file is
  there (--max_num_load_retries, --load_retry_interval_micros); once
  saved_model.pb exists every other file is complete, given the store's
  read-after-write consistency (GCS and S3 have it). Retention deletes
  saved_model.pb first, then the rest. Durability is the store's own (no
  fsync exists). A crash mid-copy leaves a numeric directory without
  saved_model.pb, which nothing loads; retention neither counts nor deletes
  it, and an export removes it once all its files are 24 h old. Two exporters
  publishing the *same* version number to one such base at once are not
  detected (there is no create-if-absent); different numbers are safe.

A collision with an existing version is an error (on_collision='error'), or
takes the next free integer above the requested one (on_collision='bump').

Staging directories are named `.staging-<what>-<start ms>-<pid>-<random>@<host>`.
One is stale, and the next export to the base removes it, when its owner is
gone: under a local base on this host, when process <pid> no longer runs (or is
a zombie, or started after the directory, i.e. the pid was reused); for another
host, a non-local base or a name without an owner, when it is older than
STALE_STAGING_SECONDS (24 h), since no process there can be asked
(estimator_export._staging). A running exporter's directory is never removed.

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
import time
from typing import Any, Callable, Collection, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from estimator_export import _export_checks
from estimator_export import custom_receiver
from estimator_export import example_requests as example_requests_lib
from estimator_export import outputs as outputs_lib
from estimator_export import receivers as receivers_lib
from estimator_export import servability
from estimator_export import tag_sets as tag_sets_lib
from estimator_export import validate as validate_lib
from estimator_export import warmup as warmup_lib
from estimator_export._saved_model import (checkpoint_step, content_fingerprint, copy_tree,
                                           fsync_dir, fsync_tree, is_local_path, normalize_path,
                                           numeric_versions, read_manifest, read_saved_model,
                                           remove_version_dir, resolve_checkpoint,
                                           saved_model_file, serve_meta_graph, write_manifest,
                                           write_saved_model)
from estimator_export._staging import (STAGING_PREFIX, STALE_STAGING_SECONDS,  # pylint: disable=unused-import
                                       STAGING_RE as _STAGING_RE, clean_partial_versions,
                                       clean_stale_staging, host as _host, local_staging_dir,
                                       process_state as _process_state, rmtree as _rmtree,
                                       staging_is_stale, staging_name)
from estimator_export.errors import (ExportDirError, ExportError,
                                     SignatureError, VersionExistsError, did_you_mean)

logger = logging.getLogger('estimator_export')

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
    tag_sets: the MetaGraphs to write, sharing one variables directory, e.g.
      ('serve', 'serve,gpu') or {'serve': None, 'serve,gpu': ['predict']}
      (tag set -> signatures; None: all). See estimator_export.tag_sets.
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
  tag_sets: tag_sets_lib.TagSetsArg = tag_sets_lib.DEFAULT_TAG_SETS

  def __post_init__(self):
    object.__setattr__(self, 'tag_sets', tag_sets_lib.normalize_tag_sets(self.tag_sets))
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
  # Stale staging directories (and, non-local, partial versions) this export removed.
  removed_staging: Sequence[str] = ()
  # Tag key ('gpu,serve') -> the signatures of that MetaGraph.
  tag_sets: Mapping[str, Sequence[str]] = dataclasses.field(default_factory=dict)


def export_for_serving(estimator: tf.estimator.Estimator, export_dir_base: str,
                       serving_input_receiver_fn: Callable[[], Any],
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
    serving_input_receiver_fn: built with `estimator_export.receivers`, or
      your own function returning a ServingInputReceiver (adapted with
      `custom_receiver.adapt_receiver_fn`; adapt it yourself with
      features=FeatureSpec to check it against the model's declaration).
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
  # A hand-written receiver fn is built once to learn its inputs and features.
  serving_input_receiver_fn = custom_receiver.adapt_receiver_fn(serving_input_receiver_fn)
  started = time.time()
  base = _prepare_base(export_dir_base)
  local = is_local_path(base)
  cleaned = _guarded(base, 'clean up', lambda: clean_stale_staging(base) +
                     clean_partial_versions(base))
  ckpt = resolve_checkpoint(estimator.model_dir, checkpoint_path)
  step = checkpoint_step(ckpt)
  version = _requested_version(options.version, step)
  _check_collision(base, version, options.on_collision)
  if local:
    staging = os.path.join(base, staging_name('export'))
    tf.io.gfile.makedirs(staging)
  else:  # No atomic rename there: stage on local disk, then copy (module docstring).
    staging = local_staging_dir('export')
  try:
    logger.info('export: writing SavedModel from %s (step %d)', ckpt, step)
    exported = _export_checks.ExportGraph(serving_input_receiver_fn)  # Its graph, for the checks.
    written = estimator.export_saved_model(staging, exported,
                                           assets_extra=dict(assets_extra or {}) or None,
                                           checkpoint_path=ckpt)
    written = written.decode() if isinstance(written, bytes) else written
    aliases = dict(options.signature_aliases)
    sig_defs, removed = _settle_signatures(written, serving_input_receiver_fn, aliases,
                                           options.tag_sets)
    layout = tag_sets_lib.plan(options.tag_sets, sig_defs)
    signatures = {name: sig_defs[name].method_name for name in layout.written}
    logger.info('export: signatures %s', ', '.join(signatures))
    spec = serving_input_receiver_fn.feature_spec
    kinds = validate_lib.kinds_of(serving_input_receiver_fn)
    feeds = validate_lib.sample_feeds(
        {n: s for n, s in sig_defs.items() if n not in aliases}, spec, samples, kinds)
    feeds.update({alias: feeds[target] for alias, target in aliases.items()})
    logs = (_warmup_logs(layout.warmup_signature_defs(sig_defs), feeds, options)
            if options.warmup else [])
    if logs:
      warmup_lib.write_warmup_requests(written, logs)
      logger.info('export: wrote %d warmup request(s)', len(logs))
    requests = example_requests_lib.write_example_requests(  # assets.extra/requests/
        written, logs or _warmup_logs(sig_defs, feeds, options))
    digest = None  # The files are final from here: the checks hash them meanwhile.
    if options.validate:
      digest = _export_checks.check_written_export(
          written, layout, feeds, kinds, aliases, options.rtol, options.atol,
          warmup_lib.read_warmup_requests(written) if logs else None,
          _export_checks.Reference(estimator, ckpt, spec, samples)
          if samples is not None and options.parity else None, flush=local, exported=exported,
          fingerprint=True).fingerprint
    if options.check_servable:
      logger.info('export: %s', servability.assert_servable(written))
    manifest_path = _write_manifest(written, estimator, ckpt, step, version, spec, signatures,
                                    removed, label_vocabulary, metrics, options, requests, digest)
    if local:
      logger.debug('export: fsynced %d file(s) of %s', fsync_tree(written), written)
      final, published_before = _publish(written, base, version, options.on_collision)
    else:
      final, published_before = _publish_by_copy(written, base, version, options.on_collision)
  finally:
    _rmtree(staging)
  version = int(os.path.basename(final))
  logger.info('export: published version %d', version)
  deleted = _guarded(base, 'apply retention to', lambda: apply_retention(base, options.keep, options.keep_best_by, options.higher_is_better,
                            protect=version, published_before=published_before,
                            allow_single_version=options.allow_single_version))
  logger.info('export: version %d ready at %s (%.1fs)', version, final, time.time() - started)
  return ExportResult(path=final, version=version, signatures=signatures,
                      checkpoint_path=ckpt, global_step=step,
                      manifest_path=manifest_path.replace(written, final, 1),
                      validated=options.validate, warmup_records=len(logs),
                      removed_signatures=tuple(removed), deleted_versions=tuple(deleted),
                      removed_staging=tuple(cleaned), tag_sets=layout.as_dict())


# ----- checkpoint, version, directories -----

def _requested_version(version, step: int) -> int:
  if version == 'step':
    return step
  if version == 'timestamp':
    return int(time.time())
  return int(version)


def _guarded(base: str, what: str, fn):
  """fn(); a file-system error becomes an ExportDirError naming the base and TF's reason."""
  try:
    return fn()
  except tf.errors.OpError as e:
    raise ExportDirError(f'cannot {what} the export base ({type(e).__name__}: '
                         f'{e.message.strip()})', value=base,
                         fix='check the path, its credentials and network access') from e


def _prepare_base(export_dir_base: str) -> str:
  """The base as an absolute path (local, file:// included) or URL, created if missing.

  A new local base's directories are made durable (fsync of each parent).
  """
  base = normalize_path(export_dir_base)
  if _guarded(base, 'read', lambda: tf.io.gfile.exists(base) and not tf.io.gfile.isdir(base)):
    raise ExportDirError('export base is a file, not a directory', value=base,
                         fix='give a directory path (TF Serving --model_base_path); move '
                         'or delete the file')
  missing = []
  parent = base
  while is_local_path(parent) and not os.path.exists(parent):
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
  if on_collision == 'error' and _guarded(base, 'read', lambda: tf.io.gfile.exists(
      os.path.join(base, str(version)))):
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

  def rename_to(target: str) -> bool:
    if tf.io.gfile.exists(target):
      return False
    try:
      tf.io.gfile.rename(written, target)  # Atomic locally; fails if target appeared.
    except tf.errors.OpError:
      if not tf.io.gfile.exists(target):
        raise
      return False
    fsync_dir(base)  # The new entry survives a power loss before anything is deleted.
    return True

  return _claim_version(base, version, on_collision, rename_to), before


def _claim_version(base: str, version: int, on_collision: str,
                   place: Callable[[str], bool]) -> str:
  """Publishes at <base>/<version>, or (on_collision='bump') at the next free number.

  Args:
    place: puts the export at the path it is given; False when that version
      exists (or appeared meanwhile), which is VersionExistsError under
      on_collision='error'.

  Returns:
    The path the export was published at.
  """
  for _ in range(_MAX_BUMPS):
    target = os.path.join(base, str(version))
    if place(target):
      return target
    _check_collision(base, version, on_collision)
    version += 1
  raise VersionExistsError('no free version after bumping', value=version,
                           fix='clean up the export base')


def _publish_by_copy(written: str, base: str, version: int, on_collision: str
                    ) -> Tuple[str, List[int]]:
  """Copies the finished export to <base>/<version> of a non-local base, saved_model.pb last.

  Returns:
    The version's path, and the complete versions (holding saved_model.pb) just
    before the copy: retention may delete only those.
  """
  before = _guarded(base, 'list', lambda: _complete_versions(base))

  def copy_to(target: str) -> bool:
    if _guarded(base, 'read', lambda: tf.io.gfile.exists(target)):
      return False
    try:
      count = copy_tree(written, target)
    except tf.errors.OpError as e:
      _rmtree(target)  # Best effort: without saved_model.pb it never loads anyway.
      raise ExportDirError(f'cannot publish the export ({type(e).__name__}: '
                           f'{e.message.strip()})', value=target,
                           fix='check the path, its credentials and network access; '
                           'nothing was published') from e
    logger.debug('export: copied %d file(s) to %s', count, target)
    return True

  return _claim_version(base, version, on_collision, copy_to), before


def _complete_versions(base: str) -> List[int]:
  """Versions holding a SavedModel file (a non-local base may hold a partial copy)."""
  return [v for v in numeric_versions(base) if saved_model_file(os.path.join(base, str(v)))]


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
  local = is_local_path(base)
  versions = numeric_versions(base) if local else _complete_versions(base)
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
  if not local:  # No atomic rename: saved_model.pb goes first (module docstring).
    gone = [v for v in doomed if remove_version_dir(os.path.join(base, str(v)))]
    for v in gone:
      logger.info('export: retention deleted version %d', v)
    return gone
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


# ----- signatures -----

def _settle_signatures(export_dir: str, receiver_fn: receivers_lib.ServingReceiverFn,
                       aliases: Optional[Mapping[str, str]] = None,
                       tag_sets: tag_sets_lib.TagSetsArg = tag_sets_lib.DEFAULT_TAG_SETS):
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
  write_saved_model(export_dir, tag_sets_lib.retagged(proto, mg, tag_sets))
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
                    label_vocabulary, metrics, options, example_requests=None,
                    fingerprint=None) -> str:
  """Writes the manifest; its content fingerprint (given, or hashed now) covers saved_model.pb
  as it is now, so call this after the last change to the SavedModel."""
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
      'tag_sets': tag_sets_lib.plan(options.tag_sets, signatures).as_dict(),
      'example_requests': dict(example_requests or {}),  # Under assets.extra/requests/.
      'fingerprint': fingerprint or content_fingerprint(export_dir),
  }
  return write_manifest(export_dir, manifest)


def _estimator_version() -> str:
  try:
    from importlib import metadata  # pylint: disable=g-import-not-at-top
    return metadata.version('tensorflow-estimator')
  except Exception:  # pylint: disable=broad-except
    return 'unknown'
