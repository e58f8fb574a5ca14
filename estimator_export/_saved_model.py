"""The bottom layer: SavedModel directories, protos, versions, manifests and checkpoints.

Every other module reads SavedModels through here, so each rule exists once:

    check_saved_model_dir(path)        # ContractError unless path holds saved_model.pb(txt)
    read_saved_model(path)             # the SavedModel proto (binary or text)
    serve_signature_defs(path)         # signature name -> SignatureDef of the {serve} graph
    find_meta_graph(proto, 'serve,gpu', path)  # the MetaGraph tagged exactly {serve, gpu}
    numeric_versions(base)             # [1, 2, 10]: what TF Serving would load
    read_manifest(path)                # assets.extra/export_manifest.json, or {}
    content_fingerprint(path)          # sha256 of saved_model.pb, variables/, assets/
    verify_fingerprint(path)           # ValidationError naming each file changed since
    resolve_checkpoint(model_dir, ckpt)
    fsync_tree(path); fsync_dir(path)  # durability on local file systems
    normalize_path(path)               # '/abs' for a local path or file:// URI; URLs kept
    copy_tree(local_dir, dst)          # file by file, saved_model.pb last (object stores)
    remove_version_dir(path)           # saved_model.pb first, then the rest

All file access goes through `tf.io.gfile`, except fsync, which only local paths have
(`is_local_path`). Any path may be a URL of a file system TF registers (gs://, s3:// with
tensorflow-io, hdfs://, ram://); a file:// URI is a local path. Nothing here imports
another module of this package except `errors`.
"""
import hashlib
import json
import os
from typing import Any, Dict, FrozenSet, Iterable, List, Optional, Sequence, Tuple, Union

import tensorflow as tf
from google.protobuf import message as message_lib
from google.protobuf import text_format
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from estimator_export.errors import (CheckpointNotFoundError, ContractError, SignatureError,
                                     ValidationError, did_you_mean)

DEFAULT_SIGNATURE = tf.saved_model.DEFAULT_SERVING_SIGNATURE_DEF_KEY  # 'serving_default'
SERVE_TAG = tf.saved_model.SERVING  # 'serve'
PREDICT_METHOD = tf.saved_model.PREDICT_METHOD_NAME  # 'tensorflow/serving/predict'
CLASSIFY_METHOD = tf.saved_model.CLASSIFY_METHOD_NAME  # 'tensorflow/serving/classify'
REGRESS_METHOD = tf.saved_model.REGRESS_METHOD_NAME  # 'tensorflow/serving/regress'
SAVED_MODEL_PB = 'saved_model.pb'
SAVED_MODEL_PBTXT = 'saved_model.pbtxt'
ASSETS_EXTRA = 'assets.extra'
MANIFEST_FILENAME = 'export_manifest.json'
EXAMPLE_VERSION_DIR = '/models/my_model/1'


# ----- is it a SavedModel? -----

def saved_model_file(export_dir: str) -> Optional[str]:
  """The path of saved_model.pb (preferred) or saved_model.pbtxt in export_dir, or None."""
  for name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT):
    path = os.path.join(export_dir, name)
    if tf.io.gfile.exists(path):
      return path
  return None


