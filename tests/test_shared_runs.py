"""_shared_runs and run_every_tag_set: equal requests share one Session.run, nothing else does.

The SavedModels here count their own runs: every signature fetches `runs`, a
variable incremented by each Session.run that fetches it, so how many runs
happened is read from the model, not assumed.
"""
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

from estimator_export import _saved_model, _shared_runs, tag_sets, validate, warmup
from estimator_export.errors import ContractError, SignatureError, ValidationError
from estimator_export.predictor import Predictor

X = np.array([[1.0], [2.0]], np.float32)
BIG = X * 100  # 'checked' fails on it.


def _signature(inputs, outputs):
  return tf.compat.v1.saved_model.predict_signature_def(inputs, outputs)


def _run_counter(after=()) -> tf.Tensor:
  """`runs` (int64 []), incremented by each Session.run that fetches it (after `after`);
  'count:0' reads it without incrementing (see _count)."""
  counter = tf.compat.v1.get_variable('runs', [], tf.int64,
                                      tf.compat.v1.zeros_initializer(), use_resource=True)
  with tf.control_dependencies(after):
    runs = tf.identity(counter.assign_add(1), name='runs_after')
  tf.identity(counter.read_value(), name='count')
  return runs


def write_counting_model(export_dir: str, factors=(2.0, 2.0), tag_sets_=(('serve',),)):
  """x float32 [None, 1] -> signatures (each also fetches `runs`, int64 []):

  double, double_copy   y = factor * x (one SignatureDef, twice)
  plus_one              z = x + 1 (same input tensor, other output)
  checked               y, and `ok`, which fails (InvalidArgumentError) when any x >= 100
  other                 w float32 [None, 1] -> v = -w

  One MetaGraph per tag set in `tag_sets_`, the i-th with y = factors[i] * x.
  """
  builder = tf.compat.v1.saved_model.Builder(export_dir)
  for i, tags in enumerate(tag_sets_):
    with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
      x = tf.compat.v1.placeholder(tf.float32, [None, 1], name='x')
      w = tf.compat.v1.placeholder(tf.float32, [None, 1], name='w')
      runs = _run_counter()
      y = tf.multiply(x, factors[i], name='y')
      with tf.control_dependencies([tf.debugging.assert_less(x, 100.0)]):
        ok = tf.identity(x, name='ok')
      double = _signature({'x': x}, {'y': y, 'runs': runs})
      signatures = {'double': double, 'double_copy': double,
                    'plus_one': _signature({'x': x}, {'z': x + 1.0, 'runs': runs}),
                    'checked': _signature({'x': x}, {'y': y, 'ok': ok, 'runs': runs}),
                    'other': _signature({'w': w}, {'v': -w, 'runs': runs})}
      session.run(tf.compat.v1.global_variables_initializer())
      if i == 0:
        builder.add_meta_graph_and_variables(session, list(tags), signatures)
      else:
        builder.add_meta_graph(list(tags), signatures)
  builder.save()
  return export_dir


def retag(export_dir: str, specs) -> str:
  """Rewrites the export with one copy of its {serve} MetaGraph per tag set, as exports do."""
  proto = _saved_model.read_saved_model(export_dir)
  _saved_model.write_saved_model(export_dir, tag_sets.retagged(
      proto, _saved_model.serve_meta_graph(proto), specs))
  return export_dir


@pytest.fixture(scope='module')
def model_dir(tmp_path_factory):
  return write_counting_model(str(tmp_path_factory.mktemp('counting') / '1'))


def _count(predictor: Predictor) -> int:
  return int(predictor.run_tensors({}, 'count:0')[0])


