"""`estimator-export show`: what `saved_model_cli show` prints, or the contract as JSON."""
import json

from estimator_export.cli import _common


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'show', summary='print the MetaGraphs and SignatureDefs of a SavedModel',
      description='Prints the tag-sets, SignatureDefs and inputs/outputs of a SavedModel in '
      "exactly the text `saved_model_cli show` prints for the same flags, read from the "
      'proto alone (no graph is loaded). --json prints the machine-readable contract that '
      '`diff` compares instead.',
      examples=['estimator-export show --dir /models/classifier/1000 --all',
                'estimator-export show --dir /models/classifier/1000 --tag_set serve '
                '--signature_def serving_default',
                'estimator-export show --dir /models/classifier/1000 --json'])
  _common.add_dir_argument(parser)
  parser.add_argument('--all', action='store_true',
                      help='every MetaGraph, SignatureDef and concrete function')
  parser.add_argument('--tag_set', metavar='TAGS',
                      help='comma-separated tag-set of one MetaGraph, e.g. serve')
  parser.add_argument('--signature_def', metavar='NAME',
                      help='with --tag_set: the inputs and outputs of this signature')
  parser.add_argument('--json', action='store_true',
                      help='print the serving contract as JSON instead of saved_model_cli text')
  parser.set_defaults(run=run)


def run(args) -> int:
  from estimator_export import contract  # pylint: disable=g-import-not-at-top
  if args.json:
    print(json.dumps(contract.contract(args.dir), indent=2, sort_keys=True))
  else:
    text = contract.show(args.dir, tag_set=args.tag_set, signature_def=args.signature_def,
                         show_all=args.all)
    print(text, end='' if text.endswith('\n') else '\n')
  return _common.EXIT_OK
