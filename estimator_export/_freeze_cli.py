"""`estimator-export freeze`: freeze_graph's flags, plus optimisation and compression.

    estimator-export freeze --input_saved_model_dir=/models/m/1 --output_graph=/tmp/frozen.pb
    estimator-export freeze --input_meta_graph=/tmp/model.ckpt.meta \
        --input_checkpoint=/tmp/model.ckpt --output_node_names=softmax \
        --output_graph=/tmp/frozen.pb --optimize=all --compress=fp16

Flags take freeze_graph's forms: --clear_devices, --clear_devices=true, --noclear_devices.
--input_saver, --restore_op_name and --filename_tensor_name are accepted and ignored
(checkpoints are restored with their MetaGraph's Saver or by variable name).
Private: this module imports no TensorFlow until run_freeze.
"""
import argparse
import json
import sys

_TRUE, _FALSE = ('1', 'true', 't', 'yes', 'y'), ('0', 'false', 'f', 'no', 'n')


def _bool(text: str) -> bool:
  lowered = text.lower()
  if lowered in _TRUE:
    return True
  if lowered in _FALSE:
    return False
  raise argparse.ArgumentTypeError(f'expected true or false, got {text!r}')


def _add_bool(parser, name: str, default: bool, help_text: str):
  parser.add_argument(f'--{name}', type=_bool, nargs='?', const=True, default=default,
                      help=help_text)
  parser.add_argument(f'--no{name}', dest=name, action='store_false', help=argparse.SUPPRESS)


def add_freeze_arguments(parser: argparse.ArgumentParser) -> None:
  """Adds freeze_graph's flags and ours to a (sub)parser."""
  group = parser.add_argument_group('freeze_graph flags')
  group.add_argument('--input_graph', help='GraphDef file (text unless --input_binary)')
  _add_bool(group, 'input_binary', False, 'the --input_graph file is a binary GraphDef')
  group.add_argument('--input_checkpoint', help='checkpoint prefix, e.g. /tmp/model.ckpt')
  group.add_argument('--input_meta_graph', help='MetaGraphDef file (.meta)')
  group.add_argument('--input_saved_model_dir', help='SavedModel version directory')
  group.add_argument('--saved_model_tags', default='serve', help='comma-separated tag set')
  group.add_argument('--output_node_names', default='',
                     help='comma-separated node names; optional with a SavedModel (the '
                     'signature supplies them)')
  group.add_argument('--output_graph', required=True, help='the frozen .pb to write')
  _add_bool(group, 'clear_devices', True, 'drop device placements')
  group.add_argument('--initializer_nodes', default='',
                     help='comma-separated nodes to run before freezing')
  group.add_argument('--variable_names_whitelist', default='',
                     help='only these variables become constants')
  group.add_argument('--variable_names_blacklist', default='',
                     help='these variables do not become constants')
  for ignored in ('input_saver', 'restore_op_name', 'filename_tensor_name'):
    group.add_argument(f'--{ignored}', help=argparse.SUPPRESS)
  ours = parser.add_argument_group('estimator-export')
  ours.add_argument('--signature_name', default='serving_default',
                    help='SavedModel signature whose inputs/outputs are frozen')
  ours.add_argument('--optimize', default='',
                    help='comma-separated passes: strip_unused, remove_training_nodes, '
                    'fold_constants, fold_batch_norms, or "all"')
  ours.add_argument('--compress', choices=('none', 'fp16', 'int8'), default='none',
                    help='store weights as fp16 or int8 (per-channel scales)')
  ours.add_argument('--tables', choices=('embed', 'reference'), default='embed',
                    help='vocabulary files: embedded as constants or copied beside the .pb')
  ours.add_argument('--samples', help='JSON object (or @file.json) of sample inputs by name')
  ours.add_argument('--rtol', type=float, default=1e-5, help='relative tolerance of the check')
  ours.add_argument('--atol', type=float, default=1e-5, help='absolute tolerance of the check')


def _list(text: str):
  return tuple(v.strip() for v in (text or '').split(',') if v.strip())


def _samples(text):
  if not text:
    return None
  if text.startswith('@'):
    with open(text[1:], encoding='utf-8') as f:
      text = f.read()
  from estimator_export.errors import FreezeError  # pylint: disable=g-import-not-at-top
  try:
    value = json.loads(text)
  except json.JSONDecodeError as e:
    raise FreezeError('--samples is not valid JSON', value=text[:80],
                      fix='pass a JSON object such as {"x": [[1.0, 2.0]]} or @file.json') from e
  if not isinstance(value, dict):
    raise FreezeError('--samples must be a JSON object', value=type(value).__name__,
                      fix='map input names to nested lists')
  return value


def run_freeze(args) -> int:
  """Freezes as the parsed flags say; prints a summary; returns the exit code 0."""
  import warnings  # pylint: disable=g-import-not-at-top
  from estimator_export import freeze as freeze_lib  # pylint: disable=g-import-not-at-top
  options = freeze_lib.FreezeOptions(
      optimizations=_list(args.optimize),
      compression=None if args.compress == 'none' else args.compress,
      samples=_samples(args.samples), rtol=args.rtol, atol=args.atol, tables=args.tables,
      clear_devices=args.clear_devices,
      variable_names_whitelist=_list(args.variable_names_whitelist) or None,
      variable_names_blacklist=_list(args.variable_names_blacklist) or None,
      initializer_nodes=_list(args.initializer_nodes))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter('always', freeze_lib.FreezeWarning)
    frozen, manifest = freeze_lib.freeze_graph(
        output_graph=args.output_graph, input_graph=args.input_graph,
        input_binary=args.input_binary, input_checkpoint=args.input_checkpoint,
        input_meta_graph=args.input_meta_graph,
        input_saved_model_dir=args.input_saved_model_dir,
        saved_model_tags=args.saved_model_tags,
        output_node_names=_list(args.output_node_names) or None,
        signature_name=args.signature_name, options=options)
  for warning in caught:
    if issubclass(warning.category, freeze_lib.FreezeWarning):
      print(f'estimator-export freeze: warning: {warning.message}', file=sys.stderr)
  print(f'wrote {args.output_graph} ({frozen.graph_def.ByteSize()} bytes, '
        f'{len(frozen.graph_def.node)} nodes) and {manifest}')
  for alias, spec in frozen.inputs.items():
    print(f'  input  {alias}: {spec["name"]} {spec["dtype"]} {spec["shape"]}')
  for alias, spec in frozen.outputs.items():
    print(f'  output {alias}: {spec["name"]} {spec["dtype"]} {spec["shape"]}')
  if frozen.init_op:
    print(f'  init_op: {frozen.init_op}')
  for step in frozen.optimizations:
    print(f'  {step["name"]}: {step["note"]}; max |diff| {step.get("max_abs_diff")}')
  if frozen.compression:
    c = frozen.compression
    print(f'  {c["mode"]}: size ratio {c["size_ratio"]:.3f}; max |diff| '
          f'{c.get("max_abs_diff")}')
  return 0
