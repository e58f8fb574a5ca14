"""`estimator-export servable`: would the real TF Serving 2.15.1 load this graph's ops?"""
from estimator_export.cli import _common


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'servable',
      summary='check that TF Serving 2.15.1 has every op and attr an export uses',
      description='Checks every node of every MetaGraph (and of its function library) against '
      'the op definitions of TF 2.15 plus TF Text 2.12.1, the op set tensorflow_model_server '
      '2.15.1 links. Names each op (and attr) the real server would not find, the errors it '
      'would give as "Op type not registered" at load time.\n\n'
      'exit status: 0 servable, 1 not servable, 2 error (not a SavedModel, bad flags)',
      examples=['estimator-export servable /models/bert/125',
                'estimator-export servable /tmp/frozen.pb'])
  parser.add_argument('path', metavar='EXPORT_DIR',
                      help='a SavedModel version directory, or a frozen GraphDef .pb')
  parser.set_defaults(run=run)


def run(args) -> int:
  from estimator_export import servability  # pylint: disable=g-import-not-at-top
  report = servability.check_servability(args.path)
  print(report)
  return _common.EXIT_OK if report.ok else _common.EXIT_FAILED
