"""Tests for serving.batching on a real SavedModel run by real TF sessions.

Batches are made deterministic by holding the servable's first run at a gate
(a threading.Event inside a counting wrapper), queueing the tasks under test,
then opening the gate: with one batch thread they then run as one batch.
"""
import concurrent.futures
import dataclasses
import threading
import time

import numpy as np
import pytest
import tensorflow as tf

from estimator_export.serving import batching
from estimator_export.serving.batching import Batcher, BatchOptions
from estimator_export.serving.inference import InferenceService
from estimator_export.serving.manager import ModelManager
from estimator_export.serving.monitoring import ServingMetrics
from estimator_export.serving.servable import Servable
from estimator_export.serving.status import Code, ServingError
from tests.serving_util import Config

W = np.arange(12, dtype=np.float32).reshape(4, 3) / 10.0
B = np.array([1.0, -1.0, 0.5], np.float32)
VOCAB = (b'a', b'b', b'c')


def _build_saved_model(path: str):
  """y = x @ W + b and a few signatures that exercise the batching rules."""
  graph = tf.Graph()
  with graph.as_default():
    sig = tf.compat.v1.saved_model.signature_def_utils.predict_signature_def
    x = tf.compat.v1.placeholder(tf.float32, [None, 4], name='x')
    w = tf.compat.v1.get_variable('w', initializer=tf.constant(W))
    b = tf.compat.v1.get_variable('b', initializer=tf.constant(B))
    y = tf.add(tf.matmul(x, w), b, name='y')
    norm = tf.reduce_sum(y, axis=1, name='norm')
    a = tf.compat.v1.placeholder(tf.float32, [None, 4], name='a')
    c = tf.compat.v1.placeholder(tf.float32, [None, 4], name='c')
    tokens = tf.compat.v1.placeholder(tf.float32, [None, None], name='tokens')
    words = tf.compat.v1.placeholder(tf.string, [None, None], name='words')
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(tf.constant(VOCAB), tf.constant([0, 1, 2], tf.int64)),
        default_value=-1)
    checked = tf.compat.v1.placeholder(tf.float32, [None, 1], name='checked')
    with tf.control_dependencies([tf.debugging.assert_less(checked, 100.0, message='too big')]):
      doubled = checked * 2.0
    signatures = {
        'serving_default': sig({'x': x}, {'y': y, 'norm': norm}),
        'two_inputs': sig({'a': a, 'c': c}, {'sum': a + c}),
        'rowsum': sig({'tokens': tokens},
                      {'total': tf.reduce_sum(tokens, axis=1), 'padded': tf.identity(tokens)}),
        'lookup': sig({'words': words}, {'ids': table.lookup(words)}),
        'scalar_out': sig({'x': x}, {'count': tf.size(x)}),
        'colsum': sig({'x': x}, {'colsum': tf.reduce_sum(x, axis=0, keepdims=True)}),
        'checked': sig({'v': checked}, {'doubled': doubled}),
    }
    with tf.compat.v1.Session(graph=graph) as session:
      session.run(tf.compat.v1.global_variables_initializer())
      builder = tf.compat.v1.saved_model.Builder(path)
      builder.add_meta_graph_and_variables(session, ['serve'], signature_def_map=signatures,
                                           main_op=tf.compat.v1.tables_initializer())
      builder.save()


@pytest.fixture(scope='module')
def model_base(tmp_path_factory):
  base = tmp_path_factory.mktemp('batching_model')
  _build_saved_model(str(base / '1'))
  return str(base)


@pytest.fixture(scope='module')
def servable(model_base):
  loaded = Servable.load('m', 1, f'{model_base}/1')
  yield loaded
  loaded.close()


class CountingServable:
  """Wraps a real Servable: records every run's inputs; runs can be held at a gate."""

  def __init__(self, servable):
    self._servable = servable
    self.name = servable.name
    self.runs = []
    self.gate = threading.Event()
    self.gate.set()
    self.entered = threading.Event()
    self._lock = threading.Lock()

  def run(self, signature_def, inputs, output_aliases, check_dtypes=True):
    with self._lock:
      self.runs.append(dict(inputs))
    self.entered.set()
    assert self.gate.wait(20), 'test gate never opened'
    return self._servable.run(signature_def, inputs, output_aliases, check_dtypes=check_dtypes)

  @property
  def rows(self):
    return [len(next(iter(run.values()))) for run in self.runs]


