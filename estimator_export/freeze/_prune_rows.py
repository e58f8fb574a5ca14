"""The prune_rows pass: compute only the sequence position a slice keeps.

Private to estimator_export.freeze. A BERT classifier reads one position of the
last encoder layer (the pooler's `sequence_output[:, 0, :]`), yet the graph
computes that layer for every position. Everything after the last attention's
keys and values is position-wise (dense layers on [batch * seq, width], GELU,
residual adds, LayerNorm over the width) and the attention's queries are too,
so the slice can move up to where the keys and values are read: for
MiniLM-sized BERT at seq 128 that removes the query projection, the attention
output, the feed-forward block and 127 of 128 score rows of the last layer,
about 14% of the encoder's matmul FLOPs.

The pass walks up from a StridedSlice that keeps one index of axis 1 of a
[batch, seq, ...] tensor. It tracks, for each tensor it reaches, which axis
holds the sequence (it moves with Transpose; `merged` when a Reshape folded it
into the batch: [batch * seq, width], row = b * seq + position) and rebuilds
each op on its sliced inputs: position-wise ops as they are, Reshape targets
with the sequence extent 1, reductions and softmax over other axes, the left
operand's rows of a (Batch)MatMul. A node moves only if everything reading it
moves too (else it is computed in full anyway): there the walk stops and
slices the tensor instead. Static shapes come from TF's shape inference with
the batch set to a probe value; fold_shapes must have made Reshape targets
constant first. Any op it does not know stops the walk the same way.
"""
from typing import Dict, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from estimator_export.freeze import _graph as graph_lib

_PROBE_BATCH = 7919
MERGED = 'merged'
Axis = Union[int, str]

_UNARY = frozenset({'Identity', 'Erf', 'Tanh', 'Rsqrt', 'Sqrt', 'Relu', 'Relu6', 'Sigmoid',
                    'Square', 'Neg', 'Exp', 'Log', 'Abs', 'Elu', 'Selu', 'Softplus', 'Cast'})
_BINARY = frozenset({'Add', 'AddV2', 'Sub', 'Mul', 'RealDiv', 'SquaredDifference', 'Maximum',
                     'Minimum', 'BiasAdd'})
_REDUCE = frozenset({'Mean', 'Sum', 'Max', 'Min'})
_MOVABLE = _UNARY | _BINARY | _REDUCE | {'Softmax', 'Reshape', 'Transpose', 'MatMul',
                                         'BatchMatMulV2', 'BatchMatMul'}


