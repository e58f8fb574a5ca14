"""Checks that a graph only uses ops that the real TF Serving 2.15.1 has.

TF Serving 2.15.1 is built on TF 2.15 and links TF Text 2.12.1's op library.
A SavedModel whose graph names an op outside that set, or an attr that the
server's OpDef does not know, fails to load there ("Op type not registered",
"NodeDef mentions attr ... not in Op"). This module reproduces those checks:

    report = check_servability('/models/bert/3')     # SavedModel dir, GraphDef, ...
    assert report.ok, report
    assert_servable(graph)                            # raises UnservableGraphError

Op definitions:
  * core TF: the ops of the installed TF 2.15 that have a public `tf.raw_ops`
    wrapper (test-only and internal kernels such as `_Mkl*` are left out);
  * TF Text: `op_defs/tf_text_2_12_1_ops.pbtxt`, dumped from the real TF Text
    2.12.1 release by `tools/dump_tf_text_ops.py`. TF Text ops registered by the
    installed (newer) TF Text are NOT allowed unless 2.12.1 had them, and their
    attrs are checked against 2.12.1's definitions.
Input and output arities are not checked (TF checks them at graph build time).
"""
import dataclasses
import functools
import os
from typing import Dict, Iterable, List, Mapping, Optional, Tuple, Union

import tensorflow as tf
from google.protobuf import text_format
from tensorflow.core.framework import graph_pb2, op_def_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2

from estimator_export import _saved_model as saved_model_lib
from estimator_export.errors import ValidationError, did_you_mean

TF_TEXT_OPS_FILE = os.path.join(os.path.dirname(__file__), 'op_defs',
                                'tf_text_2_12_1_ops.pbtxt')
TARGET = 'TF Serving 2.15.1 (TF 2.15 + TF Text 2.12.1)'

GraphLike = Union[str, tf.Graph, graph_pb2.GraphDef, meta_graph_pb2.MetaGraphDef,
                  saved_model_pb2.SavedModel]


@dataclasses.dataclass(frozen=True)
class OpProblem:
  """One reason a node would not load on the target server."""
  node: str       # node name ('function/node' inside a library function)
  op: str         # the node's op type
  reason: str

  def __str__(self):
    return f'{self.node} ({self.op}): {self.reason}'


@dataclasses.dataclass(frozen=True)
class ServabilityReport:
  """Ops used by a graph and the problems found; `ok` when there are none."""
  ops_used: Tuple[str, ...]
  problems: Tuple[OpProblem, ...]

  @property
  def ok(self) -> bool:
    return not self.problems

  @property
  def bad_ops(self) -> Tuple[str, ...]:
    return tuple(sorted({p.op for p in self.problems}))

  def __str__(self):
    if self.ok:
      return f'servable on {TARGET}: {len(self.ops_used)} op types'
    lines = [f'not servable on {TARGET}: {len(self.problems)} problem(s) with op(s) '
             f'{", ".join(self.bad_ops)}']
    lines += [f'  {p}' for p in self.problems]
    return '\n'.join(lines)


class UnservableGraphError(ValidationError):
  """A graph uses ops or attrs that the target TF Serving does not have."""

  def __init__(self, report: ServabilityReport):
    self.report = report
    super().__init__(f'graph uses op(s) unknown to {TARGET}', value=list(report.bad_ops),
                     fix='use core TF ops or TF Text ops that exist in 2.12.1; details:\n'
                     + str(report))


def _parse_op_list(text: str) -> Dict[str, op_def_pb2.OpDef]:
  op_list = text_format.Parse(text, op_def_pb2.OpList())
  return {op.name: op for op in op_list.op}


@functools.lru_cache(maxsize=None)
def tf_text_op_defs(path: str = TF_TEXT_OPS_FILE) -> Mapping[str, op_def_pb2.OpDef]:
  """OpDefs of TF Text 2.12.1, by op name, from the committed data file."""
  with open(path, encoding='utf-8') as f:
    return _parse_op_list(f.read())


@functools.lru_cache(maxsize=None)
def core_op_defs() -> Mapping[str, op_def_pb2.OpDef]:
  """OpDefs of the installed core TF (2.15) that have a tf.raw_ops wrapper."""
  # No public API returns OpDefs: the C API binding below is private, but it is
  # the registry itself. tf.raw_ops (public) names the core ops; ops added by
  # tf.load_op_library (e.g. TF Text's) are not in it.
  from tensorflow.python.client import pywrap_tf_session  # pylint: disable=g-direct-tensorflow-import
  op_list = op_def_pb2.OpList()
  op_list.ParseFromString(pywrap_tf_session.TF_GetBuffer(pywrap_tf_session.TF_GetAllOpList()))
  public = set(dir(tf.raw_ops))
  return {op.name: op for op in op_list.op if op.name in public}


def allowed_op_defs() -> Dict[str, op_def_pb2.OpDef]:
  """The target server's op set: core TF 2.15 plus TF Text 2.12.1."""
  defs = dict(core_op_defs())
  defs.update(tf_text_op_defs())
  return defs


