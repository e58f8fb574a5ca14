"""Several MetaGraphs in one export: tag sets, the signatures of each, one variables/.

    ExportOptions(tag_sets=('serve', 'serve,gpu'))        # two MetaGraphs, every signature
    ExportOptions(tag_sets={'serve': None,                # every signature
                            'serve,gpu': ['serving_default', 'predict']})
    ExportOptions(tag_sets=[MetaGraphSpec('serve,gpu')])  # only {serve, gpu}

`tf.estimator` writes one MetaGraph, tagged {serve}. Every MetaGraph asked for
here is a copy of it with other `meta_info_def.tags` and a subset of its
SignatureDefs (`retagged`): the same GraphDef, SaverDef, collections and
assets, so all of them restore from the one `variables/` directory, as
`SavedModelBuilder.add_meta_graph` writes a second graph beside a first. Each
copy carries the whole GraphDef, so saved_model.pb grows by one graph per
extra tag set. With the default, one {serve} MetaGraph with every signature,
nothing is rewritten.

Loading. Every loader picks the MetaGraph whose tags *equal* the requested set
(TF's C++ `FindMetaGraphDef`, its Python loader, TF Serving's
`--saved_model_tags`, the embedded server, `Predictor`): {serve, gpu} is not
found by asking for {serve}, nor {serve} by asking for {serve, gpu}.

Warmup. A version has one assets.extra/tf_serving_warmup_requests, and TF
Serving replays it against whichever MetaGraph it loaded (saved_model_warmup.cc
runs each record on the bundle's meta_graph_def); a record naming a signature
that MetaGraph lacks fails the load. So the export writes warmup records only
for the signatures every tag set carries (`TagSetPlan.warmup_signature_defs`),
and validation replays the file against each MetaGraph (`run_every_tag_set`).

Errors: a malformed tag set (empty, a blank tag, one given twice) is a
`TagSetError`; a signature name the export does not have is a `SignatureError`.
"""
import contextlib
import dataclasses
import logging
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from estimator_export import validate as validate_lib
from estimator_export import warmup as warmup_lib
from estimator_export._saved_model import (SERVE_TAG, find_meta_graph, read_saved_model,
                                           tag_key)
from estimator_export._shared_runs import SharedRuns
from estimator_export.errors import SignatureError, TagSetError, did_you_mean
from estimator_export.predictor import Predictor, checks_session_config

logger = logging.getLogger('estimator_export')

Tags = Union[str, Sequence[str]]


def _tags_of(tags: Tags) -> Tuple[str, ...]:
  """'serve,gpu' or ['serve', 'gpu'] -> ('serve', 'gpu'), in the order given."""
  if isinstance(tags, str):
    parts = tags.split(',')
  elif isinstance(tags, Iterable) and not isinstance(tags, bytes):
    parts = list(tags)
  else:
    raise TagSetError('a tag set is a comma-separated string or a list of tags',
                      value=tags, fix="e.g. 'serve,gpu' or ['serve', 'gpu']")
  if not parts or parts == ['']:
    raise TagSetError('empty tag set', value=tags,
                      fix="give at least one tag, e.g. 'serve' (the tag set TF Serving "
                      'loads by default)')
  result = []
  for part in parts:
    if not isinstance(part, str):
      raise TagSetError(f'tag set {tags!r} has a tag that is not a string', value=part,
                        fix="write tags as strings, e.g. ['serve', 'gpu']")
    tag = part.strip()
    if not tag or ',' in tag:
      raise TagSetError(f'tag set {tags!r} has a blank tag or a tag with a comma',
                        value=part, fix="drop it: tags are non-empty and comma-free (TF "
                        "Serving's --saved_model_tags splits on ','), e.g. 'serve,gpu'")
    if tag in result:
      raise TagSetError(f'tag set {tags!r} names a tag twice', value=tag,
                        fix='give each tag once')
    result.append(tag)
  return tuple(result)


