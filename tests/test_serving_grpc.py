"""gRPC conformance: TF Serving's PredictionService and ModelService, via the official stubs.

Every test runs against the embedded server (serving.grpc_service over a real
ModelManager on a real port) and, when `tensorflow_model_server` is on PATH,
against the real binary with the same models, so the expectations here are
TF Serving's (contract sections 6 and 9). With ESTIMATOR_EXPORT_TEST_GRPC=HOST:PORT
they run against that server only (see tests/wire_models.py), and tests that need
a server of their own skip.
"""
import json
import os
import shutil
import socket
import subprocess
import time
from concurrent import futures
from typing import List, NamedTuple, Optional

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.apis import regression_pb2
from tensorflow_serving.config import model_server_config_pb2

from estimator_export.serving import grpc_service
from estimator_export.serving.inference import InferenceService
from estimator_export.serving.manager import ModelManager
from tests import wire_models

Code = grpc.StatusCode
AVAILABLE = get_model_status_pb2.ModelVersionStatus.AVAILABLE
BINARY = 'tensorflow_model_server'
SERVER_KINDS = ('embedded', BINARY)
EXTERNAL = wire_models.external_grpc()  # ESTIMATOR_EXPORT_TEST_GRPC, or None.
OWN_SERVER = wire_models.needs_own_server(wire_models.ENV_GRPC) if EXTERNAL else ''
CHANNEL_OPTIONS = [('grpc.max_send_message_length', 2**31 - 1),
                   ('grpc.max_receive_message_length', 2**31 - 1)]


# ----- model configs -----

def model_entry(name: str, base_path: str, policy: Optional[str] = None,
                labels: Optional[dict] = None) -> model_server_config_pb2.ModelConfig:
  entry = model_server_config_pb2.ModelConfig(name=name, base_path=base_path,
                                              model_platform='tensorflow')
  if policy == 'all':
    entry.model_version_policy.all.SetInParent()
  for label, version in (labels or {}).items():
    entry.version_labels[label] = version
  return entry


def standard_entries(testdata: str) -> List[model_server_config_pb2.ModelConfig]:
  """The fixture models, as the conformance server serves them."""
  path = lambda name: os.path.join(testdata, name)  # pylint: disable=unnecessary-lambda-assignment
  return [
      model_entry('half_plus_two', path('saved_model_half_plus_two_cpu')),
      model_entry('half_plus_three', path('saved_model_half_plus_three')),
      model_entry('saved_model_half_plus_two_2_versions',
                  path('saved_model_half_plus_two_2_versions'), policy='all',
                  labels={'stable': 123, 'canary': 124}),
      model_entry('saved_model_half_plus_two_tf2_cpu', path('saved_model_half_plus_two_tf2_cpu')),
      model_entry('matrix_half_plus_two', path('matrix_half_plus_two')),
  ]


# ----- servers -----

def free_port() -> int:
  with socket.socket() as sock:
    sock.bind(('127.0.0.1', 0))
    return sock.getsockname()[1]


class EmbeddedServer:
  """ModelManager + grpc_service on a free port (REST is not started)."""
  kind = 'embedded'

  def __init__(self, entries, service_class=InferenceService):
    self.manager = ModelManager(grpc_service.configs_from_protos(entries), poll_seconds=0)
    self.manager.start()
    self.service = service_class(self.manager)
    self.server, self.port = grpc_service.create_grpc_server(self.service, self.manager)
    self.server.start()
    self.target = f'127.0.0.1:{self.port}'

  def stop(self):
    self.server.stop(None).wait()
    self.manager.stop()


