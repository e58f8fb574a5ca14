"""Staging directories of exports: their names, when one is stale, and removing trees.

A staging directory is named `.staging-<what>-<start ms>-<pid>-<random>@<host>`:
hidden and non-numeric, so TF Serving never loads it, and naming its owner. One
is stale, and the next export removes it, when its owner is gone: under a local
base, for this host, when process <pid> no longer runs (or is a zombie, or
started after the directory, i.e. the pid was reused); under a non-local base
(gs://, hdfs://, ...), whose other users may be on other hosts of the same
name, for another host, or for a name without an owner, when it is older than
STALE_STAGING_SECONDS (24 h), since no process there can be asked. A running
exporter's directory is never removed.

Exports to a non-local base stage in the local temporary directory (see
export.py); those directories follow the same rule, with the pid check.
"""
import logging
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from typing import List, Optional, Tuple

import tensorflow as tf

from estimator_export._saved_model import (SAVED_MODEL_PB, is_local_path, local_os_path,
                                           saved_model_file, version_names)

logger = logging.getLogger('estimator_export')

STAGING_PREFIX = '.staging-'
STALE_STAGING_SECONDS = 24 * 3600
STAGING_RE = re.compile(r'^\.staging-(?P<what>[a-z0-9]+)-(?P<ms>\d+)-(?P<pid>\d+)-[0-9a-f]+'
                        r'@(?P<host>[^/]+)$')
_PID_REUSE_SLACK_SECONDS = 2.0  # /proc's boot time has whole seconds.


def host() -> str:
  """This host's name as it appears in staging names."""
  return re.sub(r'[^A-Za-z0-9._-]', '_', socket.gethostname()) or 'unknown-host'


def staging_name(what: str) -> str:
  """A hidden, non-numeric directory name that records its owner (see module docstring)."""
  return (f'{STAGING_PREFIX}{what}-{int(time.time() * 1000)}-{os.getpid()}-'
          f'{uuid.uuid4().hex[:8]}@{host()}')


def process_state(pid: int) -> Optional[Tuple[str, float]]:
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
  state = process_state(pid)
  if state is None:
    return os.path.exists(f'/proc/{pid}') or not os.path.isdir('/proc')
  letter, started = state
  return letter not in 'ZX' and started <= since + _PID_REUSE_SLACK_SECONDS


def staging_is_stale(base: str, name: str, now: Optional[float] = None) -> bool:
  """Whether staging directory `name` under `base` belongs to no running exporter."""
  match = STAGING_RE.match(name)
  if match and match['host'] == host() and is_local_path(base):
    return not _owner_running(int(match['pid']), int(match['ms']) / 1000)
  stamps = [int(match['ms']) / 1000] if match else []
  try:
    mtime = tf.io.gfile.stat(os.path.join(base, name)).mtime_nsec / 1e9
    if mtime > 0:  # ram:// has no mtimes (0).
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
      rmtree(os.path.join(base, name))
      removed.append(name)
      logger.warning('export: removed stale staging directory %s (its exporter is gone)',
                     os.path.join(base, name))
  return removed


def local_staging_dir(what: str) -> str:
  """A new staging directory in the local temporary directory, for a non-local export.

  Stale ones there (an exporter killed mid-export) are removed first, by the
  pid rule; only names of the staging form are considered, nothing else there.
  """
  temp = tempfile.gettempdir()
  try:
    names = os.listdir(temp)
  except OSError:
    names = []
  for name in sorted(names):
    match = STAGING_RE.match(name)
    if match and match['host'] == host() and staging_is_stale(temp, name):
      rmtree(os.path.join(temp, name))
      logger.info('export: removed stale local staging directory %s', os.path.join(temp, name))
  path = os.path.join(temp, staging_name(what))
  os.makedirs(path)
  return path


def rmtree(path: str) -> None:
  """Removes a directory tree; parts already removed (by a concurrent exporter) are fine."""
  if is_local_path(path):
    shutil.rmtree(local_os_path(path), ignore_errors=True)
    return
  try:
    tf.io.gfile.rmtree(path)
  except tf.errors.OpError:
    pass


def clean_partial_versions(base: str, now: Optional[float] = None) -> List[str]:
  """Under a non-local base, removes the remains of crashed publishes; returns their names.

  Such a base is written file by file with saved_model.pb last, and versions are
  removed saved_model.pb first, so a crash leaves a numeric directory without
  it. One is removed when all its files are older than STALE_STAGING_SECONDS
  (a publish under way writes fresh files); with no mtimes (ram://) it stays.
  Local bases publish by an atomic rename and are left alone.
  """
  if is_local_path(base):
    return []
  now = time.time() if now is None else now
  removed = []
  for name in sorted(version_names(base), key=int):
    path = os.path.join(base, name)
    if saved_model_file(path) is not None:
      continue
    mtimes = [tf.io.gfile.stat(os.path.join(d, f)).mtime_nsec / 1e9
              for d, _, files in tf.io.gfile.walk(path) for f in files]
    if mtimes and min(mtimes) > 0 and now - max(mtimes) > STALE_STAGING_SECONDS:
      rmtree(path)
      removed.append(name)
      logger.warning('export: removed %s: a version without %s, untouched for over %d s '
                     '(a publish or retention that died half way)', path, SAVED_MODEL_PB,
                     STALE_STAGING_SECONDS)
  return removed