@dataclasses.dataclass(frozen=True)
class MetaGraphSpec:
  """One MetaGraph an export writes: its tags and the signatures it carries.

  Attributes:
    tags: the tags, e.g. ('serve', 'gpu'); given as 'serve,gpu' or a sequence
      (order kept as written; loaders match them as a set).
    signatures: names of the export's signatures (aliases included) this
      MetaGraph carries; None (the default): every one.
  """
  tags: Tuple[str, ...]
  signatures: Optional[Tuple[str, ...]] = None

  def __post_init__(self):
    object.__setattr__(self, 'tags', _tags_of(self.tags))
    names = self.signatures
    if names is None:
      return
    if isinstance(names, str):
      names = (names,)
    names = tuple(names)
    if not names:
      raise TagSetError(f'tag set {self.key!r} carries no signature', value=[],
                        fix='list at least one signature, or give None for all of them')
    for name in names:
      if not isinstance(name, str) or not name:
        raise TagSetError(f'tag set {self.key!r} names a signature that is not a non-empty '
                          'string', value=name, fix="e.g. ['serving_default']")
      if names.count(name) > 1:
        raise TagSetError(f'tag set {self.key!r} names a signature twice', value=name,
                          fix='give each signature once')
    object.__setattr__(self, 'signatures', names)

  @property
  def key(self) -> str:
    """The canonical name of the tag set: tags sorted, comma-joined ('gpu,serve')."""
    return tag_key(self.tags)


SpecLike = Union[MetaGraphSpec, Tags]
TagSetsArg = Union[Sequence[SpecLike], Mapping[Tags, Optional[Sequence[str]]]]
DEFAULT_TAG_SETS: Tuple[MetaGraphSpec, ...] = (MetaGraphSpec((SERVE_TAG,)),)


def normalize_tag_sets(tag_sets: TagSetsArg) -> Tuple[MetaGraphSpec, ...]:
  """The MetaGraphs to write, checked: a tuple of MetaGraphSpec (idempotent).

  Args:
    tag_sets: a sequence whose items are each one tag set ('serve,gpu',
      ['serve', 'gpu'] or a MetaGraphSpec), or a mapping tag set -> signature
      names (None: all).

  Raises:
    TagSetError: no tag set, a bare string (ambiguous: one set or several?),
      a malformed tag set, or two equal tag sets (as sets: 'serve,gpu' and
      'gpu,serve' are one).
  """
  if isinstance(tag_sets, (str, bytes)):
    raise TagSetError('tag_sets takes a list of tag sets, not one string', value=tag_sets,
                      fix=f'tag_sets=[{tag_sets!r}] for one MetaGraph with these tags, or e.g. '
                      "['serve', 'serve,gpu'] for two")
  if isinstance(tag_sets, Mapping):
    specs = [MetaGraphSpec(tags, names) for tags, names in tag_sets.items()]
  else:
    specs = [item if isinstance(item, MetaGraphSpec) else MetaGraphSpec(item)
             for item in tag_sets]
  if not specs:
    raise TagSetError('no tag set to export', value=tag_sets,
                      fix="give at least one, e.g. ['serve'] (the default)")
  seen: Dict[str, MetaGraphSpec] = {}
  for spec in specs:
    if spec.key in seen:
      raise TagSetError('the same tag set is given twice (tags match as a set)',
                        value=','.join(spec.tags),
                        fix=f'drop one of {",".join(seen[spec.key].tags)!r} and '
                        f'{",".join(spec.tags)!r}')
    seen[spec.key] = spec
  return tuple(specs)


def parse_tag_set_flag(text: str) -> MetaGraphSpec:
  """One --export_tag_sets value: 'TAGS' or 'TAGS=SIGNATURE,SIGNATURE...'.

  'serve,gpu' -> every signature; 'serve,gpu=serving_default,predict' -> those two.
  """
  tags, sep, names = text.partition('=')
  if not sep:
    return MetaGraphSpec(tags)
  return MetaGraphSpec(tags, tuple(n.strip() for n in names.split(',')))


