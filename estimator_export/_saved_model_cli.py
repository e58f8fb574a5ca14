"""`saved_model_cli show`'s text for a SavedModel, rendered from its proto alone.

Private: `contract.show` is the public entry. No graph is imported and no session is
made. Also the tag-set look-up and dtype/shape naming `contract` shares.
"""
import collections
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow.core.protobuf import struct_pb2

# The tag-set rules live once, in _saved_model (validate and diff select by them too).
from estimator_export._saved_model import TagSet, read_saved_model, tag_key  # pylint: disable=unused-import
from estimator_export._saved_model import find_meta_graph as _find_meta_graph
from estimator_export.errors import ContractError, did_you_mean

# SignatureDefs TF2 writes for its own bookkeeping; TF Serving never serves them.
INTERNAL_SIGNATURE_PREFIX = '__saved_model_'
_CALL_OPS = ('PartitionedCall', 'StatefulPartitionedCall')


# ----------------------------------------------------------------------------
# Tag-set and signature look-up.
# ----------------------------------------------------------------------------


def _find_signature(meta_graph: meta_graph_pb2.MetaGraphDef, signature_def: str,
                    saved_model_dir: str) -> meta_graph_pb2.SignatureDef:
  """The SignatureDef `signature_def` of `meta_graph`."""
  if signature_def in meta_graph.signature_def:
    return meta_graph.signature_def[signature_def]
  available = sorted(meta_graph.signature_def.keys())
  listing = ', '.join(repr(key) for key in available) or 'none'
  tags = tag_key(meta_graph.meta_info_def.tags)
  raise ContractError(f'no SignatureDef with this key in tag-set {tags!r} of {saved_model_dir!r}',
                      value=signature_def,
                      fix=f'use one of the signatures: {listing}.'
                      + did_you_mean(signature_def, available))


# ----------------------------------------------------------------------------
# show(): the saved_model_cli text.
# ----------------------------------------------------------------------------


class _Text:
  """Collects output the way consecutive print() calls would write it."""

  def __init__(self):
    self._parts = []

  def line(self, text: str = '', end: str = '\n') -> None:
    self._parts.append(text + end)

  def value(self) -> str:
    return ''.join(self._parts)


def show(saved_model_dir: str, tag_set: Optional[TagSet] = None,
         signature_def: Optional[str] = None, show_all: bool = False) -> str:
  """Returns what `saved_model_cli show` prints (stdout) for the same arguments.

  * no arguments: the tag-sets (`saved_model_cli show --dir DIR`);
  * `tag_set`: the SignatureDef keys of that MetaGraphDef (`--tag_set`);
  * `tag_set` and `signature_def`: the inputs, outputs and method name of that
    SignatureDef (`--tag_set ... --signature_def ...`);
  * `show_all`: every MetaGraphDef with every SignatureDef, the ops of each
    graph and, for TF2 SavedModels, the "Concrete Functions" (`--all`).
    `show_all` wins over the other arguments, and `signature_def` without
    `tag_set` is ignored, as in saved_model_cli.

  The text includes print()'s newlines (and, with `show_all`, the leading
  blank line), so write it with `print(text, end='')` to reproduce the CLI.
  `tag_set` is a comma-separated string ('serve,gpu') or a sequence of tags;
  the order of tags does not matter.

  Differences from saved_model_cli (which loads the model for `--all`; this
  only parses the proto):

  * the "contains the following ops" set is printed sorted; saved_model_cli
    prints a Python set, whose order changes from run to run.
  * Concrete Functions are rebuilt from the SavedModel's object graph rather
    than from loaded functions. saved_model_cli orders the concrete functions
    of one function by the names loading gives them ('__inference_f_<uid>');
    this follows the same load order, which matches unless the uids of one
    function straddle a power of ten (e.g. 998 and 1002). The section is
    only printed for a SavedModel with a single MetaGraphDef (saved_model_cli
    fails to load others).
  * errors are `ContractError`s (unknown tag-set or signature, no SavedModel)
    instead of a traceback.

  Args:
    saved_model_dir: the SavedModel (version) directory.
    tag_set: the tags of one MetaGraphDef.
    signature_def: a SignatureDef key in that MetaGraphDef.
    show_all: show everything.

  Returns:
    The text exactly as printed: it ends with a newline, except after a TF2
    SavedModel's "Concrete Functions:" heading with no function below it.

  Raises:
    ContractError: see `read_saved_model`; or an unknown tag-set or signature
      (the message lists the available ones).
  """
  saved_model = read_saved_model(saved_model_dir)
  text = _Text()
  if show_all:
    _write_all(text, saved_model)
  elif tag_set is None:
    _write_tag_sets(text, saved_model)
  else:
    meta_graph = _find_meta_graph(saved_model, tag_set, saved_model_dir)
    if signature_def is None:
      _write_signature_keys(text, meta_graph)
    else:
      signature = _find_signature(meta_graph, signature_def, saved_model_dir)
      _write_signature(text, signature, indent=0)
  return text.value()


