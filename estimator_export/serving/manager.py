"""Versions of models: discovery, policies, labels, retries, availability-preserving swaps.

The lifecycle follows TF Serving's AspiredVersionsManager with its
AvailabilityPreservingPolicy:

* Discovery. Every poll lists the numeric children of each model's base path
  (_saved_model.version_names: ASCII digits, leading zeros fine, at most
  int64; other names ignored, which is what makes write-then-rename exports
  safe) and asks the version policy (latest / all / specific) which it wants.
  A base path that cannot be listed (gone, no permission, a gs:// bucket
  without credentials or network) changes nothing: its loaded versions keep
  serving, as TF Serving's source reports an error and aspires nothing new;
  the warning names the path and the file system's error. Base paths may be
  on any file system tf.io.gfile has (gs://, hdfs://, s3:// with
  tensorflow-io, ram://; file:// is local): listing, change stamps, loading
  and warmup all go through it. A numeric directory without saved_model.pb
  (an object-store publish still copying) is listed like any other, as TF
  Serving does: its load fails and is retried, and succeeds once the file
  is there.
* Loading. A wanted version that is not loaded loads (LOADING -> on_load hook:
  batching, warmup -> AVAILABLE). That includes a version that was unloaded
  normally (END, OK) and is wanted again: deleting the newest version, or a
  config going back to an older one, loads the older one again.
* Retries. A failed load is retried `max_load_retries` times (TF Serving's
  --max_num_load_retries, 5), `retry_interval_seconds` apart
  (--load_retry_interval_micros, 60 s). The wait never blocks a poll: the next
  attempt is scheduled and made by a later poll (the poller wakes up for it).
  While it waits, the version shows LOADING with an OK status, as in TF
  Serving (whose loader retries inside LOADING); each failure is logged. When
  the budget is spent it shows END with the last error and is tried again,
  with a fresh budget, only once its directory changes (the mtime or size of
  the version directory, saved_model.pb(txt), variables/ or assets.extra/ and
  their files) or once it stops being wanted and is wanted again. A change
  while waiting retries at once, with a fresh budget.
* Unloading. Availability is preserved: versions the policy no longer wants
  are unloaded only once a wanted version is AVAILABLE (or nothing is wanted
  any more); until then the newest of them keeps serving. Unloading stops the
  servable's batcher (joining its threads); its session closes when the last
  in-flight request drops it (TF Serving quiesces the same way).
* Status. A serving version is AVAILABLE, an unloaded one END/OK, a failed one
  END with its error. An END version whose directory is gone is forgotten (it
  disappears from GetModelStatus), as TF Serving forgets unloaded servables
  its source no longer lists.
* Config reloads are all-or-nothing. The new config's versions load first,
  invisibly (a new model, or a model whose base_path changed, gets a fresh set
  of versions; its old servables keep answering meanwhile). Then its labels
  are checked: each must name a loaded version, else FAILED_PRECONDITION
  `Request to assign label to version N of model X, which is not currently
  available for inference`, the versions the reload loaded are dropped and the
  previous config (models, policies, labels) stays in effect. Otherwise the
  new models are swapped in at once, and only then are dropped models and
  versions no longer wanted unloaded: no request sees a 404 in between.
"""
import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import grpc
import tensorflow as tf
from tensorflow_serving.apis import get_model_status_pb2

from estimator_export import _saved_model as saved_model_lib
from estimator_export.serving.servable import Servable
from estimator_export.serving.status import Code, ServingError

logger = logging.getLogger('estimator_export.serving')

State = get_model_status_pb2.ModelVersionStatus.State
INT64_MAX = saved_model_lib.INT64_MAX
# A retry may run this much before its time (the poller's wait is not exact).
_RETRY_SLACK_SECONDS = 0.01


