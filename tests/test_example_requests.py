"""Tests for an export's example requests (assets.extra/requests/) and content fingerprint.

A real toy export is served by the embedded server on 127.0.0.1; its example JSON bodies are
POSTed to the REST port as they are, its text protos sent by `estimator-export query
--request_file`, and every answer is compared with the in-process Predictor.
"""
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import predict_pb2

from estimator_export import _saved_model
from estimator_export import cli
from estimator_export import example_requests
from estimator_export.errors import ClientInputError, ContractError, ValidationError
from estimator_export.predictor import Predictor
from tests import toy
from tests.serving_util import model_status, rest_request, wait_for

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VARIABLES_DATA = 'variables/variables.data-00000-of-00001'


@pytest.fixture(scope='module')
def export(trained_toy, tmp_path_factory):
  """The toy model exported as version 1 of a base: Predict, Classify and Regress signatures."""
  model, estimator = trained_toy
  base = tmp_path_factory.mktemp('example_requests') / 'default'
  return model.export_for_serving(estimator, str(base), samples=toy.SAMPLES, version=1)


@pytest.fixture(scope='module')
def server(export):
  """The embedded server (gRPC + REST on free 127.0.0.1 ports) serving it as 'default'."""
  from estimator_export.serving import config as config_lib  # pylint: disable=g-import-not-at-top
  from estimator_export.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  srv = server_lib.create_server(config_lib.ServerOptions(
      model_name='default', model_base_path=os.path.dirname(export.path), host='127.0.0.1',
      port=0, rest_api_port=0, file_system_poll_wait_seconds=0))
  try:
    wait_for(lambda: model_status(srv.rest_port, 'default').get(1, {}).get('state') ==
             'AVAILABLE', 60, 'version 1 of default to load')
    yield srv
  finally:
    srv.stop(grace=1)


@pytest.fixture(scope='module')
def predictor(export):
  with Predictor.from_saved_model(export.path) as loaded:
    yield loaded


def _folder(export):
  return os.path.join(export.path, 'assets.extra', example_requests.REQUESTS_DIR)


def _entry(export, signature):
  return _saved_model.read_manifest(export.path)['example_requests'][signature]


def _expected(predictor, export, signature):
  """What the Predictor answers to the signature's example request, shaped like query's JSON."""
  request = example_requests.read_request_file(
      os.path.join(_folder(export), _entry(export, signature)['grpc']))
  run = predictor.for_signature(signature)
  if isinstance(request, predict_pb2.PredictRequest):
    return run({k: tf.make_ndarray(v) for k, v in request.inputs.items()})
  examples = np.array([e.SerializeToString() for e in request.input.example_list.examples],
                      dtype=object)
  outputs = run({next(iter(run.signature_def.inputs)): examples})
  if isinstance(request, classification_pb2.ClassificationRequest):
    return [[[c.decode(), float(s)] for c, s in zip(classes, scores)]
            for classes, scores in zip(outputs['classes'], outputs['scores'])]
  return outputs['outputs'].reshape(-1).tolist()


def _assert_same(got, expected):
  if isinstance(expected, dict):
    assert sorted(got) == sorted(expected)
    for alias, value in expected.items():
      np.testing.assert_allclose(np.asarray(got[alias], dtype=value.dtype), value, rtol=1e-6)
  elif expected and isinstance(expected[0], list):  # Classify: [[label, score], ...] per example.
    assert [[label for label, _ in e] for e in got] == [[label for label, _ in e] for e in expected]
    np.testing.assert_allclose([[s for _, s in e] for e in got],
                               [[s for _, s in e] for e in expected], rtol=1e-6)
  else:
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def _rest_answer(reply, signature_def):
  """A REST answer in query's shape: predict outputs by alias, or the classify/regress result."""
  body = reply.json()
  if 'results' in body:
    return body['results']
  predictions = body['predictions']
  if isinstance(predictions[0], dict):
    return {alias: [row[alias] for row in predictions] for alias in predictions[0]}
  return {next(iter(signature_def.outputs)): predictions}