class TestSharedRuns:

  def test_equal_requests_share_one_run(self, model_dir):
    with Predictor.from_saved_model(model_dir, signature_name='double') as predictor:
      runs = _shared_runs.SharedRuns(predictor)
      got = validate.run_signatures(runs, {name: {'x': X} for name in
                                           ('double', 'double_copy', 'plus_one')})
      assert _count(predictor) == 1  # Three signatures on one input tensor, one run.
      np.testing.assert_array_equal(got['double']['y'], 2 * X)
      np.testing.assert_array_equal(got['double_copy']['y'], 2 * X)
      np.testing.assert_array_equal(got['plus_one']['z'], X + 1)
      assert got['double']['runs'] == got['plus_one']['runs'] == 1
      # Each gets what its own Predictor run gives (that run counts too).
      np.testing.assert_array_equal(predictor.for_signature('plus_one')({'x': X})['z'], X + 1)
      assert _count(predictor) == 2

  def test_other_values_or_other_inputs_run_again(self, model_dir):
    with Predictor.from_saved_model(model_dir, signature_name='double') as predictor:
      runs = _shared_runs.SharedRuns(predictor)
      runs.for_signature('double')({'x': X})
      runs.for_signature('double')({'x': X[:1]})  # Another shape: another run.
      runs.for_signature('double')({'x': X + 1})  # Other values: another run.
      runs.for_signature('plus_one')({'x': [[1.0], [2.0]]})  # The first values again: shared.
      np.testing.assert_array_equal(runs.for_signature('other')({'w': X})['v'], -X)
      assert _count(predictor) == 4

  def test_output_filter_and_input_checks_are_per_request(self, model_dir):
    with Predictor.from_saved_model(model_dir, signature_name='double') as predictor:
      runs = _shared_runs.SharedRuns(predictor)
      assert sorted(runs.for_signature('double')({'x': X}, outputs=['y'])) == ['y']
      with pytest.raises(SignatureError, match=r"unknown input key for signature 'double'"):
        runs.for_signature('double')({'w': X})
      with pytest.raises(SignatureError, match=r"input 'x' of signature 'double' expects shape"):
        runs.for_signature('double')({'x': [1.0, 2.0]})
      with pytest.raises(SignatureError, match=r"no such output in signature 'double'"):
        runs.for_signature('double')({'x': X}, outputs=['z'])
      with pytest.raises(SignatureError, match=r"no such signature"):
        runs.for_signature('tripled')

  def test_a_failing_signature_is_named_and_does_not_fail_the_others(self, model_dir):
    with Predictor.from_saved_model(model_dir, signature_name='double') as predictor:
      runs = _shared_runs.SharedRuns(predictor)
      # 'checked' shares x with 'double'; the shared run fails, each then runs alone.
      np.testing.assert_array_equal(runs.for_signature('double')({'x': BIG})['y'], 2 * BIG)
      with pytest.raises(ValidationError, match=r"^signature 'checked' failed on sample inputs"):
        validate.run_signatures(runs, {'double': {'x': BIG}, 'checked': {'x': BIG}})
      np.testing.assert_array_equal(runs.for_signature('checked')({'x': X})['ok'], X)

  def test_prefetch_runs_each_distinct_request_once_for_the_calls_after_it(self, model_dir):
    feeds = {'double': {'x': X}, 'plus_one': {'x': X}, 'other': {'w': X}}
    with Predictor.from_saved_model(model_dir, signature_name='double') as predictor:
      runs = _shared_runs.SharedRuns(predictor)
      runs.prefetch(list(feeds.items()) + [('double_copy', {'w': X})])  # Wrong keys: left.
      assert _count(predictor) == 2  # The x group and the w group.
      got = validate.run_signatures(runs, feeds)
      assert _count(predictor) == 2
      np.testing.assert_array_equal(got['plus_one']['z'], X + 1)
      np.testing.assert_array_equal(got['other']['v'], -X)
      # A request that fails is not raised by prefetch; its own call names it.
      runs.prefetch([('checked', {'x': BIG}), ('double', {'x': X + 1})])
      with pytest.raises(ValidationError, match=r"^signature 'checked' failed on sample inputs"):
        validate.run_signatures(runs, {'checked': {'x': BIG}})
      with pytest.raises(SignatureError, match=r"unknown input key for signature 'double_copy'"):
        runs.for_signature('double_copy')({'w': X})

  def test_warmup_records_of_one_row_share_its_run(self, model_dir):
    logs = []
    for name in ('double', 'double_copy', 'plus_one'):
      request = predict_pb2.PredictRequest()
      request.model_spec.signature_name = name
      request.inputs['x'].CopyFrom(tf.make_tensor_proto(X[:1]))
      logs.append(prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request)))
    with Predictor.from_saved_model(model_dir, signature_name='double') as predictor:
      assert warmup.replay_warmup(_shared_runs.SharedRuns(predictor), logs) == 3
      assert _count(predictor) == 1
      bad = predict_pb2.PredictRequest()
      bad.model_spec.signature_name = 'double'
      bad.inputs['w'].CopyFrom(tf.make_tensor_proto(X[:1]))
      with pytest.raises(ValidationError, match=r"warmup record 0 .*signature 'double'.* "
                                                r'failed to replay'):
        warmup.replay_warmup(_shared_runs.SharedRuns(predictor), [
            prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=bad))])


def write_two_receiver_model(export_dir: str) -> str:
  """Inputs a and b (float32 [None, 1], empty by default) -> feature = concat(a, b - 1)
  -> y = 2 * feature, and `runs`, incremented by each run of that model part (not by one
  fetching `feature` alone). Signatures 'from_a' and 'from_b' read a and b."""
  builder = tf.compat.v1.saved_model.Builder(export_dir)
  with tf.Graph().as_default() as graph, tf.compat.v1.Session(graph=graph) as session:
    empty = tf.zeros([0, 1])
    a = tf.compat.v1.placeholder_with_default(empty, [None, 1], name='a')
    b = tf.compat.v1.placeholder_with_default(empty, [None, 1], name='b')
    feature = tf.concat([a, b - 1.0], axis=0, name='feature')
    runs = _run_counter(after=[feature])
    outputs = {'y': tf.multiply(feature, 2.0, name='y'), 'runs': runs}
    session.run(tf.compat.v1.global_variables_initializer())
    builder.add_meta_graph_and_variables(session, ['serve'], signature_def_map={
        'from_a': _signature({'a': a}, outputs), 'from_b': _signature({'b': b}, outputs)})
  builder.save()
  return export_dir


