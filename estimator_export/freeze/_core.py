"""The freezing core: a live session's graph -> a checked, optimised FrozenGraph.

Private to estimator_export.freeze, which builds the session from a checkpoint,
a graph function, a SavedModel or an Estimator and calls `freeze_session`.
"""
import dataclasses
import json
import os
import warnings
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import tensorflow as tf

from estimator_export import precision
from estimator_export import validate as validate_lib
from estimator_export._saved_model import local_os_path, normalize_path
from estimator_export.errors import FreezeError
from estimator_export.freeze import _compress as compress_lib
from estimator_export.freeze import _graph as graph_lib
from estimator_export.freeze import _passes as passes_lib

MANIFEST_FORMAT = 1
TABLE_MODES = ('embed', 'reference')
CHECKPOINT_VERSIONS = (1, 2)


class FreezeWarning(UserWarning):
  """The frozen graph may not compute what serving should (e.g. it is in training mode)."""


@dataclasses.dataclass(frozen=True)
class FreezeOptions:
  """How to freeze, optimise, compress and check.

  Attributes:
    optimizations: pass names, applied in this order: 'strip_unused',
      'remove_training_nodes', 'fold_constants', 'fold_shapes', 'fuse_dense',
      'fold_batch_norms', 'fold_scales', 'prune_rows' (or 'all').
    compression: None, 'fp16' or 'int8' (weights of >= min_compress_elements).
    samples: input alias (or tensor name) -> array, to compare the frozen graph
      with the model; None: generated from the input shapes (random floats,
      zero ints); strings cannot be generated, so string inputs need samples.
    rtol, atol: tolerance of that comparison (after freezing and every pass).
    tables: 'embed' (vocabulary files become constants in the .pb) or
      'reference' (files are copied beside the .pb and fed to the init op).
    clear_devices: drop device placements.
    variable_names_whitelist / variable_names_denylist: which variables
      become constants (freeze_graph's flags); variables that stay variables
      must be restored before the .pb runs, so it is then not checked.
    initializer_nodes: nodes to run before freezing (freeze_graph's flag).
    min_compress_elements: smaller float constants stay float32.
    variable_names_blacklist: the old name of variable_names_denylist; either
      may be given (both only with the same names). Name lists may also be
      comma-separated strings, as freeze_graph takes them.
    checkpoint_version: freeze_graph's checkpoint format, 2 (V2, what
      tf.train.Saver writes: prefix.index + prefix.data-*) or 1 (V1, one file
      per shard). Checkpoints of the other format are refused with a message
      saying which they are; a SavedModel's variables are always V2, so it is
      not used there.
    mixed_precision: 'bfloat16' records that the graph runs with TF Serving's
      --mixed_precision=bfloat16 rewrite (estimator_export.precision):
      FrozenPredictor applies it, and the output drift on the samples is
      measured and kept in the manifest; None: float32.
  """
  optimizations: Tuple[str, ...] = ()
  compression: Optional[str] = None
  samples: Optional[Mapping[str, Any]] = None
  rtol: float = 1e-5
  atol: float = 1e-5
  tables: str = 'embed'
  clear_devices: bool = True
  variable_names_whitelist: Optional[Tuple[str, ...]] = None
  variable_names_blacklist: Optional[Tuple[str, ...]] = None
  initializer_nodes: Tuple[str, ...] = ()
  min_compress_elements: int = 1024
  variable_names_denylist: Optional[Tuple[str, ...]] = None
  checkpoint_version: int = 2
  mixed_precision: Optional[str] = None

  def __post_init__(self):
    names = tuple(self.optimizations)
    if names == ('all',):
      names = passes_lib.PASSES
    for name in names:
      if name not in passes_lib.PASSES:
        raise FreezeError('unknown optimization in FreezeOptions.optimizations', value=name,
                          fix=f'use some of {list(passes_lib.PASSES)} or "all"')
    object.__setattr__(self, 'optimizations',
                       tuple(p for p in passes_lib.PASSES if p in names))
    if self.compression not in (None,) + compress_lib.MODES:
      raise FreezeError('unknown FreezeOptions.compression', value=self.compression,
                        fix=f'use None or one of {list(compress_lib.MODES)}')
    precision.check_mode(self.mixed_precision, 'FreezeOptions.mixed_precision', FreezeError)
    if self.tables not in TABLE_MODES:
      raise FreezeError('unknown FreezeOptions.tables', value=self.tables,
                        fix=f'use one of {list(TABLE_MODES)}')
    for field in ('rtol', 'atol'):
      value = getattr(self, field)
      if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise FreezeError(f'FreezeOptions.{field} must be a number >= 0', value=value,
                          fix='e.g. rtol=1e-5, atol=1e-5')
    for field in ('variable_names_whitelist', 'variable_names_denylist',
                  'variable_names_blacklist', 'initializer_nodes'):
      value = getattr(self, field)
      if isinstance(value, str):  # freeze_graph's form: 'a,b'.
        value = [v.strip() for v in value.split(',') if v.strip()]
      if value is not None or field == 'initializer_nodes':
        object.__setattr__(self, field, tuple(value or ()))
    denylist, blacklist = self.variable_names_denylist, self.variable_names_blacklist
    if denylist is not None and blacklist is not None and denylist != blacklist:
      raise FreezeError('FreezeOptions got both variable_names_denylist and its old name '
                        'variable_names_blacklist, with different names', value=blacklist,
                        fix=f'pass only variable_names_denylist (now {list(denylist)}), and '
                        'variable_names_blacklist=None when replacing it')
    if self.checkpoint_version not in CHECKPOINT_VERSIONS or isinstance(
        self.checkpoint_version, bool):
      raise FreezeError('FreezeOptions.checkpoint_version must be 1 (V1) or 2 (V2)',
                        value=self.checkpoint_version,
                        fix="use freeze_graph's values: 2 (the default; tf.train.Saver writes "
                        'V2 checkpoints) or 1 for an old V1 checkpoint')


