"""Read the serving contract of a SavedModel without loading it.

Everything here parses `saved_model.pb` (or `saved_model.pbtxt`) with the
`saved_model_pb2` proto module; no graph is imported and no session is made,
so it is cheap and safe to run on any export, local or on a tf.io.gfile
filesystem (gs://, s3://, ...).

* `show` renders the text `saved_model_cli show` prints for the same
  arguments.
* `contract` returns a JSON-serialisable description of every tag-set and
  SignatureDef (the format is documented on `contract`).
* `diff_contracts` / `diff` classify the changes between two contracts as
  breaking or compatible for existing TF Serving clients, and
  `format_changes` renders them one per line.
"""
import dataclasses
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tensorflow.core.protobuf import meta_graph_pb2

from estimator_export._saved_model import TagSet, find_meta_graph, read_saved_model
from estimator_export._saved_model_cli import (INTERNAL_SIGNATURE_PREFIX, dtype_name,
                                              shape_dims, shape_text, tag_key)
from estimator_export._saved_model_cli import show
from estimator_export.errors import ContractError

CONTRACT_VERSION = 1
BREAKING = 'breaking'
COMPATIBLE = 'compatible'

_ENCODINGS = {'name': 'dense', 'coo_sparse': 'sparse', 'composite_tensor': 'composite'}


# ----------------------------------------------------------------------------
# contract(): the machine-readable contract.
# ----------------------------------------------------------------------------


def contract(saved_model_dir: str, tag_set: Optional[TagSet] = None) -> Dict[str, Any]:
  """Returns the serving contract of a SavedModel as plain JSON-able data.

  Every mapping is built in sorted key order, so `json.dumps` gives the same
  text with or without `sort_keys=True`. The format::

      {
        "contract_version": 1,
        "signatures": {
          "gpu,serve": {...},
          "serve": {                                    # tags sorted, ','-joined
            "serving_default": {
              "inputs": {
                "x": {"dtype": "DT_FLOAT", "encoding": "dense", "name": "x:0",
                      "shape": [-1, 3]},
              },
              "method_name": "tensorflow/serving/predict",
              "outputs": {...},                         # same as inputs
            },
          },
        },
        "tag_sets": [["gpu", "serve"], ["serve"]],     # each sorted; sorted
      }

  * "shape": dim sizes with -1 for an unknown dim, [] for a scalar, null for
    an unknown rank (and for composite tensors, whose shape is in their
    TypeSpec).
  * "encoding": "dense", "sparse" (a COO SparseTensor; "name" is its values
    tensor), "composite" (e.g. a RaggedTensor; "name" is null) or "none".
  * every tag-set has an entry in "signatures", possibly {}. TF2's internal
    `__saved_model_init_op` SignatureDef is left out: TF Serving never serves
    it.

  Args:
    saved_model_dir: the SavedModel (version) directory.
    tag_set: only the MetaGraph tagged exactly this ('serve,gpu' or
      ['serve', 'gpu'], order ignored, as `show`); None: every MetaGraph.

  Returns:
    The contract dict; `json.dumps` accepts it as is.

  Raises:
    ContractError: see `read_saved_model`; or no MetaGraph has `tag_set`
      (the message lists the tag-sets there are).
  """
  saved_model = read_saved_model(saved_model_dir)
  if tag_set is None:
    meta_graphs = list(saved_model.meta_graphs)
  else:
    meta_graphs = [find_meta_graph(saved_model, tag_set, saved_model_dir)]
  by_tag_set = {tag_key(mg.meta_info_def.tags): mg for mg in meta_graphs}
  return {
      'contract_version': CONTRACT_VERSION,
      'signatures': {key: _meta_graph_contract(by_tag_set[key]) for key in sorted(by_tag_set)},
      'tag_sets': sorted(sorted(set(mg.meta_info_def.tags)) for mg in meta_graphs),
  }


def _meta_graph_contract(meta_graph: meta_graph_pb2.MetaGraphDef) -> Dict[str, Any]:
  keys = sorted(key for key in meta_graph.signature_def
                if not key.startswith(INTERNAL_SIGNATURE_PREFIX))
  return {key: _signature_contract(meta_graph.signature_def[key]) for key in keys}


