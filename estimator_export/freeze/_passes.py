"""Optimisation passes on frozen GraphDefs and the check that they change nothing.

Private to estimator_export.freeze. Every pass takes a frozen GraphDef and the
names of the nodes it must keep (inputs, outputs, the table init op) and returns
a new GraphDef; the input proto is never modified.

  strip_unused           keep only what the protected nodes depend on
  remove_training_nodes  drop Identity/CheckNumerics (tf.compat.v1.graph_util)
  fold_constants         evaluate every subgraph that depends only on constants
  fold_shapes            constant Reshape targets for fixed shapes (_rewrites)
  fuse_dense             tensordot's MatMul+Reshape+Add as MatMul+BiasAdd (_rewrites)
  fold_batch_norms       fold BatchNorm (fused, or Mul+Add after folding) and
                         BiasAdd into the weights of the Conv2D/MatMul before it
  fold_scales            divisions by constants, attention score scales (_rewrites)
  prune_rows             only the sequence position a slice reads (_prune_rows)
"""
from typing import Dict, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

from estimator_export import validate as validate_lib
from estimator_export.errors import FreezeError
from estimator_export.freeze import _graph as graph_lib
from estimator_export.freeze import _prune_rows as prune_rows_lib
from estimator_export.freeze import _rewrites as rewrites_lib

PASSES = ('strip_unused', 'remove_training_nodes', 'fold_constants', 'fold_shapes',
          'fuse_dense', 'fold_batch_norms', 'fold_scales', 'prune_rows')
# The passes of _rewrites (see there): name -> (function, what its count counts).
_REWRITES = {'fold_shapes': (rewrites_lib.fold_shapes, 'Reshapes/Transposes simplified'),
             'fuse_dense': (rewrites_lib.fuse_dense, 'dense layers now MatMul+BiasAdd'),
             'fold_scales': (rewrites_lib.fold_scales, 'scales folded'),
             'prune_rows': (prune_rows_lib.prune_rows, 'ops now at the one position read')}

_CONTROL_FLOW_OPS = frozenset({'Enter', 'Exit', 'Merge', 'Switch', 'NextIteration', 'LoopCond',
                               'RefEnter', 'RefExit', 'RefMerge', 'RefSwitch'})
_NEVER_FOLD_OPS = frozenset({'Placeholder', 'PlaceholderWithDefault', 'PlaceholderV2'})
# Ops whose folded result can be much larger than their inputs.
_EXPANDING_OPS = frozenset({'Fill', 'Tile', 'BroadcastTo', 'Pad', 'PadV2', 'MirrorPad',
                            'OneHot', 'Range', 'ZerosLike', 'OnesLike'})
_EXPANDED_LIMIT_BYTES = 1 << 20
_FUSED_BATCH_NORMS = frozenset({'FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3'})


def run_graph_def(graph_def, fetches: Sequence[str], feeds: Mapping[str, np.ndarray],
                  init_op: Optional[str] = None,
                  asset_feeds: Optional[Mapping[str, str]] = None,
                  config: Optional[tf.compat.v1.ConfigProto] = None) -> List[np.ndarray]:
  """Imports graph_def into a fresh graph, runs init_op, then fetches tensors by name.

  Args:
    graph_def: a frozen GraphDef.
    fetches: tensor names ('op:0').
    feeds: tensor name -> numpy array.
    init_op: a node to run first (table initializers), or None.
    asset_feeds: tensor name -> file path, fed while running init_op.
    config: the session's ConfigProto (None: TF's default).
  """
  graph = graph_lib.import_graph_def(graph_def)
  with tf.compat.v1.Session(graph=graph, config=config) as session:
    if init_op:
      session.run(init_op, feed_dict=dict(asset_feeds or {}) or None)
    return session.run(list(fetches), feed_dict=dict(feeds))


def compare_outputs(expected: Mapping[str, np.ndarray], got: Mapping[str, np.ndarray],
                    rtol: float, atol: float, stage: str) -> Dict[str, float]:
  """Max absolute difference per output; FreezeError naming the first that differs.

  The check is validate.compare_arrays: float outputs must satisfy
  |got - expected| <= atol + rtol * |expected|; others (ints, strings, bools)
  must be equal.
  """
  diffs = {}
  for key in sorted(expected):
    want, have = np.asarray(expected[key]), np.asarray(got[key])
    if want.shape != have.shape:
      raise FreezeError(f'output {key!r} changed shape {stage}', value=have.shape,
                        fix=f'the model gives shape {want.shape}; run without this step '
                        'and report the graph')
    ok, diff = validate_lib.compare_arrays(want, have, rtol, atol)
    diffs[key] = diff
    if not ok:
      raise FreezeError(
          f'output {key!r} differs from the unfrozen model {stage} by up to {diff:.3g} '
          f'(rtol={rtol}, atol={atol})', value=key,
          fix='leave that step out (optimizations=...), or loosen rtol/atol if the '
          'difference is acceptable')
  return diffs


