"""The `estimator-export` command: every command-line surface of the package.

    estimator-export show --dir DIR [--all | --tag_set serve [--signature_def NAME]] [--json]
    estimator-export diff OLD_DIR NEW_DIR        # exit 0: compatible, 1: breaking, 2: error
    estimator-export validate --dir DIR [--samples JSON] [--rtol R] [--atol A]
    estimator-export servable DIR                # ops TF Serving 2.15.1 would not find
    estimator-export freeze --input_saved_model_dir=DIR --output_graph=frozen.pb
    estimator-export serve --model_name=m --model_base_path=/models/m --rest_api_port=8501
    estimator-export query --model_name m --inputs '{"x": [[1.0, 2.0, 3.0]]}'
    estimator-export cluster --workers 1 --ps 1 --evaluator --logdir LOGS -- python -m TRAINER
    estimator-export deploy kubernetes BASE --model_name m --storage_uri gs://b/m --output_dir -

Each subcommand is a module here with `add_parser(subparsers)`, which registers it
and sets `run(args) -> exit code`. Nothing is imported from TensorFlow until a
subcommand runs, so `--help` is instant. A user's mistake (a bad flag, a missing or
corrupt file, a port in use) exits 2 with `estimator-export SUBCOMMAND: error: ...`,
never a traceback.
"""
import argparse
import importlib
import os
import sys
from typing import List, Optional

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before any TensorFlow import.

from estimator_export.cli import _common  # pylint: disable=g-import-not-at-top,wrong-import-position

SUBCOMMANDS = ('show', 'diff', 'validate', 'servable', 'freeze', 'serve', 'query',
               'cluster', 'deploy')

_EXAMPLES = """\
examples:
  estimator-export show --dir /models/classifier/1000 --all
  estimator-export diff /models/classifier/1000 /models/classifier/2000
  estimator-export serve --model_name=classifier --model_base_path=/models/classifier
  estimator-export query --model_name classifier --inputs '{"x": [[1.0, 2.0, 3.0]]}'
  estimator-export deploy compose /models/classifier --model_name classifier --output_dir out

Run `estimator-export COMMAND --help` for a command's flags and examples."""


def build_parser() -> argparse.ArgumentParser:
  """The full parser, every subcommand registered (imports no TensorFlow)."""
  from estimator_export import __version__  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(
      prog=_common.PROG, formatter_class=argparse.RawDescriptionHelpFormatter,
      description='Export, inspect, check, freeze, serve and query TensorFlow Estimator '
      'SavedModels for TF Serving.', epilog=_EXAMPLES)
  parser.add_argument('--version', action='version', version=f'%(prog)s {__version__}',
                      help='print the version and exit')
  subparsers = parser.add_subparsers(dest='command', required=True, metavar='COMMAND')
  for name in SUBCOMMANDS:
    importlib.import_module(f'estimator_export.cli.{name}').add_parser(subparsers)
  return parser


def main(argv: Optional[List[str]] = None) -> int:
  """Runs the command line; returns the exit code (argparse exits 2 on bad flags)."""
  args, unknown = build_parser().parse_known_args(argv)
  if unknown:  # Reported by the subcommand's parser: `estimator-export CMD: error: ...`.
    args.subparser.error(f'unrecognized arguments: {" ".join(unknown)}')
  return _common.run_reporting_errors(args.command, args.run, args)


__all__ = ('SUBCOMMANDS', 'build_parser', 'main')

if __name__ == '__main__':
  sys.exit(main())
