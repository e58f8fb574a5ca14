"""`estimator-export query`: ask a model server (TF Serving or the embedded one)."""
from estimator_export.cli import _common

METHODS = ('predict', 'classify', 'regress', 'metadata', 'status')


def add_parser(subparsers) -> None:
  parser = _common.add_command(
      subparsers, 'query', summary='query a model server over gRPC or REST',
      description="Sends one request through TF Serving's APIs (PredictionService and "
      'ModelService over gRPC, or the /v1/models REST routes) and prints the answer as JSON. '
      'Exit 0 on an answer, 1 when the server refuses the request or cannot be reached, 2 '
      'for a bad flag.',
      examples=["estimator-export query --model_name classifier --inputs "
                "'{\"x\": [[1.0, 2.0, 3.0]]}'",
                'estimator-export query --protocol rest --server http://127.0.0.1:8501 '
                '--model_name classifier --method classify --signature_name examples:classify '
                "--examples '[{\"x\": [1.0, 2.0, 3.0]}]'",
                'estimator-export query --model_name classifier --method metadata'])
  parser.add_argument('--server', default=None, metavar='ADDRESS',
                      help='the model server: host:port for gRPC (default 127.0.0.1:8500), a URL '
                      'for REST (default http://127.0.0.1:8501)')
  parser.add_argument('--protocol', choices=('grpc', 'rest'), default='grpc',
                      help='the API to use (default: grpc)')
  parser.add_argument('--model_name', '--model', dest='model', required=True, metavar='NAME',
                      help='the model name the server serves')
  parser.add_argument('--method', choices=METHODS, default='predict',
                      help='the call to make (default: predict)')
  parser.add_argument('--signature_name', default='', metavar='NAME',
                      help='the signature to call (default: serving_default)')
  parser.add_argument('--version', type=int, default=None, metavar='N',
                      help='a model version (default: the newest available)')
  parser.add_argument('--version_label', default=None, metavar='LABEL',
                      help='a version label such as stable (not with --version)')
  parser.add_argument('--inputs', default=None, metavar='JSON',
                      help='Predict inputs as JSON (or @file): {"alias": value, ...}, or a bare '
                      'value/list for a single-input signature; {"b64": ...} for bytes')
  parser.add_argument('--examples', default=None, metavar='JSON',
                      help='Classify/Regress examples as a JSON list of feature dicts (or @file)')
  parser.add_argument('--context', default=None, metavar='JSON',
                      help='a JSON feature dict shared by all examples')
  parser.add_argument('--output_filter', default='', metavar='ALIASES',
                      help='comma-separated output aliases to return (default: all)')
  parser.add_argument('--rest_format', choices=('columnar', 'row'), default='columnar',
                      help='REST Predict request format: "inputs" (columnar) or "instances" '
                      '(row)')
  parser.add_argument('--timeout', type=float, default=10.0, metavar='SECONDS',
                      help='deadline of the call in seconds (default: 10)')
  parser.set_defaults(run=run)


def run(args) -> int:
  from estimator_export.serving import client  # pylint: disable=g-import-not-at-top
  return client.run_query(args)
