"""What every subcommand shares: the parser shape, JSON arguments, and error reporting."""
import argparse
import errno
import json
import sys
from typing import Any, Callable, Optional, Sequence

PROG = 'estimator-export'
EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class UsageError(Exception):
  """A flag value the user must change; reported as `PROG COMMAND: error: ...`, exit 2."""


def add_command(subparsers, name: str, *, summary: str, description: str,
                examples: Sequence[str], **kwargs) -> argparse.ArgumentParser:
  """Adds subcommand `name` with a one-line summary, a description and examples."""
  epilog = 'examples:\n' + '\n'.join(f'  {line}' for line in examples)
  parser = subparsers.add_parser(
      name, help=summary, description=description, epilog=epilog, allow_abbrev=False,
      formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)
  parser.set_defaults(subparser=parser)  # So errors name the subcommand (main).
  return parser


def add_dir_argument(parser: argparse.ArgumentParser) -> None:
  """--dir: the SavedModel version directory a subcommand reads."""
  parser.add_argument('--dir', required=True, metavar='DIR',
                      help='the SavedModel version directory (the one holding saved_model.pb)')


def load_json_arg(text: Optional[str], flag: str, example: str) -> Any:
  """A flag's JSON value, or the JSON in @FILE; None when the flag is unset."""
  if text is None:
    return None
  source = text
  if text.startswith('@'):
    try:
      with open(text[1:], encoding='utf-8') as f:
        text = f.read()
    except OSError as e:
      raise UsageError(f'--{flag}: cannot read {text[1:]!r} ({e.strerror}). Fix: give an '
                       'existing JSON file after @') from e
  try:
    return json.loads(text)
  except ValueError as e:
    shown = source if len(source) <= 80 else source[:77] + '...'
    raise UsageError(f'--{flag} is not valid JSON ({e}): got {shown!r}. Fix: pass JSON such '
                     f'as {example}, or @file.json') from e


def _os_error_text(e: OSError) -> str:
  if e.errno == errno.EADDRINUSE:
    return f'{e.strerror or e}. Fix: the port is taken; pick another port or stop what uses it'
  where = f': {e.filename!r}' if e.filename else ''
  return f'{e.strerror or e}{where}. Fix: check the path and its permissions'


def run_reporting_errors(command: str, run: Callable[[argparse.Namespace], int],
                         args: argparse.Namespace) -> int:
  """Runs a subcommand; a user's mistake becomes one error line and exit code 2."""
  from estimator_export.errors import EstimatorExportError  # pylint: disable=g-import-not-at-top
  try:
    return run(args)
  except (EstimatorExportError, UsageError) as e:
    message = str(e)
  except OSError as e:
    message = _os_error_text(e)
  except KeyboardInterrupt:
    return 130
  print(f'{PROG} {command}: error: {message}', file=sys.stderr)
  return EXIT_USAGE