@dataclasses.dataclass(frozen=True)
class TagSetPlan:
  """The MetaGraphs of one export, each resolved to its signature names.

  Attributes:
    meta_graphs: (tags, signature names sorted) per MetaGraph, in the order given.
  """
  meta_graphs: Tuple[Tuple[Tuple[str, ...], Tuple[str, ...]], ...]

  @property
  def written(self) -> List[str]:
    """Every signature some MetaGraph carries, sorted."""
    return sorted({name for _, names in self.meta_graphs for name in names})

  @property
  def common(self) -> List[str]:
    """The signatures every MetaGraph carries, sorted."""
    sets = [set(names) for _, names in self.meta_graphs]
    return sorted(set.intersection(*sets))

  def is_single_serve(self, available: Iterable[str]) -> bool:
    """True for tf.estimator's own layout: one {serve} MetaGraph with every signature."""
    if len(self.meta_graphs) != 1:
      return False
    tags, names = self.meta_graphs[0]
    return tags == (SERVE_TAG,) and set(names) == set(available)

  def as_dict(self) -> Dict[str, List[str]]:
    """{tag key: [signature names]}: what the manifest and ExportResult record."""
    return {tag_key(tags): list(names) for tags, names in self.meta_graphs}

  def warmup_signature_defs(self, signature_defs: Mapping[str, Any]) -> Dict[str, Any]:
    """The SignatureDefs to warm up: those every MetaGraph carries (module docstring)."""
    common = self.common
    left_out = sorted(set(self.written) - set(common))
    if left_out:
      logger.warning('export: no warmup records for %s: TF Serving replays one warmup file '
                     'against whichever tag set it loads, and not every tag set has them',
                     ', '.join(left_out))
    return {name: signature_defs[name] for name in common}


def plan(tag_sets: TagSetsArg, signature_names: Iterable[str]) -> TagSetPlan:
  """Resolves each MetaGraphSpec's signatures against the export's signature names.

  Raises:
    TagSetError: see normalize_tag_sets.
    SignatureError: a tag set names a signature the export does not have.
  """
  available = sorted(signature_names)
  meta_graphs = []
  for spec in normalize_tag_sets(tag_sets):
    names = available if spec.signatures is None else spec.signatures
    for name in names:
      if name not in available:
        raise SignatureError(f'tag set {spec.key!r} names a signature the export does not '
                             'have', value=name, fix=f'use some of {available}'
                             + did_you_mean(name, available))
    meta_graphs.append((spec.tags, tuple(sorted(names))))
  return TagSetPlan(tuple(meta_graphs))


def retagged(saved_model: saved_model_pb2.SavedModel,
             template: meta_graph_pb2.MetaGraphDef,
             tag_sets: TagSetsArg) -> saved_model_pb2.SavedModel:
  """The SavedModel to write: one copy of `template` per tag set, each with its signatures.

  Returns `saved_model` itself (untouched) for one {serve} MetaGraph with every
  signature; otherwise a new proto, leaving `saved_model` and `template` as they were.

  Raises:
    TagSetError, SignatureError: see `plan`.
  """
  layout = plan(tag_sets, template.signature_def)
  if layout.is_single_serve(template.signature_def):
    return saved_model
  result = saved_model_pb2.SavedModel(
      saved_model_schema_version=saved_model.saved_model_schema_version)
  for tags, names in layout.meta_graphs:
    meta_graph = result.meta_graphs.add()
    meta_graph.CopyFrom(template)
    del meta_graph.meta_info_def.tags[:]
    meta_graph.meta_info_def.tags.extend(tags)
    for name in [n for n in meta_graph.signature_def if n not in names]:
      del meta_graph.signature_def[name]
  logger.info('export: MetaGraphs %s sharing one variables directory',
              ', '.join(f'{{{tag_key(tags)}}}' for tags, _ in layout.meta_graphs))
  return result


