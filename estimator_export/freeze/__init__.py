r"""Freeze a model into one GraphDef `.pb`: from a checkpoint, a SavedModel or an Estimator.

TF 2.15 has no `freeze_graph` command; this module is its replacement, and
`estimator-export freeze` takes freeze_graph's flags::

    # session mode: checkpoint + its .meta graph, output nodes by name
    frozen = freeze_checkpoint('/tmp/model.ckpt', ['softmax'])
    # rebuild the graph for inference first (BatchNorm moving statistics, no dropout)
    frozen = freeze_graph_fn(lambda is_training: build(is_training), '/tmp/model.ckpt')
    # a SavedModel: outputs come from a signature
    frozen = freeze_saved_model('/models/m/1', signature_name='serving_default')
    # ... or, as freeze_graph, from a tag set and node names (no SignatureDef needed)
    frozen = freeze_saved_model('/tmp/tagged/1', tags='my_model', output_node_names='y')
    # an Estimator's PREDICT graph, latest checkpoint
    frozen = freeze_estimator(estimator, serving_input_receiver_fn)

    frozen.save('/tmp/frozen.pb')            # + /tmp/frozen.manifest.json
    with FrozenPredictor.from_frozen_graph('/tmp/frozen.pb') as predict:
      predict({'x': [[1., 2., 3.]]})           # by the manifest's aliases
      predict.run_tensors({'x:0': [[1., 2., 3.]]}, ['softmax:0'])

`FreezeOptions` selects optimisation passes (strip_unused,
remove_training_nodes, fold_constants, fold_batch_norms) and compression
(fp16, int8). After freezing and after every pass the graph is run on sample
inputs and compared with the unfrozen model; a difference raises FreezeError
naming the output and by how much. Lookup tables keep working: their
initializers are grouped into the manifest's `init_op`, and vocabulary files
are embedded as constants (tables='embed') or copied beside the .pb.

This module is the public API; its private parts: _core (FreezeOptions,
FrozenGraph, freeze_session), _graph (GraphDef helpers), _passes (optimisation
passes), _compress (fp16/int8 weights), _predictor (FrozenPredictor). The
command line is estimator_export/cli/freeze.py.
"""
import os
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import tensorflow as tf

from estimator_export._op_libraries import register_serving_op_libraries
from estimator_export._saved_model import (DEFAULT_SIGNATURE, read_saved_model,
                                           resolve_checkpoint)
from estimator_export.errors import (CheckpointNotFoundError, FreezeError, SignatureError,
                                     did_you_mean)
from estimator_export.freeze import _graph as graph_lib
from estimator_export.freeze._core import (FreezeOptions, FreezeWarning, FrozenGraph,
                                           freeze_session, manifest_path)
from estimator_export.freeze._predictor import FrozenPredictor, read_frozen_manifest

__all__ = ['FreezeOptions', 'FreezeWarning', 'FrozenGraph', 'FrozenPredictor',
           'freeze_checkpoint', 'freeze_estimator', 'freeze_graph', 'freeze_graph_fn',
           'freeze_saved_model', 'manifest_path', 'read_frozen_manifest']


def _names(value: Union[None, str, Sequence[str]]) -> Tuple[str, ...]:
  if value is None:
    return ()
  if isinstance(value, str):
    return tuple(v.strip() for v in value.split(',') if v.strip())
  return tuple(value)


def _step(checkpoint: Optional[str]) -> Optional[int]:
  if not checkpoint:
    return None
  try:
    return int(tf.train.load_variable(checkpoint, 'global_step'))
  except (tf.errors.NotFoundError, ValueError):
    return None


def _checkpoint_format(prefix: str) -> Optional[int]:
  """2 for a V2 checkpoint (prefix.index), 1 for V1 (the prefix or its shards), else None."""
  if tf.io.gfile.exists(prefix + '.index'):
    return 2
  if tf.io.gfile.exists(prefix) and not tf.io.gfile.isdir(prefix):
    return 1
  return 1 if tf.io.gfile.glob(prefix + '-?????-of-?????') else None