class TestFiles:

  def test_every_signature_has_a_json_body_and_a_text_proto(self, export):
    entries = _saved_model.read_manifest(export.path)['example_requests']
    assert sorted(entries) == sorted(export.signatures)
    readme = open(os.path.join(_folder(export), 'README.txt'), encoding='utf-8').read()
    for signature, entry in entries.items():
      body = json.load(open(os.path.join(_folder(export), entry['rest']), encoding='utf-8'))
      assert body['signature_name'] == signature
      request = example_requests.read_request_file(os.path.join(_folder(export), entry['grpc']))
      assert (request.model_spec.name, request.model_spec.signature_name) == (
          'default', signature)
      assert f"-d @{entry['rest']} http://localhost:8501{entry['rest_path']}" in readme
      assert f"--request_file {entry['grpc']}" in readme
    assert entries['examples:classify']['rest_path'] == '/v1/models/default:classify'
    assert entries['examples:regress']['rest_path'] == '/v1/models/default:regress'
    assert entries['examples:classify']['grpc'] == 'examples_classify.pbtxt'

  def test_bodies_use_rows_and_b64_for_bytes(self, export):
    def body(signature):
      path = os.path.join(_folder(export), _entry(export, signature)['rest'])
      with open(path, encoding='utf-8') as f:
        return json.load(f)
    assert body('serving_default')['instances'] == [{'x': [1.0, 2.0, 3.0], 'n': 1}]
    serialized = body('examples:predict')['instances'][0]['examples']
    assert list(serialized) == ['b64']
    assert body('examples:classify')['examples'] == [{'x': [1.0, 2.0, 3.0], 'n': [1]}]

  def test_tensor_values_are_readable_in_the_text_proto(self, export):
    path = os.path.join(_folder(export), _entry(export, 'serving_default')['grpc'])
    text = open(path, encoding='utf-8').read()
    assert text.startswith('# proto-file: tensorflow_serving/apis/predict.proto\n'
                           '# proto-message: tensorflow.serving.PredictRequest\n')
    assert 'float_val: 2.0' in text and 'tensor_content' not in text

  def test_written_without_warmup_too(self, trained_toy, tmp_path):
    model, estimator = trained_toy
    result = model.export_for_serving(estimator, str(tmp_path), samples=toy.SAMPLES,
                                      version=1, warmup=False, validate=False)
    assert result.warmup_records == 0
    entries = _saved_model.read_manifest(result.path)['example_requests']
    assert sorted(entries) == sorted(result.signatures)
    for entry in entries.values():
      assert os.path.isfile(os.path.join(_folder(result), entry['grpc']))


class TestRestBody:

  def test_inputs_without_a_shared_batch_dimension_go_columnar(self):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'm'
    request.inputs['x'].CopyFrom(tf.make_tensor_proto(np.ones((2, 3), np.float32)))
    request.inputs['k'].CopyFrom(tf.make_tensor_proto(np.array(b'\xff', dtype=object)))
    assert example_requests.rest_body(request) == {
        'signature_name': 'serving_default',
        'inputs': {'k': {'b64': '/w=='}, 'x': [[1.0, 1.0, 1.0], [1.0, 1.0, 1.0]]}}

  def test_text_proto_round_trip_keeps_every_value(self, tmp_path):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = 'm'
    request.model_spec.version.value = 7
    values = {'f': np.array([[0.1, np.nan, -np.inf]], np.float32),
              'i': np.array([[2**40, -1]], np.int64), 'b': np.array([True, False]),
              's': np.array([b'\x00\xff', 'é'.encode()], dtype=object)}
    for alias, value in values.items():
      request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
    path = tmp_path / 'r.pbtxt'
    path.write_text(example_requests.request_text(request))
    back = example_requests.read_request_file(str(path))
    assert back.model_spec == request.model_spec
    for alias, value in values.items():
      got = tf.make_ndarray(back.inputs[alias])
      assert got.dtype == value.dtype and got.shape == value.shape
      np.testing.assert_array_equal(got, value)


