"""Tests for estimator_export.warmup: build, write, read and replay warmup files."""
import os
import re

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from estimator_export import warmup
from estimator_export.errors import ContractError, SignatureError, ValidationError
from estimator_export.predictor import Predictor
from tests.test_predictor import N, X, build_test_saved_model, make_example

PredictionLog = prediction_log_pb2.PredictionLog


@pytest.fixture(scope='module')
def export_dir(tmp_path_factory):
  return build_test_saved_model(str(tmp_path_factory.mktemp('toy') / '1'))


@pytest.fixture(scope='module')
def predictor(export_dir):
  with Predictor.from_saved_model(export_dir) as p:
    yield p


def toy_logs(predictor, model_name='toy'):
  """One request for each signature of the toy model."""
  signatures = predictor.signatures
  examples = [make_example(row, int(n)) for row, n in zip(X, N)]
  requests = {'serving_default': {'x': X, 'n': N}, 'lookup': {'words': ['apple', 'kiwi']},
              'classify': {'inputs': examples}, 'regress': {'inputs': examples[:1]}}
  return [warmup.request_log_for_signature(name, signatures[name], inputs, model_name)
          for name, inputs in requests.items()]


def write_records(path, records):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for record in records:
      writer.write(record)


class TestRequestLogForSignature:
  """One PredictionLog per signature, chosen by the signature's method."""

  def test_predict_log(self, predictor):
    log = warmup.request_log_for_signature('serving_default', predictor.signature_def,
                                           {'x': X, 'n': N.tolist()}, model_name='toy')
    assert log.WhichOneof('log_type') == 'predict_log'
    request = log.predict_log.request
    assert request.model_spec.name == 'toy'
    assert request.model_spec.signature_name == 'serving_default'
    assert request.inputs['x'].dtype == tf.float32.as_datatype_enum
    assert request.inputs['n'].dtype == tf.int64.as_datatype_enum
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs['x']), X)
    np.testing.assert_array_equal(tf.make_ndarray(request.inputs['n']), N)

  def test_string_predict_log(self, predictor):
    log = warmup.request_log_for_signature('lookup', predictor.signatures['lookup'],
                                           {'words': ['apple', b'kiwi']})
    request = log.predict_log.request
    assert request.model_spec.name == 'default'
    assert tf.make_ndarray(request.inputs['words']).tolist() == [b'apple', b'kiwi']

  @pytest.mark.parametrize('name, kind', [('classify', 'classify_log'),
                                          ('regress', 'regress_log')])
  def test_example_logs(self, predictor, name, kind):
    examples = [make_example([1.0, 2.0, 3.0], 1), make_example([0.0, 0.0, 0.0])]
    log = warmup.request_log_for_signature(name, predictor.signatures[name],
                                           {'inputs': examples})
    assert log.WhichOneof('log_type') == kind
    request = getattr(log, kind).request
    assert request.model_spec.signature_name == name
    got = [e.SerializeToString() for e in request.input.example_list.examples]
    assert got == examples

  def test_unsupported_method(self, predictor):
    signature_def = tf.compat.v1.MetaGraphDef.SignatureDefEntry().value
    signature_def.CopyFrom(predictor.signature_def)
    signature_def.method_name = 'custom/method'
    with pytest.raises(SignatureError, match=r"cannot warm up: got 'custom/method'.*"
                       r"'tensorflow/serving/predict'"):
      warmup.request_log_for_signature('custom', signature_def, {'x': X, 'n': N})

  def test_predict_inputs_checked(self, predictor):
    with pytest.raises(SignatureError, match=r"unknown input key .*got 'xx'.*Did you mean"):
      warmup.request_log_for_signature('serving_default', predictor.signature_def,
                                       {'xx': X, 'n': N})
    with pytest.raises(SignatureError, match=r"missing input\(s\).*got \['n'\]"):
      warmup.request_log_for_signature('serving_default', predictor.signature_def, {'x': X})
    with pytest.raises(SignatureError, match=r"input 'x' .*\(None, 3\).*got \(3,\)"):
      warmup.request_log_for_signature('serving_default', predictor.signature_def,
                                       {'x': X[0], 'n': N})

  def test_example_inputs_checked(self, predictor):
    regress = predictor.signatures['regress']
    with pytest.raises(SignatureError, match=r"unknown input key .*got 'input'.*"
                       r"Did you mean 'inputs'\?"):
      warmup.request_log_for_signature('regress', regress, {'input': [make_example([1] * 3)]})
    with pytest.raises(SignatureError, match=r'example 1 .*not a serialized tf.Example'):
      warmup.request_log_for_signature('regress', regress,
                                       {'inputs': [make_example([1] * 3), b'\xff\xff']})
    with pytest.raises(SignatureError, match=r'no examples'):
      warmup.request_log_for_signature('regress', regress, {'inputs': []})


