"""Tests for estimator_export.client: GrpcClient and RestClient against real servers on real
ports, and the `estimator-export query` command.

The same assertions run through both clients, so they must agree.
"""
import dataclasses
import json
import os

import grpc
import numpy as np
import pytest
import tensorflow as tf
from google.protobuf import json_format
from google.protobuf import text_format
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.config import model_server_config_pb2

from estimator_export import cli
from estimator_export import client as client_lib
from estimator_export.client import GrpcClient, RestClient, ServingClientError
from tests import toy
from tests.serving_util import Config
from tests.test_serving_grpc import EmbeddedServer
from tests.test_serving_grpc import free_port
from tests.test_serving_grpc import model_entry
from tests.test_serving_grpc import standard_entries

Code = grpc.StatusCode
HALF_PLUS_TWO_SIGNATURES = ['classify_x_to_y', 'regress_x2_to_y3', 'regress_x_to_y',
                            'regress_x_to_y2', 'serving_default']


@pytest.fixture(scope='module')
def toy_export(trained_toy, tmp_path_factory):
  model, estimator = trained_toy
  base = tmp_path_factory.mktemp('client_toy') / 'toy'
  result = model.export_for_serving(estimator, str(base), samples=toy.SAMPLES)
  return str(base), result


@pytest.fixture(scope='module')
def entries(tf_serving_testdata, toy_export):
  return standard_entries(tf_serving_testdata) + [model_entry('toy', toy_export[0])]


@pytest.fixture(scope='module')
def grpc_server(entries):
  srv = EmbeddedServer(entries)
  yield srv
  srv.stop()


@pytest.fixture(scope='module')
def rest_server(entries, tmp_path_factory):
  """The full embedded server (gRPC + REST), started like `estimator-export serve`."""
  from estimator_export.serving import config as config_lib  # pylint: disable=g-import-not-at-top
  from estimator_export.serving import server as server_lib  # pylint: disable=g-import-not-at-top
  config = model_server_config_pb2.ModelServerConfig()
  config.model_config_list.config.extend(entries)
  path = tmp_path_factory.mktemp('rest') / 'models.config'
  path.write_text(text_format.MessageToString(config))
  srv = server_lib.create_server(config_lib.ServerOptions(
      model_config_file=str(path), host='127.0.0.1', port=0, rest_api_port=0,
      file_system_poll_wait_seconds=0, model_config_file_poll_wait_seconds=0))
  yield srv
  srv.stop(grace=1)


@pytest.fixture(params=['grpc', 'rest'])
def client(request):
  if request.param == 'grpc':
    result = GrpcClient(request.getfixturevalue('grpc_server').target)
  else:
    result = RestClient(f'http://127.0.0.1:{request.getfixturevalue("rest_server").rest_port}')
  result.protocol = request.param
  yield result
  result.close()


def _error(call, *args, **kwargs) -> ServingClientError:
  with pytest.raises(ServingClientError) as info:
    call(*args, **kwargs)
  return info.value


# ----- Predict -----