_GRADIENT_ONLY_OPS = frozenset({'StopGradient', 'PreventGradient'})


def remove_training_nodes(graph_def, keep: Sequence[str]):
  """Identity, CheckNumerics (tf.compat.v1.graph_util) and StopGradient nodes removed.

  StopGradient/PreventGradient only matter to gradients; their consumers read
  their input instead. Protected nodes stay.
  """
  result = tf.compat.v1.graph_util.remove_training_nodes(graph_def, protected_nodes=list(keep))
  protected = {graph_lib.node_name(k) for k in keep}
  bypass = {n.name: n.input[0] for n in result.node
            if n.op in _GRADIENT_ONLY_OPS and n.name not in protected and n.input}
  return graph_lib.bypass_nodes(result, bypass) if bypass else result


# ----- constant folding -----

def _foldable_ops(graph: tf.Graph) -> Set[str]:
  """Names of ops whose value depends only on constants (no feeds, no state)."""
  foldable = set()
  for op in graph.get_operations():  # Imported graphs list ops in topological order.
    if op.type == 'Const':
      foldable.add(op.name)
      continue
    if (op.type in _NEVER_FOLD_OPS or op.type in _CONTROL_FLOW_OPS or not op.inputs
        or op.op_def.is_stateful):
      continue
    if any(t.dtype in (tf.resource, tf.variant) for t in list(op.inputs) + list(op.outputs)):
      continue
    if all(t.op.name in foldable for t in op.inputs) and all(
        c.name in foldable for c in op.control_inputs):
      foldable.add(op.name)
  return foldable


def fold_constants(graph_def, keep: Sequence[str]):
  """Replaces each maximal constant-only subgraph by the Const of its value.

  Returns:
    (new GraphDef, number of nodes replaced by constants).
  """
  graph = graph_lib.import_graph_def(graph_def)
  foldable = _foldable_ops(graph)
  protected = {graph_lib.node_name(k) for k in keep}
  users_of = graph_lib.consumers(graph_def)
  frontier = []
  for op in graph.get_operations():
    if op.name not in foldable or op.type == 'Const' or len(op.outputs) != 1:
      continue
    if op.name in protected or any(u not in foldable for u in users_of.get(op.name, [])):
      frontier.append(op)
  if not frontier:
    return graph_def, 0
  with tf.compat.v1.Session(graph=graph) as session:
    values = session.run([op.outputs[0] for op in frontier])
  replacements = {}
  for op, value in zip(frontier, values):
    value = np.asarray(value)
    if op.type in _EXPANDING_OPS and value.nbytes > _EXPANDED_LIMIT_BYTES:
      continue
    node = tf.compat.v1.NodeDef(name=op.name, op='Const')
    node.attr['dtype'].type = op.outputs[0].dtype.as_datatype_enum
    node.attr['value'].tensor.CopyFrom(
        tf.make_tensor_proto(value, dtype=op.outputs[0].dtype, shape=value.shape))
    replacements[op.name] = node
  folded = tf.compat.v1.GraphDef()
  folded.versions.CopyFrom(graph_def.versions)
  folded.library.CopyFrom(graph_def.library)
  for node in graph_def.node:
    folded.node.append(replacements.get(node.name, node))
  return graph_lib.strip_unused(folded, keep), len(replacements)


# ----- batch norm folding -----

def _other_input(node, name: str) -> Optional[str]:
  data = [i for i in node.input if not i.startswith('^')]
  if len(data) != 2:
    return None
  names = [graph_lib.node_name(i) for i in data]
  if names[0] == name:
    return data[1]
  if names[1] == name:
    return data[0]
  return None


def _per_channel(value: Optional[np.ndarray], channels: int) -> Optional[np.ndarray]:
  """value as a [channels] vector if it is a scalar or a [channels] vector, else None."""
  if value is None or value.dtype != np.float32:
    return None
  if value.size == 1 and value.ndim <= 1:
    return np.full([channels], value.reshape(-1)[0], np.float32)
  if value.shape == (channels,):
    return value
  return None