def run_every_tag_set(export_dir: str, layout: TagSetPlan,
                      feeds: Mapping[str, Mapping[str, Any]], rtol: float, atol: float,
                      warmup_logs: Optional[Sequence[Any]] = None,
                      features: Sequence[str] = ()) -> Dict[str, Dict[str, np.ndarray]]:
  """Runs each MetaGraph's signatures and replays the warmup file on it, as if loaded by its tags.

  A signature carried by several MetaGraphs must give the same outputs in each
  (one graph, one variables/ directory). A MetaGraph that is an earlier one's
  graph under other tags (what `retagged` writes: GraphDef, SaverDef,
  collections and assets equal, its SignatureDefs equal to the earlier one's)
  restores and computes exactly what the earlier one does, so it is found by
  its tags, as every loader finds it, and run on the earlier load instead of
  loading it again. On each load, requests that are the same computation share
  one Session.run (`_shared_runs`).

  Args:
    export_dir: the written SavedModel.
    layout: its MetaGraphs (see `plan`).
    feeds: signature name -> inputs (validate.sample_feeds).
    rtol, atol: tolerance of the comparison between MetaGraphs.
    warmup_logs: the PredictionLogs of the warmup file, replayed against each
      MetaGraph as TF Serving would after loading it.
    features: the model_fn's feature tensor names, if known: requests of equal
      features share the model's run (`_shared_runs`).

  Returns:
    Signature name -> output key -> array, for every signature written.

  Raises:
    ContractError: a MetaGraph does not load by its tags.
    ValidationError: a signature or warmup record failed, or MetaGraphs disagree.
  """
  results: Dict[str, Dict[str, np.ndarray]] = {}
  proto = read_saved_model(export_dir) if len(layout.meta_graphs) > 1 else None
  loaded: List[Tuple[Any, SharedRuns]] = []  # (MetaGraph without tags, signatures), runs.
  with contextlib.ExitStack() as stack:
    for tags, names in layout.meta_graphs:
      body = _graph_part(find_meta_graph(proto, tags, export_dir)) if proto else None
      runs = next((r for b, r in loaded if body is not None and _serves(b, body, names)), None)
      if runs is None:
        predictor = stack.enter_context(Predictor.from_saved_model(
            export_dir, signature_name=names[0], tags=list(tags),
            config=checks_session_config()))
        runs = SharedRuns(predictor, features)
        loaded.append((body, runs))
      runs.prefetch([(name, feeds[name]) for name in names] +
                    (warmup_lib.warmup_requests(runs, warmup_logs) if warmup_logs else []))
      got = validate_lib.run_signatures(runs, {name: feeds[name] for name in names})
      if warmup_logs:
        warmup_lib.replay_warmup(runs, warmup_logs)
      for name, outputs in got.items():
        if name not in results:
          results[name] = outputs
          continue
        for key, value in outputs.items():
          validate_lib.assert_close(results[name][key], value,
                                    f'{name!r} output {key!r} in tag set {tag_key(tags)!r}',
                                    'the same signature in the first tag set carrying it',
                                    rtol, atol)
  return results


def _graph_part(meta_graph: meta_graph_pb2.MetaGraphDef
               ) -> Tuple[meta_graph_pb2.MetaGraphDef, Dict[str, Any]]:
  """(the MetaGraph without tags and SignatureDefs: what a load restores and computes,
  its SignatureDefs by name)."""
  part = meta_graph_pb2.MetaGraphDef()
  part.CopyFrom(meta_graph)
  del part.meta_info_def.tags[:]
  part.ClearField('signature_def')
  return part, dict(meta_graph.signature_def)


def _serves(loaded, candidate, names: Sequence[str]) -> bool:
  """Whether a load of `loaded` computes every signature `names` of `candidate` alike."""
  (graph, signatures), (other_graph, other_signatures) = loaded, candidate
  return graph == other_graph and all(
      name in signatures and signatures[name] == other_signatures[name] for name in names)


__all__: Sequence[str] = ('DEFAULT_TAG_SETS', 'MetaGraphSpec', 'TagSetPlan',
                          'normalize_tag_sets', 'parse_tag_set_flag', 'plan', 'retagged',
                          'run_every_tag_set')
