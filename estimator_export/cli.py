"""The `estimator-export` command.

    estimator-export show --dir DIR [--all | --tag_set serve [--signature_def NAME]] [--json]
    estimator-export diff OLD_DIR NEW_DIR        # exit 0: compatible, 1: breaking, 2: error
    estimator-export validate --dir DIR          # run every signature on sample inputs
    estimator-export serve --model_name=m --model_base_path=/models/m --rest_api_port=8501
    estimator-export query --model m --inputs '{"x": [[1.0, 2.0, 3.0]]}'
    estimator-export freeze --input_saved_model_dir=DIR --output_graph=frozen.pb  # freeze_graph flags

`show` prints what `saved_model_cli show` prints; `--json` prints the
machine-readable contract instead.
"""
import argparse
import json
import os
import sys
from typing import List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before any TensorFlow import.

EXIT_OK, EXIT_BREAKING, EXIT_ERROR = 0, 1, 2


def _parser() -> argparse.ArgumentParser:
  parser = argparse.ArgumentParser(
      prog='estimator-export',
      description='Export, inspect and check TensorFlow Estimator SavedModels for TF Serving.')
  sub = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')

  show = sub.add_parser('show', help='print the MetaGraphs and SignatureDefs of a SavedModel')
  show.add_argument('--dir', required=True, help='SavedModel (version) directory')
  show.add_argument('--all', action='store_true', help='every MetaGraph and SignatureDef')
  show.add_argument('--tag_set', help='comma-separated tag-set, e.g. serve')
  show.add_argument('--signature_def', help='signature key, with --tag_set')
  show.add_argument('--json', action='store_true', help='print the contract as JSON')

  diff = sub.add_parser('diff', help='compare the serving contracts of two exports')
  diff.add_argument('old_dir')
  diff.add_argument('new_dir')
  diff.add_argument('--json', action='store_true', help='print the changes as JSON')

  validate = sub.add_parser('validate', help='run every signature of an export on samples')
  validate.add_argument('--dir', required=True, help='SavedModel (version) directory')

  from estimator_export.serving import config as serving_config  # pylint: disable=g-import-not-at-top
  serve = sub.add_parser(
      'serve', allow_abbrev=False,
      help="serve models over TF Serving's gRPC and REST APIs (tensorflow_model_server flags)")
  serving_config.add_server_arguments(serve)
  serve.add_argument('--server_binary', choices=('auto', 'embedded', 'tensorflow_model_server'),
                     default='auto', help='auto: the real tensorflow_model_server when it is on '
                     'the PATH, else the embedded server')

  from estimator_export.serving import client as serving_client  # pylint: disable=g-import-not-at-top
  query = sub.add_parser('query', help='query a model server (gRPC or REST)')
  serving_client.add_query_arguments(query)

  from estimator_export import _freeze_cli  # pylint: disable=g-import-not-at-top
  freeze = sub.add_parser('freeze', allow_abbrev=False,
                          help="freeze a checkpoint or SavedModel into one .pb "
                          "(freeze_graph's flags), optimise, compress, check")
  _freeze_cli.add_freeze_arguments(freeze)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  args = _parser().parse_args(argv)
  from estimator_export.errors import ExportError  # pylint: disable=g-import-not-at-top
  try:
    return _COMMANDS[args.command](args)
  except ExportError as e:
    print(f'estimator-export {args.command}: error: {e}', file=sys.stderr)
    return EXIT_ERROR


def _show(args) -> int:
  from estimator_export import inspect  # pylint: disable=g-import-not-at-top
  if args.json:
    print(json.dumps(inspect.contract(args.dir), indent=2, sort_keys=True))
  else:
    text = inspect.show(args.dir, tag_set=args.tag_set, signature_def=args.signature_def,
                        show_all=args.all)
    print(text, end='' if text.endswith('\n') else '\n')
  return EXIT_OK


def _diff(args) -> int:
  from estimator_export import inspect  # pylint: disable=g-import-not-at-top
  changes = inspect.diff(args.old_dir, args.new_dir)
  if args.json:
    print(json.dumps([c.__dict__ for c in changes], indent=2))
  else:
    print(inspect.format_changes(changes))
  return EXIT_BREAKING if any(c.kind == 'breaking' for c in changes) else EXIT_OK


def _validate(args) -> int:
  from estimator_export import validate  # pylint: disable=g-import-not-at-top
  report = validate.validate_export(args.dir)
  for name, shapes in report.items():
    print(f'{name}: ok ' + ', '.join(f'{k}{list(v)}' for k, v in sorted(shapes.items())))
  return EXIT_OK


def _serve(args) -> int:
  import logging  # pylint: disable=g-import-not-at-top
  import shutil  # pylint: disable=g-import-not-at-top
  import signal  # pylint: disable=g-import-not-at-top
  real = shutil.which('tensorflow_model_server')
  if args.server_binary == 'tensorflow_model_server' or (args.server_binary == 'auto' and real):
    if not real:
      print('estimator-export serve: error: tensorflow_model_server is not on the PATH; use '
            '--server_binary=embedded', file=sys.stderr)
      return EXIT_ERROR
    argv = [a for a in sys.argv[2:] if not a.startswith(('--host', '--server_binary'))]
    print(f'estimator-export serve: running {real} (it binds all interfaces)', flush=True)
    os.execv(real, [real] + argv)
  from estimator_export.serving import config as serving_config  # pylint: disable=g-import-not-at-top
  from estimator_export.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  logging.basicConfig(level=logging.INFO, format='%(asctime)s %(levelname)s %(message)s')
  logging.getLogger('tensorflow').setLevel(logging.ERROR)
  server = server_lib.create_server(serving_config.options_from_args(args))
  rest = f', REST on {args.host}:{server.rest_port}' if server.rest_port else ''
  print(f'estimator-export serve: gRPC on {args.host}:{server.grpc_port}{rest} '
        f'(models: {", ".join(server.manager.model_names())})', flush=True)

  def shutdown(signum, frame):
    del signum, frame
    server.stop(grace=5.0)

  signal.signal(signal.SIGINT, shutdown)
  signal.signal(signal.SIGTERM, shutdown)
  server.wait()
  return EXIT_OK


def _query(args) -> int:
  from estimator_export.serving import client as serving_client  # pylint: disable=g-import-not-at-top
  return serving_client.run_query(args)


def _freeze(args) -> int:
  from estimator_export import _freeze_cli  # pylint: disable=g-import-not-at-top
  return _freeze_cli.run_freeze(args)


_COMMANDS = {'show': _show, 'diff': _diff, 'validate': _validate, 'serve': _serve,
             'query': _query, 'freeze': _freeze}

if __name__ == '__main__':
  sys.exit(main())