def _attr_problems(node, op_def: op_def_pb2.OpDef) -> List[str]:
  reasons = []
  defs = {a.name: a for a in op_def.attr}
  for name in sorted(node.attr):
    if name.startswith('_'):
      continue  # Internal attrs (_class, _output_shapes, ...) are not validated.
    if name not in defs:
      reasons.append(f"attr '{name}' is not in the server's OpDef "
                     f"(it has {sorted(defs) or 'no attrs'})")
  for name, attr_def in defs.items():
    if name not in node.attr:
      if not attr_def.HasField('default_value'):
        reasons.append(f"attr '{name}' is required by the server's OpDef and missing")
      continue
    value = node.attr[name]
    allowed = attr_def.allowed_values.list if attr_def.HasField('allowed_values') else None
    if allowed is not None and attr_def.type == 'type' and allowed.type:
      if value.type not in allowed.type:
        reasons.append(f"attr '{name}' = {tf.dtypes.as_dtype(value.type).name} is not "
                       f"allowed (allowed: {[tf.dtypes.as_dtype(t).name for t in allowed.type]})")
    elif allowed is not None and attr_def.type == 'list(type)' and allowed.type:
      bad = [t for t in value.list.type if t not in allowed.type]
      if bad:
        reasons.append(f"attr '{name}' has types {[tf.dtypes.as_dtype(t).name for t in bad]} "
                       'that are not allowed')
    elif allowed is not None and attr_def.type == 'string' and allowed.s:
      if value.s not in allowed.s:
        reasons.append(f"attr '{name}' = {value.s!r} is not allowed "
                       f'(allowed: {list(allowed.s)})')
    if attr_def.has_minimum and attr_def.type == 'int' and value.i < attr_def.minimum:
      reasons.append(f"attr '{name}' = {value.i} is below the minimum {attr_def.minimum}")
  return reasons


def _graph_defs(source: GraphLike) -> Iterable[graph_pb2.GraphDef]:
  if isinstance(source, tf.Graph):
    yield source.as_graph_def()
  elif isinstance(source, graph_pb2.GraphDef):
    yield source
  elif isinstance(source, meta_graph_pb2.MetaGraphDef):
    yield source.graph_def
  elif isinstance(source, saved_model_pb2.SavedModel):
    for meta_graph in source.meta_graphs:
      yield meta_graph.graph_def
  elif isinstance(source, (str, os.PathLike)):
    path = os.fspath(source)
    if tf.io.gfile.isdir(path):
      yield from _graph_defs(saved_model_lib.read_saved_model(path))
    elif path.endswith('.pb') and tf.io.gfile.exists(path):
      graph_def = graph_pb2.GraphDef()
      with tf.io.gfile.GFile(path, 'rb') as f:
        graph_def.ParseFromString(f.read())
      yield graph_def
    else:
      raise ValidationError('no SavedModel directory or frozen .pb to check for servability',
                            value=path, fix='pass a SavedModel version directory (the one '
                            'that holds saved_model.pb) or a frozen GraphDef .pb file')
  else:
    raise ValidationError('cannot check this object for servability',
                          value=type(source).__name__, fix='pass a SavedModel directory, a '
                          'frozen .pb path, a tf.Graph, GraphDef, MetaGraphDef or SavedModel')


def check_servability(source: GraphLike,
                      allowed: Optional[Mapping[str, op_def_pb2.OpDef]] = None
                      ) -> ServabilityReport:
  """Checks every node (graph and function library) against the target's OpDefs.

  Args:
    source: SavedModel directory (every MetaGraph is checked), tf.Graph,
      GraphDef, MetaGraphDef or SavedModel proto.
    allowed: op name -> OpDef; default `allowed_op_defs()`.

  Returns:
    A ServabilityReport; `str(report)` lists each problem with node and op.
  """
  allowed = allowed_op_defs() if allowed is None else allowed
  used, problems = set(), []
  for graph_def in _graph_defs(source):
    functions = {f.signature.name for f in graph_def.library.function}
    scopes = [('', graph_def.node)]
    scopes += [(f'{f.signature.name}/', f.node_def) for f in graph_def.library.function]
    for prefix, nodes in scopes:
      for node in nodes:
        if node.op in functions:
          continue  # A call of a library function; its body is checked too.
        used.add(node.op)
        name = prefix + node.name
        op_def = allowed.get(node.op)
        if op_def is None:
          problems.append(OpProblem(name, node.op, f'op is not registered in {TARGET}.'
                                    + did_you_mean(node.op, allowed)))
          continue
        problems.extend(OpProblem(name, node.op, r) for r in _attr_problems(node, op_def))
  return ServabilityReport(tuple(sorted(used)), tuple(problems))


def assert_servable(source: GraphLike) -> ServabilityReport:
  """Like `check_servability`, but raises UnservableGraphError on any problem."""
  report = check_servability(source)
  if not report.ok:
    raise UnservableGraphError(report)
  return report


__all__ = ('TARGET', 'TF_TEXT_OPS_FILE', 'OpProblem', 'ServabilityReport',
           'UnservableGraphError', 'allowed_op_defs', 'assert_servable', 'check_servability',
           'core_op_defs', 'tf_text_op_defs')