def _write_tag_sets(text: _Text, saved_model: saved_model_pb2.SavedModel) -> None:
  text.line('The given SavedModel contains the following tag-sets:')
  for tags in sorted(list(mg.meta_info_def.tags) for mg in saved_model.meta_graphs):
    text.line(repr(', '.join(sorted(tags))))


def _write_signature_keys(text: _Text, meta_graph: meta_graph_pb2.MetaGraphDef) -> None:
  text.line('The given SavedModel MetaGraphDef contains SignatureDefs with the following keys:')
  for key in sorted(meta_graph.signature_def.keys()):
    text.line(f'SignatureDef key: "{key}"')


def _write_signature(text: _Text, signature: meta_graph_pb2.SignatureDef, indent: int) -> None:
  """The inputs, outputs and method name of one SignatureDef."""
  pad = '  ' * indent
  text.line(pad + 'The given SavedModel SignatureDef contains the following input(s):')
  for key, info in sorted(signature.inputs.items()):
    text.line(pad + f"  inputs['{key}'] tensor_info:")
    _write_tensor_info(text, info, indent + 1)
  text.line(pad + 'The given SavedModel SignatureDef contains the following output(s):')
  for key, info in sorted(signature.outputs.items()):
    text.line(pad + f"  outputs['{key}'] tensor_info:")
    _write_tensor_info(text, info, indent + 1)
  text.line(pad + f'Method name is: {signature.method_name}')


def _write_tensor_info(text: _Text, info: meta_graph_pb2.TensorInfo, indent: int) -> None:
  pad = '  ' * indent
  text.line(pad + f'    dtype: {dtype_name(info.dtype)}')
  text.line(pad + f'    shape: {shape_text(shape_dims(info.tensor_shape))}')
  text.line(pad + f'    name: {info.name}')


def dtype_name(dtype_enum: int) -> str:
  """DataType enum value -> 'DT_FLOAT'."""
  try:
    return types_pb2.DataType.Name(dtype_enum)
  except ValueError:
    return str(dtype_enum)


def shape_dims(shape_proto) -> Optional[List[int]]:
  """TensorShapeProto -> list of dim sizes (-1 unknown), None for unknown rank."""
  if shape_proto.unknown_rank:
    return None
  return [int(dim.size) for dim in shape_proto.dim]


def shape_text(dims: Optional[Sequence[int]]) -> str:
  """saved_model_cli's rendering: '(-1, 3)', '(1)', '()' or 'unknown_rank'."""
  if dims is None:
    return 'unknown_rank'
  return '(' + ', '.join(str(size) for size in dims) + ')'


def _write_all(text: _Text, saved_model: saved_model_pb2.SavedModel) -> None:
  """`--all`: each MetaGraphDef (ordered by its tag list), then the functions."""
  for meta_graph in sorted(saved_model.meta_graphs,
                           key=lambda mg: list(mg.meta_info_def.tags)):
    tags = list(meta_graph.meta_info_def.tags)
    text.line()
    text.line(f"MetaGraphDef with tag-set: '{', '.join(tags)}' "
              'contains the following SignatureDefs:')
    for key in sorted(meta_graph.signature_def.keys()):
      text.line()
      text.line(f"signature_def['{key}']:")
      _write_signature(text, meta_graph.signature_def[key], indent=1)
    text.line(f'The MetaGraph with tag set {tags!r} contains the following ops: '
              + _set_text(_ops_used(meta_graph.graph_def)))
  _write_concrete_functions(text, saved_model)


def _set_text(names: Iterable[str]) -> str:
  """A set of strings in Python's set notation, sorted."""
  names = sorted(names)
  if not names:
    return 'set()'
  return '{' + ', '.join(repr(name) for name in names) + '}'


