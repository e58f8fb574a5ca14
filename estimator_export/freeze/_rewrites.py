"""Graph rewrites for transformer encoders on CPU: fewer, larger kernels, same values.

Private to estimator_export.freeze (passes of FreezeOptions.optimizations, run
after fold_constants and checked on samples like every pass). Each takes a
frozen GraphDef and the names to keep, returns (new GraphDef, count), and
leaves the input proto alone.

  fold_shapes   Reshape targets computed at run time from Shape ops (tf.tensordot,
                split-heads) become constants when only the batch dimension varies
                (a fixed sequence length); identity Transposes (tf.tensordot's)
                are dropped.
  fuse_dense    MatMul -> Reshape -> Add(bias), tf.tensordot's form of a dense
                layer on [batch, seq, width], becomes MatMul -> BiasAdd -> Reshape,
                which grappler's remapper fuses into one _FusedMatMul; a 2-D
                MatMul -> Add(bias) becomes MatMul -> BiasAdd.
  fold_scales   x / c becomes x * (1 / c) for a float constant c (GELU's x / sqrt(2));
                attention's scores * c, with the query from a dense layer through
                Reshape/Transpose, becomes scores of a query whose weights and bias
                are multiplied by c (one multiply over [batch, heads, seq, seq] gone);
                a scalar factor on the way into a dense layer (GELU's 0.5 * x)
                moves into that layer's weights.

TF 2.15's CPU kernels (Eigen, the default on CPUs without AVX-512) have no fused
GELU or LayerNorm; oneDNN's (_MklFusedMatMul with GeluExact, _MklLayerNorm) run
only when TF_ENABLE_ONEDNN_OPTS=1, so no pass targets them.
"""
from typing import List, Optional, Sequence

import numpy as np
import tensorflow as tf

from estimator_export.freeze import _graph as graph_lib

_ADDS = ('Add', 'AddV2')
# Ops a query tensor may pass through between its dense layer and the scores, each
# linear in its input, so a scale commutes with them.
_SCALE_TRANSPARENT = frozenset({'Reshape', 'Transpose', 'Identity'})


# ----- fold_shapes -----

# Two batch sizes no real shape arithmetic maps to the same value by accident.
_PROBE_BATCHES = (7919, 7907)


def _reshape_targets(graph_def, batch: int):
  """Reshape name -> static output dims when the inputs' batch is `batch`."""
  graph = graph_lib.import_with_batch(graph_def, batch)
  if graph is None:
    return {}
  return {op.name: op.outputs[0].shape.as_list() for op in graph.get_operations()
          if op.type == 'Reshape' and op.inputs[1].op.type != 'Const'
          and op.outputs[0].shape.is_fully_defined()}


def fold_shapes(graph_def, keep: Sequence[str]):
  """Constant Reshape targets where only the batch varies, identity Transposes dropped.

  Static shape inference runs twice, with the inputs' unknown batch dimension
  set to two different primes. A Reshape whose target is then fully known both
  times, and differs in at most one dimension, gets a Const target with -1 for
  that dimension: Reshape computes the same shape from the element count. The
  Shape/Gather/Prod/Pack chain that computed it is then unused and stripped.
  Inputs with other unknown dimensions (a variable sequence length) leave
  their Reshapes alone.

  Returns:
    (new GraphDef, number of Reshapes and Transposes rewritten).
  """
  first, second = (_reshape_targets(graph_def, b) for b in _PROBE_BATCHES)
  targets = {}
  for name, dims in first.items():
    other = second.get(name)
    if other is None or len(other) != len(dims) or 0 in dims:
      continue
    varying = [i for i, (a, b) in enumerate(zip(dims, other)) if a != b]
    if len(varying) <= 1:
      targets[name] = [-1 if i in varying else d for i, d in enumerate(dims)]
  result = graph_lib.copy_graph_def(graph_def)
  index = graph_lib.GraphIndex(result, keep)
  for name, dims in targets.items():
    node = index.by_name[name]
    dtype = tf.as_dtype(node.attr['Tshape'].type)
    node.input[1] = index.add_const(f'{name}/folded_shape',
                                    np.array(dims, dtype.as_numpy_dtype), dtype)
  skip = {}
  for node in result.node:
    if node.op != 'Transpose' or node.name in index.protected:
      continue
    perm = index.const(node.input[1])
    if perm is not None and perm.ndim == 1 and np.array_equal(perm, np.arange(perm.size)):
      skip[node.name] = node.input[0]
  if skip:
    result = graph_lib.bypass_nodes(result, skip)
  if not targets and not skip:
    return graph_def, 0
  return graph_lib.strip_unused(result, keep), len(targets) + len(skip)