@dataclasses.dataclass
class VersionStatus:
  """The state of one version, as GetModelStatus reports it, and its load bookkeeping.

  Attributes:
    version, path: the version and its directory.
    state, error_code, error_message: what GetModelStatus reports.
    servable: the loaded servable (None unless loaded).
    stamp: the directory's content signature at the last load attempt.
    attempts: failed attempts in the current retry budget.
    retry_at: time.monotonic() of the next attempt while waiting to retry.
    last_error: the last failure while waiting to retry (shown once END).
    final: the retries are spent: load again only when the directory changes.
  """
  version: int
  path: str
  state: int = State.START
  error_code: grpc.StatusCode = Code.OK
  error_message: str = ''
  servable: Optional[Servable] = None
  stamp: Tuple = ()
  attempts: int = 0
  retry_at: Optional[float] = None
  last_error: Optional[ServingError] = None
  final: bool = False


class _Model:

  def __init__(self, config):
    self.config = config
    self.versions: Dict[int, VersionStatus] = {}
    self.labels: Dict[str, int] = {}
    self.warned_empty = False
    self.warned_missing = False


def list_versions(base_path: str) -> Optional[Dict[int, str]]:
  """Versions under base_path -> their directories; None when base_path cannot be listed.

  Which names are versions is _saved_model.version_names's rule. Two names of
  one number ('7' and '007') are one version; the name sorting last wins.
  """
  try:
    if not tf.io.gfile.isdir(base_path):
      return None
    names = sorted(saved_model_lib.version_names(base_path))
  except tf.errors.OpError:
    return None
  return {int(name): os.path.join(base_path, name) for name in names}


def unlistable_reason(base_path: str) -> str:
  """Why base_path cannot be listed, in the file system's words (for the warning)."""
  try:
    if not tf.io.gfile.exists(base_path):
      return 'it does not exist'
    tf.io.gfile.listdir(base_path)
  except tf.errors.OpError as e:
    return f'{type(e).__name__}: {e.message.strip()}'
  return 'it is not a directory'


def wanted_versions(policy, available: Sequence[int]) -> List[int]:
  """Versions a policy (Latest / All / Specific, duck-typed) wants among those on disk."""
  kind = type(policy).__name__.lower()
  if kind == 'all':
    return sorted(available)
  if kind == 'specific':
    return sorted(v for v in available if v in set(policy.versions))
  num = getattr(policy, 'num_versions', 1) or 1
  return sorted(available)[-num:]


def _labels_of(config) -> Dict[str, int]:
  return dict(getattr(config, 'version_labels', {}) or {})