def check_saved_model_dir(export_dir: str) -> str:
  """Returns the SavedModel file in export_dir; raises ContractError naming the fix.

  A missing path, a file, and a model base directory (numeric versions below it:
  the fix names the newest) each get their own message.
  """
  try:
    exists = tf.io.gfile.exists(export_dir)
  except tf.errors.OpError as e:  # gs:// without credentials or network, ...
    raise ContractError(f'cannot read the SavedModel directory ({type(e).__name__}: '
                        f'{e.message.strip()})', value=export_dir,
                        fix='check the path, its credentials and network access') from e
  if not exists:
    raise ContractError('SavedModel directory does not exist', value=export_dir,
                        fix=f'point at an existing version directory, e.g. {EXAMPLE_VERSION_DIR}')
  if not tf.io.gfile.isdir(export_dir):
    parent = os.path.dirname(export_dir) or '.'
    raise ContractError('expected a SavedModel directory, not a file', value=export_dir,
                        fix=f'pass the directory that holds {SAVED_MODEL_PB}: {parent!r}')
  found = saved_model_file(export_dir)
  if found:
    return found
  versions = version_names(export_dir)
  if versions:
    newest = newest_version_dir(export_dir) or os.path.join(export_dir, max(versions, key=int))
    fix = (f'this is a model base directory with {len(versions)} numeric version(s); point at '
           f'a version directory, e.g. its newest {newest!r}')
  else:
    fix = (f'point at a version directory (one that holds {SAVED_MODEL_PB}), e.g. '
           f'{EXAMPLE_VERSION_DIR}')
  raise ContractError(f'not a SavedModel directory (no {SAVED_MODEL_PB} or '
                      f'{SAVED_MODEL_PBTXT} in it)', value=export_dir, fix=fix)


# ----- reading -----

def read_saved_model(export_dir: str) -> saved_model_pb2.SavedModel:
  """Parses saved_model.pb (or .pbtxt) of a version directory.

  Raises:
    ContractError: not a SavedModel directory (see check_saved_model_dir), or the file
      is truncated or not a SavedModel.
  """
  path = check_saved_model_dir(export_dir)
  saved_model = saved_model_pb2.SavedModel()
  binary = path.endswith(SAVED_MODEL_PB)
  with tf.io.gfile.GFile(path, 'rb' if binary else 'r') as f:
    data = f.read()
  try:
    if binary:
      saved_model.ParseFromString(data)
    else:
      text_format.Merge(data, saved_model)
  except (message_lib.DecodeError, text_format.ParseError) as e:
    raise ContractError(f'cannot parse the SavedModel file ({e})', value=path,
                        fix='re-export the model; the file is truncated or not a '
                        'SavedModel') from e
  return saved_model


def write_saved_model(export_dir: str, saved_model: saved_model_pb2.SavedModel) -> None:
  """Writes `saved_model` as export_dir/saved_model.pb."""
  with tf.io.gfile.GFile(os.path.join(export_dir, SAVED_MODEL_PB), 'wb') as f:
    f.write(saved_model.SerializeToString())


def serve_meta_graph(saved_model: saved_model_pb2.SavedModel) -> meta_graph_pb2.MetaGraphDef:
  """The MetaGraph tagged exactly {serve} (the one TF Serving loads)."""
  for meta_graph in saved_model.meta_graphs:
    if list(meta_graph.meta_info_def.tags) == [SERVE_TAG]:
      return meta_graph
  raise SignatureError('export has no MetaGraph tagged exactly {serve}',
                       value=[list(m.meta_info_def.tags) for m in saved_model.meta_graphs],
                       fix='for TPUEstimator pass export_to_tpu=False')


def serve_signature_defs(export_dir: str) -> Dict[str, meta_graph_pb2.SignatureDef]:
  """Signature name -> SignatureDef of the export's {serve} MetaGraph."""
  return dict(serve_meta_graph(read_saved_model(export_dir)).signature_def)


# ----- tag sets -----

TagSet = Union[str, Sequence[str]]


def parse_tag_set(tag_set: TagSet) -> FrozenSet[str]:
  """'serve,gpu' or ['serve', 'gpu'] -> frozenset({'serve', 'gpu'}); blank entries dropped.

  The spelling of `saved_model_cli --tag_set` (and of `show`, `diff` and
  `validate --tag_set`): comma-separated, order and surrounding spaces ignored.
  """
  parts = tag_set.split(',') if isinstance(tag_set, str) else list(tag_set)
  return frozenset(part.strip() for part in parts if part.strip())


def tag_key(tags: Iterable[str]) -> str:
  """The canonical name of a tag-set: its tags sorted and comma-joined ('gpu,serve')."""
  return ','.join(sorted(set(tags)))


