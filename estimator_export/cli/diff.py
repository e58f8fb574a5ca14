"""`estimator-export diff`: what changed between two exports, for TF Serving's clients."""
import json

from estimator_export.cli import _common


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'diff', summary='compare the serving contracts of two exports',
      description='Compares the signatures, inputs and outputs of one MetaGraph (by default '
      "the 'serve' one TF Serving loads) of two SavedModels and lists each change as breaking "
      '(an existing client would fail: a signature, input or output removed, a dtype changed, '
      'a shape narrowed, a new required input) or compatible.\n\n'
      'exit status:\n'
      '  0  compatible: no change, or only changes existing clients survive\n'
      '  1  breaking: at least one change breaks existing clients\n'
      '  2  error: a directory is missing or is not a SavedModel, either lacks the tag-set, '
      'or a flag is wrong',
      examples=['estimator-export diff /models/classifier/1000 /models/classifier/2000',
                'estimator-export diff --tag_set serve,gpu OLD_DIR NEW_DIR',
                'estimator-export diff --all_tag_sets OLD_DIR NEW_DIR',
                'estimator-export diff --json OLD_DIR NEW_DIR > changes.json'])
  parser.add_argument('old_dir', help='the SavedModel version directory clients use today')
  parser.add_argument('new_dir', help='the candidate SavedModel version directory')
  parser.add_argument('--tag_set', metavar='TAGS',
                      help='comma-separated tag-set of the MetaGraph to compare, as show '
                      "--tag_set and the server's --saved_model_tags (default: serve)")
  parser.add_argument('--all_tag_sets', action='store_true',
                      help='compare every MetaGraph; a tag-set the new export lacks is breaking')
  parser.add_argument('--json', action='store_true',
                      help='print the changes as a JSON list of {kind, path, detail}')
  parser.set_defaults(run=run)


def run(args) -> int:
  if args.all_tag_sets and args.tag_set is not None:
    raise _common.UsageError(f'--tag_set={args.tag_set} and --all_tag_sets contradict each '
                             'other. Fix: give one of them')
  tag_set = None if args.all_tag_sets else 'serve' if args.tag_set is None else args.tag_set
  from estimator_export import contract  # pylint: disable=g-import-not-at-top
  changes = contract.diff(args.old_dir, args.new_dir, tag_set=tag_set)
  if args.json:
    print(json.dumps([c.__dict__ for c in changes], indent=2))
  else:
    print(contract.format_changes(changes))
  breaking = any(c.kind == contract.BREAKING for c in changes)
  return _common.EXIT_FAILED if breaking else _common.EXIT_OK

