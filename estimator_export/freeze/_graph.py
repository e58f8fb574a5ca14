"""GraphDef helpers for freezing: names, reachability, checks and warnings.

Private to estimator_export.freeze. Everything here works on `tf.compat.v1.GraphDef`
protos (or a live `tf.Graph` where noted) and never on model code.
"""
import collections
import os
from typing import Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple

import numpy as np
import tensorflow as tf

from estimator_export.errors import FreezeError, did_you_mean

# The protobuf hard limit on one serialized message (a GraphDef is one message).
PROTO_LIMIT_BYTES = 2**31 - 1

# Ops that create a lookup table whose contents come from an initializer op.
STATIC_TABLE_OPS = frozenset({'HashTableV2', 'HashTable'})
# Tables whose contents are state (checkpointed, changed by the graph): not freezable.
MUTABLE_TABLE_OPS = frozenset({'MutableHashTableV2', 'MutableHashTable',
                               'MutableHashTableOfTensorsV2', 'MutableHashTableOfTensors',
                               'MutableDenseHashTableV2', 'MutableDenseHashTable'})
TABLE_INIT_OPS = frozenset({'InitializeTableV2', 'InitializeTable',
                            'InitializeTableFromTextFileV2', 'InitializeTableFromTextFile',
                            'LookupTableImportV2', 'LookupTableImport'})
TEXT_FILE_INIT_OPS = frozenset({'InitializeTableFromTextFileV2', 'InitializeTableFromTextFile'})

VARIABLE_OPS = frozenset({'VarHandleOp', 'VariableV2', 'Variable'})

_RANDOM_OPS = frozenset({'RandomUniform', 'RandomStandardNormal', 'TruncatedNormal',
                         'RandomUniformInt', 'StatelessRandomUniformV2',
                         'StatelessRandomNormalV2', 'StatelessRandomUniform'})
_FUSED_BATCH_NORMS = frozenset({'FusedBatchNorm', 'FusedBatchNormV2', 'FusedBatchNormV3'})
# Never worth proposing as model outputs.
_NOT_OUTPUT_OPS = frozenset({'NoOp', 'Assign', 'AssignVariableOp', 'SaveV2', 'RestoreV2',
                             'Const', 'Placeholder', 'VarHandleOp', 'VariableV2',
                             'VarIsInitializedOp', 'IsVariableInitialized', 'MergeV2Checkpoints',
                             'ScalarSummary', 'HistogramSummary', 'MergeSummary', 'Assert',
                             'ShardedFilename', 'StringJoin', 'AssignAddVariableOp'}
                            | TABLE_INIT_OPS)
_NOT_OUTPUT_SCOPES = ('save', 'gradients', 'report_uninitialized', 'init', 'Adam',
                      'GradientDescent', 'global_step', 'training', 'train', 'loss',
                      'metrics', 'summaries')


def import_graph_def(graph_def) -> tf.Graph:
  """A new tf.Graph holding graph_def, imported without a name prefix."""
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name='')
  return graph


def copy_graph_def(graph_def):
  """A copy of graph_def, for a pass that rewrites it in place."""
  result = tf.compat.v1.GraphDef()
  result.CopyFrom(graph_def)
  return result


def strip_unused(graph_def, keep: Sequence[str]):
  """Only the nodes `keep` depends on (tf.compat.v1.graph_util.extract_sub_graph)."""
  return tf.compat.v1.graph_util.extract_sub_graph(graph_def, sorted(set(keep)))


class GraphIndex:
  """Nodes of a GraphDef by name and who reads each, for passes that rewrite it in place.

  Call refresh() after changing inputs; add_node/add_const keep by_name current.
  """

  def __init__(self, graph_def, keep: Sequence[str] = ()):
    self.graph_def = graph_def
    self.protected = {node_name(k) for k in keep}
    self.refresh()

  def refresh(self):
    self.by_name = {n.name: n for n in self.graph_def.node}
    self.users = consumers(self.graph_def)

  def producer(self, tensor: str):
    """The node producing output 0 named by `tensor`, through Identity; None otherwise."""
    if tensor.startswith('^') or (':' in tensor and not tensor.endswith(':0')):
      return None
    node = self.by_name.get(node_name(tensor))
    while node is not None and node.op == 'Identity' and node.input:
      node = self.by_name.get(node_name(node.input[0]))
    return node

  def const(self, tensor: str) -> Optional[np.ndarray]:
    """The value of the Const producing `tensor` (through Identity), or None."""
    node = self.producer(tensor)
    if node is None or node.op != 'Const':
      return None
    return tf.make_ndarray(node.attr['value'].tensor)

  def sole_user(self, node):
    """The one node reading `node` (data output 0 only; `node` not protected), or None."""
    users = self.users.get(node.name, [])
    if len(users) != 1 or node.name in self.protected:
      return None
    user = self.by_name[users[0]]
    uses = [i for i in user.input if node_name(i) == node.name]
    if any(u.startswith('^') or (':' in u and not u.endswith(':0')) for u in uses):
      return None
    return user

  def add_node(self, name: str, op: str):
    """A new node called `name` (with '_' appended while taken)."""
    while name in self.by_name:
      name += '_'
    node = self.graph_def.node.add(name=name, op=op)
    self.by_name[name] = node
    return node

  def add_const(self, name: str, value: np.ndarray, dtype: Optional[tf.DType] = None) -> str:
    """A new Const of value (as dtype; default: value's own); returns its name."""
    dtype = dtype or tf.as_dtype(np.asarray(value).dtype)
    node = self.add_node(name, 'Const')
    node.attr['dtype'].type = dtype.as_datatype_enum
    node.attr['value'].tensor.CopyFrom(
        tf.make_tensor_proto(np.asarray(value, dtype.as_numpy_dtype), dtype=dtype))
    return node.name