class ModelManager:
  """Loads, serves and unloads model versions according to their configs.

  Args:
    configs: ModelConfig objects (name, base_path, version_policy, version_labels).
    poll_seconds: file-system poll period; 0 or less polls only on `poll()`.
    on_load: called with each new Servable before it becomes AVAILABLE (warmup,
      batching); raising ServingError fails the load.
    session_config: tf.compat.v1.ConfigProto for every session.
    saved_model_tags: tags of the MetaGraph to load (--saved_model_tags split on ',').
    max_load_retries: retries of a failed load (TF Serving's 5); 0: none.
    retry_interval_seconds: time between those retries (TF Serving's 60).
  """

  def __init__(self, configs: Sequence, poll_seconds: float = 1.0,
               on_load: Optional[Callable[[Servable], None]] = None,
               session_config=None, max_load_retries: int = 5,
               retry_interval_seconds: float = 60.0,
               saved_model_tags: Sequence[str] = ('serve',)):
    if max_load_retries < 0 or retry_interval_seconds < 0:
      raise ValueError(f'max_load_retries ({max_load_retries}) and retry_interval_seconds '
                       f'({retry_interval_seconds}) must be >= 0')
    self._lock = threading.RLock()  # Guards the maps; never held while loading.
    self._sync_lock = threading.Lock()  # One poll or reload at a time.
    self._poll_seconds = poll_seconds
    self._on_load = on_load
    self._session_config = session_config
    self._saved_model_tags = tuple(saved_model_tags)
    self._max_retries = max_load_retries
    self._retry_interval = retry_interval_seconds
    self._stop = threading.Event()
    self._thread: Optional[threading.Thread] = None
    # Versions a reload loaded but has not published: (model, version, status it replaced).
    self._staged: List[Tuple[_Model, int, Optional[VersionStatus]]] = []
    _check_unique(configs)
    self._models: Dict[str, _Model] = {c.name: _Model(c) for c in configs}

  # ----- lifecycle -----
  def start(self):
    """Loads the initial versions (blocking), then polls in the background."""
    self.poll()
    if self._poll_seconds and self._poll_seconds > 0:
      self._thread = threading.Thread(target=self._poll_loop, name='model-poller', daemon=True)
      self._thread.start()

  def _poll_loop(self):
    while not self._stop.wait(self._next_wait()):
      try:
        self.poll()
      except Exception:  # pylint: disable=broad-except
        logger.exception('polling for model versions failed; will retry')

  def _next_wait(self) -> float:
    """The poll period, or less when a load retry is due sooner."""
    with self._lock:
      due = [s.retry_at for m in self._models.values() for s in m.versions.values()
             if s.retry_at is not None]
    wait = float(self._poll_seconds)
    if due:
      wait = min(wait, max(_RETRY_SLACK_SECONDS, min(due) - time.monotonic()))
    return wait

  def stop(self):
    """Stops polling and unloads everything (batchers stopped, sessions closed)."""
    self._stop.set()
    if self._thread:
      self._thread.join(timeout=10)
    locked = self._sync_lock.acquire(timeout=30)  # Let a reload in progress finish.
    try:
      with self._lock:
        servables = [s.servable for m in self._models.values() for s in m.versions.values()
                     if s.servable is not None]
        for model in self._models.values():
          for status in model.versions.values():
            status.servable, status.retry_at = None, None
      for servable in servables:
        _release(servable)
    finally:
      if locked:
        self._sync_lock.release()

  def poll(self):
    """One pass over every model: load (or retry) what policies want, then unload the rest."""
    with self._sync_lock:
      with self._lock:
        models = list(self._models.values())
      for model in models:
        self._sync(model)

  # ----- configuration -----
  def reload_config(self, configs):
    """Replaces the model list (HandleReloadConfigRequest / config file poll), all or nothing.

    Raises:
      ServingError: INVALID_ARGUMENT for duplicate names; FAILED_PRECONDITION
        for a label naming a version that is not loaded. Either way the
        previous config stays in effect.
    """
    _check_unique(configs)
    with self._sync_lock:
      with self._lock:
        old_models = dict(self._models)
      staged: Dict[str, _Model] = {}
      restore: Dict[str, object] = {}  # Reused models' previous configs.
      for config in configs:
        model = old_models.get(config.name)
        if model is not None and model.config.base_path == config.base_path:
          restore[config.name] = model.config
        else:
          model = _Model(config)  # New, or a new base_path: a fresh set of versions.
        model.config = config
        staged[config.name] = model
      try:
        for model in staged.values():
          self._sync(model, staged=True)
        error = _label_error(staged.values())
      except BaseException:
        self._rollback(restore, old_models)
        raise
      if error is not None:
        self._rollback(restore, old_models)
        raise error
      self._commit(staged, old_models)

  def _rollback(self, restore: Dict[str, object], old_models: Dict[str, _Model]):
    """Drops what a failed reload loaded and puts the previous configs back."""
    staged, self._staged = self._staged, []
    released = []
    with self._lock:
      for model, version, previous in reversed(staged):
        current = model.versions.get(version)
        if previous is None:
          model.versions.pop(version, None)
        else:
          model.versions[version] = previous
        if current is not None and current.servable is not None:
          released.append(current.servable)  # Never published: no request holds it.
          current.servable = None
      for name, config in restore.items():
        old_models[name].config = config
    for servable in released:
      _release(servable)

  def _commit(self, staged: Dict[str, _Model], old_models: Dict[str, _Model]):
    """Publishes a reload: new models and versions at once, then unloads what is not wanted."""
    loaded, self._staged = self._staged, []
    with self._lock:
      for model, version, _ in loaded:
        status = model.versions.get(version)
        if status is not None and status.servable is not None and status.state == State.LOADING:
          status.state = State.AVAILABLE
      self._models = dict(staged)
      for model in staged.values():
        model.labels = _labels_of(model.config)
    kept = {id(m) for m in staged.values()}
    for model in old_models.values():
      if id(model) not in kept:  # Dropped, or replaced by a new base_path.
        with self._lock:
          serving = [s for s in model.versions.values() if s.servable is not None]
          for status in model.versions.values():
            status.retry_at = None
        for status in serving:
          self._unload(model, status)
    for model in staged.values():
      on_disk = list_versions(model.config.base_path)
      if on_disk is not None:
        self._settle(model, on_disk)

  def model_names(self) -> List[str]:
    with self._lock:
      return sorted(self._models)

  # ----- one model -----
  def _sync(self, model: _Model, staged: bool = False):
    """Loads (or retries) what the policy wants; unless staged, settles the rest."""
    name, base = model.config.name, model.config.base_path
    on_disk = list_versions(base)
    if on_disk is None:
      if not model.warned_missing:
        logger.warning('Could not find base path %s for servable %s (or it cannot be listed: '
                       '%s); its loaded versions, if any, keep serving. Fix: create the '
                       'directory or correct base_path in the model config (for gs://, s3:// '
                       'or hdfs://: check credentials and network access).', base, name,
                       unlistable_reason(base))
        model.warned_missing = True
      with self._lock:
        for status in model.versions.values():
          if status.retry_at is not None:  # Cannot be read now: tried afresh once it can.
            _end_with(status, status.last_error)
      return
    model.warned_missing = False
    if not on_disk and not model.warned_empty:
      logger.warning('No versions of servable %s found under base path %s. Did you forget to '
                     "name your leaf directory as a number (eg. '/1/')?", name, base)
      model.warned_empty = True
    wanted = wanted_versions(model.config.version_policy, list(on_disk))
    now = time.monotonic()
    for version in sorted(wanted, reverse=True):
      with self._lock:
        status = model.versions.get(version)
      if _due(status, on_disk[version], now):
        self._attempt(model, version, on_disk[version], status, staged)
    if not staged:
      self._settle(model, on_disk)

  def _settle(self, model: _Model, on_disk: Dict[int, str]):
    """Cancels retries of unwanted versions, unloads (availability-preserving), forgets."""
    wanted = set(wanted_versions(model.config.version_policy, list(on_disk)))
    with self._lock:
      for version, status in model.versions.items():
        if version in wanted:
          continue
        if status.retry_at is not None:  # No longer wanted: the retries stop (TF Serving too).
          logger.info('Load cancelled for servable version {name: %s version: %d}',
                      model.config.name, version)
          _end_with(status, status.last_error)
        if status.state == State.END:
          status.final = False  # Wanted again later: a fresh try, as TF Serving re-aspires.
      serving = sorted(v for v, s in model.versions.items()
                       if v not in wanted and s.state == State.AVAILABLE)
      wanted_serving = any(v in model.versions and model.versions[v].state == State.AVAILABLE
                           for v in wanted)
      if wanted and not wanted_serving:
        serving = serving[:-1]  # The newest keeps answering until a wanted one can.
      doomed = [model.versions[v] for v in serving]
    for status in doomed:
      self._unload(model, status)
    with self._lock:
      for version in [v for v, s in model.versions.items()
                      if s.state == State.END and v not in on_disk]:
        del model.versions[version]  # Gone from disk and unloaded: forgotten.
      # A label serves only while its version is AVAILABLE.
      model.labels = {label: v for label, v in _labels_of(model.config).items()
                      if v in model.versions and model.versions[v].state == State.AVAILABLE}

  # ----- loading -----
  def _attempt(self, model: _Model, version: int, path: str,
               previous: Optional[VersionStatus], staged: bool):
    """One load attempt; on failure schedules a retry or ends the version."""
    stamp = _stamp(path)
    name = model.config.name
    retry = (not staged and previous is not None and previous.retry_at is not None and
             previous.stamp == stamp)
    status = previous if retry else VersionStatus(version=version, path=path, stamp=stamp)
    with self._lock:
      status.state, status.retry_at = State.LOADING, None
      model.versions[version] = status
    if staged:
      self._staged.append((model, version, previous))
    if retry:
      logger.info('Retrying load on servable version {name: %s version: %d} retry: %d', name,
                  version, status.attempts)
    else:
      logger.info('Loading servable version {name: %s version: %d}', name, version)
    try:
      servable = self._load(name, version, path)
    except ServingError as e:
      error = e
    else:
      with self._lock:
        status.servable, status.attempts, status.last_error = servable, 0, None
        if not staged:
          status.state = State.AVAILABLE
      logger.info('Successfully loaded servable version {name: %s version: %d}', name, version)
      return
    with self._lock:
      status.attempts += 1
      if status.attempts <= self._max_retries:
        status.last_error = error
        status.retry_at = time.monotonic() + self._retry_interval
      else:
        _end_with(status, error)
        status.final = True
    if status.state == State.LOADING:
      logger.error('Servable {name: %s version: %d} load failure: %s: %s. Retry %d of %d in '
                   '%g s (or as soon as %s changes).', name, version, error.code.name,
                   error.message, status.attempts, self._max_retries, self._retry_interval, path)
    else:
      logger.error('Servable {name: %s version: %d} load failure: %s: %s. Gave up after %d '
                   'attempt(s); it stays END until %s changes (fix or re-publish the version).',
                   name, version, error.code.name, error.message, status.attempts, path)

  def _load(self, name: str, version: int, path: str) -> Servable:
    """Loads and runs on_load; a failure leaves nothing behind (batcher stopped, session closed)."""
    servable = None
    try:
      servable = Servable.load(name, version, path, self._session_config,
                               tags=self._saved_model_tags)
      if self._on_load:
        self._on_load(servable)
      return servable
    except ServingError:
      if servable is not None:
        _release(servable)
      raise
    except Exception as e:  # pylint: disable=broad-except
      logger.exception('Loading servable version {name: %s version: %d} failed', name, version)
      if servable is not None:
        _release(servable)
      raise ServingError(Code.UNKNOWN, str(e)) from e

  def _unload(self, model: _Model, status: VersionStatus):
    with self._lock:
      status.state = State.UNLOADING
      servable, status.servable = status.servable, None
    if servable is not None and servable.batcher is not None:
      servable.batcher.stop()  # Runs what is queued, joins its threads.
    # In-flight requests hold their own reference; the session closes with the last one.
    with self._lock:
      status.state = State.END
    logger.info('Unloaded servable version {name: %s version: %d}', model.config.name,
                status.version)

  # ----- lookups -----
  def resolve(self, name: str, version: Optional[int] = None,
              label: Optional[str] = None) -> Servable:
    """The servable a request's ModelSpec names, with TF Serving's errors."""
    with self._lock:
      model = self._models.get(name)
      if label:
        if model is None or label not in model.labels:
          raise ServingError(Code.INVALID_ARGUMENT,
                             f'Unrecognized servable version label: {label}')
        version = model.labels[label]
      if version is not None:
        status = model.versions.get(version) if model else None
        if status is None or status.state != State.AVAILABLE or status.servable is None:
          raise ServingError(Code.NOT_FOUND,
                             f'Servable not found for request: Specific({name}, {version})')
        return status.servable
      available = [v for v, s in (model.versions.items() if model else ())
                   if s.state == State.AVAILABLE and s.servable is not None]
      if not available:
        raise ServingError(Code.NOT_FOUND, f'Servable not found for request: Latest({name})')
      return model.versions[max(available)].servable

  def status(self, name: str, version: Optional[int] = None) -> List[VersionStatus]:
    """Version statuses, newest first, with TF Serving's NOT_FOUND messages."""
    with self._lock:
      model = self._models.get(name)
      statuses = sorted(model.versions.values(), key=lambda s: -s.version) if model else []
      if version is not None:
        statuses = [s for s in statuses if s.version == version]
        if not statuses:
          raise ServingError(Code.NOT_FOUND,
                             f'Could not find version {version} of model {name}')
      elif not statuses:
        raise ServingError(Code.NOT_FOUND, f'Could not find any versions of model {name}')
      return [dataclasses.replace(s, servable=None) for s in statuses]

  def available(self) -> List[Servable]:
    with self._lock:
      return [s.servable for m in self._models.values() for s in m.versions.values()
              if s.state == State.AVAILABLE and s.servable is not None]