class TestWarmupFile:
  """write_warmup_requests / read_warmup_requests under TF Serving's rules."""

  def test_round_trip_in_export_dir(self, predictor, tmp_path):
    version_dir = build_test_saved_model(str(tmp_path / '7'))
    logs = toy_logs(predictor)
    path = warmup.write_warmup_requests(version_dir, logs)
    assert path == os.path.join(version_dir, 'assets.extra', 'tf_serving_warmup_requests')
    assert warmup.read_warmup_requests(version_dir) == logs
    assert warmup.read_warmup_requests(os.path.dirname(path)) == logs
    assert os.listdir(os.path.dirname(path)) == [warmup.WARMUP_FILENAME]  # No temp file left.

  def test_round_trip_to_file(self, predictor, tmp_path):
    path = str(tmp_path / 'sub' / 'requests')
    assert warmup.write_warmup_requests(path, toy_logs(predictor)[:1]) == path
    assert warmup.read_warmup_requests(path) == toy_logs(predictor)[:1]

  def test_exactly_the_maximum(self, predictor, tmp_path):
    logs = toy_logs(predictor)[1:2] * warmup.MAX_WARMUP_RECORDS
    path = warmup.write_warmup_requests(str(tmp_path / 'requests'), logs)
    assert len(warmup.read_warmup_requests(path)) == 1000

  def test_too_many_to_write(self, predictor, tmp_path):
    path = tmp_path / 'requests'
    with pytest.raises(ValidationError, match=r'at most 1000 warmup records: got 1001\. '
                       r'Fix: lower the number of warmup samples'):
      warmup.write_warmup_requests(str(path), toy_logs(predictor)[:1] * 1001)
    assert not path.exists()

  def test_nothing_to_write(self, tmp_path):
    with pytest.raises(ValidationError, match=r'no warmup requests to write'):
      warmup.write_warmup_requests(str(tmp_path / 'requests'), [])

  def test_refused_log_type_not_written(self, predictor, tmp_path):
    session_log = PredictionLog()
    session_log.session_run_log.SetInParent()
    path = tmp_path / 'requests'
    with pytest.raises(ValidationError, match=r"record 1 .*TF Serving refuses: got "
                       r"'session_run_log'"):
      warmup.write_warmup_requests(str(path), [toy_logs(predictor)[0], session_log])
    with pytest.raises(ValidationError, match=r"record 0 .*got 'Example'"):
      warmup.write_warmup_requests(str(path), [tf.train.Example()])
    assert not path.exists()

  def test_not_a_saved_model_dir(self, predictor, tmp_path):
    with pytest.raises(ContractError, match=r'not a SavedModel directory'):
      warmup.write_warmup_requests(str(tmp_path), toy_logs(predictor))

  def test_too_many_to_read(self, predictor, tmp_path):
    path = tmp_path / 'requests'
    write_records(path, [toy_logs(predictor)[1].SerializeToString()] * 1001)
    with pytest.raises(ValidationError, match=r'Number of warmup records exceeds the maximum '
                       rf'\(1000\) at {re.escape(str(path))}'):
      warmup.read_warmup_requests(str(path))

  def test_record_that_does_not_parse(self, predictor, tmp_path):
    path = tmp_path / 'requests'
    write_records(path, [toy_logs(predictor)[0].SerializeToString(), b'\xff\xff\xff'])
    with pytest.raises(ValidationError, match=rf'Failed to parse warmup record: .* from '
                       rf'{re.escape(str(path))}: got .record 1 is not a PredictionLog'):
      warmup.read_warmup_requests(str(path))

  def test_corrupt_tfrecord(self, predictor, tmp_path):
    path = tmp_path / 'requests'
    write_records(path, [toy_logs(predictor)[0].SerializeToString()] * 2)
    data = bytearray(path.read_bytes())
    data[-6] ^= 0xFF  # Inside the second record: its checksum no longer matches.
    path.write_bytes(bytes(data))
    with pytest.raises(ValidationError, match=r'Failed to parse warmup record 1 of .*corrupt'):
      warmup.read_warmup_requests(str(path))
    path.write_bytes(b'not a tfrecord file at all')
    with pytest.raises(ValidationError, match=r'Failed to parse warmup record 0 of '):
      warmup.read_warmup_requests(str(path))

  def test_refused_log_type_on_read(self, tmp_path):
    path = tmp_path / 'requests'
    log = PredictionLog()
    log.session_run_log.SetInParent()
    write_records(path, [log.SerializeToString()])
    with pytest.raises(ValidationError, match=r"record 0 .*refuses: got 'session_run_log'"):
      warmup.read_warmup_requests(str(path))

  def test_missing_file(self, tmp_path):
    with pytest.raises(ContractError, match=r'no warmup file.*write_warmup_requests'):
      warmup.read_warmup_requests(str(tmp_path / 'requests'))