class _Pruner:
  """One rewrite from one seed slice; new nodes go into `graph_def` (a copy)."""

  def __init__(self, graph_def, shapes, dtypes, keep: Sequence[str], seq: int, position: int):
    self.index = graph_lib.GraphIndex(graph_def, keep)
    self.by_name, self.users = self.index.by_name, self.index.users
    self.shapes = shapes  # tensor name -> static dims with the probe batch
    self.dtypes = dtypes  # tensor name -> DataType enum
    self.seq, self.position = seq, position
    self.region: Dict[str, Axis] = {}  # node name -> the axis it moves along
    self.wanted: Dict[Tuple[str, int], Axis] = {}
    self.done: Dict[Tuple[str, Axis], str] = {}
    self.moved = 0

  # ----- which nodes move -----

  def grow_region(self, seed: str):
    """Finds the nodes to move: of a known kind, and read only sliced by the seed or by
    each other (a node also read whole stays, and the walk slices its output)."""
    self.wanted = {(seed, 0): 1}  # (reader, input index) -> axis it reads sliced
    pending = [graph_lib.node_name(self.by_name[seed].input[0])]
    while pending:
      name = pending.pop()
      node = self.by_name.get(name)
      if node is None or name in self.region or name in self.index.protected:
        continue
      axes = set()
      for user in self.users.get(name, []):
        for i, tensor in enumerate(self.by_name[user].input):
          if graph_lib.node_name(tensor) == name:
            axes.add(self.wanted.get((user, i)) if ':' not in tensor or tensor.endswith(
                ':0') else None)
      if len(axes) != 1 or None in axes:
        continue  # Read whole somewhere, or sliced along two different axes.
      axis = axes.pop()
      plan = self._plan(node, axis)
      if plan is None:
        continue
      self.region[name] = axis
      for i, input_axis in plan.items():
        self.wanted[(name, i)] = input_axis
        pending.append(graph_lib.node_name(node.input[i]))

  def _plan(self, node, axis: Axis) -> Optional[Dict[int, Axis]]:
    """{input index: axis} of the inputs `node` reads sliced when moved along `axis`;
    None if no rule covers it (the other inputs are read whole)."""
    out = self._shape(node.name)
    if out is None or any(i.startswith('^') for i in node.input):
      return None
    rank, data = len(out), node.input
    if node.op in _UNARY or node.op == 'Softmax':
      if node.op == 'Softmax' and axis != MERGED and axis == rank - 1:
        return None
      return {0: axis}
    if node.op in _BINARY:
      plan = {}
      for i, tensor in enumerate(data):
        shape = self._shape(tensor)
        if shape is None:
          return None
        aligned = (0 if axis == MERGED else axis) - (rank - len(shape))
        if aligned < 0 or shape[aligned] == 1:
          continue  # Broadcast along the sequence: the same for every position.
        if axis == MERGED and aligned == 0 and shape[0] == out[0]:
          plan[i] = MERGED
        elif axis != MERGED and shape[aligned] == self.seq:
          plan[i] = aligned
        else:
          return None
      return plan
    if node.op in _REDUCE:
      reduced = self.index.const(data[1])
      if reduced is None or not node.attr['keep_dims'].b:
        return None
      if (0 if axis == MERGED else axis) in {int(a) % rank for a in np.reshape(reduced, [-1])}:
        return None
      return {0: axis}
    if node.op == 'Transpose':
      perm = self.index.const(data[1])
      return None if perm is None or axis == MERGED else {0: int(perm[axis])}
    if node.op == 'MatMul':
      return None if axis != MERGED or node.attr['transpose_a'].b else {0: MERGED}
    if node.op in ('BatchMatMulV2', 'BatchMatMul'):
      x_shape = self._shape(data[0])
      if (axis == MERGED or axis != rank - 2 or node.attr['adj_x'].b or x_shape is None
          or len(x_shape) != rank):
        return None
      return {0: rank - 2}
    if node.op == 'Reshape':
      target, in_shape = self.index.const(data[1]), self._shape(data[0])
      if target is None or in_shape is None or target.ndim != 1 or target[0] != -1:
        return None
      in_axis = self._layout(in_shape)
      if in_axis is None or self._layout(out) != axis or (axis == 1 and target[1] != self.seq):
        return None
      return {0: in_axis}
    return None

  def _layout(self, shape) -> Optional[Axis]:
    if shape and shape[0] == _PROBE_BATCH * self.seq:
      return MERGED
    if len(shape) > 1 and shape[0] == _PROBE_BATCH and shape[1] == self.seq:
      return 1
    return None

  # ----- building the sliced graph -----

  def _shape(self, tensor: str):
    return self.shapes.get(graph_lib.tensor_name(tensor))

  def _slice(self, tensor: str, axis: Axis) -> str:
    """tensor restricted to the kept position along `axis`, as a new StridedSlice."""
    rank = len(self._shape(tensor))
    begin, end, strides = (np.zeros(rank, np.int32), np.zeros(rank, np.int32),
                           np.ones(rank, np.int32))
    if axis == MERGED:  # Rows position, position + seq, ...: one per batch element.
      begin[0], strides[0] = self.position, self.seq
      begin_mask, end_mask = (1 << rank) - 2, (1 << rank) - 1
    else:
      begin[axis], end[axis] = self.position, self.position + 1
      begin_mask = end_mask = ((1 << rank) - 1) & ~(1 << axis)
    base = graph_lib.node_name(tensor) + '/kept_position'
    node = self.index.add_node(base, 'StridedSlice')
    node.input.extend([tensor, self.index.add_const(base + '/begin', begin),
                       self.index.add_const(base + '/end', end),
                       self.index.add_const(base + '/strides', strides)])
    node.attr['T'].type = self.dtypes[graph_lib.tensor_name(tensor)]
    node.attr['Index'].type = tf.int32.as_datatype_enum
    node.attr['begin_mask'].i, node.attr['end_mask'].i = begin_mask, end_mask
    return node.name

  def sliced(self, tensor: str, axis: Axis) -> str:
    """The name of a tensor equal to `tensor` at the kept position along `axis`."""
    key = (tensor, axis)
    if key not in self.done:
      name = graph_lib.node_name(tensor)
      if self.region.get(name) == axis and (':' not in tensor or tensor.endswith(':0')):
        self.done[key] = self._move(self.by_name[name], axis)
      else:
        self.done[key] = self._slice(tensor, axis)
    return self.done[key]

  def _move(self, node, axis: Axis) -> str:
    """node rebuilt on its sliced inputs (the plan grow_region made for it)."""
    inputs = list(node.input)
    for i, input_axis in self._plan(node, axis).items():
      inputs[i] = self.sliced(inputs[i], input_axis)
    if node.op == 'Reshape' and axis == 1:
      target = self.index.const(node.input[1]).copy()
      target[1] = 1
      inputs[1] = self.index.add_const(node.name + '/kept_position/shape', target)
    return self._copy_of(node, inputs)

  def _copy_of(self, node, inputs) -> str:
    copy = self.index.add_node(node.name + '/kept_position', node.op)
    for key, value in node.attr.items():
      copy.attr[key].CopyFrom(value)
    copy.input.extend(inputs)
    self.moved += 1
    return copy.name