class TestSentAsTheyAre:

  @pytest.mark.parametrize('signature', ['serving_default', 'predict', 'examples:predict',
                                         'examples:serving_default', 'examples:classify',
                                         'examples:regress'])
  def test_rest_body_gives_the_predictors_outputs(self, export, server, predictor, signature):
    entry = _entry(export, signature)
    with open(os.path.join(_folder(export), entry['rest']), 'rb') as f:
      reply = rest_request(server.rest_port, 'POST', entry['rest_path'], f.read())
    assert reply.status == 200, reply.text
    got = _rest_answer(reply, predictor.for_signature(signature).signature_def)
    _assert_same(got, _expected(predictor, export, signature))

  @pytest.mark.parametrize('signature', ['serving_default', 'examples:classify',
                                         'examples:regress'])
  def test_query_subprocess_sends_the_text_proto(self, export, server, predictor, signature):
    path = os.path.join(_folder(export), _entry(export, signature)['grpc'])
    out = subprocess.run(
        [sys.executable, '-m', 'estimator_export.cli', 'query', '--server',
         f'127.0.0.1:{server.grpc_port}', '--request_file', path],
        capture_output=True, text=True, cwd=REPO, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert out.returncode == 0, out.stderr
    _assert_same(json.loads(out.stdout), _expected(predictor, export, signature))

  @pytest.mark.parametrize('signature', ['examples:predict', 'predict'])
  def test_query_over_rest_with_overrides(self, export, server, predictor, signature, capsys):
    path = os.path.join(_folder(export), _entry(export, signature)['grpc'])
    code = cli.main(['query', '--protocol', 'rest', '--server',
                     f'http://127.0.0.1:{server.rest_port}', '--request_file', path,
                     '--model_name', 'default', '--version', '1'])
    out = capsys.readouterr()
    assert code == 0, out.err
    _assert_same(json.loads(out.out), _expected(predictor, export, signature))

  def test_query_sends_a_multi_inference_request(self, export, server, predictor, tmp_path,
                                                 capsys):
    classify = example_requests.read_request_file(
        os.path.join(_folder(export), _entry(export, 'examples:classify')['grpc']))
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (('examples:classify', 'classify'),
                              ('examples:regress', 'regress')):
      task = request.tasks.add()
      task.model_spec.name = 'default'
      task.model_spec.signature_name = signature
      task.method_name = f'tensorflow/serving/{method}'
    request.input.CopyFrom(classify.input)
    path = tmp_path / 'multi.pbtxt'
    path.write_text(example_requests.request_text(request))
    code = cli.main(['query', '--server', f'127.0.0.1:{server.grpc_port}', '--request_file',
                     str(path)])
    out = capsys.readouterr()
    assert code == 0, out.err
    got = json.loads(out.out)
    assert [(r['signature_name'], r['method']) for r in got] == [
        ('examples:classify', 'classify'), ('examples:regress', 'regress')]
    _assert_same(got[0]['results'], _expected(predictor, export, 'examples:classify'))
    _assert_same(got[1]['results'], _expected(predictor, export, 'examples:regress'))


class TestRequestFileErrors:

  def test_bad_file_in_a_subprocess_names_it_without_traceback(self, tmp_path):
    bad = tmp_path / 'bad.pbtxt'
    bad.write_text('model_spec { name: "m" }\ninputs { key: "x" value { dtype: DT_FLOT } }\n')
    out = subprocess.run(
        [sys.executable, '-m', 'estimator_export.cli', 'query', '--server', '127.0.0.1:1',
         '--request_file', str(bad)], capture_output=True, text=True, cwd=REPO, timeout=120,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert out.returncode == 2, out.stdout + out.stderr
    assert 'Traceback' not in out.stderr
    assert out.stderr.startswith('estimator-export query: error: request file')
    assert str(bad) in out.stderr and 'DT_FLOT' in out.stderr and 'Fix:' in out.stderr

  @pytest.mark.parametrize('text, match', [
      ('model_spec { name: "m" }\n', 'parses as several request types.*proto-message'),
      ('# proto-message: tensorflow.serving.GetModelStatusRequest\n',
       'names a message type query cannot send'),
      ('nonsense {', r'is not a \w+Request text proto: got .1:1 .*Fix: correct the line'),
  ])
  def test_bad_contents(self, tmp_path, text, match):
    path = tmp_path / 'r.pbtxt'
    path.write_text(text)
    with pytest.raises(ClientInputError, match=match):
      example_requests.read_request_file(str(path))

  def test_missing_file(self, tmp_path):
    with pytest.raises(ClientInputError, match='cannot read the request file.*Fix: give the path'):
      example_requests.read_request_file(str(tmp_path / 'nope.pbtxt'))

  def test_flags_that_conflict_with_the_file(self, export, capsys):
    path = os.path.join(_folder(export), _entry(export, 'examples:classify')['grpc'])
    code = cli.main(['query', '--request_file', path, '--method', 'predict'])
    assert code == 2 and '--method=predict does not match' in capsys.readouterr().err
    code = cli.main(['query', '--request_file', path, '--inputs', '[1]'])
    assert code == 2 and 'drop --inputs' in capsys.readouterr().err

  def test_multi_inference_without_tasks(self, tmp_path, capsys):
    path = tmp_path / 'multi.pbtxt'
    path.write_text('# proto-message: tensorflow.serving.MultiInferenceRequest\n')
    code = cli.main(['query', '--server', '127.0.0.1:1', '--request_file', str(path)])
    assert code == 2 and 'MultiInferenceRequest without tasks' in capsys.readouterr().err

  def test_query_still_needs_a_model_name_without_a_file(self, capsys):
    code = cli.main(['query', '--server', '127.0.0.1:1', '--inputs', '[1]'])
    assert code == 2 and 'needs --model_name' in capsys.readouterr().err


class TestFingerprint:

  def test_manifest_records_the_published_files(self, export):
    recorded = _saved_model.read_manifest(export.path)['fingerprint']
    assert recorded['algorithm'] == 'sha256'
    assert sorted(recorded['files']) == ['saved_model.pb', VARIABLES_DATA,
                                         'variables/variables.index']
    # Computed after the last rewrite of saved_model.pb (signatures settled).
    assert recorded == _saved_model.content_fingerprint(export.path)
    assert 'saved_model_fingerprint' not in recorded  # The v1 Builder writes no fingerprint.pb.
    assert _saved_model.verify_fingerprint(export.path)['digest'] == recorded['digest']

  def test_fingerprint_pb_of_tf2_saved_models_is_recorded(self, tmp_path):
    module = tf.Module()
    module.v = tf.Variable([1.0, 2.0])
    module.f = tf.function(lambda x: x * module.v, input_signature=[
        tf.TensorSpec([2], tf.float32)])
    tf.saved_model.save(module, str(tmp_path))
    fingerprint = _saved_model.content_fingerprint(str(tmp_path))
    assert 'fingerprint.pb' in fingerprint['files']
    read = tf.saved_model.experimental.read_fingerprint(str(tmp_path))
    assert fingerprint['saved_model_fingerprint']['saved_model_checksum'] == str(
        read.saved_model_checksum)
    assert set(fingerprint['saved_model_fingerprint']) == {
        'saved_model_checksum', 'graph_def_program_hash', 'signature_def_hash',
        'saved_object_graph_hash', 'checkpoint_hash'}

  def test_a_flipped_byte_is_named(self, export, tmp_path):
    copy = tmp_path / '1'
    shutil.copytree(export.path, copy)
    data = bytearray((copy / VARIABLES_DATA).read_bytes())
    data[len(data) // 2] ^= 0x01
    (copy / VARIABLES_DATA).write_bytes(bytes(data))
    with pytest.raises(ValidationError, match=f'{VARIABLES_DATA} \\(content changed'):
      _saved_model.verify_fingerprint(str(copy))

  def test_missing_and_added_files_are_named(self, export, tmp_path):
    copy = tmp_path / '1'
    shutil.copytree(export.path, copy)
    (copy / 'variables' / 'variables.index').unlink()
    (copy / 'variables' / 'extra').write_bytes(b'x')
    with pytest.raises(ValidationError) as raised:
      _saved_model.verify_fingerprint(str(copy))
    assert raised.value.value == ['variables/variables.index (missing)',
                                  'variables/extra (added)']

  def test_manifest_without_fingerprint(self, export):
    with pytest.raises(ContractError, match='records no content fingerprint'):
      _saved_model.verify_fingerprint(export.path, manifest={'version': 1})

  def test_validate_command_catches_a_flipped_byte(self, export, tmp_path):
    copy = tmp_path / '1'
    shutil.copytree(export.path, copy)
    with open(copy / 'saved_model.pb', 'r+b') as f:
      f.seek(100)
      byte = f.read(1)
      f.seek(100)
      f.write(bytes([byte[0] ^ 0x80]))

    def validate(*flags):
      return subprocess.run([sys.executable, '-m', 'estimator_export.cli', 'validate', '--dir',
                             str(copy)] + list(flags), capture_output=True, text=True,
                            cwd=REPO, timeout=120, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    out = validate()
    assert out.returncode == 2, out.stdout + out.stderr
    assert 'Traceback' not in out.stderr
    assert 'saved_model.pb (content changed' in out.stderr

  def test_validate_command_reports_the_fingerprint(self, export, capsys):
    code = cli.main(['validate', '--dir', export.path, '--fingerprint', 'require'])
    out = capsys.readouterr()
    assert code == 0, out.err
    digest = _saved_model.read_manifest(export.path)['fingerprint']['digest']
    assert f'fingerprint: ok sha256:{digest} (3 files)' in out.out