class TestReplayWarmup:
  """replay_warmup runs every request against a Predictor."""

  def test_replays_every_signature(self, predictor, tmp_path):
    path = warmup.write_warmup_requests(str(tmp_path / 'requests'), toy_logs(predictor))
    assert warmup.replay_warmup(predictor, warmup.read_warmup_requests(path)) == 4

  def test_warmup_requests_are_what_replay_runs(self, predictor):
    logs = toy_logs(predictor)
    logs[1].predict_log.request.model_spec.signature_name = 'lookupp'  # Left to the replay.
    requests = warmup.warmup_requests(predictor, logs)
    assert [(name, sorted(inputs)) for name, inputs in requests] == [
        ('serving_default', ['n', 'x']), ('lookupp', ['words']), ('classify', ['inputs']),
        ('regress', ['inputs'])]
    for (name, inputs), log in zip(requests[2:], logs[2:]):  # Each runs on its signature.
      request = getattr(log, log.WhichOneof('log_type')).request
      assert inputs['inputs'].tolist() == [e.SerializeToString()
                                           for e in request.input.example_list.examples]
      assert predictor.for_signature(name)(inputs)

  def test_multi_inference_with_context(self, predictor):
    log = PredictionLog()
    request = log.multi_inference_log.request
    for name, method in (('classify', 'tensorflow/serving/classify'),
                         ('regress', 'tensorflow/serving/regress')):
      task = request.tasks.add()
      task.model_spec.signature_name = name
      task.method_name = method
    with_context = request.input.example_list_with_context
    with_context.context.ParseFromString(make_example([1.0, 2.0, 3.0]))
    with_context.examples.add().ParseFromString(make_example([0.0, 0.0, 0.0], 2))
    assert warmup.replay_warmup(predictor, [log]) == 1

  def test_predict_output_filter(self, predictor):
    log = toy_logs(predictor)[0]
    log.predict_log.request.output_filter.append('y')
    assert warmup.replay_warmup(predictor, [log]) == 1
    log.predict_log.request.output_filter[0] = 'yy'
    with pytest.raises(ValidationError, match=r"record 0 \(predict_log, signature "
                       r"'serving_default'\) failed.*no such output"):
      warmup.replay_warmup(predictor, [log])

  def test_refused_log_type(self, predictor):
    log = PredictionLog()
    log.session_run_log.SetInParent()
    with pytest.raises(ValidationError, match=r"record 1 of the replayed logs .*refuses: "
                       r"got 'session_run_log'"):
      warmup.replay_warmup(predictor, [toy_logs(predictor)[0], log])

  def test_bad_request_names_record(self, predictor):
    logs = toy_logs(predictor)
    logs[2].classify_log.request.model_spec.signature_name = 'regres'
    with pytest.raises(ValidationError, match=r"warmup record 2 \(classify_log, signature "
                       r"'regres'\) failed to replay.*Did you mean 'regress'"):
      warmup.replay_warmup(predictor, logs)

  def test_method_must_match(self, predictor):
    log = toy_logs(predictor)[3]  # A regress request...
    log.regress_log.request.model_spec.signature_name = 'classify'  # ...to classify.
    with pytest.raises(ValidationError, match=r"not a tensorflow/serving/regress signature"):
      warmup.replay_warmup(predictor, [log])

  def test_regress_output_shape_checked(self, tf_serving_testdata):
    """The mkl model's regress_x_to_y2 returns a [1, 10, 10, 1] broadcast."""
    path = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_mkl', '00000123')
    with Predictor.from_saved_model(path) as p:
      log = warmup.request_log_for_signature('regress_x_to_y2', p.signatures['regress_x_to_y2'],
                                             {'inputs': [make_example([1.0])]})
      with pytest.raises(ValidationError, match=r"output 'outputs' .*has shape \(1, 10, 10, "
                         r'1\) for 1 example'):
        warmup.replay_warmup(p, [log])