class TestPredict:

  def test_lists_become_float32(self, client):
    got = client.predict('half_plus_two', {'x': [[1.0], [2.0], [5.0]]})
    assert list(got) == ['y'] and got['y'].dtype == np.float32
    np.testing.assert_allclose(got['y'], [[2.5], [3.0], [4.5]])

  def test_single_input_signature_takes_a_bare_value(self, client):
    got = client.predict('half_plus_two', np.array([[3.0], [4.0]], np.float32),
                         signature_name='serving_default')
    np.testing.assert_allclose(got['y'], [[3.5], [4.0]])

  def test_matrix(self, client):
    x = [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
    got = client.predict('matrix_half_plus_two', {'x': np.asarray(x, np.float32)})
    np.testing.assert_allclose(got['y'], [[[2.5, 3, 3.5], [4, 4.5, 5], [5.5, 6, 6.5]]])

  @pytest.mark.parametrize('version,label', [(123, None), (124, None), (None, 'stable'),
                                             (None, 'canary')])
  def test_version_and_label(self, client, version, label):
    got = client.predict('saved_model_half_plus_two_2_versions', {'x': [[1.0]]},
                         version=version, version_label=label)
    np.testing.assert_allclose(got['y'], [[2.5]])

  def test_output_filter(self, client):
    assert list(client.predict('half_plus_two', {'x': [[1.0]]}, output_filter=['y'])) == ['y']
    error = _error(client.predict, 'half_plus_two', {'x': [[1.0]]}, output_filter=['foo'])
    assert error.code == Code.INVALID_ARGUMENT
    assert error.message == ('output tensor alias not found in signature: foo Outputs '
                             'expected to be in the set {y}.')

  def test_two_inputs_and_several_outputs(self, client, toy_export):
    got = client.predict('toy', toy.SAMPLES)
    import estimator_export as ee  # pylint: disable=g-import-not-at-top
    with ee.Predictor.from_saved_model(toy_export[1].path) as predictor:
      local = predictor(toy.SAMPLES)
    assert sorted(got) == sorted(local)
    for alias, value in local.items():
      assert got[alias].dtype == value.dtype
      np.testing.assert_allclose(got[alias], value, rtol=1e-5)

  def test_bytes_inputs_and_string_outputs(self, client):
    examples = toy.ToyClassifier.feature_spec.to_examples(toy.SAMPLES)
    got = client.predict('toy', {'inputs': np.array(examples, dtype=object)},
                         signature_name='examples:classify')
    assert got['classes'].dtype == object
    assert got['classes'].tolist() == [[b'neg', b'pos']] * 2
    assert got['scores'].shape == (2, 2)

  def test_numpy_dtypes_are_kept(self, grpc_server):
    with GrpcClient(grpc_server.target) as grpc_client:
      error = _error(grpc_client.predict, 'half_plus_two', {'x': np.array([[1.0]])})
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT,
                                           'Expects arg[0] to be float but double is provided')

  def test_rest_row_and_columnar_agree(self, rest_server):
    with RestClient(f'127.0.0.1:{rest_server.rest_port}') as rest:
      for model, inputs in (('half_plus_two', {'x': [[1.0], [2.0]]}), ('toy', toy.SAMPLES)):
        rows = rest.predict(model, inputs, request_format='row')
        columns = rest.predict(model, inputs, request_format='columnar')
        assert sorted(rows) == sorted(columns)
        for alias, value in rows.items():
          np.testing.assert_allclose(value, columns[alias])


# ----- Classify, Regress, MultiInference -----

class TestExamples:

  @pytest.mark.parametrize('kind', ['dict', 'example', 'bytes'])
  def test_classify_example_forms(self, client, kind):
    example = {'x': 2.0}
    if kind != 'dict':
      example = client_lib.to_example(example)
      if kind == 'bytes':
        example = example.SerializeToString()
    assert client.classify('half_plus_two', [example], 'classify_x_to_y') == [[('', 3.0)]]

  def test_regress(self, client):
    got = client.regress('half_plus_three', [{'x': 1.0}, {'x': 2.0}],
                         'tensorflow/serving/regress')
    assert got.dtype == np.float32 and got.tolist() == [3.5, 4.0]
    assert client.regress('half_plus_two', [{'x': [80.0]}], 'regress_x_to_y').tolist() == [42.0]

  def test_context(self, client):
    got = client.regress('half_plus_two', [{}, {'x': 4.0}], 'regress_x_to_y',
                         context={'x': 2.0})
    assert got.tolist() == [3.0, 4.0]

  def test_integer_feature_for_a_float_feature(self, client):
    error = _error(client.regress, 'half_plus_two', [{'x': 2}], 'regress_x_to_y')
    assert error.code == Code.INVALID_ARGUMENT
    assert 'Data type: int64 but expected type: float' in error.message

  def test_multi_inference(self, client):
    got = client.multi_inference('half_plus_two', [('regress_x_to_y', 'regress'),
                                                   ('classify_x_to_y', 'classify')],
                                 [{'x': 2.0}])
    assert got[0].tolist() == [3.0]
    assert got[1] == [[('', 3.0)]]

  def test_exported_model(self, client, toy_export):
    features = [{'x': list(x), 'n': int(n)} for x, n in zip(toy.SAMPLES['x'], toy.SAMPLES['n'])]
    classes = client.classify('toy', features, 'examples:classify')
    assert [[label for label, _ in entry] for entry in classes] == [['neg', 'pos']] * 2
    scores = np.array([[score for _, score in entry] for entry in classes])
    np.testing.assert_allclose(scores.sum(axis=1), 1.0, rtol=1e-5)
    regressed = client.regress('toy', features, 'examples:regress')
    np.testing.assert_allclose(regressed, scores[:, 1], rtol=1e-5)


# ----- metadata and status -----