def _seed(node, shapes, by_name) -> Optional[Tuple[int, int]]:
  """(seq, position) if node is x[:, position, ...] of a [batch, seq, ...] x; else None."""
  if node.op != 'StridedSlice' or len(node.input) != 4:
    return None
  shape = shapes.get(graph_lib.tensor_name(node.input[0]))
  if shape is None or len(shape) < 3 or shape[0] != _PROBE_BATCH or shape[1] in (None, 1):
    return None
  values = []
  for tensor in node.input[1:]:
    const = by_name.get(graph_lib.node_name(tensor))
    if const is None or const.op != 'Const':
      return None
    values.append(tf.make_ndarray(const.attr['value'].tensor))
  begin, end, strides = values
  rank = len(shape)
  others = ((1 << rank) - 1) & ~2
  if (len(begin) != rank or any(strides != 1) or node.attr['ellipsis_mask'].i
      or node.attr['new_axis_mask'].i or node.attr['begin_mask'].i != others
      or node.attr['end_mask'].i != others or node.attr['shrink_axis_mask'].i not in (0, 2)):
    return None
  position = int(begin[1])
  if not 0 <= position < shape[1] or int(end[1]) != position + 1:
    return None
  return int(shape[1]), position


def _static_shapes(graph_def) -> Tuple[Dict[str, list], Dict[str, int]]:
  """(tensor name -> dims, tensor name -> DataType enum), the batch set to the probe."""
  graph = graph_lib.import_with_batch(graph_def, _PROBE_BATCH)
  if graph is None:
    return {}, {}
  tensors = [t for op in graph.get_operations() for t in op.outputs]
  return ({t.name: t.shape.as_list() for t in tensors if t.shape.rank is not None},
          {t.name: t.dtype.as_datatype_enum for t in tensors})


def prune_rows(graph_def, keep: Sequence[str]):
  """Moves single-position slices of [batch, seq, ...] tensors up the graph (module doc).

  Returns:
    (new GraphDef, number of ops now computed at one position).
  """
  shapes, dtypes = _static_shapes(graph_def)
  result = graph_lib.copy_graph_def(graph_def)
  moved = 0
  by_name = {n.name: n for n in result.node}
  for seed_name in [n.name for n in result.node]:
    seed = by_name[seed_name]
    found = _seed(seed, shapes, by_name)
    if found is None:
      continue
    pruner = _Pruner(result, shapes, dtypes, keep, *found)
    pruner.grow_region(seed_name)
    if not pruner.region:
      continue
    source = pruner.sliced(seed.input[0], 1)
    begin, end = seed.input[1], seed.input[2]
    position = found[1]
    seed.input[0] = source
    # The sliced tensor has one position left: index 0 of it.
    seed.input[1] = pruner.index.add_const(seed_name + '/kept_begin',
                                           _shifted(by_name, begin, position))
    seed.input[2] = pruner.index.add_const(seed_name + '/kept_end',
                                           _shifted(by_name, end, position))
    moved += pruner.moved
    by_name = {n.name: n for n in result.node}
  if not moved:
    return graph_def, 0
  return graph_lib.strip_unused(result, keep), moved


def _shifted(by_name, tensor: str, position: int) -> np.ndarray:
  value = tf.make_ndarray(by_name[graph_lib.node_name(tensor)].attr['value'].tensor).copy()
  value[1] -= position
  return value
