"""`estimator-export query`: ask a model server (TF Serving or the embedded one).

The flags, the JSON they take and the printed answer live here; the requests are
estimator_export.client's GrpcClient and RestClient. Exit codes: 0 with the answer
as JSON on stdout, 1 when the server refuses the request or cannot be reached
(ServingClientError), 2 for a flag or value the user must change.
"""
import base64
import json
import sys
from typing import Any, Mapping

from estimator_export.cli import _common

METHODS = ('predict', 'classify', 'regress', 'multi_inference', 'metadata', 'status')
TASK_METHODS = ('classify', 'regress')


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
                'estimator-export query --model_name half_plus_two --method multi_inference '
                '--task regress_x_to_y:regress --task classify_x_to_y:classify '
                "--examples '[{\"x\": 2.0}]'",
                'estimator-export query --request_file '
                '/models/classifier/1/assets.extra/requests/serving_default.pbtxt',
                'estimator-export query --model_name classifier --method metadata',
                'estimator-export query --server dns:///serving.default.svc.cluster.local:8500 '
                "--model_name classifier --inputs '{\"x\": [[1.0, 2.0, 3.0]]}'"])
  parser.add_argument('--server', default=None, metavar='ADDRESS',
                      help='the model server: host:port for gRPC (default 127.0.0.1:8500), a URL '
                      'for REST (default http://127.0.0.1:8501). gRPC spreads calls round-robin '
                      'over a comma-separated list of IP:PORT or over every address of a DNS '
                      'name given as dns:///NAME:PORT (e.g. a Kubernetes headless Service)')
  parser.add_argument('--protocol', choices=('grpc', 'rest'), default='grpc',
                      help='the API to use (default: grpc)')
  parser.add_argument('--model_name', '--model', dest='model', default=None, metavar='NAME',
                      help='the model name the server serves (required, except with '
                      '--request_file, whose model_spec.name it then replaces)')
  parser.add_argument('--method', choices=METHODS, default=None,
                      help='the call to make (default: predict; with --request_file, the '
                      "request's type decides)")
  parser.add_argument('--request_file', default=None, metavar='PBTXT',
                      help='send this text-proto request as it is: a PredictRequest, '
                      'ClassificationRequest, RegressionRequest or MultiInferenceRequest (e.g. '
                      "an export's assets.extra/requests/*.pbtxt); the call follows its type. "
                      '--model_name, --signature_name, --version, --version_label and '
                      '--output_filter replace what it holds')
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
                      help='Classify/Regress/MultiInference examples as a JSON list of feature '
                      'dicts (or @file)')
  parser.add_argument('--task', action='append', default=[], metavar='SIGNATURE:METHOD',
                      help='one MultiInference task, METHOD classify or regress (repeat the '
                      'flag for each task; gRPC only, TF Serving has no REST route for it)')
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


def _from_json(value: Any) -> Any:
  """{"b64": ...} -> bytes, recursively (REST's convention for bytes, also taken over gRPC)."""
  if isinstance(value, dict) and len(value) == 1 and 'b64' in value:
    return base64.b64decode(value['b64'])
  if isinstance(value, list):
    return [_from_json(v) for v in value]
  if isinstance(value, dict):
    return {k: _from_json(v) for k, v in value.items()}
  return value


def _json_arg(args, flag: str, example: str) -> Any:
  return _from_json(_common.load_json_arg(getattr(args, flag), flag, example))


def _bytes_text(value: bytes, alias: str) -> Any:
  """Bytes as UTF-8 text, or {"b64": ...} for `*_bytes` outputs and non-UTF-8 values."""
  if not alias.endswith('_bytes'):
    try:
      return value.decode('utf-8')
    except UnicodeDecodeError:
      pass
  return {'b64': base64.b64encode(value).decode('ascii')}