def _ops_used(graph_def) -> set:
  """The op types the graph runs, looking inside the functions it calls.

  Functions are followed when a node's op is a library function or a node is
  a (Stateful)PartitionedCall; function names themselves are not ops.
  """
  library = {function.signature.name: function for function in graph_def.library.function}
  seen = set()
  pending = [graph_def.node]
  while pending:
    for node in pending.pop():
      for name in _called_names(node):
        if name not in seen and name in library:
          pending.append(library[name].node_def)
        seen.add(name)
  return seen - set(library)


def _called_names(node) -> List[str]:
  """A node's op type, plus the function it calls if it is a call op."""
  names = [node.op]
  if node.op in _CALL_OPS:
    names.append(node.attr['f'].func.name)
  return names


# ----------------------------------------------------------------------------
# show(show_all=True): the "Concrete Functions" of a TF2 SavedModel.
# ----------------------------------------------------------------------------


def _write_concrete_functions(text: _Text, saved_model: saved_model_pb2.SavedModel) -> None:
  """The root object's functions, each with its input signatures."""
  if not any(mg.HasField('object_graph_def') for mg in saved_model.meta_graphs):
    return
  if len(saved_model.meta_graphs) != 1:
    return  # saved_model_cli cannot load such a model either; see show().
  meta_graph = saved_model.meta_graphs[0]
  object_graph = meta_graph.object_graph_def
  load_order = _function_load_order(meta_graph.graph_def.library)
  text.line()
  text.line('Concrete Functions:', end='')
  root = object_graph.nodes[0]
  for child in sorted(root.children, key=lambda ref: ref.local_name):
    node = object_graph.nodes[child.node_id]
    signatures = _function_signatures(object_graph, node, load_order)
    if signatures is None:
      continue
    text.line()
    text.line(f"  Function Name: '{child.local_name}'")
    for index, (args, kwargs) in enumerate(signatures, 1):
      _write_callable(text, index, args, kwargs)


def _function_signatures(object_graph, node,
                         load_order: Mapping[str, int]) -> Optional[List[Tuple[Any, Any]]]:
  """[(args, kwargs)] per concrete function of a function node, else None."""
  kind = node.WhichOneof('kind')
  if kind == 'function':
    names = sorted(node.function.concrete_functions,
                   key=lambda name: (load_order.get(name, len(load_order)), name))
    return [_structured_signature(object_graph, name) for name in names]
  if kind == 'bare_concrete_function':
    bare = node.bare_concrete_function
    args, kwargs = _structured_signature(object_graph, bare.concrete_function_name)
    if args is None and kwargs is None and bare.argument_keywords:
      args = list(bare.argument_keywords)
    return [(args, kwargs)]
  return None


def _function_load_order(library) -> Dict[str, int]:
  """The position at which tf.saved_model.load recreates each library function.

  Loading renames every function with a fresh, increasing uid, in dependency
  order (among functions whose dependencies are all loaded, the one listed
  last goes first), and saved_model_cli lists a function's concrete functions
  sorted by those new names. Ranks follow the same order.

  Args:
    library: the FunctionDefLibrary of the MetaGraphDef.

  Returns:
    {saved function name: rank}; functions in a dependency cycle are absent.
  """
  names = [function.signature.name for function in library.function]
  gradients = {g.registered_op_type.encode(): g.gradient_func
               for g in library.registered_gradients if g.registered_op_type}
  users = collections.defaultdict(list)
  unmet = {}
  for function in library.function:
    deps = _function_dependencies(function, set(names), gradients)
    unmet[function.signature.name] = len(deps)
    for dep in deps:
      users[dep].append(function.signature.name)
  ready = [name for name in names if not unmet[name]]
  order = {}
  while ready:
    name = ready.pop()
    order[name] = len(order)
    for user in users[name]:
      unmet[user] -= 1
      if not unmet[user]:
        ready.append(user)
  return order


def _function_dependencies(function, library_names: set,
                           gradients: Mapping[bytes, str]) -> set:
  """Library functions a FunctionDef needs loaded first (as TF's loader sees it)."""
  deps = set()
  for node in function.node_def:
    gradient_type = None
    if '_gradient_op_type' in node.attr and node.op not in _CALL_OPS:
      gradient_type = node.attr['_gradient_op_type'].s
    if node.op in library_names:
      deps.add(node.op)
    elif gradient_type and gradient_type in gradients:
      deps.add(gradients[gradient_type])
    else:
      deps.update(_attr_function_names(node))
  return deps