def bypass_nodes(graph_def, bypass: Mapping[str, str]):
  """A copy of graph_def without the nodes of `bypass` (name -> the input their readers
  get instead, followed through chains); only output 0 of a bypassed node is redirected."""
  def source(name: str) -> str:
    node = node_name(name)
    if node not in bypass or (':' in name and not name.endswith(':0')):
      return name
    target = source(bypass[node])
    return '^' + node_name(target) if name.startswith('^') else target

  result = tf.compat.v1.GraphDef()
  result.versions.CopyFrom(graph_def.versions)
  result.library.CopyFrom(graph_def.library)
  for node in graph_def.node:
    if node.name in bypass:
      continue
    copy = result.node.add()
    copy.CopyFrom(node)
    del copy.input[:]
    copy.input.extend(source(i) for i in node.input)
  return result


def import_with_batch(graph_def, batch: int) -> Optional[tf.Graph]:
  """graph_def imported with every Placeholder's unknown leading dimension set to
  `batch`, so static shape inference evaluates shape arithmetic (Shape, Prod,
  Pack...) for that batch size; None if the inputs cannot share one batch size."""
  probe = copy_graph_def(graph_def)
  for node in probe.node:
    if node.op == 'Placeholder' and node.attr['shape'].shape.dim:
      dim = node.attr['shape'].shape.dim[0]
      if dim.size < 0:
        dim.size = batch
  try:
    return import_graph_def(probe)
  except (ValueError, tf.errors.InvalidArgumentError):
    return None


def node_name(name: str) -> str:
  """'^a', 'a:0', 'a' -> 'a' (the node of a tensor or control input)."""
  name = name[1:] if name.startswith('^') else name
  return name.rsplit(':', 1)[0] if ':' in name else name


def tensor_name(name: str) -> str:
  """'a' -> 'a:0'; 'a:1' stays."""
  return name if ':' in name else name + ':0'


def consumers(graph_def) -> Dict[str, List[str]]:
  """Node name -> names of the nodes that take it as a data or control input."""
  users = collections.defaultdict(list)
  for node in graph_def.node:
    for inp in node.input:
      users[node_name(inp)].append(node.name)
  return users


def reachable(graph_def, dest_names: Iterable[str], stop: Iterable[str] = ()) -> Set[str]:
  """Names of the nodes `dest_names` depend on (themselves included).

  Nodes named in `stop` are included but not followed (fed inputs cut the graph there).
  """
  by_name = {n.name: n for n in graph_def.node}
  stop = {node_name(s) for s in stop}
  seen, stack = set(), [node_name(d) for d in dest_names]
  while stack:
    name = stack.pop()
    if name in seen or name not in by_name:
      continue
    seen.add(name)
    if name not in stop:
      stack.extend(node_name(i) for i in by_name[name].input)
  return seen


def likely_outputs(graph_def, limit: int = 8) -> List[str]:
  """Nodes nothing consumes that look like model outputs (not save/train/summary ops).

  The nodes are ordered as in the graph, so the last ones built come last.
  """
  users = consumers(graph_def)
  found = []
  for node in graph_def.node:
    if node.name in users or node.op in _NOT_OUTPUT_OPS:
      continue
    if node.name.split('/', 1)[0] in _NOT_OUTPUT_SCOPES:
      continue
    found.append(node.name)
  return found[-limit:]