def _check_checkpoint(checkpoint: Optional[str], model_dir: Optional[str] = None,
                      version: int = 2) -> str:
  """A prefix, a directory or model_dir's latest checkpoint, in format V`version`.

  V2 checkpoints are found by _saved_model.resolve_checkpoint; a V1 prefix only when
  version is 1 (freeze_graph's --checkpoint_version). Errors are FreezeErrors
  that say which format a checkpoint of the other one is.
  """
  path = os.fspath(checkpoint) if checkpoint else None
  if version == 1 and path and _checkpoint_format(path) == 1:
    return path
  try:
    found = resolve_checkpoint(model_dir, path)
  except CheckpointNotFoundError as e:
    if path and _checkpoint_format(path) == 1:
      raise FreezeError(f'the checkpoint is a V1 checkpoint but checkpoint_version is '
                        f'{version}', value=path, fix='pass checkpoint_version=1 '
                        '(--checkpoint_version=1) to read it') from e
    raise FreezeError(e.what, value=e.value, fix=e.fix) from e
  actual = _checkpoint_format(found)
  if actual is not None and actual != version:
    raise FreezeError(f'the checkpoint is a V{actual} checkpoint but checkpoint_version is '
                      f'{version}', value=found, fix=f'pass checkpoint_version={actual} '
                      f'(--checkpoint_version={actual}) to read it')
  return found


def _by_alias(graph: tf.Graph, names: Sequence[str]) -> Dict[str, tf.Tensor]:
  """'a' or 'a:0' -> {'a': tensor a:0}; 'a:1' -> {'a:1': tensor a:1}."""
  tensors = {}
  for name in names:
    alias = graph_lib.node_name(name) if ':' not in name or name.endswith(':0') else name
    try:
      tensors[alias] = graph.get_tensor_by_name(graph_lib.tensor_name(name))
    except (KeyError, ValueError) as e:
      op = graph.get_operation_by_name(graph_lib.node_name(name))
      raise FreezeError(f'node {op.name!r} has {len(op.outputs)} output(s)', value=name,
                        fix=f'use a node name or one of {[t.name for t in op.outputs]}') from e
  return tensors


def _tensors_by_node(graph: tf.Graph, names: Sequence[str]) -> Dict[str, tf.Tensor]:
  graph_lib.check_output_names(graph.as_graph_def(), names)
  return _by_alias(graph, names)