def _print_value(value: Any, alias: str = '') -> Any:
  """Results -> JSON-printable values (float32 printed shortest, bytes as text or b64)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  if isinstance(value, np.ndarray):
    if value.dtype == np.float32:
      flat = np.array([float(str(v)) for v in value.ravel()], dtype=object)
      return flat.reshape(value.shape).tolist()
    value = value.tolist()
  if isinstance(value, np.generic):
    value = value.item()
  if isinstance(value, bytes):
    return _bytes_text(value, alias)
  if isinstance(value, (list, tuple)):
    return [_print_value(v, alias) for v in value]
  if isinstance(value, dict):
    return {k: _print_value(v, k) for k, v in value.items()}
  return value


def _typed_inputs(client, args, inputs: Any) -> Any:
  """JSON inputs cast to the signature's dtypes (as TF Serving's REST API does)."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from estimator_export.client import ServingClientError  # pylint: disable=g-import-not-at-top
  try:
    signature = client.signature(args.model, args.signature_name, args.version,
                                 args.version_label)
  except ServingClientError:
    return inputs  # Predict reports the error itself.
  if not isinstance(inputs, Mapping):
    if len(signature.inputs) != 1:
      return inputs
    inputs = {next(iter(signature.inputs)): inputs}
  typed = {}
  for alias, value in inputs.items():
    info = signature.inputs.get(alias)
    dtype = tf.as_dtype(info.dtype) if info is not None else None
    if dtype is None or dtype == tf.string or not dtype.is_numpy_compatible:
      typed[alias] = value
      continue
    try:
      typed[alias] = np.asarray(value, dtype=dtype.as_numpy_dtype)
    except (ValueError, TypeError, OverflowError) as e:
      shown = json.dumps(value)
      shown = shown if len(shown) <= 80 else shown[:77] + '...'
      raise _common.UsageError(
          f'--inputs: input {alias!r} is not a {dtype.name} tensor ({e}): got {shown}. Fix: '
          f'give {alias!r} a rectangular nested list of {dtype.name} values') from e
  return typed


def _examples(args) -> tuple:
  examples = _json_arg(args, 'examples', '\'[{"x": [1.0, 2.0]}]\'')
  if examples is None:
    raise _common.UsageError(f'--method={args.method} needs --examples. Fix: add --examples '
                             '\'[{"x": [1.0, 2.0]}]\' (a JSON list of feature dicts, or @file)')
  if not isinstance(examples, list):
    raise _common.UsageError(f'--examples must be a JSON list of feature dicts: got '
                             f'{type(examples).__name__}. Fix: wrap the example in [...]')
  return examples, _json_arg(args, 'context', '\'{"x": [1.0]}\'')


def _scores(classifications) -> list:
  """[[(label, float32 score)]] -> [[[label, score printed shortest]]]."""
  import numpy as np  # pylint: disable=g-import-not-at-top
  return [[[label, float(str(np.float32(score)))] for label, score in entry]
          for entry in classifications]


def _tasks(args) -> list:
  """--task SIGNATURE:METHOD flags -> [(signature, method)] (signatures may hold ':')."""
  if args.protocol == 'rest':
    raise _common.UsageError(
        "--method=multi_inference is gRPC only: TF Serving 2.15's REST API has no "
        'multi_inference route. Fix: drop --protocol rest (gRPC is the default), or call '
        '--method classify / regress once per signature over REST')
  if args.signature_name:
    raise _common.UsageError(
        f'--signature_name does not apply to --method=multi_inference: got '
        f'{args.signature_name!r}. Fix: name each signature in a --task SIGNATURE:METHOD flag')
  if not args.task:
    raise _common.UsageError('--method=multi_inference needs at least one --task. Fix: add '
                             '--task SIGNATURE:classify or --task SIGNATURE:regress per task')
  tasks = []
  for task in args.task:
    signature, _, method = task.rpartition(':')
    if not signature or method not in TASK_METHODS:
      raise _common.UsageError(f'--task must be SIGNATURE:METHOD with METHOD classify or '
                               f'regress: got {task!r}. Fix: e.g. --task '
                               'classify_x_to_y:classify')
    tasks.append((signature, method))
  return tasks


def _multi_inference(client, args, model=None, examples=None, context=None, version=None,
                     label=None) -> list:
  """One MultiInference call (from the flags, or a request's values); per task
  {signature_name, method, results}."""
  tasks = _tasks(args)
  if examples is None:
    model, version, label = args.model, args.version, args.version_label
    examples, context = _examples(args)
  results = client.multi_inference(model, tasks, examples, context, version, label)
  return [{'signature_name': signature, 'method': method,
           'results': _scores(result) if method == 'classify' else result}
          for (signature, method), result in zip(tasks, results)]


def _request_spec(args, spec) -> tuple:
  """(model, signature, version, label) of a request's ModelSpec, with the flags' overrides."""
  model = args.model or spec.name
  if not model:
    raise _common.UsageError(f'--request_file {args.request_file!r} has no model_spec.name. '
                             'Fix: add --model_name NAME')
  if args.version is not None or args.version_label:
    version, label = args.version, args.version_label
  else:
    choice = spec.WhichOneof('version_choice')
    version = spec.version.value if choice == 'version' else None
    label = spec.version_label if choice == 'version_label' else None
  return model, args.signature_name or spec.signature_name, version, label