class BinaryServer:
  """The real tensorflow_model_server, started on a config file with the same models."""
  kind = BINARY

  def __init__(self, entries, workdir):
    self.port = free_port()
    self.target = f'127.0.0.1:{self.port}'
    config = model_server_config_pb2.ModelServerConfig()
    config.model_config_list.config.extend(entries)
    config_path = os.path.join(workdir, 'models.config')
    with open(config_path, 'w') as f:
      f.write(text_format.MessageToString(config))
    self._log_path = os.path.join(workdir, 'tensorflow_model_server.log')
    self._log = open(self._log_path, 'wb')  # pylint: disable=consider-using-with
    flags = [f'--port={self.port}', '--rest_api_port=0', f'--model_config_file={config_path}']
    if any(e.version_labels for e in entries):
      # Labels in the initial config are checked before any version loads.
      flags.append('--allow_version_labels_for_unavailable_models=true')
    self.proc = subprocess.Popen(  # pylint: disable=consider-using-with
        [BINARY] + flags, stdout=self._log, stderr=subprocess.STDOUT)
    try:
      self._wait_until_available([e.name for e in entries])
    except Exception:
      self.stop()
      raise

  def _wait_until_available(self, names, timeout=60.0):
    deadline = time.time() + timeout
    with grpc.insecure_channel(self.target) as channel:
      stub = model_service_pb2_grpc.ModelServiceStub(channel)
      pending = list(names)
      while pending:
        if self.proc.poll() is not None or time.time() > deadline:
          with open(self._log_path, 'rb') as f:
            log = f.read().decode('utf-8', 'replace')[-4000:]
          raise RuntimeError(f'{BINARY} did not serve {pending}:\n{log}')
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = pending[0]
        try:
          states = [s.state for s in stub.GetModelStatus(request, timeout=2).model_version_status]
        except grpc.RpcError:
          states = []
        if AVAILABLE in states:
          pending.pop(0)
        else:
          time.sleep(0.1)

  def stop(self):
    if self.proc.poll() is None:
      self.proc.terminate()
      try:
        self.proc.wait(timeout=10)
      except subprocess.TimeoutExpired:
        self.proc.kill()
        self.proc.wait()
    self._log.close()


class ExternalServer:
  """A server someone else runs (ESTIMATOR_EXPORT_TEST_GRPC): never stopped here."""
  kind = 'external'

  def __init__(self, target: str, names):
    self.target = target
    _wait_until_available(target, names)

  def stop(self):
    pass


def _wait_until_available(target: str, names, timeout: float = 30.0):
  deadline = time.monotonic() + timeout
  with grpc.insecure_channel(target) as channel:
    stub = model_service_pb2_grpc.ModelServiceStub(channel)
    for name in names:
      request = get_model_status_pb2.GetModelStatusRequest()
      request.model_spec.name = name
      while True:
        try:
          states = [s.state for s in stub.GetModelStatus(request, timeout=2).model_version_status]
        except grpc.RpcError:
          states = []
        if states and all(s == AVAILABLE for s in states):
          break
        if time.monotonic() > deadline:
          raise TimeoutError(f'{wire_models.ENV_GRPC}={target}: model {name!r} not AVAILABLE '
                             f'after {timeout} s. Fix: serve the models of tests/wire_models.py')
        time.sleep(0.2)


def start_server(kind: str, entries, workdir):
  if kind == 'external':
    return ExternalServer(EXTERNAL, [e.name for e in entries])
  if kind == BINARY:
    if shutil.which(BINARY) is None:
      pytest.skip(f'{BINARY} not on PATH')
    return BinaryServer(entries, str(workdir))
  return EmbeddedServer(entries)


class Stubs:
  """The official stubs on one channel."""

  def __init__(self, target: str):
    self.channel = grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    self.prediction = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
    self.model = model_service_pb2_grpc.ModelServiceStub(self.channel)

  def close(self):
    self.channel.close()


@pytest.fixture(scope='module', params=('external',) if EXTERNAL else SERVER_KINDS)
def server(request, tf_serving_testdata, tmp_path_factory):
  srv = start_server(request.param, standard_entries(tf_serving_testdata),
                     tmp_path_factory.mktemp('server'))
  yield srv
  srv.stop()


@pytest.fixture(scope='module')
def stubs(server):
  result = Stubs(server.target)
  yield result
  result.close()


# ----- request helpers -----

def predict_request(model='half_plus_two', x=None, signature='', version=None, label=None,
                    output_filter=()):
  request = predict_pb2.PredictRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  if version is not None:
    request.model_spec.version.value = version
  if label is not None:
    request.model_spec.version_label = label
  if x is not None:
    request.inputs['x'].CopyFrom(tf.make_tensor_proto(np.asarray(x, np.float32)))
  request.output_filter.extend(output_filter)
  return request


def add_examples(input_proto, xs, key='x'):
  for x in xs:
    example = input_proto.example_list.examples.add()
    example.features.feature[key].float_list.value.append(x)


def classify_request(model='half_plus_two', signature='classify_x_to_y', xs=(2.0,)):
  request = classification_pb2.ClassificationRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  add_examples(request.input, xs)
  return request


def regress_request(model='half_plus_two', signature='regress_x_to_y', xs=(2.0,)):
  request = regression_pb2.RegressionRequest()
  request.model_spec.name = model
  request.model_spec.signature_name = signature
  add_examples(request.input, xs)
  return request