def find_meta_graph(saved_model: saved_model_pb2.SavedModel, tag_set: TagSet,
                    saved_model_dir: str) -> meta_graph_pb2.MetaGraphDef:
  """The MetaGraphDef whose tags equal `tag_set` as a set, as every loader matches them.

  Raises:
    ContractError: no MetaGraph has exactly these tags; the message lists the
      tag-sets the SavedModel has.
  """
  wanted = parse_tag_set(tag_set)
  for meta_graph in saved_model.meta_graphs:
    if frozenset(meta_graph.meta_info_def.tags) == wanted:
      return meta_graph
  available = sorted(tag_key(mg.meta_info_def.tags) for mg in saved_model.meta_graphs)
  requested = tag_key(wanted)
  listing = ', '.join(repr(key) for key in available) or 'none'
  raise ContractError(f'no MetaGraphDef with this tag-set in {saved_model_dir!r}',
                      value=requested,
                      fix=f'use one of the tag-sets: {listing}.'
                      + did_you_mean(requested, available))


def signature_defs(export_dir: str, tag_set: TagSet = SERVE_TAG
                  ) -> Dict[str, meta_graph_pb2.SignatureDef]:
  """Signature name -> SignatureDef of the MetaGraph tagged exactly `tag_set`.

  Raises:
    ContractError: not a SavedModel directory, or no MetaGraph with this tag-set
      (see find_meta_graph).
  """
  return dict(find_meta_graph(read_saved_model(export_dir), tag_set, export_dir).signature_def)


# ----- versions -----

INT64_MAX = 2**63 - 1


def is_version_name(name: str) -> bool:
  """Whether TF Serving reads `name` as a version: ASCII digits (leading zeros fine), <= int64."""
  return name.isascii() and name.isdigit() and int(name) <= INT64_MAX


def version_names(base: str) -> List[str]:
  """Names of the numeric subdirectories of base, as written ('007' stays '007').

  Only names TF Serving parses as a version count (see is_version_name): '²' or
  a number past int64 is not one. Raises tf.errors.OpError when base exists but
  cannot be listed.
  """
  if not tf.io.gfile.isdir(base):
    return []
  names = (n.rstrip('/') for n in tf.io.gfile.listdir(base))
  return [n for n in names if is_version_name(n) and tf.io.gfile.isdir(os.path.join(base, n))]


def numeric_versions(base: str) -> List[int]:
  """Sorted integer versions under `base` (what TF Serving would load)."""
  return sorted(int(n) for n in version_names(base))


def newest_version_dir(base: str) -> Optional[str]:
  """<base>/<the numerically highest version holding a SavedModel>, or None."""
  names = [n for n in version_names(base) if saved_model_file(os.path.join(base, n))]
  return os.path.join(base, max(names, key=int)) if names else None


# ----- manifest -----

def manifest_path(export_dir: str) -> str:
  return os.path.join(export_dir, ASSETS_EXTRA, MANIFEST_FILENAME)


def read_manifest(export_dir: str) -> Dict[str, Any]:
  """The manifest of a version directory, or {} if it has none."""
  path = manifest_path(export_dir)
  if not tf.io.gfile.exists(path):
    return {}
  with tf.io.gfile.GFile(path, 'r') as f:
    return json.load(f)


def write_manifest(export_dir: str, manifest: Dict[str, Any]) -> str:
  """Writes assets.extra/export_manifest.json; returns its path."""
  tf.io.gfile.makedirs(os.path.join(export_dir, ASSETS_EXTRA))
  path = manifest_path(export_dir)
  with tf.io.gfile.GFile(path, 'w') as f:
    f.write(json.dumps(manifest, indent=2, sort_keys=True))
  return path


# ----- content fingerprint -----

FINGERPRINT_ALGORITHM = 'sha256'
FINGERPRINT_PB = 'fingerprint.pb'  # Written by tf.saved_model.save (TF 2.12+), not by Builder.
_MODEL_DIRS = ('variables', 'assets')
_BLOCK_BYTES = 1 << 20