def _send_request_file(client, args) -> Any:
  """Sends the --request_file request by its type; returns the result to print."""
  from estimator_export import example_requests  # pylint: disable=g-import-not-at-top
  from estimator_export.client import GrpcClient  # pylint: disable=g-import-not-at-top
  given = [flag for flag in ('inputs', 'examples', 'context') if getattr(args, flag) is not None]
  given += ['task'] if args.task else []
  if given:
    raise _common.UsageError(f'--request_file holds the whole request; got also --{given[0]}. '
                             f'Fix: drop --{given[0]}, or drop --request_file')
  request = example_requests.read_request_file(args.request_file)
  method = example_requests.REQUEST_TYPES[type(request)][0]
  if args.method not in (None, method):
    raise _common.UsageError(f'--method={args.method} does not match --request_file '
                             f'{args.request_file!r}, a {type(request).DESCRIPTOR.name}. Fix: '
                             'drop --method (the request type decides the call)')
  args.method = method
  if method == 'multi_inference':
    if not request.tasks:
      raise _common.UsageError(f'--request_file {args.request_file!r} is a '
                               'MultiInferenceRequest without tasks. Fix: add tasks { model_spec '
                               '{ ... } method_name: "tensorflow/serving/classify" }')
    model, _, version, label = _request_spec(args, request.tasks[0].model_spec)
    args.task = [f'{task.model_spec.signature_name}:{task.method_name.rsplit("/", 1)[-1]}'
                 for task in request.tasks]
  else:
    model, signature, version, label = _request_spec(args, request.model_spec)
  if method == 'predict':
    output_filter = ([a for a in args.output_filter.split(',') if a] or
                     list(request.output_filter))
    inputs = dict(request.inputs)  # TensorProtos, sent as they are (REST: as JSON).
    if isinstance(client, GrpcClient):
      return client.predict(model, inputs, signature, version, label, output_filter)
    return client.predict(model, inputs, signature, version, label, output_filter,
                          request_format=args.rest_format)
  examples, context = example_requests.examples_of(request.input)
  if method == 'multi_inference':
    return _multi_inference(client, args, model, examples, context, version, label)
  call = client.classify if method == 'classify' else client.regress
  result = call(model, examples, signature, context, version, label)
  return result if method == 'regress' else _scores(result)


def _query(client, args) -> Any:
  """Makes the one call --method (or --request_file) names; returns the result to print."""
  from estimator_export.client import GrpcClient  # pylint: disable=g-import-not-at-top
  from google.protobuf import json_format  # pylint: disable=g-import-not-at-top
  if args.request_file:
    return _send_request_file(client, args)
  if not args.model:
    raise _common.UsageError('query needs --model_name (or --request_file). Fix: add '
                             '--model_name NAME, the name the server serves the model under')
  method = args.method = args.method or 'predict'
  if args.task and method != 'multi_inference':
    raise _common.UsageError(f'--task applies only to --method=multi_inference: got --method='
                             f'{method}. Fix: drop --task, or pass --method multi_inference')
  if method == 'status':
    return client.status(args.model, args.version)
  if method == 'metadata':
    signatures = client.metadata(args.model, args.version, args.version_label)
    return {name: json_format.MessageToDict(sig, preserving_proto_field_name=True)
            for name, sig in signatures.items()}
  if method == 'predict':
    inputs = _json_arg(args, 'inputs', '\'{"x": [[1.0]]}\'')
    if inputs is None:
      raise _common.UsageError('--method=predict needs --inputs. Fix: add --inputs '
                               '\'{"alias": value, ...}\' (JSON, or @file)')
    output_filter = [a for a in args.output_filter.split(',') if a]
    if isinstance(client, GrpcClient):
      inputs = _typed_inputs(client, args, inputs)
      return client.predict(args.model, inputs, args.signature_name, args.version,
                            args.version_label, output_filter)
    return client.predict(args.model, inputs, args.signature_name, args.version,
                          args.version_label, output_filter, request_format=args.rest_format)
  if method == 'multi_inference':
    return _multi_inference(client, args)
  examples, context = _examples(args)
  call = client.classify if method == 'classify' else client.regress
  result = call(args.model, examples, args.signature_name, context, args.version,
                args.version_label)
  return result if method == 'regress' else _scores(result)


def run(args) -> int:
  """Runs `estimator-export query`: prints the answer as JSON; returns the exit code."""
  from estimator_export import client as client_lib  # pylint: disable=g-import-not-at-top
  if args.protocol == 'grpc':
    client = client_lib.GrpcClient(args.server or client_lib.DEFAULT_GRPC_TARGET,
                                   timeout=args.timeout)
  else:
    client = client_lib.RestClient(args.server or client_lib.DEFAULT_REST_URL,
                                   timeout=args.timeout)
  try:
    with client:
      result = _query(client, args)
  except client_lib.ServingClientError as e:
    print(f'{_common.PROG} query: error: {e}', file=sys.stderr)
    return _common.EXIT_FAILED
  indent = 1 if args.method in ('metadata', 'status') else None
  print(json.dumps(_print_value(result), indent=indent))
  return _common.EXIT_OK