# ----- helpers -----

def _check_unique(configs: Sequence):
  names = [c.name for c in configs]
  if len(set(names)) != len(names):
    raise ServingError(Code.INVALID_ARGUMENT, f'Duplicate model names in config: {names}')


def _label_error(models: Iterable[_Model]) -> Optional[ServingError]:
  """TF Serving's error for the first label naming a version that is not loaded, or None."""
  for model in models:
    for version in _labels_of(model.config).values():
      status = model.versions.get(version)
      if status is None or status.servable is None:
        return ServingError(
            Code.FAILED_PRECONDITION,
            f'Request to assign label to version {version} of model {model.config.name}, '
            'which is not currently available for inference')
  return None


def _due(status: Optional[VersionStatus], path: str, now: float) -> bool:
  """Whether a wanted version should be (re)loaded now."""
  if status is None:
    return True
  if status.servable is not None or status.state in (State.AVAILABLE, State.UNLOADING):
    return False
  if status.retry_at is not None:  # Waiting to retry: when due, or at once on a change.
    return now + _RETRY_SLACK_SECONDS >= status.retry_at or _stamp(path) != status.stamp
  if status.state == State.END:  # Unloaded, cancelled, or failed for good (then: on a change).
    return not status.final or _stamp(path) != status.stamp
  return False