def _signature_contract(signature: meta_graph_pb2.SignatureDef) -> Dict[str, Any]:
  return {
      'inputs': {key: _tensor_contract(signature.inputs[key])
                 for key in sorted(signature.inputs)},
      'method_name': signature.method_name,
      'outputs': {key: _tensor_contract(signature.outputs[key])
                  for key in sorted(signature.outputs)},
  }


def _tensor_contract(info: meta_graph_pb2.TensorInfo) -> Dict[str, Any]:
  encoding = _ENCODINGS.get(info.WhichOneof('encoding'), 'none')
  if encoding == 'sparse':
    name = info.coo_sparse.values_tensor_name
  elif encoding == 'composite':
    name = None
  else:
    name = info.name
  shape = None if encoding == 'composite' else shape_dims(info.tensor_shape)
  return {'dtype': dtype_name(info.dtype), 'encoding': encoding, 'name': name,
          'shape': shape}


# ----------------------------------------------------------------------------
# diff_contracts(): breaking and compatible changes.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Change:
  """One difference between two serving contracts.

  Attributes:
    kind: 'breaking' (an existing client can fail) or 'compatible'.
    path: where, e.g. 'serve/serving_default/inputs/x' (tag-set key, then
      signature, then 'inputs' or 'outputs' and the tensor key).
    description: what changed, e.g. 'dtype DT_FLOAT -> DT_INT64'.
  """
  kind: str
  path: str
  description: str

  @property
  def breaking(self) -> bool:
    return self.kind == BREAKING

  def __str__(self) -> str:
    label = 'BREAKING ' if self.breaking else 'compatible'
    return f'{label} {self.path}: {self.description}'


def diff(old_dir: str, new_dir: str, tag_set: Optional[TagSet] = None) -> List[Change]:
  """The changes from the contract of `old_dir` to that of `new_dir`.

  Args:
    old_dir, new_dir: SavedModel (version) directories.
    tag_set: compare only the MetaGraphs tagged exactly this (the one a server
      started with `--saved_model_tags` loads); both exports must have it.
      None: every tag-set (one missing from the new export is a breaking
      change).

  Raises:
    ContractError: see `contract`; with `tag_set`, either export lacks it (the
      message names the directory and lists its tag-sets).
  """
  return diff_contracts(contract(old_dir, tag_set), contract(new_dir, tag_set))