@pytest.fixture
def make_batcher(servable):
  """make_batcher(**params) -> (Batcher, CountingServable); stopped after the test."""
  made = []

  def make(metrics=None, **params):
    counting = CountingServable(servable)
    batcher = Batcher(counting, BatchOptions(**params), metrics=metrics)
    made.append((batcher, counting))
    return batcher, counting
  yield make
  for batcher, counting in made:
    counting.gate.set()
    batcher.stop(timeout=10)


def _predict(batcher, servable, x, aliases=('norm', 'y')):
  sig = servable.signature_defs['serving_default']
  return batcher.run('serving_default', sig, {'x': x}, list(aliases), True)


def _concurrently(fn, args, timeout=20):
  """Runs fn(*a) for every a on its own thread; returns results or exceptions, in order."""
  with concurrent.futures.ThreadPoolExecutor(len(args)) as pool:
    futures = [pool.submit(fn, *a) for a in args]
    return [f.exception(timeout) or f.result() for f in futures]


def _wait_for(predicate, timeout=10.0):
  deadline = time.monotonic() + timeout
  while not predicate():
    assert time.monotonic() < deadline, 'timed out waiting'
    time.sleep(0.002)


def _hold_first_run(batcher, counting, run_first):
  """Starts `run_first()` on a thread and returns once it is held at the gate."""
  counting.gate.clear()
  thread = threading.Thread(target=run_first, daemon=True)
  thread.start()
  assert counting.entered.wait(10)
  return thread


def _x(rows, seed):
  return np.random.RandomState(seed).randn(rows, 4).astype(np.float32)