class TestMetadataAndStatus:

  def test_metadata(self, client, tf_serving_testdata):
    signatures = client.metadata('half_plus_two')
    assert list(signatures) == HALF_PLUS_TWO_SIGNATURES
    with open(os.path.join(tf_serving_testdata, 'half_plus_two_model_metadata.json')) as f:
      expected = json_format.ParseDict(json.load(f)['metadata']['signature_def'],
                                       get_model_metadata_pb2.SignatureDefMap())
    for name, signature in signatures.items():
      assert signature == expected.signature_def[name]
    assert signatures['serving_default'].inputs['x'].dtype == types_pb2.DT_FLOAT

  def test_metadata_of_a_version_and_label(self, client):
    model = 'saved_model_half_plus_two_2_versions'
    assert 'classify_x2_to_y3' in client.metadata(model, version=123)
    assert 'classify_x2_to_y3' in client.metadata(model, version_label='canary')

  def test_status(self, client):
    assert client.status('half_plus_two') == [
        {'version': 123, 'state': 'AVAILABLE', 'error_code': 'OK', 'error_message': ''}]
    versions = client.status('saved_model_half_plus_two_2_versions')
    assert [s['version'] for s in versions] == [124, 123]
    assert [s['version'] for s in client.status('saved_model_half_plus_two_2_versions', 123)
           ] == [123]


# ----- errors -----

class TestErrors:

  def test_unknown_model(self, client):
    error = _error(client.predict, 'foo', {'x': [[1.0]]})
    assert (error.code, error.message) == (Code.NOT_FOUND,
                                           'Servable not found for request: Latest(foo)')
    assert error.http_status == (404 if client.protocol == 'rest' else None)
    assert str(error) == 'NOT_FOUND: Servable not found for request: Latest(foo)'

  def test_unknown_version_and_label(self, client):
    error = _error(client.classify, 'half_plus_two', [{'x': 1.0}], 'classify_x_to_y', version=7)
    assert (error.code, error.message) == (
        Code.NOT_FOUND, 'Servable not found for request: Specific(half_plus_two, 7)')
    error = _error(client.predict, 'half_plus_two', {'x': [[1.0]]}, version_label='nope')
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT,
                                           'Unrecognized servable version label: nope')

  def test_unknown_signature(self, client):
    error = _error(client.predict, 'half_plus_two', {'x': [[1.0]]}, 'nope')
    if client.protocol == 'grpc':
      assert (error.code, error.message) == (Code.FAILED_PRECONDITION,
                                             'Serving signature key "nope" not found.')
    else:
      assert (error.code, error.http_status, error.message) == (
          Code.INVALID_ARGUMENT, 400,
          'Serving signature name: "nope" not found in signature def')
    error = _error(client.regress, 'half_plus_two', [{'x': 1.0}], 'nope')
    assert (error.code, error.message) == (Code.INVALID_ARGUMENT,
                                           'No signature was found with the name: nope')

  def test_status_of_unknown_model(self, client):
    error = _error(client.status, 'foo')
    assert (error.code, error.message) == (Code.NOT_FOUND,
                                           'Could not find any versions of model foo')

  def test_version_and_label_together(self, client):
    error = _error(client.predict, 'half_plus_two', {'x': [[1.0]]}, version=123,
                   version_label='stable')
    assert (error.code, error.message) == (
        Code.INVALID_ARGUMENT,
        'Both model version (123) and model version label (stable) cannot be supplied.')

  @pytest.mark.parametrize('protocol', ['grpc', 'rest'])
  def test_no_server(self, protocol):
    port = free_port()
    if protocol == 'grpc':
      unreachable, target = GrpcClient(f'127.0.0.1:{port}', timeout=5), f'127.0.0.1:{port}'
    else:
      target = f'http://127.0.0.1:{port}'
      unreachable = RestClient(target, timeout=5)
    with unreachable:
      error = _error(unreachable.status, 'half_plus_two')
    assert error.code == Code.UNAVAILABLE
    assert f'Cannot reach a model server at {target}' in error.message
    assert 'estimator-export serve' in error.message


# ----- HandleReloadConfigRequest -----

@dataclasses.dataclass(frozen=True)
class All:
  pass