@dataclasses.dataclass
class FrozenGraph:
  """A frozen GraphDef with what a manifest records about it.

  Attributes:
    graph_def: the frozen (optimised, compressed) tf.compat.v1.GraphDef.
    inputs / outputs: alias -> {'name': 'op:0', 'dtype': 'float32', 'shape': [-1, 3]}
      (shape None when the rank is unknown).
    init_op: the node to run once after import (table initializers), or None.
    source: where it came from: kind, path, checkpoint, step, signature, tags.
    tables: the lookup tables kept and how their contents are stored.
    assets: tensor name -> vocabulary file, fed when running init_op
      (tables='reference'); absolute paths until saved.
    optimizations: [{'name', 'note', 'max_abs_diff'}] in the order applied.
    validation: the sample comparison after freezing ({} if skipped: no samples
      could be generated (string inputs), or the graph is in training mode, whose
      outputs are not reproducible; passes then run unchecked).
    compression: sizes and output difference of the weight compression, or None.
    warnings: messages also issued as FreezeWarning.
    mixed_precision: {'mode', 'native' (the CPU flag or None), 'max_abs_diff'
      on the samples (None when unchecked)}, or None (float32).
  """
  graph_def: Any
  inputs: Dict[str, Dict[str, Any]]
  outputs: Dict[str, Dict[str, Any]]
  init_op: Optional[str]
  source: Dict[str, Any]
  tables: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  assets: Dict[str, str] = dataclasses.field(default_factory=dict)
  optimizations: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
  validation: Dict[str, Any] = dataclasses.field(default_factory=dict)
  compression: Optional[Dict[str, Any]] = None
  warnings: List[str] = dataclasses.field(default_factory=list)
  mixed_precision: Optional[Dict[str, Any]] = None

  def manifest(self, graph_file: str = 'frozen_graph.pb') -> Dict[str, Any]:
    """The JSON-serialisable manifest (asset paths as stored)."""
    return {'format': MANIFEST_FORMAT, 'graph': graph_file, 'tf_version': tf.__version__,
            'inputs': self.inputs, 'outputs': self.outputs, 'init_op': self.init_op,
            'assets': self.assets, 'tables': self.tables, 'source': self.source,
            'optimizations': self.optimizations, 'validation': self.validation,
            'compression': self.compression, 'warnings': self.warnings,
            'mixed_precision': self.mixed_precision, 'graph_bytes': self.graph_def.ByteSize()}

  def save(self, output_graph: str) -> str:
    """Writes output_graph (binary GraphDef) and its manifest beside it.

    Vocabulary files of tables='reference' are copied to <stem>.assets/.

    Returns:
      The manifest path, manifest_path(output_graph).
    """
    output_graph = os.fspath(output_graph)
    if output_graph.startswith('file://'):
      output_graph = local_os_path(output_graph)
    directory = os.path.dirname(normalize_path(output_graph))  # gs://... stays a URL.
    tf.io.gfile.makedirs(directory)
    size = self.graph_def.ByteSize()
    graph_lib.check_proto_size(size, output_graph)
    stored = {}
    if self.assets:
      asset_dir = os.path.splitext(output_graph)[0] + '.assets'
      tf.io.gfile.makedirs(asset_dir)
      for tensor, path in self.assets.items():
        target = os.path.join(asset_dir, os.path.basename(path))
        if normalize_path(path) != normalize_path(target):
          tf.io.gfile.copy(path, target, overwrite=True)  # Either may be on any file system.
        stored[tensor] = f'{os.path.basename(asset_dir)}/{os.path.basename(target)}'
    with tf.io.gfile.GFile(output_graph, 'wb') as f:
      f.write(self.graph_def.SerializeToString())
    manifest = self.manifest(os.path.basename(output_graph))
    manifest['assets'] = stored
    path = manifest_path(output_graph)
    with tf.io.gfile.GFile(path, 'w') as f:
      f.write(json.dumps(manifest, indent=2, sort_keys=True) + '\n')
    return path


