"""`estimator-export validate`: run every signature of an export and check they agree."""
from estimator_export.cli import _common


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'validate', summary='run every signature of an export on sample inputs',
      description="Loads one MetaGraph of the export (--tag_set; by default the 'serve' one "
      'TF Serving loads), runs each of its signatures on the given samples (or on inputs '
      "built from the export's manifest and signatures), and checks that the raw-tensor and "
      'tf.Example paths of the same model agree within the tolerances. First, the files of '
      "the model are checked against the sha256 fingerprint in the export's manifest. Exit 0 "
      'when the files are unchanged and every signature ran and agreed, 2 otherwise.',
      examples=['estimator-export validate --dir /models/classifier/1000',
                'estimator-export validate --dir /models/classifier/1000 '
                '--samples \'{"x": [[1.0, 2.0, 3.0]], "n": [1]}\' --rtol 1e-4',
                'estimator-export validate --dir /models/classifier/1000 --samples @samples.json',
                'estimator-export validate --dir /models/classifier/1000 --tag_set serve,gpu',
                'estimator-export validate --dir /models/classifier/1000 --fingerprint require'])
  _common.add_dir_argument(parser)
  parser.add_argument('--tag_set', metavar='TAGS', default='serve',
                      help='comma-separated tag-set of the MetaGraph to run, as show --tag_set '
                      "and the server's --saved_model_tags (default: serve)")
  parser.add_argument('--samples', metavar='JSON',
                      help='sample inputs as a JSON object of feature name -> list of rows, '
                      'or @file.json (default: values from the manifest or zeros)')
  parser.add_argument('--rtol', type=float, default=1e-4,
                      help='relative tolerance when signatures are compared (default: 1e-4)')
  parser.add_argument('--atol', type=float, default=1e-5,
                      help='absolute tolerance when signatures are compared (default: 1e-5)')
  parser.add_argument('--fingerprint', choices=('auto', 'require', 'skip'), default='auto',
                      help="check saved_model.pb, variables/ and assets/ against the manifest's "
                      'sha256 fingerprint: auto (when the manifest has one; the default), '
                      'require (an export without one fails), skip')
  parser.set_defaults(run=run)


def run(args) -> int:
  samples = _common.load_json_arg(args.samples, 'samples', '{"x": [[1.0, 2.0, 3.0]]}')
  if samples is not None and not isinstance(samples, dict):
    raise _common.UsageError(f'--samples must be a JSON object of feature name -> rows: got '
                             f'a {type(samples).__name__}. Fix: pass {{"x": [[1.0, 2.0]]}}')
  from estimator_export import validate  # pylint: disable=g-import-not-at-top
  from estimator_export import _saved_model  # pylint: disable=g-import-not-at-top
  if args.fingerprint == 'require' or (
      args.fingerprint == 'auto' and 'fingerprint' in _saved_model.read_manifest(args.dir)):
    recorded = _saved_model.verify_fingerprint(args.dir)
    print(f"fingerprint: ok {recorded['algorithm']}:{recorded['digest']} "
          f"({len(recorded['files'])} files)")
  report = validate.validate_export(args.dir, samples=samples, rtol=args.rtol, atol=args.atol,
                                    tag_set=args.tag_set)
  for name, shapes in report.items():
    print(f'{name}: ok ' + ', '.join(f'{k}{list(v)}' for k, v in sorted(shapes.items())))
  return _common.EXIT_OK