def model_files(export_dir: str) -> List[str]:
  """The files that make up the model, relative to export_dir with '/', sorted.

  saved_model.pb (or .pbtxt), fingerprint.pb when present, and everything below
  variables/ and assets/. assets.extra/ is left out: it holds the manifest itself
  and files (warmup, example requests) that do not change what the model computes.
  """
  found = [name for name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT, FINGERPRINT_PB)
           if tf.io.gfile.exists(os.path.join(export_dir, name))]
  for top in _MODEL_DIRS:
    root = os.path.join(export_dir, top)
    if not tf.io.gfile.isdir(root):
      continue
    for directory, _, names in tf.io.gfile.walk(root):
      rel = os.path.relpath(directory, export_dir).replace(os.sep, '/')
      found.extend(f'{rel}/{name}' for name in names)
  return sorted(found)


def file_sha256(path: str) -> Tuple[str, int]:
  """(hex sha256, size in bytes) of a file, read in 1 MiB blocks (open() when local)."""
  digest, size = hashlib.sha256(), 0
  opened = (open(_os_path(path), 'rb') if is_local_path(path)  # pylint: disable=consider-using-with
            else tf.io.gfile.GFile(path, 'rb'))
  with opened as f:
    while True:
      block = f.read(_BLOCK_BYTES)
      if not block:
        break
      digest.update(block)
      size += len(block)
  return digest.hexdigest(), size


def _combined_digest(files: Dict[str, Dict[str, Any]]) -> str:
  lines = ''.join(f"{rel}\t{entry['bytes']}\t{entry['sha256']}\n"
                  for rel, entry in sorted(files.items()))
  return hashlib.sha256(lines.encode('utf-8')).hexdigest()


def content_fingerprint(export_dir: str) -> Dict[str, Any]:
  """What the manifest records of the model's bytes; compute it after the last edit.

  Returns:
    {'algorithm': 'sha256', 'digest': sha256 of the lines "PATH<tab>BYTES<tab>SHA256<lf>"
    of every file (sorted), 'files': {PATH: {'sha256', 'bytes'}}}, PATH relative
    with '/' (model_files). When fingerprint.pb exists (tf.saved_model.save writes
    it; the tf.compat.v1 Builder that Estimators use does not), also
    'saved_model_fingerprint': its fields as decimal strings (uint64).
  """
  files = {}
  for rel in model_files(export_dir):
    sha, size = file_sha256(os.path.join(export_dir, rel))
    files[rel] = {'sha256': sha, 'bytes': size}
  result = {'algorithm': FINGERPRINT_ALGORITHM, 'digest': _combined_digest(files),
            'files': files}
  if FINGERPRINT_PB in files:
    fingerprint = tf.saved_model.experimental.read_fingerprint(export_dir)
    result['saved_model_fingerprint'] = {
        field: str(getattr(fingerprint, field)) for field in (
            'saved_model_checksum', 'graph_def_program_hash', 'signature_def_hash',
            'saved_object_graph_hash', 'checkpoint_hash')}
  return result


def verify_fingerprint(export_dir: str, manifest: Optional[Dict[str, Any]] = None
                       ) -> Dict[str, Any]:
  """Checks the model's files against the manifest's fingerprint; returns that fingerprint.

  Sizes are compared first; only files of the recorded size are hashed.

  Raises:
    ContractError: no manifest, or a manifest without a fingerprint.
    ValidationError: a file changed, is missing or was added; names each one.
  """
  check_saved_model_dir(export_dir)
  manifest = read_manifest(export_dir) if manifest is None else manifest
  recorded = manifest.get('fingerprint')
  if not recorded:
    raise ContractError('the export manifest records no content fingerprint',
                        value=manifest_path(export_dir),
                        fix='re-export with this version of estimator_export, or skip the '
                        'fingerprint check')
  if recorded.get('algorithm') != FINGERPRINT_ALGORITHM:
    raise ContractError('unknown fingerprint algorithm in the manifest',
                        value=recorded.get('algorithm'),
                        fix=f'only {FINGERPRINT_ALGORITHM!r} fingerprints can be checked')
  expected = recorded.get('files', {})
  present = set(model_files(export_dir))
  problems = [] if _combined_digest(expected) == recorded.get('digest') else [
      f'{MANIFEST_FILENAME} (its file list does not match its digest)']
  problems += [f'{rel} (missing)' for rel in sorted(set(expected) - present)]
  problems += [f'{rel} (added)' for rel in sorted(present - set(expected))]
  for rel in sorted(present & set(expected)):
    path = os.path.join(export_dir, rel)
    size = tf.io.gfile.stat(path).length
    if size != expected[rel]['bytes']:
      problems.append(f'{rel} (size {size} bytes, recorded '
                      f"{expected[rel]['bytes']})")
    elif file_sha256(path)[0] != expected[rel]['sha256']:
      problems.append(f'{rel} (content changed: sha256 differs)')
  if problems:
    raise ValidationError(f'the export differs from the fingerprint in its manifest, in '
                          f'{len(problems)} file(s) of {export_dir}', value=problems,
                          fix='the files changed after the export was written (copy error, '
                          'corruption or an edit): re-export, or restore them from a good '
                          'copy')
  return recorded