def _placeholder_inputs(graph: tf.Graph, outputs: Mapping[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
  needed = graph_lib.reachable(graph.as_graph_def(), [t.op.name for t in outputs.values()])
  return {name: graph.get_tensor_by_name(name + ':0')
          for name in graph_lib.placeholders(graph.as_graph_def(), needed)}


def _input_tensors(graph: tf.Graph, outputs: Mapping[str, tf.Tensor],
                   input_node_names: Union[None, str, Sequence[str]]) -> Dict[str, tf.Tensor]:
  """Inputs aliased by node name: those named, else the Placeholders the outputs depend on."""
  names = _names(input_node_names)
  if not names:
    return _placeholder_inputs(graph, outputs)
  graph_lib.check_input_names(graph.as_graph_def(), names,
                              [t.op.name for t in outputs.values()])
  return _by_alias(graph, names)


def _run_table_inits(session, graph, outputs):
  tables, inits = graph_lib.tables_of(graph, [t.op.name for t in outputs.values()])
  graph_lib.refuse_mutable_tables(tables)
  if inits:
    try:
      session.run(inits)
    except tf.errors.NotFoundError as e:
      raise FreezeError('a lookup table is initialised from a file that does not exist',
                        value=e.message.splitlines()[0],
                        fix='freeze where the vocabulary file is (or from the SavedModel, '
                        'whose assets/ holds it); a frozen graph cannot initialise the table '
                        'without its contents') from e


def _restore(restore: Callable[[Any, str], None], session, checkpoint: str, graph: str):
  """restore(session, checkpoint); a checkpoint that does not fit the graph as FreezeError."""
  try:
    restore(session, checkpoint)
  except (tf.errors.OpError, ValueError) as e:
    message = e.message if isinstance(e, tf.errors.OpError) else str(e)
    raise FreezeError(f'the checkpoint does not fit {graph}', value=checkpoint,
                      fix='freeze a checkpoint written by this graph (the same model); '
                      f'restore said: {message.strip().splitlines()[0]}') from e


def _restore_by_assign(session, checkpoint: str) -> None:
  """Restores the variables of an imported GraphDef (which has no Saver) from a checkpoint."""
  graph = session.graph
  reader = tf.train.load_checkpoint(checkpoint)
  assigns, feeds = [], {}
  with graph.as_default():
    for op in list(graph.get_operations()):
      if op.type not in ('VarHandleOp', 'VariableV2'):
        continue
      if not reader.has_tensor(op.name):
        continue
      value = reader.get_tensor(op.name)
      dtype = tf.as_dtype(op.get_attr('dtype'))
      placeholder = tf.compat.v1.placeholder(dtype, value.shape, name=op.name + '/restore')
      if op.type == 'VarHandleOp':
        assigns.append(tf.raw_ops.AssignVariableOp(resource=op.outputs[0], value=placeholder))
      else:
        assigns.append(tf.compat.v1.assign(op.outputs[0], placeholder))
      feeds[placeholder] = value
  if assigns:
    session.run(assigns, feeds)


def freeze_checkpoint(checkpoint: str, output_node_names: Union[str, Sequence[str]],
                      meta_graph: Optional[str] = None, graph_def: Optional[Any] = None,
                      options: Optional[FreezeOptions] = None,
                      input_node_names: Union[None, str, Sequence[str]] = None) -> FrozenGraph:
  """Freezes a session-mode checkpoint with its graph (freeze_graph's classic use).

  Args:
    checkpoint: checkpoint prefix (e.g. '/tmp/model.ckpt') or a directory.
    output_node_names: node names (list or comma-separated); their outputs 0 are
      the manifest's outputs, aliased by node name.
    meta_graph: the .meta file; default checkpoint + '.meta'.
    graph_def: a GraphDef proto to use instead of a .meta (variables are then
      restored by name from the checkpoint).
    options: FreezeOptions.
    input_node_names: the nodes fed at serving (list or comma-separated),
      aliased by node name; default: the Placeholders the outputs depend on.
  """
  options = options or FreezeOptions()
  checkpoint = _check_checkpoint(checkpoint, version=options.checkpoint_version)
  names = _names(output_node_names)
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
    if graph_def is not None:
      tf.compat.v1.import_graph_def(graph_def, name='')
      source = {'kind': 'graph_def+checkpoint'}
      outputs = _tensors_by_node(graph, names)
      _restore(_restore_by_assign, session, checkpoint, 'the graph')
    else:
      meta_graph = os.fspath(meta_graph or checkpoint + '.meta')
      if not tf.io.gfile.exists(meta_graph):
        raise FreezeError('MetaGraph file not found', value=meta_graph,
                          fix='pass meta_graph= (the .meta written by tf.compat.v1.train.'
                          'Saver), a graph_def, or freeze a SavedModel')
      saver = tf.compat.v1.train.import_meta_graph(meta_graph, clear_devices=True)
      outputs = _tensors_by_node(graph, names)
      if saver is None:
        raise FreezeError('the MetaGraph has no variables to restore', value=meta_graph,
                          fix='save it with tf.compat.v1.train.Saver')
      _restore(saver.restore, session, checkpoint, meta_graph)
      source = {'kind': 'checkpoint', 'meta_graph': meta_graph}
    _run_table_inits(session, graph, outputs)
    source.update(path=checkpoint, checkpoint=checkpoint, step=_step(checkpoint))
    return freeze_session(session, _input_tensors(graph, outputs, input_node_names), outputs,
                          source, options)


def freeze_graph_fn(build_fn: Callable[..., Tuple[Mapping[str, tf.Tensor],
                                                  Mapping[str, tf.Tensor]]],
                    checkpoint: str, options: Optional[FreezeOptions] = None) -> FrozenGraph:
  """Rebuilds the model for inference, restores a checkpoint into it and freezes it.

  Args:
    build_fn: called as build_fn(is_training=False) in a fresh graph; returns
      (inputs, outputs): alias -> Tensor dicts (inputs are Placeholders). With
      is_training=False BatchNorm uses its moving statistics and dropout is off.
    checkpoint: checkpoint prefix or directory, written by training the same model.
    options: FreezeOptions.
  """
  options = options or FreezeOptions()
  checkpoint = _check_checkpoint(checkpoint, version=options.checkpoint_version)
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
    inputs, outputs = build_fn(is_training=False)
    saver = tf.compat.v1.train.Saver()
    try:
      saver.restore(session, checkpoint)
    except tf.errors.NotFoundError as e:
      raise FreezeError('the rebuilt graph has variables the checkpoint lacks', value=checkpoint,
                        fix='build_fn must create the same variables (names, scopes) as '
                        f'the training graph; restore said: {e.message.splitlines()[0]}') from e
    _run_table_inits(session, graph, outputs)
    source = {'kind': 'graph_fn', 'path': checkpoint, 'checkpoint': checkpoint,
              'step': _step(checkpoint),
              'graph_fn': getattr(build_fn, '__qualname__', repr(build_fn))}
    return freeze_session(session, dict(inputs), dict(outputs), source, options)


def _signature_tensors(graph, signature_def, what: str) -> Tuple[Dict[str, tf.Tensor],
                                                                  Dict[str, tf.Tensor]]:
  result = []
  for kind, infos in (('input', signature_def.inputs), ('output', signature_def.outputs)):
    tensors = {}
    for key, info in sorted(infos.items()):
      if info.WhichOneof('encoding') != 'name':
        raise FreezeError(f'{kind} {key!r} of {what} is not a dense tensor',
                          value=info.WhichOneof('encoding'),
                          fix='a frozen graph feeds and fetches dense tensors only')
      tensors[key] = graph.get_tensor_by_name(info.name)
    result.append(tensors)
  return result[0], result[1]


def _check_tag_set(export_dir: str, tags: Sequence[str]) -> None:
  """FreezeError listing the SavedModel's tag sets unless one equals `tags` (as a set)."""
  tag_sets = [list(m.meta_info_def.tags) for m in read_saved_model(export_dir).meta_graphs]
  if any(set(tag_set) == set(tags) for tag_set in tag_sets):
    return
  available = [','.join(tag_set) for tag_set in tag_sets]
  raise FreezeError('the SavedModel has no MetaGraph with this tag set', value=','.join(tags),
                    fix=f'pass one of its tag sets {available} as saved_model_tags '
                    f'(--saved_model_tags={available[0] if available else "serve"}).'
                    + did_you_mean(','.join(tags), available))


def _signature_of(meta_graph, graph: tf.Graph, signature_name: str, tags: Sequence[str]):
  """The SignatureDef `signature_name` of meta_graph; SignatureError saying what else to do."""
  signatures = meta_graph.signature_def
  if signature_name in signatures:
    return signatures[signature_name]
  if not signatures:
    likely = graph_lib.likely_outputs(graph.as_graph_def())
    raise SignatureError(f'the MetaGraph tagged {",".join(tags)!r} has no SignatureDef, so '
                         'there is no signature to freeze', value=signature_name,
                         fix='name the outputs with output_node_names (--output_node_names='
                         f'{",".join(likely[-2:]) or "a,b"}); inputs are then the Placeholders '
                         f'they depend on. Nodes that look like outputs: {likely}')
  raise SignatureError('no such signature in the SavedModel', value=signature_name,
                       fix=f'use one of {sorted(signatures)}, or name the outputs with '
                       'output_node_names and no signature.'
                       + did_you_mean(signature_name, signatures))


def freeze_saved_model(export_dir: str, signature_name: Optional[str] = None,
                       tags: Union[str, Sequence[str]] = (tf.saved_model.SERVING,),
                       output_node_names: Union[None, str, Sequence[str]] = None,
                       options: Optional[FreezeOptions] = None,
                       input_node_names: Union[None, str, Sequence[str]] = None) -> FrozenGraph:
  """Freezes a TF1-style SavedModel (what an Estimator or a saved_model.Builder writes).

  The outputs come from a signature, or from node names as in freeze_graph
  (`--input_saved_model_dir --saved_model_tags --output_node_names`); then the
  SavedModel needs no SignatureDef at all.

  Args:
    export_dir: the SavedModel version directory.
    signature_name: its inputs and outputs become the manifest's (by key).
      Default: 'serving_default', unless output_node_names are given: then no
      signature is read.
    tags: the MetaGraph's tag set (list or comma-separated), e.g. 'serve' or
      'my_model'; compared as a set.
    output_node_names: instead of the signature's outputs, these nodes (their
      outputs 0, aliased by node name).
    options: FreezeOptions.
    input_node_names: instead of the signature's inputs, these nodes; default
      without a signature: the Placeholders the outputs depend on.
  """
  options = options or FreezeOptions()
  export_dir = os.fspath(export_dir)
  tags = list(_names(tags))
  _check_tag_set(export_dir, tags)
  output_names = _names(output_node_names)
  if signature_name is None and not output_names:
    signature_name = DEFAULT_SIGNATURE
  register_serving_op_libraries()
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
    try:
      meta_graph = tf.compat.v1.saved_model.loader.load(session, tags, export_dir)
    except RuntimeError as e:
      raise FreezeError('the SavedModel has no MetaGraph with this tag set', value=tags,
                        fix=f'pass the tags of one of its MetaGraphs (estimator-export show '
                        f'--dir {export_dir}); loader said: {e}') from e
    signature = None
    if signature_name is not None:
      signature = _signature_of(meta_graph, graph, signature_name, tags)
      inputs, outputs = _signature_tensors(graph, signature, f'signature {signature_name!r}')
    if output_names:
      outputs = _tensors_by_node(graph, output_names)
    if signature is None or _names(input_node_names):
      inputs = _input_tensors(graph, outputs, input_node_names)
    variables = os.path.join(export_dir, 'variables', 'variables')
    step = _step(variables) if tf.io.gfile.exists(variables + '.index') else None
    source = {'kind': 'saved_model', 'path': export_dir, 'signature': signature_name,
              'tags': tags, 'step': step,
              'method': signature.method_name if signature is not None else None}
    if output_names:
      source['output_node_names'] = list(output_names)
    return freeze_session(session, inputs, outputs, source, options,
                          graph_lib.asset_feeds_of(meta_graph, export_dir))


def freeze_estimator(estimator: tf.estimator.Estimator,
                     serving_input_receiver_fn: Callable[[], Any],
                     checkpoint_path: Optional[str] = None,
                     signature_name: str = DEFAULT_SIGNATURE,
                     options: Optional[FreezeOptions] = None) -> FrozenGraph:
  """Freezes an Estimator's PREDICT graph for one of its export_outputs.

  Args:
    estimator: a tf.estimator.Estimator (e.g. from ServingModelMixin.make_estimator).
    serving_input_receiver_fn: returns a ServingInputReceiver; its receiver
      tensors are the inputs.
    checkpoint_path: a checkpoint prefix; default the latest in model_dir.
    signature_name: the export_outputs key whose outputs are frozen.
    options: FreezeOptions.
  """
  options = options or FreezeOptions()
  checkpoint_path = _check_checkpoint(checkpoint_path, estimator.model_dir,
                                      options.checkpoint_version)
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session(graph=graph) as session:
    tf.compat.v1.train.get_or_create_global_step()
    receiver = serving_input_receiver_fn()
    spec = estimator.model_fn(receiver.features, None, tf.estimator.ModeKeys.PREDICT,
                              estimator.config)
    export_outputs = getattr(spec, 'export_outputs', None) or {}
    if signature_name not in export_outputs:
      raise SignatureError('the PREDICT EstimatorSpec has no such export_outputs key',
                           value=signature_name, fix=f'use one of {sorted(export_outputs)}.'
                           + did_you_mean(signature_name, export_outputs))
    signature_def = export_outputs[signature_name].as_signature_def(receiver.receiver_tensors)
    inputs, outputs = _signature_tensors(graph, signature_def, f'signature {signature_name!r}')
    tf.compat.v1.train.Saver().restore(session, checkpoint_path)
    _run_table_inits(session, graph, outputs)
    source = {'kind': 'estimator', 'path': estimator.model_dir, 'checkpoint': checkpoint_path,
              'step': _step(checkpoint_path), 'signature': signature_name,
              'method': signature_def.method_name}
    return freeze_session(session, inputs, outputs, source, options)


def freeze_graph(*, output_graph: str, input_graph: Optional[str] = None,
                 input_binary: bool = False, input_checkpoint: Optional[str] = None,
                 input_meta_graph: Optional[str] = None,
                 input_saved_model_dir: Optional[str] = None,
                 saved_model_tags: Union[str, Sequence[str]] = tf.saved_model.SERVING,
                 output_node_names: Union[None, str, Sequence[str]] = None,
                 signature_name: Optional[str] = None,
                 options: Optional[FreezeOptions] = None,
                 input_node_names: Union[None, str, Sequence[str]] = None
                 ) -> Tuple[FrozenGraph, str]:
  """freeze_graph's arguments: picks the source, freezes, writes the .pb and manifest.

  Exactly one source: input_saved_model_dir; input_meta_graph (+ input_checkpoint);
  input_graph (a GraphDef file, binary if input_binary) + input_checkpoint; or
  input_checkpoint alone (its .meta beside it). Returns (FrozenGraph, manifest path).
  A SavedModel's outputs come from signature_name (default serving_default) or,
  as in freeze_graph, from output_node_names with saved_model_tags alone.
  input_node_names (not a freeze_graph flag) name the fed nodes; default: the
  signature's inputs, or the Placeholders the outputs depend on.
  freeze_graph's other flags are FreezeOptions: clear_devices, initializer_nodes,
  variable_names_whitelist, variable_names_denylist and checkpoint_version.
  """
  if input_saved_model_dir:
    frozen = freeze_saved_model(input_saved_model_dir, signature_name, saved_model_tags,
                                output_node_names, options, input_node_names)
  else:
    if not output_node_names:
      raise FreezeError('output_node_names is required for checkpoint and graph inputs',
                        value=output_node_names, fix='pass --output_node_names=a,b (only a '
                        'SavedModel signature can supply them)')
    if not input_checkpoint:
      raise FreezeError('no input to freeze', value=None,
                        fix='pass --input_saved_model_dir, or --input_checkpoint with '
                        '--input_meta_graph or --input_graph')
    graph_def = None
    if input_graph and not input_meta_graph:
      graph_def = _read_graph_def(input_graph, input_binary)
    frozen = freeze_checkpoint(input_checkpoint, output_node_names, input_meta_graph,
                               graph_def, options, input_node_names)
  return frozen, frozen.save(output_graph)


def _read_graph_def(path: str, binary: bool):
  from google.protobuf import text_format  # pylint: disable=g-import-not-at-top
  if not tf.io.gfile.exists(path):
    raise FreezeError('input graph not found', value=path, fix='pass an existing GraphDef file')
  graph_def = tf.compat.v1.GraphDef()
  with tf.io.gfile.GFile(path, 'rb') as f:
    data = f.read()
  try:
    if binary:
      graph_def.ParseFromString(data)
    else:
      text_format.Merge(data.decode('utf-8'), graph_def)
  except Exception as e:  # pylint: disable=broad-except
    other = 'text' if binary else 'binary'
    raise FreezeError('cannot parse the input graph', value=path,
                      fix=f'is it a {other} GraphDef? set --input_binary='
                      f'{str(not binary).lower()}; parser said: {e}') from e
  return graph_def