def check_output_names(graph_def, names: Sequence[str]) -> None:
  """Raises FreezeError for an output name with no node, with suggestions.

  The message gives the closest node names ("did you mean") and the nodes that
  look like outputs (nothing consumes them), answering "what are my output node
  names?" (bert#332).
  """
  if not names:
    raise FreezeError('no output node names', value=list(names),
                      fix='pass output_node_names (comma-separated node names, e.g. '
                      f'{",".join(likely_outputs(graph_def)[-3:]) or "softmax"}) or freeze a '
                      'SavedModel, whose signature supplies them')
  known = [n.name for n in graph_def.node]
  known_set = set(known)
  for name in names:
    if node_name(name) not in known_set:
      hint = did_you_mean(node_name(name), known)
      raise FreezeError('output node not in the graph', value=name,
                        fix=f'use node names of this graph.{hint} Nodes that look like '
                        f'outputs (nothing consumes them): {likely_outputs(graph_def)}')


def check_input_names(graph_def, names: Sequence[str], output_nodes: Sequence[str]) -> None:
  """Raises FreezeError unless `names` are nodes that feed the outputs, and all they need.

  Each name must be a node of the graph ("did you mean" otherwise) that the
  outputs depend on; and every Placeholder the outputs depend on, once the
  graph is cut at these inputs, must be among them (else it would need a feed
  nobody gives).
  """
  needed = reachable(graph_def, output_nodes)
  wanted = placeholders(graph_def, needed)
  known = [n.name for n in graph_def.node]
  known_set = set(known)
  for name in names:
    if node_name(name) not in known_set:
      raise FreezeError('input node not in the graph', value=name,
                        fix=f'use node names of this graph.{did_you_mean(node_name(name), known)}'
                        f' Placeholders the outputs depend on: {wanted}')
    if node_name(name) not in needed:
      raise FreezeError('the outputs do not depend on this input node', value=name,
                        fix=f'leave it out of input_node_names; Placeholders the outputs '
                        f'depend on: {wanted}')
  given = {node_name(n) for n in names}
  cut = reachable(graph_def, output_nodes, stop=given)
  missing = [p for p in placeholders(graph_def, cut) if p not in given]
  if missing:
    raise FreezeError('the outputs also depend on Placeholders that are not input nodes',
                      value=missing, fix='add them to input_node_names (--input_node_names), '
                      'or leave input_node_names out to take every Placeholder the outputs '
                      'depend on')


def training_mode_nodes(graph_def, among: Optional[Set[str]] = None) -> List[Tuple[str, str]]:
  """(node name, why) for nodes that behave as in training: dropout, batch statistics.

  Args:
    graph_def: the (frozen) GraphDef.
    among: only nodes with these names (e.g. those the outputs depend on).
  """
  by_name = {n.name: n for n in graph_def.node}
  found = []
  for node in graph_def.node:
    if among is not None and node.name not in among:
      continue
    if node.op in _FUSED_BATCH_NORMS and node.attr['is_training'].b:
      found.append((node.name, 'BatchNorm computes batch statistics (is_training=True)'))
    elif node.op in _RANDOM_OPS:
      why = 'dropout mask' if 'dropout' in node.name.lower() else 'random op'
      found.append((node.name, f'{why} ({node.op}): outputs change from run to run'))
    elif node.op == 'Mean' and '/moments/' in node.name and _reduces_batch_axis(node, by_name):
      # tf.nn.moments over axis 0: batch statistics (LayerNorm reduces the last axis).
      found.append((node.name, 'BatchNorm computes batch statistics (moments over the batch '
                    'axis)'))
  return found


def _reduces_batch_axis(node, by_name) -> bool:
  axes = by_name.get(node_name(node.input[1])) if len(node.input) > 1 else None
  while axes is not None and axes.op == 'Identity':
    axes = by_name.get(node_name(axes.input[0]))
  if axes is None or axes.op != 'Const':
    return False
  return 0 in tf.make_ndarray(axes.attr['value'].tensor).reshape(-1).tolist()


def format_training_warning(nodes: Sequence[Tuple[str, str]], limit: int = 6) -> str:
  names = ', '.join(f'{name} [{why}]' for name, why in nodes[:limit])
  more = f' and {len(nodes) - limit} more' if len(nodes) > limit else ''
  return (f'the frozen graph runs in training mode: {names}{more}. Rebuild the graph with '
          'is_training=False (freeze_graph_fn or an Estimator PREDICT graph) so BatchNorm uses '
          'its moving statistics and dropout is off')


def variable_nodes(graph_def) -> List[str]:
  """Names of the variable nodes left in a (frozen) GraphDef, in graph order."""
  return [n.name for n in graph_def.node if n.op in VARIABLE_OPS]