class TestEqualFeatures:

  def test_requests_of_equal_features_share_the_model_run(self, tmp_path):
    path = write_two_receiver_model(str(tmp_path / '1'))
    with Predictor.from_saved_model(path, signature_name='from_a') as predictor:
      runs = _shared_runs.SharedRuns(predictor, features=['feature:0'])
      got = validate.run_signatures(runs, {'from_a': {'a': X}, 'from_b': {'b': X + 1}})
      assert _count(predictor) == 1  # from_b ran its receiver part only.
      np.testing.assert_array_equal(got['from_b']['y'], 2 * X)
      got = validate.run_signatures(runs, {'from_b': {'b': X + 2}})  # Other features.
      assert _count(predictor) == 2
      np.testing.assert_array_equal(got['from_b']['y'], 2 * (X + 1))

  def test_without_features_or_with_unknown_ones_nothing_more_is_shared(self, tmp_path):
    path = write_two_receiver_model(str(tmp_path / '1'))
    for features in ((), ('no_such_tensor:0',)):
      with Predictor.from_saved_model(path, signature_name='from_a') as predictor:
        runs = _shared_runs.SharedRuns(predictor, features=features)
        validate.run_signatures(runs, {'from_a': {'a': X}, 'from_b': {'b': X + 1}})
        assert _count(predictor) == 2

  def test_warmup_requests_are_prefetched_and_replay_reuses_them(self, tmp_path):
    path = write_two_receiver_model(str(tmp_path / '1'))
    logs = []
    for name, key, value in (('from_a', 'a', X[:1]), ('from_b', 'b', X[:1] + 1),
                             ('no_such_signature', 'a', X[:1])):
      request = predict_pb2.PredictRequest()
      request.model_spec.signature_name = name
      request.inputs[key].CopyFrom(tf.make_tensor_proto(value))
      logs.append(prediction_log_pb2.PredictionLog(
          predict_log=prediction_log_pb2.PredictLog(request=request)))
    with Predictor.from_saved_model(path, signature_name='from_a') as predictor:
      runs = _shared_runs.SharedRuns(predictor, features=['feature:0'])
      requests = warmup.warmup_requests(runs, logs)
      assert [name for name, _ in requests] == ['from_a', 'from_b', 'no_such_signature']
      runs.prefetch(requests)
      assert _count(predictor) == 1
      with pytest.raises(ValidationError, match=r"warmup record 2 .*'no_such_signature'"):
        warmup.replay_warmup(runs, logs)
      assert warmup.replay_warmup(runs, logs[:2]) == 2
      assert _count(predictor) == 1


class TestEveryTagSet:
  NAMES = ('double', 'plus_one')

  def _layout(self):
    return tag_sets.TagSetPlan(((('serve',), self.NAMES), (('serve', 'gpu'), self.NAMES)))

  def test_equal_meta_graphs_share_one_load(self, tmp_path, monkeypatch):
    path = retag(write_counting_model(str(tmp_path / '1')), ('serve', 'serve,gpu'))
    loads = []
    load = Predictor.from_saved_model.__func__
    monkeypatch.setattr(Predictor, 'from_saved_model', classmethod(
        lambda cls, *args, **kwargs: loads.append(kwargs['tags']) or load(cls, *args, **kwargs)))
    got = tag_sets.run_every_tag_set(path, self._layout(), {n: {'x': X} for n in self.NAMES},
                                     1e-6, 1e-6)
    assert loads == [['serve']]
    np.testing.assert_array_equal(got['double']['y'], 2 * X)

  def test_a_different_meta_graph_is_loaded_by_its_tags_and_compared(self, tmp_path):
    path = write_counting_model(str(tmp_path / '1'), factors=(2.0, 3.0),
                                tag_sets_=(('serve',), ('serve', 'gpu')))
    with pytest.raises(ValidationError, match=r"^'double' output 'y' in tag set 'gpu,serve' "
                                              r'differs from the same signature'):
      tag_sets.run_every_tag_set(path, self._layout(), {n: {'x': X} for n in self.NAMES},
                                 1e-6, 1e-6)

  def test_a_missing_tag_set_is_named(self, model_dir):
    with pytest.raises(ContractError, match=r"no MetaGraphDef with this tag-set .*'gpu,serve'"):
      tag_sets.run_every_tag_set(model_dir, self._layout(), {n: {'x': X} for n in self.NAMES},
                                 1e-6, 1e-6)