def metadata_request(model='half_plus_two', fields=('signature_def',), version=None):
  request = get_model_metadata_pb2.GetModelMetadataRequest()
  request.model_spec.name = model
  if version is not None:
    request.model_spec.version.value = version
  request.metadata_field.extend(fields)
  return request


def status_request(model='half_plus_two', version=None, label=None):
  request = get_model_status_pb2.GetModelStatusRequest()
  request.model_spec.name = model
  if version is not None:
    request.model_spec.version.value = version
  if label is not None:
    request.model_spec.version_label = label
  return request


def outputs(response):
  return {alias: tf.make_ndarray(t) for alias, t in response.outputs.items()}


def expect_error(method, request, code, message):
  with pytest.raises(grpc.RpcError) as info:
    method(request, timeout=10)
  assert (info.value.code(), info.value.details()) == (code, message)


# ----- section 9 pairs and section 6 behaviour -----

class TestPredict:

  @pytest.mark.parametrize('output_filter', [(), ('y',)])
  def test_half_plus_two(self, stubs, output_filter):
    response = stubs.prediction.Predict(predict_request(x=[[2.0]], output_filter=output_filter),
                                        timeout=10)
    assert list(response.outputs) == ['y']
    np.testing.assert_allclose(outputs(response)['y'], [[3.0]])
    spec = response.model_spec
    assert (spec.name, spec.signature_name, spec.version.value) == (
        'half_plus_two', 'serving_default', 123)

  def test_float_val_input(self, stubs):
    request = predict_request()
    tensor = request.inputs['x']
    tensor.dtype = types_pb2.DT_FLOAT
    tensor.tensor_shape.dim.add(size=3)
    tensor.tensor_shape.dim.add(size=1)
    tensor.float_val.extend([1.0, 2.0, 5.0])
    np.testing.assert_allclose(outputs(stubs.prediction.Predict(request, timeout=10))['y'],
                               [[2.5], [3.0], [4.5]])

  def test_tensor_content_input(self, stubs):
    request = predict_request(x=[[1.0], [2.0], [5.0]])
    assert request.inputs['x'].tensor_content and not request.inputs['x'].float_val
    np.testing.assert_allclose(outputs(stubs.prediction.Predict(request, timeout=10))['y'],
                               [[2.5], [3.0], [4.5]])

  def test_versions_and_labels(self, stubs):
    model = 'saved_model_half_plus_two_2_versions'
    for version, label, served in ((None, None, 124), (123, None, 123), (124, None, 124),
                                   (None, 'stable', 123), (None, 'canary', 124)):
      response = stubs.prediction.Predict(
          predict_request(model, [[1.0], [3.0]], version=version, label=label), timeout=10)
      assert response.model_spec.version.value == served
      np.testing.assert_allclose(outputs(response)['y'], [[2.5], [3.5]])

  @pytest.mark.parametrize('x', [[[1.0, 2.0], [3.0, 4.0]], [1.0, 2.0], 2.0],
                           ids=['2x2', 'rank1', 'scalar'])
  def test_fed_shapes_are_not_checked(self, stubs, x):
    """x is declared [-1, 1]; TF Serving's C++ session runs any shape (section 9 pair)."""
    response = stubs.prediction.Predict(
        predict_request('saved_model_half_plus_two_2_versions', x), timeout=10)
    np.testing.assert_allclose(outputs(response)['y'], np.asarray(x) * 0.5 + 2)

  def test_matrix_half_plus_two(self, stubs):
    x = [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
    response = stubs.prediction.Predict(predict_request('matrix_half_plus_two', x), timeout=10)
    np.testing.assert_allclose(outputs(response)['y'],
                               [[[2.5, 3, 3.5], [4, 4.5, 5], [5.5, 6, 6.5]]])

  def test_tf2_model(self, stubs):
    response = stubs.prediction.Predict(
        predict_request('saved_model_half_plus_two_tf2_cpu', [1.0]), timeout=10)
    np.testing.assert_allclose(outputs(response)['y'], [2.5])

  def test_concurrent_requests(self, stubs):
    xs = [[[float(i)]] for i in range(64)]
    with futures.ThreadPoolExecutor(16) as pool:
      responses = list(pool.map(
          lambda x: stubs.prediction.Predict(predict_request(x=x), timeout=30), xs))
    for x, response in zip(xs, responses):
      np.testing.assert_allclose(outputs(response)['y'], np.asarray(x) * 0.5 + 2)

  def test_messages_over_4mb(self, stubs):
    x = np.arange(1_500_000, dtype=np.float32).reshape(-1, 1)  # 6 MB each way.
    response = stubs.prediction.Predict(predict_request(x=x), timeout=30)
    np.testing.assert_allclose(outputs(response)['y'], 0.5 * x + 2)


class TestClassifyRegress:

  def test_classify(self, stubs):
    response = stubs.prediction.Classify(classify_request(), timeout=10)
    classes = response.result.classifications
    assert len(classes) == 1 and len(classes[0].classes) == 1
    assert classes[0].classes[0].label == ''
    assert classes[0].classes[0].score == pytest.approx(3.0)
    assert response.model_spec.signature_name == 'classify_x_to_y'
    assert response.model_spec.version.value == 123

  def test_regress(self, stubs):
    response = stubs.prediction.Regress(regress_request(xs=(80.0,)), timeout=10)
    assert [r.value for r in response.result.regressions] == [42.0]

  def test_half_plus_three_regress(self, stubs):
    request = regress_request('half_plus_three', 'tensorflow/serving/regress', (1.0, 2.0))
    response = stubs.prediction.Regress(request, timeout=10)
    assert [r.value for r in response.result.regressions] == [3.5, 4.0]

  def test_tf2_predict_signatures_serve_classify_and_regress(self, stubs):
    model = 'saved_model_half_plus_two_tf2_cpu'
    regress = stubs.prediction.Regress(regress_request(model, xs=(2.0, 4.0)), timeout=10)
    assert [r.value for r in regress.result.regressions] == [3.0, 4.0]
    classify = stubs.prediction.Classify(classify_request(model), timeout=10)
    assert classify.result.classifications[0].classes[0].score == pytest.approx(3.0)

  def test_context_features_lose_to_the_examples(self, stubs):
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = 'half_plus_two'
    request.model_spec.signature_name = 'regress_x_to_y'
    with_context = request.input.example_list_with_context
    with_context.context.features.feature['x'].float_list.value.append(2.0)
    with_context.examples.add()
    with_context.examples.add().features.feature['x'].float_list.value.append(4.0)
    response = stubs.prediction.Regress(request, timeout=10)
    assert [r.value for r in response.result.regressions] == [3.0, 4.0]


class TestMultiInference:

  def test_regress_and_classify(self, stubs):
    request = inference_pb2.MultiInferenceRequest()
    for signature, method in (('regress_x_to_y', 'tensorflow/serving/regress'),
                              ('classify_x_to_y', 'tensorflow/serving/classify')):
      task = request.tasks.add()
      task.model_spec.name = 'half_plus_two'
      task.model_spec.signature_name = signature
      task.method_name = method
    add_examples(request.input, [2.0])
    results = stubs.prediction.MultiInference(request, timeout=10).results
    assert len(results) == 2
    assert results[0].regression_result.regressions[0].value == pytest.approx(3.0)
    assert results[1].classification_result.classifications[0].classes[0].score == (
        pytest.approx(3.0))
    assert [r.model_spec.signature_name for r in results] == ['regress_x_to_y',
                                                              'classify_x_to_y']
    assert [r.model_spec.version.value for r in results] == [123, 123]

  def test_tasks_must_share_the_model(self, stubs):
    request = inference_pb2.MultiInferenceRequest()
    for model in ('half_plus_two', 'half_plus_three'):
      task = request.tasks.add()
      task.model_spec.name = model
      task.model_spec.signature_name = 'regress_x_to_y'
      task.method_name = 'tensorflow/serving/regress'
    add_examples(request.input, [2.0])
    with pytest.raises(grpc.RpcError) as info:
      stubs.prediction.MultiInference(request, timeout=10)
    assert info.value.code() == Code.INVALID_ARGUMENT
    assert info.value.details().startswith(
        'All ModelSpecs in a MultiInferenceRequest must access the same model name')


def _fixture_signatures(testdata, name) -> get_model_metadata_pb2.SignatureDefMap:
  with open(os.path.join(testdata, name)) as f:
    body = json.load(f)
  return json_format.ParseDict(body['metadata']['signature_def'],
                               get_model_metadata_pb2.SignatureDefMap())


class TestMetadata:

  def test_matches_the_fixture_json(self, stubs, tf_serving_testdata):
    response = stubs.prediction.GetModelMetadata(metadata_request(), timeout=10)
    assert response.model_spec.name == 'half_plus_two'
    assert response.model_spec.version.value == 123
    assert response.model_spec.signature_name == ''
    assert list(response.metadata) == ['signature_def']
    got = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata['signature_def'].Unpack(got)
    assert got == _fixture_signatures(tf_serving_testdata, 'half_plus_two_model_metadata.json')

  def test_two_versions_fixture(self, stubs, tf_serving_testdata):
    request = metadata_request('saved_model_half_plus_two_2_versions', version=123)
    response = stubs.prediction.GetModelMetadata(request, timeout=10)
    got = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(got)
    assert got == _fixture_signatures(tf_serving_testdata,
                                      'saved_model_half_plus_two_2_versions_metadata.json')


class TestStatus:

  def test_one_version(self, stubs):
    response = stubs.model.GetModelStatus(status_request(), timeout=10)
    [status] = response.model_version_status
    assert (status.version, status.state) == (123, AVAILABLE)
    assert (status.status.error_code, status.status.error_message) == (0, '')

  def test_versions_newest_first_and_labels_ignored(self, stubs):
    for label in (None, 'nope'):
      response = stubs.model.GetModelStatus(
          status_request('saved_model_half_plus_two_2_versions', label=label), timeout=10)
      assert [(s.version, s.state) for s in response.model_version_status] == [
          (124, AVAILABLE), (123, AVAILABLE)]

  def test_one_of_two_versions(self, stubs):
    response = stubs.model.GetModelStatus(
        status_request('saved_model_half_plus_two_2_versions', version=123), timeout=10)
    assert [s.version for s in response.model_version_status] == [123]


# ----- the section 6 error table -----

def _no_spec(request_class, **fields):
  return lambda: request_class(**fields)


def _named(build, name):
  def make():
    request = build()
    request.model_spec.name = name
    return request
  return make


ERROR_CASES = {
    # name: (rpc, request factory, code, message)
    'predict_no_model_spec': ('Predict', predict_pb2.PredictRequest, Code.INVALID_ARGUMENT,
                              'Missing ModelSpec'),
    'classify_no_model_spec': ('Classify', classification_pb2.ClassificationRequest,
                               Code.INVALID_ARGUMENT, 'Missing ModelSpec'),
    'regress_no_model_spec': ('Regress', regression_pb2.RegressionRequest,
                              Code.INVALID_ARGUMENT, 'Missing ModelSpec'),
    'metadata_no_model_spec': (
        'GetModelMetadata', _no_spec(get_model_metadata_pb2.GetModelMetadataRequest,
                                     metadata_field=['signature_def']),
        Code.INVALID_ARGUMENT, 'Missing ModelSpec'),
    'status_no_model_spec': ('GetModelStatus', get_model_status_pb2.GetModelStatusRequest,
                             Code.INVALID_ARGUMENT, 'Missing ModelSpec'),
    'predict_empty_name': ('Predict', lambda: predict_request('', [[1.0]]),
                           Code.INVALID_ARGUMENT, 'ModelSpec has no name specified.'),
    'classify_empty_name': ('Classify', lambda: classify_request(''), Code.INVALID_ARGUMENT,
                            'ModelSpec has no name specified.'),
    'regress_empty_name': ('Regress', lambda: regress_request(''), Code.INVALID_ARGUMENT,
                           'ModelSpec has no name specified.'),
    'metadata_empty_name': ('GetModelMetadata', lambda: metadata_request(''),
                            Code.INVALID_ARGUMENT, 'ModelSpec has no name specified.'),
    'predict_unknown_model': ('Predict', lambda: predict_request('foo', [[1.0]]), Code.NOT_FOUND,
                              'Servable not found for request: Latest(foo)'),
    'predict_unknown_version': ('Predict', lambda: predict_request(x=[[1.0]], version=7),
                                Code.NOT_FOUND,
                                'Servable not found for request: Specific(half_plus_two, 7)'),
    'classify_unknown_model': ('Classify', lambda: classify_request('foo'), Code.NOT_FOUND,
                               'Servable not found for request: Latest(foo)'),
    'regress_unknown_model': ('Regress', lambda: regress_request('foo'), Code.NOT_FOUND,
                              'Servable not found for request: Latest(foo)'),
    'metadata_unknown_model': ('GetModelMetadata', lambda: metadata_request('foo'),
                               Code.NOT_FOUND, 'Servable not found for request: Latest(foo)'),
    'metadata_unknown_version': ('GetModelMetadata', lambda: metadata_request(version=7),
                                 Code.NOT_FOUND,
                                 'Servable not found for request: Specific(half_plus_two, 7)'),
    'status_unknown_model': ('GetModelStatus', lambda: status_request('foo'), Code.NOT_FOUND,
                             'Could not find any versions of model foo'),
    'status_unknown_version': ('GetModelStatus', lambda: status_request(version=7),
                               Code.NOT_FOUND, 'Could not find version 7 of model half_plus_two'),
    'predict_unknown_label': ('Predict', lambda: predict_request(x=[[1.0]], label='canary'),
                              Code.INVALID_ARGUMENT,
                              'Unrecognized servable version label: canary'),
    'predict_unknown_signature': ('Predict', lambda: predict_request(x=[[1.0]], signature='nope'),
                                  Code.FAILED_PRECONDITION,
                                  'Serving signature key "nope" not found.'),
    'classify_unknown_signature': ('Classify', lambda: classify_request(signature='nope'),
                                   Code.INVALID_ARGUMENT,
                                   'No signature was found with the name: nope'),
    'regress_unknown_signature': ('Regress', lambda: regress_request(signature='nope'),
                                  Code.INVALID_ARGUMENT,
                                  'No signature was found with the name: nope'),
    'predict_missing_input': ('Predict', predict_request, Code.INVALID_ARGUMENT,
                              'input size does not match signature: 0!=1 len({}) != len({x}). '
                              'Sent extra: {}. Missing but required: {x}.'),
    'predict_wrong_dtype': ('Predict', lambda: _with_input(predict_request(), 'x', [[b'a']]),
                            Code.INVALID_ARGUMENT,
                            'Expects arg[0] to be float but string is provided'),
    'predict_bad_output_filter': (
        'Predict', lambda: predict_request(x=[[1.0]], output_filter=['foo']),
        Code.INVALID_ARGUMENT,
        'output tensor alias not found in signature: foo Outputs expected to be in the set {y}.'),
    'classify_no_examples': ('Classify', lambda: classify_request(xs=()), Code.INVALID_ARGUMENT,
                             'Input is empty.'),
    'regress_no_examples': ('Regress', lambda: regress_request(xs=()), Code.INVALID_ARGUMENT,
                            'Input is empty.'),
    'metadata_no_field': ('GetModelMetadata', lambda: metadata_request(fields=()),
                          Code.INVALID_ARGUMENT,
                          'GetModelMetadataRequest must specify at least one metadata_field'),
    'metadata_unknown_field': ('GetModelMetadata', lambda: metadata_request(fields=('foo',)),
                               Code.INVALID_ARGUMENT, 'Metadata field foo is not supported'),
}


def _with_input(request, alias, value):
  request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
  return request


def _method(stubs, rpc):
  return getattr(stubs.model if rpc in ('GetModelStatus', 'HandleReloadConfigRequest')
                 else stubs.prediction, rpc)


class TestErrors:

  @pytest.mark.parametrize('case', sorted(ERROR_CASES))
  def test_code_and_message(self, stubs, case):
    rpc, make_request, code, message = ERROR_CASES[case]
    expect_error(_method(stubs, rpc), make_request(), code, message)

  def test_extra_input(self, stubs):
    request = _with_input(predict_request(x=[[1.0]]), 'z', [[1.0]])
    expect_error(stubs.prediction.Predict, request, Code.INVALID_ARGUMENT,
                 'input size does not match signature: 2!=1 len({x,z}) != len({x}). '
                 'Sent extra: {z}. Missing but required: {}.')

  def test_message_over_1024_characters_is_truncated(self, stubs):
    name = 'm' * 2000
    full = f'Servable not found for request: Latest({name})'
    expect_error(stubs.prediction.Predict, predict_request(name, [[1.0]]), Code.NOT_FOUND,
                 full[:1024] + '...TRUNCATED')

  def test_status_with_empty_name(self, stubs):
    expect_error(stubs.model.GetModelStatus, status_request(''), Code.NOT_FOUND,
                 'Could not find any versions of model ')


# ----- HandleReloadConfigRequest (a server of its own per test) -----

@pytest.fixture(params=('external',) if EXTERNAL else SERVER_KINDS)
def reload_server(request, tf_serving_testdata, tmp_path):
  if EXTERNAL:
    pytest.skip(OWN_SERVER)
  entries = [model_entry('half_plus_two',
                         os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu'))]
  srv = start_server(request.param, entries, tmp_path)
  srv.stubs = Stubs(srv.target)
  yield srv
  srv.stubs.close()
  srv.stop()


def reload_request(entries):
  request = model_management_pb2.ReloadConfigRequest()
  request.config.model_config_list.config.extend(entries)
  return request


class TestReloadConfig:

  def test_swaps_models(self, reload_server, tf_serving_testdata):
    stubs = reload_server.stubs
    three = model_entry('half_plus_three',
                        os.path.join(tf_serving_testdata, 'saved_model_half_plus_three'))
    response = stubs.model.HandleReloadConfigRequest(reload_request([three]), timeout=60)
    assert (response.status.error_code, response.status.error_message) == (0, '')
    predicted = stubs.prediction.Predict(predict_request('half_plus_three', [[1.0]]), timeout=10)
    np.testing.assert_allclose(outputs(predicted)['y'], [[3.5]])
    expect_error(stubs.prediction.Predict, predict_request(x=[[1.0]]), Code.NOT_FOUND,
                 'Servable not found for request: Latest(half_plus_two)')

  def test_adds_labels_to_loaded_versions(self, reload_server, tf_serving_testdata):
    stubs = reload_server.stubs
    base = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_2_versions')
    plain = model_entry('two', base, policy='all')
    stubs.model.HandleReloadConfigRequest(reload_request([plain]), timeout=60)
    labeled = model_entry('two', base, policy='all', labels={'stable': 123})
    stubs.model.HandleReloadConfigRequest(reload_request([labeled]), timeout=60)
    response = stubs.prediction.Predict(predict_request('two', [[1.0]], label='stable'),
                                        timeout=10)
    assert response.model_spec.version.value == 123

  def test_label_for_an_unavailable_version(self, reload_server, tf_serving_testdata):
    entry = model_entry('half_plus_two',
                        os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu'),
                        labels={'stable': 999})
    expect_error(reload_server.stubs.model.HandleReloadConfigRequest, reload_request([entry]),
                 Code.FAILED_PRECONDITION,
                 'Request to assign label to version 999 of model half_plus_two, which is not '
                 'currently available for inference')

  def test_duplicate_model_names(self, reload_server, tf_serving_testdata):
    entry = model_entry('half_plus_two',
                        os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu'))
    expect_error(reload_server.stubs.model.HandleReloadConfigRequest,
                 reload_request([entry, entry]), Code.INVALID_ARGUMENT,
                 'Illegal to list model half_plus_two multiple times in config list')

  def test_relative_base_path(self, reload_server):
    expect_error(reload_server.stubs.model.HandleReloadConfigRequest,
                 reload_request([model_entry('m', 'relative/m')]), Code.INVALID_ARGUMENT,
                 'Expected model m to have an absolute path or URI; got base_path()=relative/m')

  @pytest.mark.parametrize('which', ['unset', 'custom_model_config'])
  def test_only_model_config_list(self, reload_server, which):
    request = model_management_pb2.ReloadConfigRequest()
    if which == 'custom_model_config':
      request.config.custom_model_config.Pack(model_server_config_pb2.ModelConfigList())
    expect_error(reload_server.stubs.model.HandleReloadConfigRequest, request,
                 Code.INVALID_ARGUMENT,
                 'ServerModelConfig type not supported by HandleReloadConfigRequest. Only '
                 'ModelConfigList is currently supported')
    status = reload_server.stubs.model.GetModelStatus(status_request(), timeout=10)
    assert status.model_version_status[0].state == AVAILABLE


# ----- embedded only: an unexpected exception is INTERNAL, not a crash -----

class _BrokenPredict(InferenceService):
  """Fault injection: Predict hits a bug (everything else is the real service)."""

  def predict(self, request):
    raise RuntimeError('boom')


@pytest.mark.skipif(bool(EXTERNAL), reason=OWN_SERVER)
def test_unexpected_exception_is_internal(tf_serving_testdata, caplog):
  srv = EmbeddedServer(standard_entries(tf_serving_testdata)[:1], service_class=_BrokenPredict)
  stubs = Stubs(srv.target)
  try:
    with pytest.raises(grpc.RpcError) as raised:
      stubs.prediction.Predict(predict_request(x=[[1.0]]), timeout=10)
    assert raised.value.code() == Code.INTERNAL
    message = raised.value.details()
    assert 'Internal error [error id ' in message and 'boom' not in message
    error_id = message.split('[error id ')[1].split(']')[0]
    logged = [r for r in caplog.records if error_id in r.getMessage()]
    assert len(logged) == 1 and 'gRPC Predict' in logged[0].getMessage()
    assert 'RuntimeError: boom' in logged[0].getMessage()
    assert stubs.prediction.Classify(classify_request(), timeout=10).result.classifications
  finally:
    stubs.close()
    srv.stop()


@pytest.mark.skipif(bool(EXTERNAL), reason=OWN_SERVER)
def test_port_in_use_fails_clearly(tf_serving_testdata):
  srv = EmbeddedServer(standard_entries(tf_serving_testdata)[:1])
  try:
    with pytest.raises(OSError, match=f'Could not bind the gRPC server to 127.0.0.1:{srv.port}'):
      grpc_service.create_grpc_server(srv.service, srv.manager, port=srv.port)
  finally:
    srv.stop()


# ----- a model exported by this project -----

class _ServedToy(NamedTuple):
  """What the exported-model tests read of an ExportResult, for an external server's toy."""
  path: str
  version: int
  signatures: dict


@pytest.fixture(scope='module')
def toy_export(request, tmp_path_factory):
  from tests import toy  # pylint: disable=g-import-not-at-top
  if EXTERNAL:
    path, why = wire_models.external_toy_path()
    if path is None:
      pytest.skip(why)
    with open(os.path.join(path, 'assets.extra', 'export_manifest.json')) as f:
      signatures = json.load(f)['signatures']
    return os.path.dirname(path), _ServedToy(path, int(os.path.basename(path)), signatures)
  model, estimator = request.getfixturevalue('trained_toy')
  base = tmp_path_factory.mktemp('toy_serving') / 'toy'
  result = model.export_for_serving(estimator, str(base), samples=toy.SAMPLES)
  return str(base), result


@pytest.fixture(scope='module', params=('external',) if EXTERNAL else SERVER_KINDS)
def toy_server(request, toy_export, tmp_path_factory):
  srv = start_server(request.param, [model_entry('toy', toy_export[0])],
                     tmp_path_factory.mktemp('toy_server'))
  srv.stubs = Stubs(srv.target)
  yield srv
  srv.stubs.close()
  srv.stop()


@pytest.fixture(scope='module')
def local(toy_export):
  """The export's outputs on toy.SAMPLES, computed in-process."""
  import estimator_export as ee  # pylint: disable=g-import-not-at-top
  from tests import toy  # pylint: disable=g-import-not-at-top
  with ee.Predictor.from_saved_model(toy_export[1].path) as predictor:
    return predictor(toy.SAMPLES)


class TestExportedModel:

  def test_predict_raw_signatures(self, toy_server, toy_export, local):
    from tests import toy  # pylint: disable=g-import-not-at-top
    for signature in ('', 'predict'):
      request = predict_pb2.PredictRequest()
      request.model_spec.name = 'toy'
      request.model_spec.signature_name = signature
      for alias, value in toy.SAMPLES.items():
        request.inputs[alias].CopyFrom(tf.make_tensor_proto(value))
      response = toy_server.stubs.prediction.Predict(request, timeout=10)
      assert response.model_spec.version.value == toy_export[1].version
      got = outputs(response)
      assert sorted(got) == sorted(local)
      for alias, value in local.items():
        np.testing.assert_allclose(got[alias], value, rtol=1e-5)

  def test_classify_and_regress_examples(self, toy_server, local):
    from tests import toy  # pylint: disable=g-import-not-at-top
    examples = [tf.train.Example.FromString(s)
                for s in toy.ToyClassifier.feature_spec.to_examples(toy.SAMPLES)]
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = 'toy'
    request.model_spec.signature_name = 'examples:classify'
    request.input.example_list.examples.extend(examples)
    result = toy_server.stubs.prediction.Classify(request, timeout=10).result
    labels = [[c.label for c in entry.classes] for entry in result.classifications]
    scores = [[c.score for c in entry.classes] for entry in result.classifications]
    assert labels == [['neg', 'pos']] * 2
    np.testing.assert_allclose(scores, local['probabilities'], rtol=1e-5)

    request = regression_pb2.RegressionRequest()
    request.model_spec.name = 'toy'
    request.model_spec.signature_name = 'examples:regress'
    request.input.example_list.examples.extend(examples)
    result = toy_server.stubs.prediction.Regress(request, timeout=10).result
    np.testing.assert_allclose([r.value for r in result.regressions],
                               local['probabilities'][:, 1], rtol=1e-5)

  def test_metadata_lists_the_export_signatures(self, toy_server, toy_export):
    response = toy_server.stubs.prediction.GetModelMetadata(metadata_request('toy'), timeout=10)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(signatures)
    assert set(toy_export[1].signatures) <= set(signatures.signature_def)
    raw = signatures.signature_def['serving_default'].inputs
    assert (raw['x'].dtype, raw['n'].dtype) == (types_pb2.DT_FLOAT, types_pb2.DT_INT32)