def manifest_path(output_graph: str) -> str:
  """'/x/model.pb' -> '/x/model.manifest.json'."""
  return os.path.splitext(os.fspath(output_graph))[0] + '.manifest.json'


def tensor_spec(tensor: tf.Tensor) -> Dict[str, Any]:
  shape = None if tensor.shape.rank is None else [
      -1 if d is None else d for d in tensor.shape.as_list()]
  return {'name': tensor.name, 'dtype': tensor.dtype.name, 'shape': shape}


def reference_feeds(inputs: Mapping[str, tf.Tensor], samples: Optional[Mapping[str, Any]],
                    seed: int = 0) -> Optional[Dict[str, np.ndarray]]:
  """Tensor name -> array for every input, to compare the frozen graph with the model.

  Samples are found by alias, tensor name or node name. Without samples the
  inputs are generated by validate.sample_feeds from their shapes (floats
  random normal, ints and bools zero; unknown dims 2 for the batch, else 1).
  Returns None when that is impossible (strings, unknown rank).
  """
  if samples is not None:
    values = {}
    for alias, tensor in inputs.items():
      for key in (alias, tensor.name, tensor.op.name):
        if key in samples:
          values[alias] = samples[key]
          break
      else:
        raise FreezeError('samples miss an input', value=alias,
                          fix=f'give a sample for every input: {sorted(inputs)}')
  elif any(t.dtype == tf.string or t.shape.rank is None for t in inputs.values()):
    return None
  else:
    signature = tf.compat.v1.saved_model.build_signature_def(
        {a: tf.compat.v1.saved_model.build_tensor_info(t) for a, t in inputs.items()}, {},
        tf.saved_model.PREDICT_METHOD_NAME)
    values = validate_lib.sample_feeds({'frozen': signature}, None,
                                       rng=np.random.RandomState(seed))['frozen']
  return {inputs[a].name: (np.asarray(v, dtype=object) if inputs[a].dtype == tf.string
                           else np.asarray(v, dtype=inputs[a].dtype.as_numpy_dtype))
          for a, v in values.items()}


def _text_file_contents(node, table, path: str) -> Tuple[np.ndarray, np.ndarray]:
  """(keys, values) that an InitializeTableFromTextFile node would load from path."""
  key_index, value_index = node.attr['key_index'].i, node.attr['value_index'].i
  delimiter = node.attr['delimiter'].s.decode() or '\t'
  vocab_size, offset = node.attr['vocab_size'].i, node.attr['offset'].i
  key_dtype = tf.as_dtype(table.attr['key_dtype'].type)
  value_dtype = tf.as_dtype(table.attr['value_dtype'].type)
  with tf.io.gfile.GFile(path, 'rb') as f:
    lines = f.read().decode('utf-8').split('\n')
  if lines and lines[-1] == '':
    lines.pop()
  if vocab_size > 0:
    if len(lines) < vocab_size:
      raise FreezeError(f'vocabulary file has fewer lines than the table expects '
                        f'({vocab_size})', value=path, fix='use the vocabulary the model '
                        'was built with')
    lines = lines[:vocab_size]

  def column(index: int, dtype: tf.DType) -> np.ndarray:
    if index == -2:
      items = lines
    elif index == -1:
      items = [i + offset for i in range(len(lines))]
    else:
      items = [line.split(delimiter)[index] for line in lines]
    if dtype == tf.string:
      return np.array([str(i).encode('utf-8') for i in items], dtype=object)
    return np.array([dtype.as_numpy_dtype(i) for i in items], dtype=dtype.as_numpy_dtype)

  return column(key_index, key_dtype), column(value_index, value_dtype)


