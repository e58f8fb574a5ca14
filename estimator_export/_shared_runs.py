"""One loaded export's signatures, run so that equal requests share one Session.run.

    runs = SharedRuns(predictor)                  # a Predictor of the loaded MetaGraph
    validate.run_signatures(runs, feeds)          # every signature on its samples
    warmup.replay_warmup(runs, logs)              # every warmup record

Validation runs every signature of an export, then replays the warmup file on
the same load. Many of those requests are the same computation: a combined
receiver gives `serving_default` and `predict` the same input tensors, an alias
is a copy of its target, `examples:classify` reads the tensor
`examples:predict` reads, and a warmup record repeats a row of the samples for
each signature. On a MiniLM-sized BERT each run of a batch of 4 costs about
0.2 s of CPU, and each distinct (feeds, fetches) pair a new executor (with
grappler on, another 0.4 s of graph optimisation: the checks turn it off,
`predictor.checks_session_config`).

So the signatures are grouped by the input tensors they read. The first
request of a group with given input values runs the outputs of *every*
signature of the group in one Session.run (one executor per group, shared by
validation and warmup); a later request with equal values (same tensors, same
dtypes, shapes and bytes) reads its outputs from that run. What each request
gets is exactly what its own Session.run would compute from those feeds, and
every request is still checked on its own against its signature: the input
keys, each value's dtype and shape, the output keys it asks for.

When a group's run fails, the request runs alone on its signature, so the
error names the signature (or record) at fault, as it would without sharing;
later requests with those values then run alone too.

Given the model_fn's features (the tensors tf.estimator passed it, by name:
`_reference.ExportGraph.feature_names`), sharing goes one level deeper. Every
signature's outputs are computed by the one model_fn call from those features,
whichever receiver made them: the raw ids, the tf.Example and the text
signatures of the same sentences give the model the same features. So a
request first runs its receiver part alone (fetching the features); when an
earlier run had bitwise equal features and fetched what this request asks
for, the request gets that run's outputs, and only the model part is not
run again. On the MiniLM-sized BERT that saves most of the checks' compute:
the raw ids, tf.Example and text signatures of the same sentences, and their
warmup records, ran the encoder for about 0.2 s of CPU each. This assumes
what the consistency checks already demand: the model's outputs depend on its
features and variables only (no random ops).

`prefetch(requests)` runs the distinct groups of a set of requests at once, in a
few threads (with features: every receiver part first, then one full run per
distinct features): parsing, tokenizing and building executors are mostly
single-threaded, so two at a time keep 2 cores busy.
"""
import concurrent.futures
import threading
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from estimator_export import predictor as predictor_lib

_Key = Tuple[Tuple[str, ...], Tuple[Any, ...]]


def _digest(value: np.ndarray) -> Tuple[Any, ...]:
  """A hashable stand-in for an array's exact contents (dtype, shape, values)."""
  if value.dtype == np.dtype(object):
    return ('object', value.shape, tuple(value.reshape(-1).tolist()))
  return (value.dtype.str, value.shape, value.tobytes())