def _attr_function_names(node) -> List[str]:
  """Names of the functions a node's attributes refer to."""
  found = []
  for attr in node.attr.values():
    kind = attr.WhichOneof('value')
    if kind == 'func':
      found.append(attr.func.name)
    elif kind == 'list':
      found.extend(func.name for func in attr.list.func)
  return found


def _structured_signature(object_graph, function_name: str) -> Tuple[Any, Any]:
  """The decoded (args, kwargs) input signature of a saved concrete function."""
  saved = object_graph.concrete_functions.get(function_name)
  if saved is None or saved.canonicalized_input_signature.WhichOneof('kind') is None:
    return None, None
  decoded = _decode_structure(saved.canonicalized_input_signature)
  if not isinstance(decoded, tuple) or len(decoded) != 2:
    return None, None
  args, kwargs = decoded
  return args, kwargs


def _write_callable(text: _Text, index: int, args: Any, kwargs: Any) -> None:
  if args:
    text.line(f'    Option #{index}')
    text.line('      Callable with:')
    _write_arguments(text, args, 'Argument')
  if kwargs:
    _write_arguments(text, kwargs, 'Named Argument')


def _write_arguments(text: _Text, arguments: Iterable[Any], label: str) -> None:
  """One entry per argument (a dict lists its keys), at saved_model_cli's depth."""
  pad = '        '
  for index, element in enumerate(arguments, 1):
    text.line(f'{pad}{label} #{index}')
    if isinstance(element, str):
      text.line(f'{pad}  {element}')
    elif isinstance(element, tf.TensorSpec):
      text.line(f'{pad}  {element.name}: {element!r}')
    elif isinstance(element, dict):
      items = ''.join(f"'{key}': {_quoted(value)}, " for key, value in element.items())
      _write_value(text, pad, element, '{' + items + '\b\b}')
    elif isinstance(element, collections.abc.Iterable):
      items = ''.join(f'{_quoted(value)}, ' for value in element)
      _write_value(text, pad, element, '[' + items + '\b\b]')
    else:
      _write_value(text, pad, element, str(element))


def _write_value(text: _Text, pad: str, element: Any, rendered: str) -> None:
  text.line(f'{pad}  DType: {type(element).__name__}')
  text.line(f'{pad}  Value: {rendered}')


def _quoted(value: Any) -> str:
  return f"'{value}'" if isinstance(value, str) else str(value)


def _decode_structure(value: struct_pb2.StructuredValue) -> Any:
  """A StructuredValue (a saved function's input signature) -> Python objects."""
  kind = value.WhichOneof('kind')
  simple = {
      None: lambda: None,
      'none_value': lambda: None,
      'float64_value': lambda: value.float64_value,
      'int64_value': lambda: int(value.int64_value),
      'string_value': lambda: value.string_value,
      'bool_value': lambda: value.bool_value,
      'tensor_shape_value': lambda: tf.TensorShape(value.tensor_shape_value),
      'tensor_dtype_value': lambda: tf.dtypes.as_dtype(value.tensor_dtype_value),
      'tensor_spec_value': lambda: _decode_tensor_spec(value.tensor_spec_value),
      'list_value': lambda: [_decode_structure(v) for v in value.list_value.values],
      'tuple_value': lambda: tuple(_decode_structure(v) for v in value.tuple_value.values),
      'dict_value': lambda: {k: _decode_structure(v)
                             for k, v in value.dict_value.fields.items()},
      'named_tuple_value': lambda: _decode_named_tuple(value.named_tuple_value),
  }
  if kind in simple:
    return simple[kind]()
  # TypeSpecs of composite tensors, bounded specs and constant tensors have no
  # public decoder: use TensorFlow's own.
  return tf.__internal__.saved_model.decode_proto(value)


def _decode_tensor_spec(spec: struct_pb2.TensorSpecProto) -> tf.TensorSpec:
  return tf.TensorSpec(shape=tf.TensorShape(spec.shape), dtype=tf.dtypes.as_dtype(spec.dtype),
                       name=spec.name or None)


def _decode_named_tuple(named: struct_pb2.NamedTupleValue) -> Any:
  keys = [pair.key for pair in named.values]
  values = [_decode_structure(pair.value) for pair in named.values]
  return collections.namedtuple(named.name, keys)(*values)