# ----- durability -----

def is_local_path(path: str) -> bool:
  """True for a path of the local file system (no URL scheme, or file://).

  Only local paths have fsync; gs://, ram://, hdfs:// ... are reached through
  tf.io.gfile, whose writes are durable (or not) by the file system's own rules.
  """
  path = os.fspath(path)
  return '://' not in path or path.startswith('file://')


def _os_path(path: str) -> str:
  path = os.fspath(path)
  return path[len('file://'):] if path.startswith('file://') else path


def local_os_path(path: str) -> str:
  """A local path (plain or file://) as the OS sees it; file:///a/b -> /a/b."""
  return _os_path(path)


def read_bytes(path: str) -> bytes:
  """A whole file's bytes: the OS reads local files (tf.io.gfile copies large files
  several times over, 0.18 s instead of 0.03 s for 90 MB); other schemes use gfile."""
  if is_local_path(path):
    with open(_os_path(path), 'rb') as f:
      return f.read()
  with tf.io.gfile.GFile(path, 'rb') as f:
    return f.read()


def normalize_path(path: str) -> str:
  """A local path (plain or file://) made absolute; a URL (gs://b/m/) kept, less trailing '/'.

  A URL is never turned into a local path (os.path.abspath('gs://b/m') would be
  '<cwd>/gs:/b/m').
  """
  path = os.fspath(path)
  if is_local_path(path):
    return os.path.abspath(_os_path(path))
  scheme, rest = path.split('://', 1)
  return f'{scheme}://{rest.rstrip("/")}' if rest.rstrip('/') else path


def _is_saved_model_name(name: str) -> bool:
  return name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT)


def copy_tree(local_dir: str, dst: str) -> int:
  """Copies a local directory to `dst` (any file system) file by file; returns the count.

  The SavedModel file (saved_model.pb / .pbtxt at the top) is written last, so
  a reader that sees it sees every other file complete: on file systems without
  an atomic directory rename (object stores, ram://) that is what makes a
  version loadable only once whole. `dst` must not exist yet.
  """
  files, last = [], []
  for directory, _, names in os.walk(local_dir):
    rel = os.path.relpath(directory, local_dir)
    for name in sorted(names):
      pair = (os.path.join(directory, name),
              dst + '/' + (name if rel == '.' else f'{rel}/{name}'.replace(os.sep, '/')))
      (last if rel == '.' and _is_saved_model_name(name) else files).append(pair)
  tf.io.gfile.makedirs(dst)
  made = {dst}
  for src, target in files + last:
    parent = target.rsplit('/', 1)[0]
    if parent not in made:
      tf.io.gfile.makedirs(parent)
      made.add(parent)
    tf.io.gfile.copy(src, target, overwrite=True)
  return len(files) + len(last)