def _embed_tables(graph_def, tables: List[Dict[str, Any]]):
  """Rewrites text-file initializers (tables marked 'embedded') into constant imports."""
  by_name = {n.name: n for n in graph_def.node}
  for table in tables:
    if table['storage'] != 'embedded' or table['initializer'] not in by_name:
      continue
    node = by_name[table['initializer']]
    handle = by_name[graph_lib.node_name(node.input[0])]
    keys, values = _text_file_contents(node, handle, table['vocabulary_file'])
    table['size'] = int(len(keys))
    names = []
    for suffix, array, dtype_field in (('keys', keys, 'key_dtype'),
                                       ('values', values, 'value_dtype')):
      const = graph_def.node.add()
      const.name = f'{node.name}/embedded_{suffix}'
      const.op = 'Const'
      dtype = tf.as_dtype(handle.attr[dtype_field].type)
      const.attr['dtype'].type = dtype.as_datatype_enum
      const.attr['value'].tensor.CopyFrom(tf.make_tensor_proto(array, dtype=dtype))
      names.append(const.name)
    table_input = node.input[0]
    key_type, value_type = handle.attr['key_dtype'].type, handle.attr['value_dtype'].type
    node.Clear()
    node.name = table['initializer']
    node.op = 'InitializeTableV2'
    node.input.extend([table_input] + names)
    node.attr['Tkey'].type = key_type
    node.attr['Tval'].type = value_type


def _run_frozen(frozen: 'FrozenGraph', graph_def, feeds,
                config: Optional[tf.compat.v1.ConfigProto] = None) -> Dict[str, np.ndarray]:
  aliases = sorted(frozen.outputs)
  values = passes_lib.run_graph_def(graph_def, [frozen.outputs[a]['name'] for a in aliases],
                                    feeds, frozen.init_op, frozen.assets, config)
  return dict(zip(aliases, values))