def _fold_one(g: graph_lib.GraphIndex, base) -> bool:
  """Folds the affine ops after one Conv2D/MatMul into its weights; True if it did."""
  if base.op == 'Conv2D':
    if base.attr['data_format'].s not in (b'', b'NHWC'):
      return False
    axis = 3
  elif base.op == 'MatMul':
    if base.attr['transpose_a'].b:
      return False
    axis = 0 if base.attr['transpose_b'].b else 1
  else:
    return False
  weights = g.const(base.input[1])
  if weights is None or weights.dtype != np.float32:
    return False
  channels = weights.shape[axis]
  bias = np.zeros([channels], np.float32)
  cur, nxt = base, g.sole_user(base)
  if nxt is not None and nxt.op in ('BiasAdd', 'Add', 'AddV2'):
    if nxt.op == 'BiasAdd' and nxt.attr['data_format'].s not in (b'', b'NHWC'):
      return False
    other = _other_input(nxt, cur.name)
    value = _per_channel(g.const(other), channels) if other else None
    if value is not None and (nxt.op == 'BiasAdd' or value.shape == g.const(other).shape):
      bias = value
      cur, nxt = nxt, g.sole_user(nxt)
  if nxt is None:
    return False
  if nxt.op in _FUSED_BATCH_NORMS:
    params = [g.const(i) for i in nxt.input[1:5]]
    if (nxt.attr['is_training'].b or any(p is None for p in params)
        or nxt.attr['data_format'].s not in (b'', b'NHWC') or base.op != 'Conv2D'
        or _uses_beyond_first(g, nxt.name)):
      return False
    gamma, beta, mean, variance = (p.astype(np.float32) for p in params)
    scale = gamma / np.sqrt(variance + nxt.attr['epsilon'].f)
    shift, end = beta - mean * scale, nxt
  elif nxt.op == 'Mul':
    other = _other_input(nxt, cur.name)
    scale = _per_channel(g.const(other), channels) if other else None
    if scale is None or g.const(other).ndim > 1:
      return False
    shift, end = np.zeros([channels], np.float32), nxt
    after = g.sole_user(nxt)
    if after is not None and after.op in ('Add', 'AddV2'):
      other = _other_input(after, nxt.name)
      value = _per_channel(g.const(other), channels) if other else None
      if value is not None and g.const(other).ndim <= 1:
        shift, end = value, after
  else:
    return False
  shape = [1] * weights.ndim
  shape[axis] = channels
  base.input[1] = g.add_const(base.name + '/folded_weights', weights * scale.reshape(shape),
                              tf.float32)
  bias_name = g.add_const(end.name + '/folded_bias', bias * scale + shift, tf.float32)
  name = end.name
  end.Clear()
  end.name = name
  end.op = 'BiasAdd'
  end.input.extend([base.name, bias_name])
  end.attr['T'].type = tf.float32.as_datatype_enum
  g.refresh()
  return True


def _uses_beyond_first(g: graph_lib.GraphIndex, name: str) -> List[str]:
  """Inputs of other nodes that read outputs 1.. of node `name`."""
  found = []
  for user in g.users.get(name, []):
    for inp in g.by_name[user].input:
      if graph_lib.node_name(inp) == name and ':' in inp and not inp.endswith(':0'):
        found.append(user)
  return found


def fold_batch_norms(graph_def, keep: Sequence[str]):
  """Folds inference BatchNorm and bias/scale chains into Conv2D/MatMul weights.

  Patterns (all float32, constants reached through Identity nodes):
    Conv2D(x, W) [+ BiasAdd(b)] -> FusedBatchNorm*(is_training=False)
    Conv2D|MatMul(x, W) [+ BiasAdd|Add(b)] -> Mul(s) [-> Add(t)]   (unfused BN
      after fold_constants: s = gamma * rsqrt(var + eps), t = beta - mean * s)
  become Conv2D|MatMul(x, W * s) -> BiasAdd(b * s + t), under the last node's name.

  Returns:
    (new GraphDef, number of folds).
  """
  folded = graph_lib.copy_graph_def(graph_def)
  g = graph_lib.GraphIndex(folded, keep)
  count = 0
  for name in [n.name for n in folded.node if n.op in ('Conv2D', 'MatMul')]:
    if _fold_one(g, g.by_name[name]):
      count += 1
  return (graph_lib.strip_unused(folded, keep) if count else folded), count


def apply_pass(name: str, graph_def, keep: Sequence[str]) -> Tuple[object, str]:
  """Runs one pass by name; returns (new GraphDef, a short note on what it did)."""
  before = len(graph_def.node)
  if name == 'strip_unused':
    result = graph_lib.strip_unused(graph_def, keep)
    note = f'{before - len(result.node)} nodes removed'
  elif name == 'remove_training_nodes':
    result = remove_training_nodes(graph_def, keep)
    note = f'{before - len(result.node)} nodes removed'
  elif name == 'fold_constants':
    result, count = fold_constants(graph_def, keep)
    note = f'{count} subgraphs folded, {before - len(result.node)} nodes fewer'
  elif name in _REWRITES:
    fn, what = _REWRITES[name]
    result, count = fn(graph_def, keep)
    note = f'{count} {what}, {before - len(result.node)} nodes fewer'
  elif name == 'fold_batch_norms':
    result, count = fold_batch_norms(graph_def, keep)
    note = f'{count} folded into weights'
  else:
    raise FreezeError('unknown optimization', value=name,
                      fix=f'use some of {list(PASSES)}')
  return result, note