def diff_contracts(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[Change]:
  """Classifies every difference between two `contract()` dicts.

  Breaking (an existing client can fail):
    tag-set removed; signature removed; method name changed; input removed;
    input added (existing clients do not send it); input or output dtype or
    encoding changed; output removed; input shape narrowed (rank changed, a -1
    dim became fixed, a fixed dim changed, an unknown rank became known);
    output shape widened or changed (rank changed, a fixed dim became -1 or
    changed, a known rank became unknown).
  Compatible:
    tag-set or signature added; output added; input shape widened (a fixed dim
    became -1, a known rank became unknown); output shape narrowed (a -1 dim
    became fixed, an unknown rank became known); tensor name changed (clients
    address tensors by key).

  Outputs are judged the other way round from inputs: a client can always
  send what a wider input accepts, but it may rely on every guarantee an
  output's shape gave it.

  Args:
    old: the contract clients were written against.
    new: the candidate contract.

  Returns:
    The changes, ordered by path.

  Raises:
    ContractError: either argument is not a contract dict.
  """
  old_sigs, new_sigs = _contract_signatures(old, 'old'), _contract_signatures(new, 'new')
  changes = []
  for key in sorted(set(old_sigs) | set(new_sigs)):
    if key not in new_sigs:
      changes.append(Change(BREAKING, key, 'tag-set removed'))
    elif key not in old_sigs:
      changes.append(Change(COMPATIBLE, key, 'tag-set added'))
    else:
      changes.extend(_diff_tag_set(key, old_sigs[key], new_sigs[key]))
  return changes


def _contract_signatures(value: Any, which: str) -> Mapping[str, Any]:
  """value['signatures'], checking that `value` looks like a contract."""
  if not isinstance(value, Mapping) or not isinstance(value.get('signatures'), Mapping):
    raise ContractError(f'the {which} contract is not a contract dict',
                        value=type(value).__name__,
                        fix="pass what contract(saved_model_dir) returns (it has 'signatures')")
  return value['signatures']


def _diff_tag_set(tag_key: str, old: Mapping[str, Any],
                  new: Mapping[str, Any]) -> List[Change]:
  changes = []
  for name in sorted(set(old) | set(new)):
    path = f'{tag_key}/{name}'
    if name not in new:
      changes.append(Change(BREAKING, path, 'signature removed'))
    elif name not in old:
      changes.append(Change(COMPATIBLE, path, 'signature added'))
    else:
      changes.extend(_diff_signature(path, old[name], new[name]))
  return changes


def _diff_signature(path: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> List[Change]:
  changes = []
  if old.get('method_name') != new.get('method_name'):
    changes.append(Change(BREAKING, path,
                          f"method name {old.get('method_name')} -> {new.get('method_name')}"))
  changes.extend(_diff_tensors(f'{path}/inputs', old.get('inputs', {}),
                               new.get('inputs', {}), is_input=True))
  changes.extend(_diff_tensors(f'{path}/outputs', old.get('outputs', {}),
                               new.get('outputs', {}), is_input=False))
  return changes


def _diff_tensors(path: str, old: Mapping[str, Any], new: Mapping[str, Any],
                  is_input: bool) -> List[Change]:
  noun = 'input' if is_input else 'output'
  changes = []
  for key in sorted(set(old) | set(new)):
    tensor_path = f'{path}/{key}'
    if key not in new:
      changes.append(Change(BREAKING, tensor_path, f'{noun} removed'))
    elif key not in old:
      if is_input:
        changes.append(Change(BREAKING, tensor_path,
                              'input added (existing clients do not send it)'))
      else:
        changes.append(Change(COMPATIBLE, tensor_path, 'output added'))
    else:
      changes.extend(_diff_tensor(tensor_path, old[key], new[key], is_input))
  return changes


def _diff_tensor(path: str, old: Mapping[str, Any], new: Mapping[str, Any],
                 is_input: bool) -> List[Change]:
  changes = []
  for field in ('encoding', 'dtype'):
    if old.get(field) != new.get(field):
      changes.append(Change(BREAKING, path, f'{field} {old.get(field)} -> {new.get(field)}'))
  old_shape, new_shape = old.get('shape'), new.get('shape')
  if old_shape != new_shape:
    kind, how = _shape_change(old_shape, new_shape, is_input)
    changes.append(Change(kind, path, f'shape {shape_text(old_shape)} -> '
                                      f'{shape_text(new_shape)} ({how})'))
  if old.get('name') != new.get('name'):
    changes.append(Change(COMPATIBLE, path, f"tensor name {old.get('name')} -> "
                                            f"{new.get('name')}"))
  return changes


def _shape_change(old: Optional[Sequence[int]], new: Optional[Sequence[int]],
                  is_input: bool) -> Tuple[str, str]:
  """(kind, 'widened' | 'narrowed' | 'changed') for two different shapes."""
  how = _compare_shapes(old, new)
  if how == 'changed':
    return BREAKING, how
  widened = how == 'widened'
  return (COMPATIBLE if widened == is_input else BREAKING), how


def _compare_shapes(old: Optional[Sequence[int]], new: Optional[Sequence[int]]) -> str:
  """'widened' (new accepts a superset), 'narrowed' (a subset) or 'changed'."""
  if new is None:
    return 'widened'
  if old is None:
    return 'narrowed'
  if len(old) != len(new):
    return 'changed'
  pairs = [(o, n) for o, n in zip(old, new) if o != n]
  if all(n == -1 for _, n in pairs):
    return 'widened'
  if all(o == -1 for o, _ in pairs):
    return 'narrowed'
  return 'changed'


def format_changes(changes: Sequence[Change]) -> str:
  """One line per change ('BREAKING  path: what' / 'compatible path: what').

  Returns 'no changes' for an empty list. There is no trailing newline.
  """
  if not changes:
    return 'no changes'
  return '\n'.join(str(change) for change in changes)


__all__ = ('BREAKING', 'COMPATIBLE', 'CONTRACT_VERSION', 'Change', 'contract', 'diff',
           'diff_contracts', 'format_changes', 'show')