def format_kept_variables_warning(names: Sequence[str], limit: int = 6) -> str:
  more = f' and {len(names) - limit} more' if len(names) > limit else ''
  return (f'{len(names)} variable(s) stay variables in the frozen graph '
          f'(variable_names_whitelist/denylist): {", ".join(names[:limit])}{more}. The .pb '
          'runs only after they are restored, so it was not compared with the model; leave '
          'them out of variable_names_denylist (or add them to the whitelist) to make them '
          'constants')


def check_proto_size(estimated_bytes: int, what: str,
                     limit: Optional[int] = None) -> None:
  """Raises FreezeError when a frozen GraphDef would exceed the protobuf limit."""
  limit = PROTO_LIMIT_BYTES if limit is None else limit
  if estimated_bytes > limit:
    raise FreezeError(
        f'the frozen graph of {what} would be about {estimated_bytes / 2**30:.2f} GiB, over '
        f'the {limit / 2**30:.2f} GiB protobuf limit of a single GraphDef',
        value=estimated_bytes,
        fix='serve the SavedModel instead (its variables are stored beside the graph, '
        'without this limit), or freeze fewer variables (variable_names_denylist) or '
        'compress after freezing a smaller part')


def variable_bytes(graph: tf.Graph, names: Optional[Set[str]] = None) -> int:
  """Total bytes of the variables of a live graph (those named `names`, if given)."""
  total = 0
  for op in graph.get_operations():
    if op.type not in VARIABLE_OPS:
      continue
    if names is not None and op.name not in names:
      continue
    dtype = tf.as_dtype(op.get_attr('dtype'))
    shape = tf.TensorShape(op.get_attr('shape'))
    if shape.is_fully_defined():
      total += shape.num_elements() * max(dtype.size, 1)
  return total


def tables_of(graph: tf.Graph, fetch_names: Iterable[str]) -> Tuple[List[tf.Operation],
                                                                   List[tf.Operation]]:
  """(table ops, their initializer ops) that the fetched nodes depend on, in a live graph."""
  graph_def = graph.as_graph_def()
  needed = reachable(graph_def, fetch_names)
  tables = [graph.get_operation_by_name(n.name) for n in graph_def.node
            if n.name in needed and (n.op in STATIC_TABLE_OPS or n.op in MUTABLE_TABLE_OPS)]
  table_names = {t.name for t in tables}
  inits = [op for op in graph.get_operations() if op.type in TABLE_INIT_OPS
           and op.inputs and op.inputs[0].op.name in table_names]
  return tables, inits


def refuse_mutable_tables(tables: Sequence[tf.Operation]) -> None:
  for table in tables:
    if table.type in MUTABLE_TABLE_OPS:
      raise FreezeError(
          f'the outputs depend on a mutable lookup table ({table.type})', value=table.name,
          fix='its contents are state kept in the checkpoint and changed by the graph; a '
          'frozen GraphDef cannot hold them. Serve the SavedModel, or build the serving graph '
          'with a static table (tf.lookup.StaticHashTable / StaticVocabularyTable)')


def clear_devices(graph_def) -> None:
  for node in graph_def.node:
    node.device = ''


def add_group_node(graph_def, name: str, control_inputs: Sequence[str]) -> str:
  """Adds a NoOp `name` with control inputs on the named nodes; returns its name."""
  taken = {n.name for n in graph_def.node}
  base, i = name, 1
  while name in taken:
    name = f'{base}_{i}'
    i += 1
  node = graph_def.node.add()
  node.name = name
  node.op = 'NoOp'
  node.input.extend('^' + node_name(c) for c in control_inputs)
  return name


def placeholders(graph_def, among: Optional[Set[str]] = None) -> List[str]:
  """Names of the Placeholder nodes (optionally only those in `among`), in graph order."""
  return [n.name for n in graph_def.node if n.op == 'Placeholder'
          and (among is None or n.name in among)]


def asset_feeds_of(meta_graph, export_dir: str) -> Mapping[str, str]:
  """Asset tensor name -> absolute file path under export_dir/assets.

  TF1 Builders record assets in the 'saved_model_assets' collection (AssetFileDef
  protos packed in Any); newer writers in MetaGraphDef.asset_file_def. Both are read.
  """
  assets = list(meta_graph.asset_file_def)
  collection = meta_graph.collection_def.get('saved_model_assets')
  if collection is not None:
    # AssetFileDef is not a public tf.* name; a MetaGraphDef's repeated field makes one.
    scratch = tf.compat.v1.MetaGraphDef()
    for packed in collection.any_list.value:
      asset = scratch.asset_file_def.add()
      packed.Unpack(asset)
      assets.append(asset)
  return {asset.tensor_info.name: os.path.join(export_dir, 'assets', asset.filename)
          for asset in assets}