def _end_with(status: VersionStatus, error: Optional[ServingError]):
  status.state, status.retry_at = State.END, None
  if error is not None:
    status.error_code, status.error_message = error.code, error.message


def _release(servable: Servable):
  """Stops an unpublished or shut-down servable's batcher and closes its session."""
  if servable.batcher is not None:
    servable.batcher.stop()
  servable.close()


_STAMPED_FILES = (saved_model_lib.SAVED_MODEL_PB, saved_model_lib.SAVED_MODEL_PBTXT)
_STAMPED_DIRS = ('variables', saved_model_lib.ASSETS_EXTRA)


def _stamp(path: str) -> Tuple:
  """A version directory's content signature: (name, mtime ns, size) of what a load reads.

  The directory, its SavedModel file, variables/ and assets.extra/ and the files
  in those two; a change to any of them (a copy completing, a re-publish) makes a
  failed version worth another try. Where a file system has no mtimes (ram://
  reports 0) the names present and their sizes still change as a copy completes.
  """
  entries = [''] + list(_STAMPED_FILES) + list(_STAMPED_DIRS)
  for sub in _STAMPED_DIRS:
    try:
      entries += [f'{sub}/{n.rstrip("/")}' for n in sorted(tf.io.gfile.listdir(
          os.path.join(path, sub)))]
    except tf.errors.OpError:
      pass
  stamp = []
  for entry in entries:
    found = _stat(os.path.join(path, entry) if entry else path)
    if found is not None:
      stamp.append((entry,) + found)
  return tuple(stamp)


def _stat(path: str) -> Optional[Tuple[int, int]]:
  """(mtime ns, size), or None if missing. Local paths (file:// too) use os.stat:
  tf.io.gfile.stat keeps whole seconds there, which would miss a change within the second."""
  try:
    if saved_model_lib.is_local_path(path):
      found = os.stat(saved_model_lib.local_os_path(path))
      return found.st_mtime_ns, found.st_size
    found = tf.io.gfile.stat(path)
    return found.mtime_nsec, found.length
  except (OSError, tf.errors.OpError):
    return None
