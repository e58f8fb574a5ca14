"""`estimator-export freeze`: freeze_graph's flags, plus optimisation, compression and checks.

    estimator-export freeze --input_saved_model_dir=/models/m/1 --output_graph=/tmp/frozen.pb
    estimator-export freeze --input_saved_model_dir=/models/m/1 --saved_model_tags=my_model \
        --output_node_names=y --output_graph=/tmp/frozen.pb
    estimator-export freeze --input_meta_graph=/tmp/model.ckpt.meta \
        --input_checkpoint=/tmp/model.ckpt --output_node_names=softmax \
        --output_graph=/tmp/frozen.pb --optimize=all --compress=fp16

Flags take freeze_graph's forms: --clear_devices, --clear_devices=true, --noclear_devices.
--input_saver, --restore_op_name and --filename_tensor_name are accepted and ignored
(checkpoints are restored with their MetaGraph's Saver or by variable name).
Nothing is imported from TensorFlow until `run`.
"""
import argparse
import sys
import warnings

from estimator_export.cli import _common

_TRUE, _FALSE = ('1', 'true', 't', 'yes', 'y'), ('0', 'false', 'f', 'no', 'n')
_SAMPLES_EXAMPLE = '{"x": [[1.0, 2.0, 3.0]]}'


def _bool(text: str) -> bool:
  lowered = text.lower()
  if lowered in _TRUE:
    return True
  if lowered in _FALSE:
    return False
  raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def _add_bool(parser, name: str, default: bool, help_text: str):
  parser.add_argument(f'--{name}', type=_bool, nargs='?', const=True, default=default,
                      metavar='BOOL', help=f'{help_text} (default: {str(default).lower()})')
  parser.add_argument(f'--no{name}', dest=name, action='store_false',
                      help=f'the same as --{name}=false')


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'freeze',
      summary="freeze a checkpoint or SavedModel into one .pb (freeze_graph's flags)",
      description='Turns variables into constants and writes one GraphDef .pb with a\n'
      'manifest beside it (<name>.manifest.json: inputs, outputs, init op, checks);\n'
      'optionally optimises and compresses it, checking the result against the\n'
      'unfrozen model after every step. Takes the flags of TF 1.x freeze_graph, which\n'
      'TF 2.15 no longer ships as a command. Exit 0 when the .pb is written, 2 on a\n'
      'mistake.',
      examples=['estimator-export freeze --input_saved_model_dir=/models/m/1 '
                '--output_graph=/tmp/frozen.pb --optimize=all',
                'estimator-export freeze --input_saved_model_dir=/models/m/1 '
                '--saved_model_tags=my_model --output_node_names=y '
                '--output_graph=/tmp/frozen.pb',
                'estimator-export freeze --input_meta_graph=model.ckpt.meta '
                '--input_checkpoint=model.ckpt --output_node_names=softmax '
                '--output_graph=/tmp/frozen.pb',
                'estimator-export freeze --input_graph=graph.pbtxt --input_checkpoint=model.ckpt '
                '--output_node_names=softmax --output_graph=/tmp/frozen.pb --compress=fp16 '
                '--samples @samples.json'])
  add_freeze_arguments(parser)
  parser.set_defaults(run=run)


