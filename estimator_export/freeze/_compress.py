"""Weight compression of frozen GraphDefs: fp16, or int8 with per-channel scales.

Private to estimator_export.freeze. Each large float32 Const `W` is replaced by
smaller constants and the ops that rebuild it at run time, under W's name, so
its consumers are unchanged:

  fp16:  W/fp16 (float16)                     -> W = Cast(W/fp16, float32)
  int8:  W/int8 (int8), W/scales (float32 [C]) -> W = Cast(W/int8, float32) * W/scales

int8 is symmetric: scale = max|W| / 127 per channel. The channel axis is the
last one (output units of a MatMul kernel [in, out], output channels of a
Conv2D filter [h, w, in, out]), or axis 0 for tables read by Gather (one scale
per embedding row).
"""
import dataclasses
from typing import Optional, Sequence, Set

import numpy as np
import tensorflow as tf

from estimator_export.errors import FreezeError
from estimator_export.freeze import _graph as graph_lib

MODES = ('fp16', 'int8')
_GATHER_OPS = frozenset({'Gather', 'GatherV2', 'ResourceGather'})


@dataclasses.dataclass(frozen=True)
class CompressionStats:
  """What compress() changed: the mode, how many constants, and their bytes."""
  mode: str
  tensors: int
  weight_bytes_before: int
  weight_bytes_after: int


def _const(name: str, value: np.ndarray, dtype: tf.DType):
  node = tf.compat.v1.NodeDef(name=name, op='Const')
  node.attr['dtype'].type = dtype.as_datatype_enum
  node.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(value, dtype=dtype))
  return node


def _cast(name: str, source: str, src: tf.DType):
  node = tf.compat.v1.NodeDef(name=name, op='Cast', input=[source])
  node.attr['SrcT'].type = src.as_datatype_enum
  node.attr['DstT'].type = tf.float32.as_datatype_enum
  node.attr['Truncate'].b = False
  return node


def _quantize(weights: np.ndarray, axis: Optional[int]):
  """(int8 values, float32 scales) with weights ~= values * scales (broadcast on axis)."""
  if axis is None:
    peak = np.max(np.abs(weights)).reshape([])
  else:
    others = tuple(i for i in range(weights.ndim) if i != axis)
    peak = np.max(np.abs(weights), axis=others)
  scales = np.where(peak > 0, peak / 127.0, 1.0).astype(np.float32)
  if axis is not None:
    shape = [1] * weights.ndim
    shape[axis] = -1
    broadcast = scales.reshape(shape)
  else:
    broadcast = scales
  values = np.clip(np.round(weights / broadcast), -127, 127).astype(np.int8)
  return values, scales, broadcast.shape


def compress(graph_def, mode: str, keep: Sequence[str], min_elements: int = 1024):
  """Stores the float32 constants of at least min_elements elements as fp16 or int8.

  Args:
    graph_def: a frozen GraphDef (not modified).
    mode: 'fp16' or 'int8'.
    keep: protected node names (inputs/outputs); they are never rewritten.
    min_elements: smaller constants (biases, LayerNorm scales, shapes) stay float32.

  Returns:
    (new GraphDef, CompressionStats).
  """
  if mode not in MODES:
    raise FreezeError('unknown compression', value=mode, fix=f'use one of {list(MODES)}')
  protected: Set[str] = {graph_lib.node_name(k) for k in keep}
  users = graph_lib.consumers(graph_def)
  by_name = {n.name: n for n in graph_def.node}
  out = tf.compat.v1.GraphDef()
  out.versions.CopyFrom(graph_def.versions)
  out.library.CopyFrom(graph_def.library)
  count = before = after = 0
  for node in graph_def.node:
    if (node.op != 'Const' or node.name in protected
        or node.attr['dtype'].type != tf.float32.as_datatype_enum):
      out.node.append(node)
      continue
    value = tf.make_ndarray(node.attr['value'].tensor)
    if value.size < min_elements:
      out.node.append(node)
      continue
    count += 1
    before += value.nbytes
    if mode == 'fp16':
      half = value.astype(np.float16)
      out.node.append(_const(node.name + '/fp16', half, tf.float16))
      out.node.append(_cast(node.name, node.name + '/fp16', tf.float16))
      after += half.nbytes
      continue
    gathered = any(by_name[u].op in _GATHER_OPS and graph_lib.node_name(by_name[u].input[0])
                   == node.name for u in users.get(node.name, []))
    axis = None if value.ndim < 2 else (0 if gathered else value.ndim - 1)
    values, scales, scale_shape = _quantize(value, axis)
    out.node.append(_const(node.name + '/int8', values, tf.int8))
    out.node.append(_const(node.name + '/scales', scales.reshape(scale_shape), tf.float32))
    out.node.append(_cast(node.name + '/dequantized', node.name + '/int8', tf.int8))
    mul = tf.compat.v1.NodeDef(name=node.name, op='Mul',
                               input=[node.name + '/dequantized', node.name + '/scales'])
    mul.attr['T'].type = tf.float32.as_datatype_enum
    out.node.append(mul)
    after += values.nbytes + scales.nbytes
  return out, CompressionStats(mode, count, before, after)