class TestHalfPlusTwo:
  """Warmup requests for TF Serving's own half_plus_two test model."""

  def test_write_read_replay(self, tf_serving_testdata, tmp_path):
    model = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu', '00000123')
    examples = [make_example([v]) for v in (1.0, 2.0)]
    with Predictor.from_saved_model(model) as p:
      signatures = p.signatures
      logs = [
          warmup.request_log_for_signature('serving_default', signatures['serving_default'],
                                           {'x': [[1.0], [2.0]]}, 'half_plus_two'),
          warmup.request_log_for_signature('classify_x_to_y', signatures['classify_x_to_y'],
                                           {'inputs': examples}, 'half_plus_two'),
          warmup.request_log_for_signature('regress_x_to_y', signatures['regress_x_to_y'],
                                           {'inputs': examples}, 'half_plus_two'),
      ]
      path = warmup.write_warmup_requests(str(tmp_path / 'requests'), logs)
      assert warmup.replay_warmup(p, warmup.read_warmup_requests(path)) == 3
      with pytest.raises(SignatureError, match=r"regress signature 'regress_x2_to_y3' needs "
                         r"exactly one string input.*got \{'inputs': 'float32'\}"):
        warmup.request_log_for_signature('regress_x2_to_y3', signatures['regress_x2_to_y3'],
                                         {'inputs': [[1.0]]})

  def test_hand_made_predict_logs(self, tf_serving_testdata):
    """An empty signature_name means serving_default; shapes are checked on replay."""
    model = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu', '00000123')
    log = PredictionLog()
    log.predict_log.request.inputs['x'].CopyFrom(tf.make_tensor_proto([[5.0]], tf.float32))
    flat = PredictionLog()
    flat.predict_log.request.inputs['x'].CopyFrom(tf.make_tensor_proto([5.0], tf.float32))
    with Predictor.from_saved_model(model) as p:
      assert warmup.replay_warmup(p, [log]) == 1
      with pytest.raises(ValidationError, match=r"record 1 \(predict_log, signature ''\) "
                         r"failed.*expects shape \(None, 1\).*got \(1,\)"):
        warmup.replay_warmup(p, [log, flat])