# ----- fuse_dense -----

def _bias_for(index: graph_lib.GraphIndex, add, operand: str, columns: int) -> Optional[str]:
  """The other input of `add` if it is a constant [columns] float32 vector."""
  data = [i for i in add.input if not i.startswith('^')]
  if len(data) != 2 or len(data) != len(add.input):
    return None
  names = [graph_lib.node_name(i) for i in data]
  if names.count(operand) != 1:
    return None
  other = data[1 - names.index(operand)]
  value = index.const(other)
  if value is None or value.dtype != np.float32 or value.shape != (columns,):
    return None
  return other


def fuse_dense(graph_def, keep: Sequence[str]):
  """MatMul [-> Reshape(const)] -> Add(const bias) becomes MatMul -> BiasAdd [-> Reshape].

  The Add node keeps its name (it becomes the BiasAdd, or the Reshape), so
  every reader and every protected output is unchanged.

  Returns:
    (new GraphDef, number of dense layers rewritten).
  """
  result = graph_lib.copy_graph_def(graph_def)
  index = graph_lib.GraphIndex(result, keep)
  count = 0
  for name in [n.name for n in result.node if n.op == 'MatMul']:
    matmul = index.by_name[name]
    weights = index.const(matmul.input[1])
    if matmul.attr['T'].type != tf.float32.as_datatype_enum or weights is None or (
        weights.ndim != 2):
      continue
    columns = weights.shape[0 if matmul.attr['transpose_b'].b else 1]
    add = index.sole_user(matmul)
    reshape = None
    if add is not None and add.op == 'Reshape':
      target = index.const(add.input[1])
      if target is None or target.ndim != 1 or target[-1] != columns:
        continue
      reshape, add = add, index.sole_user(add)
    if add is None or add.op not in _ADDS:
      continue
    bias = _bias_for(index, add, (reshape or matmul).name, columns)
    if bias is None:
      continue
    add_name = add.name
    add.Clear()
    add.name = add_name
    if reshape is None:
      _set_bias_add(add, matmul.name, bias)
    else:  # The Reshape node becomes the BiasAdd, and the Add node the Reshape.
      shape, shape_type = reshape.input[1], reshape.attr['Tshape'].type
      reshape.Clear()
      reshape.name = f'{add_name}/bias_add'
      _set_bias_add(reshape, matmul.name, bias)
      add.op = 'Reshape'
      add.input.extend([reshape.name, shape])
      add.attr['T'].type = tf.float32.as_datatype_enum
      add.attr['Tshape'].type = shape_type
    index.refresh()
    count += 1
  return (result if count else graph_def), count


def _set_bias_add(node, matmul: str, bias: str):
  node.op = 'BiasAdd'
  node.input.extend([matmul, bias])
  node.attr['T'].type = tf.float32.as_datatype_enum
  node.attr['data_format'].s = b'NHWC'


# ----- fold_scales -----

def _query_dense(index: graph_lib.GraphIndex, tensor: str) -> Optional[List]:
  """[MatMul, BiasAdd] feeding `tensor` through Reshape/Transpose/Identity only, each
  with one reader and constant weights and bias; None otherwise."""
  node = index.by_name.get(graph_lib.node_name(tensor))
  if tensor.startswith('^') or (':' in tensor and not tensor.endswith(':0')):
    return None
  while node is not None and node.op in _SCALE_TRANSPARENT:
    if index.sole_user(node) is None:
      return None
    node = index.by_name.get(graph_lib.node_name(node.input[0]))
  if node is None or node.op != 'BiasAdd' or index.sole_user(node) is None:
    return None
  matmul = index.by_name.get(graph_lib.node_name(node.input[0]))
  if (matmul is None or matmul.op != 'MatMul' or index.sole_user(matmul) is None
      or index.const(matmul.input[1]) is None or index.const(node.input[1]) is None):
    return None
  return [matmul, node]