def freeze_session(session: tf.compat.v1.Session, inputs: Mapping[str, tf.Tensor],
                   outputs: Mapping[str, tf.Tensor], source: Dict[str, Any],
                   options: FreezeOptions,
                   asset_feeds: Optional[Mapping[str, str]] = None) -> FrozenGraph:
  """Freezes the graph of a session whose variables and tables hold the model.

  Args:
    session: a session over the model graph, variables restored, tables initialised.
    inputs: alias -> input tensor (Placeholders).
    outputs: alias -> output tensor.
    source: recorded as the manifest's source.
    options: FreezeOptions.
    asset_feeds: tensor name -> file path that the table initializers read
      (a SavedModel's assets).
  """
  graph = session.graph
  asset_feeds = dict(asset_feeds or {})
  output_nodes = sorted({t.op.name for t in outputs.values()})
  input_nodes = sorted({t.op.name for t in inputs.values()})
  graph_def = graph.as_graph_def()
  needed = graph_lib.reachable(graph_def, output_nodes)
  graph_lib.check_proto_size(graph_def.ByteSize() + graph_lib.variable_bytes(graph, needed),
                             source.get('path') or 'the model')
  for name in options.initializer_nodes:
    session.run(graph.get_operation_by_name(graph_lib.node_name(name)))

  tables, table_inits = graph_lib.tables_of(graph, output_nodes)
  graph_lib.refuse_mutable_tables(tables)
  frozen = FrozenGraph(None, {a: tensor_spec(t) for a, t in sorted(inputs.items())},
                       {a: tensor_spec(t) for a, t in sorted(outputs.items())}, None, source)
  for init in table_inits:
    record = {'table': init.inputs[0].op.name, 'initializer': init.name, 'op': init.type,
              'storage': 'graph constants'}
    if init.type in graph_lib.TEXT_FILE_INIT_OPS:
      filename = init.inputs[1]
      path = asset_feeds.get(filename.name) or session.run(filename).decode('utf-8')
      if not tf.io.gfile.exists(path):
        raise FreezeError(f'lookup table {record["table"]!r} is initialised from a file that '
                          'does not exist', value=path,
                          fix='freeze where the vocabulary file is (or from the SavedModel, '
                          'whose assets/ holds it); a frozen graph cannot initialise the '
                          'table without its contents')
      record['vocabulary_file'] = path
      if options.tables == 'embed':
        record['storage'] = 'embedded'
      else:
        record['storage'] = 'referenced'
        frozen.assets[filename.name] = path
    frozen.tables.append(record)

  feeds = reference_feeds(inputs, options.samples)
  reference = None
  if feeds is not None:
    aliases = sorted(outputs)
    try:
      reference = dict(zip(aliases, session.run([outputs[a] for a in aliases], feeds)))
    except (tf.errors.OpError, ValueError) as e:
      message = e.message if isinstance(e, tf.errors.OpError) else str(e)
      raise FreezeError('the model fails on the sample inputs before freezing',
                        value=message.strip().splitlines()[0],
                        fix='check that the checkpoint was written by this graph (the '
                        'MetaGraph or GraphDef and the checkpoint of one model), and that '
                        'samples have the shapes and dtypes of the inputs') from e

  graph_def = graph.as_graph_def()
  if options.clear_devices:
    graph_lib.clear_devices(graph_def)
  dest = output_nodes + input_nodes
  if table_inits:
    frozen.init_op = graph_lib.add_group_node(graph_def, 'frozen_tables_init',
                                              [op.name for op in table_inits])
    dest.append(frozen.init_op)
  with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    result = tf.compat.v1.graph_util.convert_variables_to_constants(
        session, graph_def, dest,
        variable_names_whitelist=options.variable_names_whitelist,
        variable_names_blacklist=(options.variable_names_denylist
                                  or options.variable_names_blacklist))
  _embed_tables(result, frozen.tables)
  for table in frozen.tables:
    if table['storage'] == 'embedded':
      table['vocabulary_file'] = os.path.basename(table['vocabulary_file'])

  training = graph_lib.training_mode_nodes(result, graph_lib.reachable(result, output_nodes))
  if training:
    message = graph_lib.format_training_warning(training)
    frozen.warnings.append(message)
    warnings.warn(message, FreezeWarning, stacklevel=3)
  kept = graph_lib.variable_nodes(result)
  if kept:
    message = graph_lib.format_kept_variables_warning(kept)
    frozen.warnings.append(message)
    warnings.warn(message, FreezeWarning, stacklevel=3)
    reference = None  # The .pb cannot run by itself: nothing to compare.

  if reference is not None and not training:
    got = _run_frozen(frozen, result, feeds)
    # The batch size of the first batched input (scalar inputs, e.g. a temperature, have none).
    batched = [v.shape[0] for v in feeds.values() if v.ndim]
    frozen.validation = {'samples': int(batched[0]) if batched else (1 if feeds else 0),
                         'rtol': options.rtol, 'atol': options.atol,
                         'max_abs_diff': passes_lib.compare_outputs(
                             reference, got, options.rtol, options.atol,
                             'after freezing')}
  for name in options.optimizations:
    result, note = passes_lib.apply_pass(name, result, dest)
    step = {'name': name, 'note': note, 'nodes': len(result.node)}
    if reference is not None and not training:
      got = _run_frozen(frozen, result, feeds)
      step['max_abs_diff'] = passes_lib.compare_outputs(
          reference, got, options.rtol, options.atol, f'after the {name} pass')
    frozen.optimizations.append(step)

  if options.compression:
    fp32_bytes = result.ByteSize()
    compressed, stats = compress_lib.compress(result, options.compression, dest,
                                              options.min_compress_elements)
    frozen.compression = {'mode': stats.mode, 'tensors': stats.tensors,
                          'graph_bytes_before': fp32_bytes,
                          'graph_bytes_after': compressed.ByteSize(),
                          'size_ratio': compressed.ByteSize() / max(fp32_bytes, 1)}
    if reference is not None:
      got = _run_frozen(frozen, compressed, feeds)
      frozen.compression['max_abs_diff'] = {
          k: validate_lib.max_abs_difference(reference[k], got[k])
          if reference[k].dtype.kind in 'fc' else 0.0 for k in sorted(reference)}
    result = compressed
  if options.mixed_precision:
    frozen.mixed_precision = {'mode': options.mixed_precision,
                              'native': precision.native_bf16(), 'max_abs_diff': None}
    if reference is not None and not training:
      got = _run_frozen(frozen, result, feeds, precision.session_config(options.mixed_precision))
      frozen.mixed_precision['max_abs_diff'] = {
          k: validate_lib.max_abs_difference(reference[k], got[k])
          if reference[k].dtype.kind in 'fc' else 0.0 for k in sorted(reference)}
  frozen.graph_def = result
  return frozen