class SharedRuns:
  """Predictor-like access to one load's signatures; equal requests share one run.

  `for_signature(name)` gives what `Predictor.for_signature` gives, as far as
  `validate.run_signatures` and `warmup.replay_warmup` use it: `signature_name`,
  `signature_def`, and a call `(inputs, outputs=None) -> {output key: array}`.
  """

  def __init__(self, predictor: predictor_lib.Predictor, features: Sequence[str] = ()):
    """features: the model_fn's feature tensor names (see the module docstring)."""
    self._predictor = predictor
    self._lock = threading.Lock()
    self._memo: Dict[_Key, Dict[str, np.ndarray]] = {}
    self._failed = set()  # Keys whose shared run failed.
    self._features = list(features) if _all_in(predictor.graph, features) else []
    self._by_features: Dict[Tuple[Any, ...], Dict[str, np.ndarray]] = {}
    self._digests: Dict[_Key, Optional[Tuple[Any, ...]]] = {}  # Request key -> features.
    # Input tensor names (sorted) -> output tensor names of every signature reading them.
    self._fetches: Dict[Tuple[str, ...], List[str]] = {}
    for sig in predictor.signatures.values():
      infos = list(sig.inputs.values()) + list(sig.outputs.values())
      if any(info.WhichOneof('encoding') != 'name' for info in infos):
        continue  # Not dense: Predictor refuses it (ContractError) when it is asked for.
      fetches = self._fetches.setdefault(_tensor_names(sig.inputs), [])
      fetches.extend(n for n in sorted({info.name for info in sig.outputs.values()})
                     if n not in fetches)
    self._signatures: Dict[str, '_SharedSignature'] = {}

  def for_signature(self, signature_name: str) -> '_SharedSignature':
    if signature_name not in self._signatures:
      self._signatures[signature_name] = _SharedSignature(
          self, self._predictor.for_signature(signature_name))
    return self._signatures[signature_name]

  def prefetch(self, requests: Iterable[Tuple[str, Mapping[str, Any]]], workers: int = 2):
    """Runs the distinct requests (signature name, inputs) concurrently.

    Their results are kept for the calls that follow; a request that is wrong
    or fails is left to that call, which says why.
    """
    distinct = {}
    for name, inputs in requests:
      try:
        request = self.for_signature(name).request(inputs)
      except Exception:  # pylint: disable=broad-except
        continue
      if request is not None:
        distinct.setdefault(self._key(request[0]), request)
    requests = list(distinct.values())
    if self._features and len(requests) > 1:
      # Every request's receiver part first; then one full run per distinct features,
      # which the other requests of those features match when they are called.
      digests = _map(lambda r: self._features_of(self._key(r[0]), r[0]), requests, workers)
      firsts = {}
      for request, digest in zip(requests, digests):
        firsts.setdefault(id(request) if digest is None else digest, request)
      requests = list(firsts.values())
    _map(lambda request: self.run(*request), requests, workers)

  def _features_of(self, key: _Key, feeds: Mapping[str, np.ndarray]) -> Optional[Tuple[Any, ...]]:
    """The digest of the features `feeds` make (the receiver part run alone, once per key);
    None when that run fails."""
    with self._lock:
      if key in self._digests:
        return self._digests[key]
    try:
      digest = tuple(_digest(v) for v in self._predictor.run_tensors(feeds, self._features))
    except Exception:  # pylint: disable=broad-except
      digest = None  # The request's own run says why.
    with self._lock:
      self._digests[key] = digest
    return digest

  def _key(self, feeds: Mapping[str, np.ndarray]) -> _Key:
    names = tuple(sorted(feeds))
    return names, tuple(_digest(feeds[n]) for n in names)

  def run(self, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]
         ) -> Optional[Dict[str, np.ndarray]]:
    """Tensor name -> array for `fetches`, fed `feeds` (tensor name -> checked array).

    Runs the group of the fed tensors once per distinct feed values. None when
    that run fails (the caller then runs its signature alone).
    """
    key = self._key(feeds)
    with self._lock:
      done = self._memo.get(key)
      if key in self._failed:
        return None
    if done is None or any(f not in done for f in fetches):
      try:
        done = self._run_group(key, feeds, fetches)
      except Exception:  # pylint: disable=broad-except
        with self._lock:
          self._failed.add(key)
        return None  # The request alone says which signature fails, and why.
    return {f: done[f] for f in fetches}

  def _run_group(self, key: _Key, feeds: Mapping[str, np.ndarray], fetches: Sequence[str]
                ) -> Dict[str, np.ndarray]:
    """Runs (or finds by its features) the group of `feeds`; remembers it under `key`."""
    names = key[0]
    fed = {n: feeds[n] for n in names}
    group = list(self._fetches.get(names, ()))
    group += [f for f in dict.fromkeys(fetches) if f not in group]
    digest = None
    if self._features:
      with self._lock:
        digest, matching = self._digests.get(key), bool(self._by_features)
      if digest is None and matching:  # Its receiver part alone, to match earlier runs.
        digest = self._features_of(key, fed)
      if digest is not None:
        with self._lock:
          done = self._by_features.get(digest)
        if done is not None and all(f in done for f in fetches):
          with self._lock:
            self._memo[key] = done
          return done
      else:  # The features come with the run.
        group += [f for f in self._features if f not in group]
    values = self._predictor.run_tensors(fed, group)
    done = dict(zip(group, values))
    if self._features and digest is None:
      digest = tuple(_digest(done[f]) for f in self._features)
    with self._lock:
      self._memo[key] = done
      if digest is not None:
        self._digests[key] = digest
        self._by_features.setdefault(digest, done)
    return done


class _SharedSignature:
  """One signature of a SharedRuns; calls are checked like a Predictor's, then shared."""

  def __init__(self, runs: SharedRuns, predictor: predictor_lib.Predictor):
    self._runs = runs
    self._predictor = predictor
    self.signature_name = predictor.signature_name
    self.signature_def = predictor.signature_def
    self._specs = predictor_lib.signature_input_specs(self.signature_def, self.signature_name)

  def request(self, inputs: Mapping[str, Any],
              outputs: Optional[Union[str, Sequence[str]]] = None
             ) -> Optional[Tuple[Dict[str, np.ndarray], List[str]]]:
    """(tensor name -> checked array, fetched tensor names) of a call; None: keys are wrong."""
    sig = self.signature_def
    keys = [outputs] if isinstance(outputs, str) else list(outputs or sorted(sig.outputs))
    if (not isinstance(inputs, Mapping) or set(inputs) != set(self._specs) or
        any(k not in sig.outputs for k in keys)):
      return None
    feeds = {sig.inputs[k].name: predictor_lib.to_feed_array(
        v, self._specs[k], f'input {k!r} of signature {self.signature_name!r}')
             for k, v in inputs.items()}
    return feeds, [sig.outputs[k].name for k in keys]

  def __call__(self, inputs: Mapping[str, Any],
               outputs: Optional[Union[str, Sequence[str]]] = None) -> Dict[str, np.ndarray]:
    """As Predictor.__call__: input key -> array-like; output key -> numpy array."""
    request = self.request(inputs, outputs)
    fetched = self._runs.run(*request) if request is not None else None
    if fetched is None:  # Wrong keys, or the shared run failed: the Predictor says why.
      return self._predictor(inputs, outputs=outputs)
    sig = self.signature_def
    keys = [outputs] if isinstance(outputs, str) else list(outputs or sorted(sig.outputs))
    return {k: fetched[sig.outputs[k].name] for k in keys}


def _map(fn, items: Sequence[Any], workers: int) -> List[Any]:
  """[fn(item) ...], up to `workers` at a time."""
  if len(items) <= 1:
    return [fn(item) for item in items]
  with concurrent.futures.ThreadPoolExecutor(min(workers, len(items)),
                                             thread_name_prefix='shared-runs') as pool:
    return list(pool.map(fn, items))


def _all_in(graph, names: Sequence[str]) -> bool:
  """Whether every tensor name is in the graph."""
  try:
    for name in names:
      graph.get_tensor_by_name(name)
  except (KeyError, ValueError):
    return False
  return True


def _tensor_names(tensor_infos: Mapping[str, Any]) -> Tuple[str, ...]:
  return tuple(sorted(info.name for info in tensor_infos.values()))