def remove_version_dir(path: str) -> bool:
  """Removes a version directory, its SavedModel file first (the mirror of copy_tree).

  Once saved_model.pb is gone no server starts loading the rest, so a crash
  half way leaves a directory nothing loads. Returns False when the directory
  was already gone (another exporter removed it).
  """
  if not tf.io.gfile.exists(path):
    return False
  for name in (SAVED_MODEL_PB, SAVED_MODEL_PBTXT):
    try:
      tf.io.gfile.remove(os.path.join(path, name))
    except tf.errors.NotFoundError:
      pass
  try:
    tf.io.gfile.rmtree(path)
  except tf.errors.NotFoundError:
    pass
  return True


def _fsync_path(path: str, directory: bool) -> None:
  flags = os.O_RDONLY | (getattr(os, 'O_DIRECTORY', 0) if directory else 0)
  fd = os.open(path, flags)
  try:
    os.fsync(fd)
  finally:
    os.close(fd)


def fsync_dir(path: str) -> None:
  """Makes the entries of directory `path` (creations, renames) durable; no-op if not local."""
  if is_local_path(path):
    _fsync_path(_os_path(path), directory=True)


def fsync_tree(path: str) -> int:
  """fsyncs every file below `path`, then its directories bottom-up; returns the file count.

  After this, a power loss cannot leave a truncated file or a missing entry in the
  tree. A no-op (returning 0) for non-local paths. Symbolic links are not followed.
  """
  if not is_local_path(path):
    return 0
  count = 0
  for directory, _, files in os.walk(_os_path(path), topdown=False):
    for name in files:
      file_path = os.path.join(directory, name)
      if not os.path.islink(file_path):
        _fsync_path(file_path, directory=False)
        count += 1
    _fsync_path(directory, directory=True)
  return count


# ----- checkpoints -----

def resolve_checkpoint(model_dir: Optional[str], checkpoint_path: Optional[str]) -> str:
  """An explicit checkpoint (prefix or directory) or the latest in model_dir."""
  if checkpoint_path:
    if tf.io.gfile.isdir(checkpoint_path):
      found = tf.train.latest_checkpoint(checkpoint_path)
      if not found:
        raise CheckpointNotFoundError(
            'no checkpoint in directory', value=checkpoint_path,
            fix="looked for a 'checkpoint' state file naming model.ckpt-N; train first or "
            'pass the checkpoint prefix, e.g. .../model.ckpt-1000')
      return found
    if not tf.io.gfile.exists(checkpoint_path + '.index'):
      raise CheckpointNotFoundError(
          'checkpoint not found', value=checkpoint_path,
          fix=f'no {os.path.basename(checkpoint_path)}.index beside it; give a prefix '
          'such as model_dir/model.ckpt-1000 (without .index/.data)')
    return checkpoint_path
  found = tf.train.latest_checkpoint(model_dir) if model_dir else None
  if not found:
    raise CheckpointNotFoundError(
        'no checkpoint to export in model_dir', value=model_dir,
        fix="looked for a 'checkpoint' state file naming model.ckpt-N.index there; train "
        'the estimator first or pass checkpoint_path (a warm-start checkpoint is never '
        'used implicitly)')
  return found


def checkpoint_step(checkpoint_path: str) -> int:
  """The checkpoint's global_step, or 0 when it has none."""
  try:
    return int(tf.train.load_variable(checkpoint_path, 'global_step'))
  except (tf.errors.NotFoundError, ValueError):
    return 0


__all__: Sequence[str] = (
    'CLASSIFY_METHOD', 'DEFAULT_SIGNATURE', 'PREDICT_METHOD', 'REGRESS_METHOD', 'SERVE_TAG',
    'TagSet', 'check_saved_model_dir', 'checkpoint_step', 'content_fingerprint', 'copy_tree',
    'file_sha256', 'find_meta_graph', 'fsync_dir', 'fsync_tree', 'is_local_path',
    'local_os_path', 'model_files', 'newest_version_dir', 'normalize_path', 'numeric_versions',
    'parse_tag_set', 'read_manifest', 'read_saved_model', 'remove_version_dir',
    'resolve_checkpoint', 'saved_model_file', 'serve_meta_graph', 'serve_signature_defs',
    'signature_defs', 'tag_key', 'verify_fingerprint', 'version_names', 'write_manifest',
    'write_saved_model')