class TestReloadConfig:

  def test_grpc_reload_forms(self, tf_serving_testdata):
    def path(name):
      return os.path.join(tf_serving_testdata, name)

    srv = EmbeddedServer(standard_entries(tf_serving_testdata)[:1])
    try:
      with GrpcClient(srv.target) as grpc_client:
        grpc_client.reload_config([{'name': 'three',
                                    'base_path': path('saved_model_half_plus_three')}])
        regressed = grpc_client.regress('three', [{'x': 1.0}], 'tensorflow/serving/regress')
        assert regressed.tolist() == [3.5]
        assert _error(grpc_client.status, 'half_plus_two').code == Code.NOT_FOUND

        two = Config('two', path('saved_model_half_plus_two_2_versions'), All())
        grpc_client.reload_config([two])
        grpc_client.reload_config([dataclasses.replace(two, version_labels={'stable': 123})])
        assert [s['version'] for s in grpc_client.status('two')] == [124, 123]
        np.testing.assert_allclose(
            grpc_client.predict('two', {'x': [[2.0]]}, version_label='stable')['y'], [[3.0]])

        grpc_client.reload_config(f'model_config_list {{ config {{ name: "h2" base_path: '
                                  f'"{path("saved_model_half_plus_two_cpu")}" '
                                  'model_platform: "tensorflow" } }')
        assert grpc_client.status('h2')[0]['state'] == 'AVAILABLE'

        error = _error(grpc_client.reload_config, [two, two])
        assert (error.code, error.message) == (
            Code.INVALID_ARGUMENT, 'Illegal to list model two multiple times in config list')
    finally:
      srv.stop()

  def test_rest_has_no_reload(self):
    error = _error(RestClient(f'127.0.0.1:{free_port()}').reload_config, [])
    assert error.code == Code.UNIMPLEMENTED


# ----- `estimator-export query` -----

def _query(capsys, *argv):
  code = cli.main(['query'] + list(argv))
  captured = capsys.readouterr()
  return code, captured.out, captured.err


@pytest.fixture(params=['grpc', 'rest'])
def server_flags(request):
  if request.param == 'grpc':
    return ['--server', request.getfixturevalue('grpc_server').target]
  port = request.getfixturevalue('rest_server').rest_port
  return ['--protocol', 'rest', '--server', f'127.0.0.1:{port}']