def add_freeze_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds freeze_graph's flags and ours to a (sub)parser."""
  group = parser.add_argument_group('freeze_graph flags')
  group.add_argument('--input_graph', metavar='FILE',
                     help='GraphDef file to freeze with --input_checkpoint (text unless '
                     '--input_binary)')
  _add_bool(group, 'input_binary', False, 'the --input_graph file is a binary GraphDef')
  group.add_argument('--input_checkpoint', metavar='PREFIX',
                     help='checkpoint prefix, e.g. /tmp/model.ckpt-1000, or its directory '
                     '(the latest checkpoint there)')
  group.add_argument('--input_meta_graph', metavar='FILE',
                     help='MetaGraphDef file (.meta) to freeze with --input_checkpoint '
                     '(default: the checkpoint prefix + .meta)')
  group.add_argument('--input_saved_model_dir', metavar='DIR',
                     help='SavedModel version directory (the one holding saved_model.pb)')
  group.add_argument('--saved_model_tags', default='serve', metavar='TAGS',
                     help='comma-separated tag set of the SavedModel MetaGraph to freeze '
                     '(default: serve)')
  group.add_argument('--output_node_names', default='', metavar='NAMES',
                     help='comma-separated node names whose outputs 0 are frozen; optional '
                     "with a SavedModel (its signature's outputs by default); with them a "
                     'SavedModel needs no signature, only --saved_model_tags')
  group.add_argument('--output_graph', required=True, metavar='FILE',
                     help='the frozen binary GraphDef .pb to write (the manifest goes beside '
                     'it)')
  _add_bool(group, 'clear_devices', True, 'drop device placements')
  group.add_argument('--initializer_nodes', default='', metavar='NAMES',
                     help='comma-separated nodes to run before freezing')
  group.add_argument('--variable_names_whitelist', default='', metavar='NAMES',
                     help='comma-separated variables: only these become constants '
                     '(default: all)')
  group.add_argument('--variable_names_denylist', '--variable_names_blacklist', default='',
                     metavar='NAMES', dest='variable_names_denylist',
                     help='comma-separated variables that do not become constants (the .pb '
                     'then needs them restored before it runs, so it is not checked); '
                     '--variable_names_blacklist is its old name')
  group.add_argument('--checkpoint_version', type=int, choices=(1, 2), default=2,
                     help='format of --input_checkpoint: 2 (V2: prefix.index + '
                     'prefix.data-*, what tf.train.Saver writes) or 1 (V1: one file); a '
                     'checkpoint of the other format is refused, saying which it is; not '
                     "used with a SavedModel, whose variables are V2 (default: 2)")
  for ignored in ('input_saver', 'restore_op_name', 'filename_tensor_name'):
    group.add_argument(f'--{ignored}', metavar='IGNORED',
                       help="accepted for freeze_graph's command lines and ignored: "
                       "checkpoints are restored with the MetaGraph's Saver or by variable "
                       'name')
  ours = parser.add_argument_group('estimator-export flags')
  ours.add_argument('--signature_name', default=None, metavar='NAME',
                    help='SavedModel signature whose inputs and outputs are frozen '
                    '(default: serving_default; with --output_node_names no signature is '
                    'read unless this is given)')
  ours.add_argument('--input_node_names', default='', metavar='NAMES',
                    help='comma-separated nodes fed at serving, the inputs of the manifest '
                    "(default: the signature's inputs, else the Placeholders the output "
                    'nodes depend on)')
  ours.add_argument('--optimize', default='', metavar='PASSES',
                    help='comma-separated passes: strip_unused, remove_training_nodes, '
                    'fold_constants, fold_batch_norms, or "all" (default: none)')
  ours.add_argument('--compress', choices=('none', 'fp16', 'int8'), default='none',
                    help='store large weights as fp16 or int8 with per-channel scales '
                    '(default: none)')
  ours.add_argument('--mixed_precision', choices=('', 'bfloat16'), default='',
                    help='record that the graph runs with bfloat16 matmuls (TF Serving\'s '
                    '--mixed_precision=bfloat16 rewrite; FrozenPredictor applies it) and '
                    'report the output drift on the samples (default: float32)')
  ours.add_argument('--tables', choices=('embed', 'reference'), default='embed',
                    help='vocabulary files of lookup tables: embedded as constants or copied '
                    'beside the .pb (default: embed)')
  ours.add_argument('--samples', metavar='JSON',
                    help='sample inputs to check the frozen graph with, as a JSON object of '
                    f'input name -> rows (e.g. {_SAMPLES_EXAMPLE}) or @file.json (default: '
                    'generated from the input shapes)')
  ours.add_argument('--rtol', type=float, default=1e-5,
                    help='relative tolerance of the check (default: 1e-5)')
  ours.add_argument('--atol', type=float, default=1e-5,
                    help='absolute tolerance of the check (default: 1e-5)')