def fold_scales(graph_def, keep: Sequence[str]):
  """Division by constants as multiplication; scalar scales into neighbouring weights.

  Returns:
    (new GraphDef, number of nodes rewritten).
  """
  result = graph_lib.copy_graph_def(graph_def)
  index = graph_lib.GraphIndex(result, keep)
  count = 0
  for node in list(result.node):
    if node.op != 'RealDiv' or node.attr['T'].type != tf.float32.as_datatype_enum:
      continue
    divisor = index.const(node.input[1])
    if divisor is None or divisor.size != 1 or divisor.reshape(-1)[0] == 0:
      continue
    node.op = 'Mul'
    node.input[1] = index.add_const(f'{node.name}/reciprocal',
                                    (1.0 / divisor).astype(np.float32), tf.float32)
    count += 1
  index.refresh()
  skip = {}
  for node in list(result.node):
    if node.op != 'Mul' or node.name in index.protected:
      continue
    data = list(node.input)
    if len(data) != 2:
      continue
    for i in (0, 1):
      scores = index.producer(data[i])
      scale = index.const(data[1 - i])
      if (scores is None or scores.op not in ('BatchMatMulV2', 'BatchMatMul')
          or scale is None or scale.size != 1 or scale.dtype != np.float32
          or index.sole_user(scores) is None or scores.attr['adj_x'].b):
        continue
      dense = _query_dense(index, scores.input[0])
      if dense is None:
        continue
      c = scale.reshape(-1)[0]
      matmul, bias_add = dense
      matmul.input[1] = index.add_const(f'{matmul.name}/scaled_weights',
                                        index.const(matmul.input[1]) * c, tf.float32)
      bias_add.input[1] = index.add_const(f'{bias_add.name}/scaled_bias',
                                          index.const(bias_add.input[1]) * c, tf.float32)
      skip[node.name] = data[i]
      count += 1
      break
  for node in list(result.node):  # x * c, later multiplied into a dense layer's input.
    scaled = _scalar_scaled(index, node)
    matmul = _next_matmul(index, node) if scaled and node.name not in skip else None
    if matmul is None:
      continue
    operand, c = scaled
    matmul.input[1] = index.add_const(f'{matmul.name}/scaled_weights',
                                      index.const(matmul.input[1]) * c, tf.float32)
    skip[node.name] = operand
    index.refresh()
    count += 1
  if skip:
    result = graph_lib.bypass_nodes(result, skip)
  if not count:
    return graph_def, 0
  return graph_lib.strip_unused(result, keep), count


def _scalar_scaled(index: graph_lib.GraphIndex, node):
  """(x, c) if node is Mul(x, c) of a float32 scalar constant c; else None."""
  if (node.op != 'Mul' or node.name in index.protected or len(node.input) != 2
      or node.attr['T'].type != tf.float32.as_datatype_enum):
    return None
  for i in (0, 1):
    c = index.const(node.input[i])
    if c is not None and c.size == 1 and index.const(node.input[1 - i]) is None:
      return node.input[1 - i], float(c.reshape(-1)[0])
  return None


def _next_matmul(index: graph_lib.GraphIndex, node):
  """The MatMul whose left operand is `node` times other factors only: reached through
  sole readers that are Reshape, Identity or Mul (by something else), with constant
  weights. Scaling its weights then scales the same product."""
  current = node
  while True:
    user = index.sole_user(current)
    if user is None:
      return None
    data = [graph_lib.node_name(i) for i in user.input]
    if user.op in ('Reshape', 'Identity') and data[0] == current.name:
      current = user
    elif user.op == 'Mul' and data.count(current.name) == 1:
      current = user
    elif (user.op == 'MatMul' and data[0] == current.name and data[1] != current.name
          and not user.attr['transpose_a'].b and index.const(user.input[1]) is not None):
      return user
    else:
      return None