class TestBatchOptions:

  @dataclasses.dataclass
  class Params:  # What config.BatchingParameters looks like (duck typing).
    max_batch_size: int = None
    batch_timeout_micros: int = None
    max_enqueued_batches: int = None
    num_batch_threads: int = None
    allowed_batch_sizes: tuple = ()
    pad_variable_length_inputs: bool = False

  def test_unset_fields_take_tf_serving_defaults(self):
    options = BatchOptions.from_params(self.Params())
    assert (options.max_batch_size, options.batch_timeout_micros,
            options.max_enqueued_batches) == (1000, 0, 10)
    assert options.num_batch_threads >= 1

  def test_duck_typed_values(self):
    options = BatchOptions.from_params(self.Params(8, 500, 3, 2, (2, 4, 8), True))
    assert options == BatchOptions(8, 500, 3, 2, (2, 4, 8), True)

  @pytest.mark.parametrize('params, message', [
      (dict(max_batch_size=8, allowed_batch_sizes=(2, 4)),
       'Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; '
       'expected 8'),
      (dict(num_batch_threads=0), 'num_batch_threads must be positive; was 0'),
      (dict(batch_timeout_micros=-1), 'batch_timeout_micros must be non-negative; was -1'),
      (dict(max_batch_size=0), 'input_batch_size_limit must be positive; was 0'),
  ])
  def test_invalid(self, params, message):
    with pytest.raises(ServingError) as e:
      BatchOptions(**params)
    assert e.value.code == Code.INVALID_ARGUMENT and e.value.message == message

  def test_zero_max_enqueued_batches_means_one(self):
    assert BatchOptions(max_enqueued_batches=0).max_enqueued_batches == 1  # as TF rewrites it

  def test_padded_size(self):
    options = BatchOptions(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    assert [options.padded_size(n) for n in (1, 2, 3, 5, 8)] == [2, 2, 4, 8, 8]
    assert BatchOptions(max_batch_size=8).padded_size(3) == 3


class TestMerging:

  def test_concurrent_requests_merge_and_match_unbatched(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=32, batch_timeout_micros=50_000,
                                     num_batch_threads=2)
    inputs = [_x(1, seed) for seed in range(32)]
    sig = servable.signature_defs['serving_default']
    expected = [servable.run(sig, {'x': x}, ['norm', 'y']) for x in inputs]
    barrier = threading.Barrier(32)

    def request(x):
      barrier.wait()
      return _predict(batcher, servable, x)
    results = _concurrently(request, [(x,) for x in inputs])
    for got, want in zip(results, expected):
      assert list(got) == ['norm', 'y']
      np.testing.assert_allclose(got['y'], want['y'], rtol=1e-5, atol=1e-6)
      np.testing.assert_allclose(got['norm'], want['norm'], rtol=1e-5, atol=1e-6)
    assert sum(counting.rows) == 32
    assert len(counting.runs) <= 8, counting.rows

  def test_zero_timeout_takes_what_is_queued(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=32, num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
      futures = [pool.submit(_predict, batcher, servable, _x(1, i)) for i in range(10)]
      _wait_for(lambda: batcher.num_enqueued_tasks() == 10)
      counting.gate.set()
      results = [f.result(10) for f in futures]
    first.join(10)
    assert counting.rows == [1, 10]
    for i, got in enumerate(results):
      np.testing.assert_allclose(got['y'], _x(1, i) @ W + B, rtol=1e-5)

  def test_max_batch_size_splits_the_queue(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=4, num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    with concurrent.futures.ThreadPoolExecutor(10) as pool:
      futures = []
      for i in range(10):  # One at a time, so the queue order is known.
        futures.append(pool.submit(_predict, batcher, servable, _x(1, i)))
        _wait_for(lambda n=i + 1: batcher.num_enqueued_tasks() == n)
      counting.gate.set()
      results = [f.result(10) for f in futures]
    first.join(10)
    assert counting.rows == [1, 4, 4, 2]
    for i, got in enumerate(results):
      np.testing.assert_allclose(got['y'], _x(1, i) @ W + B, rtol=1e-5)

  def test_tasks_of_several_rows_are_split_back(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=16, num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    sizes = [3, 1, 5, 2]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      futures = [pool.submit(_predict, batcher, servable, _x(n, n)) for n in sizes]
      _wait_for(lambda: batcher.num_enqueued_tasks() == 4)
      counting.gate.set()
      results = [f.result(10) for f in futures]
    first.join(10)
    assert counting.rows == [1, 11]
    for n, got in zip(sizes, results):
      assert got['y'].shape == (n, 3)
      np.testing.assert_allclose(got['y'], _x(n, n) @ W + B, rtol=1e-5)

  def test_timeout_waits_for_more_tasks(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, batch_timeout_micros=200_000,
                                     num_batch_threads=1)
    started = time.monotonic()
    _predict(batcher, servable, _x(1, 0))
    assert time.monotonic() - started >= 0.18
    barrier = threading.Barrier(3)

    def request(seed):
      barrier.wait()
      return _predict(batcher, servable, _x(1, seed))
    _concurrently(request, [(1,), (2,), (3,)])
    assert counting.rows == [1, 3]

  def test_full_batch_does_not_wait_for_the_timeout(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=4, batch_timeout_micros=30_000_000,
                                     num_batch_threads=1)
    started = time.monotonic()
    _concurrently(lambda seed: _predict(batcher, servable, _x(1, seed)), [(i,) for i in range(4)])
    assert time.monotonic() - started < 10
    assert counting.rows == [4]

  def test_output_filters_and_signatures_use_separate_queues(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    sig = servable.signature_defs['two_inputs']
    ones = np.ones((2, 4), np.float32)
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
      just_y = pool.submit(_predict, batcher, servable, _x(1, 1), ['y'])
      both = pool.submit(_predict, batcher, servable, _x(1, 2), ['y', 'norm'])
      summed = pool.submit(batcher.run, 'two_inputs', sig, {'a': ones, 'c': 2 * ones},
                           ['sum'], True)
      summed2 = pool.submit(batcher.run, 'two_inputs', sig, {'c': ones, 'a': ones}, ['sum'],
                            True)
      _wait_for(lambda: batcher.num_enqueued_tasks() == 4)
      counting.gate.set()
      assert list(just_y.result(10)) == ['y']
      assert list(both.result(10)) == ['y', 'norm']
      np.testing.assert_array_equal(summed.result(10)['sum'], 3 * ones)
      np.testing.assert_array_equal(summed2.result(10)['sum'], 2 * ones)
    first.join(10)
    assert sorted(counting.rows[1:]) == [1, 1, 4]  # The two two_inputs requests merged.


class TestPadding:

  def test_allowed_batch_sizes_pad_with_the_last_tasks_first_row(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, allowed_batch_sizes=(2, 4, 8),
                                     num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      futures = []
      for seed in (1, 2, 3):
        futures.append(pool.submit(_predict, batcher, servable, _x(1, seed)))
        _wait_for(lambda n=seed: batcher.num_enqueued_tasks() == n)
      counting.gate.set()
      results = [f.result(10) for f in futures]
    first.join(10)
    assert counting.rows == [2, 4]
    np.testing.assert_array_equal(counting.runs[1]['x'][3], _x(1, 3)[0])
    for seed, got in zip((1, 2, 3), results):
      assert got['y'].shape == (1, 3)  # Padding rows dropped.
      np.testing.assert_allclose(got['y'], _x(1, seed) @ W + B, rtol=1e-5)
    got = _predict(batcher, servable, _x(5, 9))
    assert counting.rows[-1] == 8 and got['y'].shape == (5, 3)

  def _rowsum_batch(self, batcher, counting, servable, token_lists):
    sig = servable.signature_defs['rowsum']
    first = _hold_first_run(batcher, counting, lambda: batcher.run(
        'rowsum', sig, {'tokens': np.ones((1, 1), np.float32)}, ['total', 'padded'], True))
    with concurrent.futures.ThreadPoolExecutor(len(token_lists)) as pool:
      futures = [pool.submit(batcher.run, 'rowsum', sig,
                             {'tokens': np.array(t, np.float32)}, ['total', 'padded'], True)
                 for t in token_lists]
      _wait_for(lambda: batcher.num_enqueued_tasks() == len(token_lists))
      counting.gate.set()
      results = [f.exception(10) or f.result(10) for f in futures]
    first.join(10)
    return results

  def test_variable_length_inputs_pad_with_the_first_element(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, num_batch_threads=1,
                                     pad_variable_length_inputs=True)
    long, short = self._rowsum_batch(batcher, counting, servable, [[[1, 2, 3]], [[5], [7]]])
    assert counting.rows == [1, 3]
    np.testing.assert_array_equal(long['total'], [6])
    # TF Serving pads each tensor with its own first element (5), not zeros.
    np.testing.assert_array_equal(short['padded'], [[5, 5, 5], [7, 5, 5]])
    np.testing.assert_array_equal(short['total'], [15, 17])

  def test_variable_length_strings(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, num_batch_threads=1,
                                     pad_variable_length_inputs=True)
    sig = servable.signature_defs['lookup']
    first = _hold_first_run(batcher, counting, lambda: batcher.run(
        'lookup', sig, {'words': np.array([[b'a']], object)}, ['ids'], True))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      wide = pool.submit(batcher.run, 'lookup', sig,
                         {'words': np.array([[b'a', b'b', b'c']], object)}, ['ids'], True)
      narrow = pool.submit(batcher.run, 'lookup', sig, {'words': np.array([['b']])}, ['ids'],
                           True)
      _wait_for(lambda: batcher.num_enqueued_tasks() == 2)
      counting.gate.set()
      np.testing.assert_array_equal(wide.result(10)['ids'], [[0, 1, 2]])
      np.testing.assert_array_equal(narrow.result(10)['ids'], [[1, 1, 1]])
    first.join(10)
    assert counting.rows == [1, 2]

  def test_differing_shapes_without_padding_fail_the_batch(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, num_batch_threads=1)
    results = self._rowsum_batch(batcher, counting, servable, [[[1, 2, 3]], [[5]]])
    for error in results:
      assert isinstance(error, ServingError)
      assert error.code == Code.FAILED_PRECONDITION
      assert ("Tensors with name 'tokens' from different tasks have different shapes and "
              'padding is turned off.') in error.message
    assert counting.rows == [1]  # The bad batch never ran.
    got = batcher.run('rowsum', servable.signature_defs['rowsum'],
                      {'tokens': np.ones((1, 5), np.float32)}, ['total'], True)
    np.testing.assert_array_equal(got['total'], [5])  # Alone, any width is fine.


class TestErrors:

  def test_queue_full_is_unavailable_at_once(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=2, max_enqueued_batches=1,
                                     num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      queued = [pool.submit(_predict, batcher, servable, _x(1, i)) for i in (1, 2)]
      _wait_for(lambda: batcher.num_enqueued_tasks() == 2)
      started = time.monotonic()
      with pytest.raises(ServingError) as e:
        _predict(batcher, servable, _x(1, 3))
      assert time.monotonic() - started < 1
      assert e.value.code == Code.UNAVAILABLE and e.value.http_status == 503
      assert e.value.message == (
          'The batch scheduling queue to which this task was submitted is full; currently 1 '
          'batches enqueued and max_enqueued_batches is 1')
      counting.gate.set()
      for future in queued:
        assert future.result(10)['y'].shape == (1, 3)
    first.join(10)
    assert counting.rows == [1, 2]

  def test_task_larger_than_max_batch_size(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=4, num_batch_threads=1)
    with pytest.raises(ServingError) as e:
      _predict(batcher, servable, _x(5, 0))
    assert e.value.code == Code.INVALID_ARGUMENT
    assert e.value.message == 'Task size 5 is larger than maximum input batch size 4'
    assert not counting.runs

  @pytest.mark.parametrize('inputs, message', [
      ({'a': np.float32(1.0), 'c': np.ones((1, 4), np.float32)},
       'Batching Run() input tensors must have at least one dimension'),
      ({'a': np.ones((2, 4), np.float32), 'c': np.ones((1, 4), np.float32)},
       'Batching Run() input tensors must have equal 0th-dimension size'),
      ({}, 'Batching Run() must have at least one input tensor'),
  ])
  def test_unbatchable_requests(self, make_batcher, servable, inputs, message):
    batcher, counting = make_batcher(max_batch_size=4, num_batch_threads=1)
    with pytest.raises(ServingError) as e:
      batcher.run('two_inputs', servable.signature_defs['two_inputs'], inputs, ['sum'], True)
    assert (e.value.code, e.value.message) == (Code.INVALID_ARGUMENT, message)
    assert not counting.runs

  @pytest.mark.parametrize('signature, output, rows, message', [
      ('scalar_out', 'count', 1, 'Batched output tensor has 0 dimensions'),
      ('colsum', 'colsum', 2, "Batched output tensor's 0th dimension does not equal the sum of "
                              'the 0th dimension sizes of the input tensors'),
  ])
  def test_unbatchable_outputs(self, make_batcher, servable, signature, output, rows, message):
    batcher, _ = make_batcher(max_batch_size=4, num_batch_threads=1)
    with pytest.raises(ServingError) as e:
      batcher.run(signature, servable.signature_defs[signature], {'x': _x(rows, 0)}, [output],
                  True)
    assert (e.value.code, e.value.message) == (Code.FAILED_PRECONDITION, message)

  def test_run_error_fails_every_task_of_the_batch(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, num_batch_threads=1)
    sig = servable.signature_defs['checked']

    def check(value):
      return batcher.run('checked', sig, {'v': np.array([[value]], np.float32)}, ['doubled'],
                         True)
    first = _hold_first_run(batcher, counting, lambda: check(1.0))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
      futures = [pool.submit(check, v) for v in (1.0, 1000.0, 2.0)]
      _wait_for(lambda: batcher.num_enqueued_tasks() == 3)
      counting.gate.set()
      errors = [f.exception(10) for f in futures]
    first.join(10)
    for error in errors:
      assert isinstance(error, ServingError) and error.code == Code.INVALID_ARGUMENT
      assert 'too big' in error.message
    assert errors[0] is not errors[2]  # Each request raises its own exception.
    np.testing.assert_array_equal(check(3.0)['doubled'], [[6.0]])

  def test_wrong_dtype_does_not_break_other_requests(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      good = pool.submit(_predict, batcher, servable, _x(1, 1))
      bad = pool.submit(_predict, batcher, servable, np.array([['a'] * 4], object))
      _wait_for(lambda: batcher.num_enqueued_tasks() == 2)
      counting.gate.set()
      np.testing.assert_allclose(good.result(10)['y'], _x(1, 1) @ W + B, rtol=1e-5)
      error = bad.exception(10)
    first.join(10)
    assert isinstance(error, ServingError) and error.code == Code.INVALID_ARGUMENT
    assert error.message == 'Expects arg[0] to be float but string is provided'


class TestStop:

  def test_stop_runs_queued_tasks_at_once_and_joins(self, make_batcher, servable):
    batcher, counting = make_batcher(max_batch_size=8, batch_timeout_micros=30_000_000,
                                     num_batch_threads=2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
      futures = [pool.submit(_predict, batcher, servable, _x(1, i)) for i in (1, 2)]
      _wait_for(lambda: batcher.num_enqueued_tasks() == 2)
      started = time.monotonic()
      batcher.stop(timeout=10)
      for i, future in zip((1, 2), futures):
        np.testing.assert_allclose(future.result(10)['y'], _x(1, i) @ W + B, rtol=1e-5)
    assert time.monotonic() - started < 10
    assert counting.rows == [2]
    assert not any(t.is_alive() for t in batcher._threads)  # pylint: disable=protected-access
    # Later requests (e.g. in flight during an unload) still succeed, unbatched.
    assert _predict(batcher, servable, _x(3, 0))['y'].shape == (3, 3)
    assert counting.rows == [2, 3]
    batcher.stop()  # Idempotent.


class TestWithManager:

  def test_make_on_load_batches_inference_and_unload_stops(self, model_base):
    metrics = ServingMetrics()
    on_load = batching.make_on_load(BatchOptions(max_batch_size=8, num_batch_threads=1),
                                    metrics=metrics)
    manager = ModelManager([Config('m', model_base)], poll_seconds=0, on_load=on_load)
    manager.start()
    try:
      loaded = manager.resolve('m')
      assert isinstance(loaded.batcher, Batcher)
      service = InferenceService(manager, metrics)
      name, outputs = service.predict_arrays(loaded, '', {'x': _x(2, 4)})
      assert name == 'serving_default'
      np.testing.assert_allclose(outputs['y'], _x(2, 4) @ W + B, rtol=1e-5)
      body = metrics.render()[0].decode()
      assert ('estimator_export_serving_batch_size_count{model_name="m",'
              'signature_name="serving_default"} 1.0') in body
      threads = loaded.batcher._threads  # pylint: disable=protected-access
      manager.reload_config([])  # Unloads version 1, which stops its batcher.
      assert not any(t.is_alive() for t in threads)
    finally:
      manager.stop()

  def test_bad_parameters_fail_at_make_on_load(self):
    with pytest.raises(ServingError, match='Last entry in allowed_batch_sizes'):
      batching.make_on_load(TestBatchOptions.Params(max_batch_size=4, allowed_batch_sizes=(2,)))


class TestAbandonedTasks:

  def test_a_queued_task_whose_client_left_is_not_run(self, make_batcher, servable):
    from estimator_export.serving import admission  # pylint: disable=g-import-not-at-top
    batcher, counting = make_batcher(max_batch_size=8, batch_timeout_micros=0,
                                     num_batch_threads=1)
    first = _hold_first_run(batcher, counting, lambda: _predict(batcher, servable, _x(1, 0)))
    tickets = [admission.RequestTicket(), admission.RequestTicket(time.monotonic() + 0.2),
               admission.RequestTicket()]

    def queued(ticket, seed):
      with admission.bind(ticket):
        return _predict(batcher, servable, _x(2, seed))
    pool = concurrent.futures.ThreadPoolExecutor(3)
    try:
      futures = [pool.submit(queued, ticket, seed) for seed, ticket in enumerate(tickets, 1)]
      _wait_for(lambda: batcher.num_enqueued_tasks() == 3)
      tickets[0].cancel()          # The client went away while its task was queued.
      time.sleep(0.3)              # tickets[1]'s deadline passes in the queue.
      counting.gate.set()
      first.join(10)
      errors = [f.exception(10) for f in futures]
    finally:
      counting.gate.set()
      pool.shutdown(wait=True)
    assert [e.code if e else None for e in errors] == [
        Code.CANCELLED, Code.DEADLINE_EXCEEDED, None]
    assert counting.rows == [1, 2]  # The held run, then only the live task's two rows.
    np.testing.assert_allclose(futures[2].result()['y'], _x(2, 3) @ W + B, rtol=1e-5)