def _list(text: str):
  return tuple(v.strip() for v in (text or '').split(',') if v.strip())


def _samples(text):
  samples = _common.load_json_arg(text, 'samples', _SAMPLES_EXAMPLE)
  if samples is not None and not isinstance(samples, dict):
    raise _common.UsageError(f'--samples must be a JSON object of input name -> rows: got a '
                             f'{type(samples).__name__}. Fix: pass {_SAMPLES_EXAMPLE}')
  return samples


def run(args) -> int:
  """Freezes as the parsed flags say; prints a summary; returns the exit code 0."""
  samples = _samples(args.samples)
  from estimator_export import freeze as freeze_lib  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # The freeze path uses TF1 APIs (loader, convert_variables_to_constants) on purpose;
  # their deprecation notices are not for the command's user.
  logger = tf.get_logger()
  level = logger.level
  logger.setLevel('ERROR')
  try:
    frozen, manifest = _freeze(freeze_lib, args, samples)
  finally:
    logger.setLevel(level)
  _print_summary(args.output_graph, frozen, manifest)
  return _common.EXIT_OK


def _freeze(freeze_lib, args, samples):
  """freeze_lib.freeze_graph with the flags; FreezeWarnings printed to stderr."""
  options = freeze_lib.FreezeOptions(
      optimizations=_list(args.optimize),
      compression=None if args.compress == 'none' else args.compress,
      samples=samples, rtol=args.rtol, atol=args.atol, tables=args.tables,
      clear_devices=args.clear_devices,
      variable_names_whitelist=_list(args.variable_names_whitelist) or None,
      variable_names_denylist=_list(args.variable_names_denylist) or None,
      initializer_nodes=_list(args.initializer_nodes),
      checkpoint_version=args.checkpoint_version,
      mixed_precision=args.mixed_precision or None)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', freeze_lib.FreezeWarning)
    frozen, manifest = freeze_lib.freeze_graph(
        output_graph=args.output_graph, input_graph=args.input_graph,
        input_binary=args.input_binary, input_checkpoint=args.input_checkpoint,
        input_meta_graph=args.input_meta_graph,
        input_saved_model_dir=args.input_saved_model_dir,
        saved_model_tags=args.saved_model_tags,
        output_node_names=_list(args.output_node_names) or None,
        signature_name=args.signature_name, options=options,
        input_node_names=_list(args.input_node_names) or None)
  for warning in caught:
    if issubclass(warning.category, freeze_lib.FreezeWarning):
      print(f'{_common.PROG} freeze: warning: {warning.message}', file=sys.stderr)
  return frozen, manifest


def _print_summary(output_graph: str, frozen, manifest: str) -> None:
  print(f'wrote {output_graph} ({frozen.graph_def.ByteSize()} bytes, '
        f'{len(frozen.graph_def.node)} nodes) and {manifest}')
  for alias, spec in frozen.inputs.items():
    print(f'  input  {alias}: {spec["name"]} {spec["dtype"]} {spec["shape"]}')
  for alias, spec in frozen.outputs.items():
    print(f'  output {alias}: {spec["name"]} {spec["dtype"]} {spec["shape"]}')
  if frozen.init_op:
    print(f'  init_op: {frozen.init_op}')
  if frozen.validation:
    print(f'  checked on {frozen.validation["samples"]} sample(s): max |diff| '
          f'{frozen.validation["max_abs_diff"]}')
  elif not frozen.warnings:
    print('  not checked against the model: sample inputs cannot be generated for string or '
          'unknown-rank inputs; pass --samples')
  for step in frozen.optimizations:
    print(f'  {step["name"]}: {step["note"]}; max |diff| {step.get("max_abs_diff")}')
  if frozen.compression:
    c = frozen.compression
    print(f'  {c["mode"]}: size ratio {c["size_ratio"]:.3f}; max |diff| '
          f'{c.get("max_abs_diff")}')
  if frozen.mixed_precision:
    m = frozen.mixed_precision
    print(f'  {m["mode"]}: native on this CPU: {m["native"] or "no"}; max |diff| '
          f'{m.get("max_abs_diff")}')