class TestQuery:

  def test_predict(self, capsys, server_flags):
    code, out, _ = _query(capsys, *server_flags, '--model', 'half_plus_two',
                          '--inputs', '{"x": [[1.0], [2.0]]}')
    assert (code, json.loads(out)) == (0, {'y': [[2.5], [3.0]]})

  def test_predict_bare_integers_for_a_float_input(self, capsys, server_flags):
    code, out, _ = _query(capsys, *server_flags, '--model', 'half_plus_two',
                          '--inputs', '[[1], [2]]')
    assert (code, json.loads(out)) == (0, {'y': [[2.5], [3.0]]})

  def test_predict_exported_model(self, capsys, server_flags):
    code, out, _ = _query(capsys, *server_flags, '--model', 'toy', '--inputs',
                          '{"x": [[1, 2, 3]], "n": [1]}', '--output_filter', 'class_ids')
    assert code == 0 and list(json.loads(out)) == ['class_ids']

  def test_classify_and_regress(self, capsys, server_flags):
    code, out, _ = _query(capsys, *server_flags, '--model', 'half_plus_two', '--method',
                          'classify', '--signature_name', 'classify_x_to_y',
                          '--examples', '[{"x": 2.0}]')
    assert (code, json.loads(out)) == (0, [[['', 3.0]]])
    code, out, _ = _query(capsys, *server_flags, '--model', 'half_plus_two', '--method',
                          'regress', '--signature_name', 'regress_x_to_y',
                          '--examples', '[{"x": 1.0}]', '--context', '{"x": 80.0}')
    assert (code, json.loads(out)) == (0, [2.5])

  def test_status_and_metadata(self, capsys, server_flags):
    code, out, _ = _query(capsys, *server_flags, '--model', 'half_plus_two', '--method',
                          'status')
    assert (code, json.loads(out)) == (0, [{'version': 123, 'state': 'AVAILABLE',
                                            'error_code': 'OK', 'error_message': ''}])
    code, out, _ = _query(capsys, *server_flags, '--model', 'half_plus_two', '--method',
                          'metadata')
    signatures = json.loads(out)
    assert code == 0 and sorted(signatures) == HALF_PLUS_TWO_SIGNATURES
    assert signatures['serving_default']['inputs']['x']['dtype'] == 'DT_FLOAT'

  def test_server_error(self, capsys, server_flags):
    code, out, err = _query(capsys, *server_flags, '--model', 'foo', '--inputs', '[1.0]')
    assert (code, out) == (1, '')
    assert 'NOT_FOUND: Servable not found for request: Latest(foo)' in err

  def test_multi_inference(self, capsys, grpc_server):
    code, out, _ = _query(capsys, '--server', grpc_server.target, '--model', 'half_plus_two',
                          '--method', 'multi_inference', '--task', 'regress_x_to_y:regress',
                          '--task', 'classify_x_to_y:classify', '--examples', '[{"x": 2.0}]')
    assert (code, json.loads(out)) == (0, [
        {'signature_name': 'regress_x_to_y', 'method': 'regress', 'results': [3.0]},
        {'signature_name': 'classify_x_to_y', 'method': 'classify', 'results': [[['', 3.0]]]}])

  def test_multi_inference_of_an_exported_model_with_context(self, capsys, grpc_server):
    code, out, err = _query(capsys, '--server', grpc_server.target, '--model', 'toy', '--method',
                            'multi_inference', '--task', 'examples:classify:classify',
                            '--task', 'examples:regress:regress',
                            '--examples', '[{"x": [1.0, 2.0, 3.0]}, {}]',
                            '--context', '{"n": 1, "x": [4.0, 5.0, 6.0]}')
    assert code == 0, err
    classify, regress = json.loads(out)
    assert classify['signature_name'] == 'examples:classify'
    assert [[label for label, _ in entry] for entry in classify['results']] == [['neg', 'pos']] * 2
    np.testing.assert_allclose(regress['results'],
                               [score for (_, _), (_, score) in classify['results']], rtol=1e-5)

  def test_multi_inference_server_error(self, capsys, grpc_server):
    code, out, err = _query(capsys, '--server', grpc_server.target, '--model', 'half_plus_two',
                            '--method', 'multi_inference', '--task', 'nope:regress',
                            '--examples', '[{"x": 2.0}]')
    assert (code, out) == (1, '')
    assert 'INVALID_ARGUMENT' in err

  @pytest.mark.parametrize('flags,expected', [
      (['--protocol', 'rest', '--task', 'regress_x_to_y:regress'], 'gRPC only'),
      ([], 'needs at least one --task'),
      (['--task', 'regress_x_to_y:predict'], "got 'regress_x_to_y:predict'"),
      (['--task', 'regress_x_to_y:regress', '--signature_name', 's'], 'does not apply'),
  ])
  def test_multi_inference_usage_errors(self, capsys, flags, expected):
    code, out, err = _query(capsys, '--server', f'127.0.0.1:{free_port()}', '--model', 'm',
                            '--method', 'multi_inference', '--examples', '[{"x": 2.0}]',
                            *flags)
    assert (code, out) == (2, '') and expected in err and 'Fix:' in err

  def test_task_without_multi_inference(self, capsys):
    code, _, err = _query(capsys, '--server', f'127.0.0.1:{free_port()}', '--model', 'm',
                          '--task', 'regress_x_to_y:regress', '--inputs', '[1.0]')
    assert code == 2 and '--task applies only to --method=multi_inference' in err

  def test_bad_json(self, capsys, server_flags):
    code, _, err = _query(capsys, *server_flags, '--model', 'half_plus_two',
                          '--inputs', '{x: 1}')
    assert code == 2 and '--inputs is not valid JSON' in err


def test_to_example_feature_kinds():
  example = client_lib.to_example({'f': 1.5, 'i': 3, 'b': True, 's': 'a', 'raw': b'\xff',
                                   'fs': [1, 2.5], 'arr': np.array([1, 2], np.int32)})
  feature = example.features.feature
  assert feature['f'].float_list.value == [1.5]
  assert feature['i'].int64_list.value == [3]
  assert feature['b'].int64_list.value == [1]
  assert feature['s'].bytes_list.value == [b'a']
  assert feature['raw'].bytes_list.value == [b'\xff']
  assert feature['fs'].float_list.value == [1.0, 2.5]
  assert feature['arr'].int64_list.value == [1, 2]
  with pytest.raises(TypeError, match='all numbers or all str/bytes'):
    client_lib.to_example({'mixed': [1, 'a']})


def test_to_tensor_proto_dtypes():
  assert tf.make_ndarray(client_lib.to_tensor_proto([1.0, 2.0])).dtype == np.float32
  assert tf.make_ndarray(client_lib.to_tensor_proto([1, 2])).dtype == np.int32
  assert tf.make_ndarray(client_lib.to_tensor_proto([2**40])).dtype == np.int64
  assert tf.make_ndarray(client_lib.to_tensor_proto(np.array([1.0]))).dtype == np.float64
  assert tf.make_ndarray(client_lib.to_tensor_proto(['a', b'b'])).tolist() == [b'a', b'b']
