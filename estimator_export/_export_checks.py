"""The checks `export_for_serving` runs on a written export before publishing it.

    outputs = check_written_export(written, layout, feeds, kinds, aliases, rtol, atol,
                                   warmup_logs, Reference(estimator, ckpt, spec, samples))

1. Served side: each MetaGraph loaded by its tags, every signature run on its
   sample feeds, the warmup file replayed (`tag_sets.run_every_tag_set`).
2. Reference side: the Estimator's model_fn in PREDICT mode on the checkpoint,
   fed the samples as features (`_reference.predict_once`: what
   estimator.predict returns; from the graph tf.estimator's export built
   when it can, see `_reference.ExportGraph`).
3. Then: every signature alias gives its target's outputs; the raw and
   tf.Example default signatures agree; the signatures fed the samples agree
   with the reference (parity).

Sides 1 and 2 are independent, so the served side runs in a worker thread
while this thread builds the reference: loading a SavedModel, optimising its
graph and running it happen mostly in TF's C++ runtime, which releases the GIL,
and building a model_fn's graph is mostly Python. The user's model_fn runs in
the calling thread, never beside another call of it (tf.estimator's export has
finished). Errors come out in the order of the list above, as if the steps ran
one after another: a failed signature or warmup record first, then aliases,
then consistency, then parity (including a reference that fails to build).

With flush=True (an export published by a local rename) a third thread fsyncs
the export's files meanwhile (`start_flush`), so the fsync before the publish
finds them on disk already. With fingerprint=True the calling thread, done with
the reference, hashes the files for the manifest while the served side runs.
"""
import concurrent.futures
import logging
import os
import threading
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence

import numpy as np

from estimator_export import tag_sets as tag_sets_lib
from estimator_export import validate as validate_lib
from estimator_export._reference import ExportGraph, predict_once
from estimator_export._saved_model import content_fingerprint, is_local_path, local_os_path

logger = logging.getLogger('estimator_export')


class Checked(NamedTuple):
  """What check_written_export gives back."""
  outputs: Dict[str, Dict[str, np.ndarray]]  # Signature -> output key -> array (no aliases).
  fingerprint: Optional[Dict[str, Any]]  # content_fingerprint of the checked files, if asked.


class Reference(NamedTuple):
  """What the parity check compares with: the model_fn of `estimator` on `checkpoint_path`."""
  estimator: Any  # tf.estimator.Estimator
  checkpoint_path: str
  spec: Any  # features.FeatureSpec
  samples: Mapping[str, Any]


def check_written_export(export_dir: str, layout: tag_sets_lib.TagSetPlan,
                         feeds: Mapping[str, Mapping[str, Any]], kinds: Mapping[str, str],
                         aliases: Mapping[str, str], rtol: float, atol: float,
                         warmup_logs: Optional[Sequence[Any]] = None,
                         reference: Optional[Reference] = None, flush: bool = False,
                         exported: Optional[ExportGraph] = None, fingerprint: bool = False
                        ) -> Checked:
  """Validates a written export (see the module docstring).

  Args:
    export_dir: the written SavedModel (not yet published).
    layout: its MetaGraphs (tag_sets.plan).
    feeds: signature name -> inputs (validate.sample_feeds), aliases included.
    kinds: receiver name -> kind (validate.kinds_of).
    aliases: alias -> target signature.
    rtol, atol: tolerance of every comparison.
    warmup_logs: the warmup file's PredictionLogs, replayed on each MetaGraph.
    reference: compare with the Estimator's model_fn (None: no parity check).
    flush: fsync the export's files meanwhile (an export published by a local
      rename; one copied elsewhere is not fsynced).
    exported: the receiver fn tf.estimator's export called, holding its graph:
      requests of equal features share the model's run (`_shared_runs`), and
      the reference reuses that graph when it can (`_reference`).
    fingerprint: also hash the files (`content_fingerprint`) in this thread
      while the served side runs; they must not change afterwards.

  Returns:
    Checked: the signatures' outputs, and the fingerprint (None when not asked
    for or when hashing failed: hash again to see why).

  Raises:
    ContractError: a MetaGraph does not load by its tags.
    ValidationError: a signature, warmup record or comparison failed.
  """
  logger.info('export: validating %d signature(s)', len(feeds))
  compared_signatures = validate_lib.parity_signatures(
      {name: None for name in feeds if name not in aliases}, kinds)
  features = (validate_lib.parity_features(reference.spec, reference.samples)
              if reference is not None and compared_signatures else {})
  if exported is not None:
    exported.export_dir = export_dir
  flushing = start_flush(export_dir) if flush else None
  try:
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix='export-checks') as pool:
      served = pool.submit(tag_sets_lib.run_every_tag_set, export_dir, layout, feeds, rtol,
                           atol, warmup_logs, exported.feature_names() if exported else ())
      predictions, failure = None, None
      if features:
        try:
          predictions = predict_once(reference.estimator, reference.checkpoint_path, features,
                                     exported)
        except Exception as e:  # pylint: disable=broad-except
          failure = e  # Raised in its turn, after the served side's errors.
      digest = _fingerprint(export_dir) if fingerprint else None
      outputs = served.result()
  finally:
    if flushing is not None:
      flushing.join()
  for alias, target in aliases.items():
    if alias in outputs and target in outputs:
      validate_lib.check_same_outputs(outputs.pop(alias), outputs[target], alias, target)
  validate_lib.check_consistency(outputs, rtol, atol, kinds)
  if failure is not None:
    raise failure
  if predictions is not None:
    compared = validate_lib.compare_parity(predictions, outputs, rtol, atol, kinds)
    logger.info('export: parity with estimator.predict on %d output(s)', compared)
  return Checked(outputs, digest)


def _fingerprint(export_dir: str) -> Optional[Dict[str, Any]]:
  try:
    return content_fingerprint(export_dir)
  except Exception:  # pylint: disable=broad-except
    return None  # The manifest hashes them again, and that error is raised there.


def start_flush(path: str) -> Optional[threading.Thread]:
  """Starts fsyncing the files below local `path` in a thread (None if not local).

  Only a head start: the files written so far (the variables above all) reach
  the disk while the checks run; errors are ignored, and durability still comes
  from `fsync_tree` before the publish.
  """
  if not is_local_path(path):
    return None

  def flush():
    for directory, _, files in os.walk(local_os_path(path)):
      for name in files:
        try:
          fd = os.open(os.path.join(directory, name), os.O_RDONLY)
        except OSError:
          continue
        try:
          os.fsync(fd)
        except OSError:
          pass
        finally:
          os.close(fd)

  thread = threading.Thread(target=flush, name='export-flush', daemon=True)
  thread.start()
  return thread
