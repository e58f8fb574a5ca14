"""Tests for serving.manager and serving.servable on real SavedModels in real directories."""
import os
import shutil
import threading

import numpy as np
import pytest

from estimator_export.serving import manager as manager_lib
from estimator_export.serving.manager import ModelManager, State
from estimator_export.serving.servable import Servable
from estimator_export.serving.status import Code, ServingError
from tests.serving_util import All, Config, Latest, Specific


@pytest.fixture
def half_plus_two(tf_serving_testdata):
  return os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu', '00000123')


def _publish(src, base, version):
  """Copies a version in through a hidden directory and one rename, as exports do."""
  tmp = os.path.join(base, f'.tmp-{version}')
  shutil.copytree(src, tmp)
  os.rename(tmp, os.path.join(base, str(version)))


def _y(servable, x):
  sig = servable.signature_defs['serving_default']
  return servable.run(sig, {'x': np.array([[x]], np.float32)}, ['y'])['y'][0, 0]


class TestServable:

  def test_load_and_run(self, half_plus_two):
    servable = Servable.load('m', 123, half_plus_two)
    assert _y(servable, 4.0) == 4.0
    assert 'classify_x_to_y' in servable.signature_defs

  def test_dtype_mismatch_message(self, half_plus_two):
    servable = Servable.load('m', 123, half_plus_two)
    sig = servable.signature_defs['serving_default']
    with pytest.raises(ServingError, match=r'Expects arg\[0\] to be float but string is provided'):
      servable.run(sig, {'x': np.array([[b'a']], dtype=object)}, ['y'])

  def test_not_a_saved_model(self, tmp_path):
    with pytest.raises(ServingError, match='Could not find SavedModel .pb or .pbtxt'):
      Servable.load('m', 1, str(tmp_path))


class TestVersionDiscovery:

  def test_numeric_children_only(self, tmp_path):
    for name in ('1', '0007', 'temp-123', '.staging-x', '\u00b2', '\u0663',
                 str(manager_lib.INT64_MAX), str(manager_lib.INT64_MAX + 1)):
      (tmp_path / name).mkdir()
    (tmp_path / '9').write_text('a file, not a version')
    assert manager_lib.list_versions(str(tmp_path)) == {
        1: str(tmp_path / '1'), 7: str(tmp_path / '0007'),
        manager_lib.INT64_MAX: str(tmp_path / str(manager_lib.INT64_MAX))}

  def test_unlistable_base_path_is_none_and_empty_is_empty(self, tmp_path):
    assert manager_lib.list_versions(str(tmp_path / 'missing')) is None
    assert manager_lib.list_versions(str(tmp_path)) == {}

  @pytest.mark.parametrize('policy,expected', [
      (Latest(), [3]), (Latest(2), [2, 3]), (All(), [1, 2, 3]), (Specific(frozenset({1, 3})), [1, 3])])
  def test_policies(self, policy, expected):
    assert manager_lib.wanted_versions(policy, [1, 3, 2]) == expected


class TestModelManager:

  def test_serves_latest_and_reports_status(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    _publish(half_plus_two, tmp_path, 2)
    manager = ModelManager([Config('m', str(tmp_path), All())], poll_seconds=0)
    manager.start()
    try:
      assert manager.resolve('m').version == 2
      assert manager.resolve('m', version=1).version == 1
      assert [(s.version, s.state) for s in manager.status('m')] == [
          (2, State.AVAILABLE), (1, State.AVAILABLE)]
    finally:
      manager.stop()

  def test_not_found_messages(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    manager = ModelManager([Config('m', str(tmp_path), version_labels={'stable': 1})],
                           poll_seconds=0)
    manager.start()
    try:
      assert manager.resolve('m', label='stable').version == 1
      cases = [(lambda: manager.resolve('foo'), Code.NOT_FOUND, 'Servable not found for request: Latest(foo)'),
               (lambda: manager.resolve('m', 7), Code.NOT_FOUND, 'Servable not found for request: Specific(m, 7)'),
               (lambda: manager.resolve('m', label='canary'), Code.INVALID_ARGUMENT, 'Unrecognized servable version label: canary'),
               (lambda: manager.status('foo'), Code.NOT_FOUND, 'Could not find any versions of model foo'),
               (lambda: manager.status('m', 7), Code.NOT_FOUND, 'Could not find version 7 of model m')]
      for call, code, message in cases:
        with pytest.raises(ServingError) as info:
          call()
        assert (info.value.code, info.value.message) == (code, message)
    finally:
      manager.stop()

  def test_corrupt_version_ends_with_error_and_old_keeps_serving(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    manager = ModelManager([Config('m', str(tmp_path))], poll_seconds=0, max_load_retries=0)
    manager.start()
    try:
      bad = tmp_path / '2'
      shutil.copytree(half_plus_two, bad)
      (bad / 'saved_model.pb').write_bytes(b'not a protobuf')
      manager.poll()
      statuses = {s.version: s for s in manager.status('m')}
      assert statuses[2].state == State.END and statuses[2].error_message
      assert statuses[1].state == State.AVAILABLE
      assert manager.resolve('m').version == 1 and _y(manager.resolve('m'), 2.0) == 3.0
      partial = tmp_path / '3'  # A half-copied version without variables.
      partial.mkdir()
      shutil.copy(half_plus_two + '/saved_model.pb', partial / 'saved_model.pb')
      manager.poll()
      assert {s.version: s.state for s in manager.status('m')}[3] == State.END
      assert manager.resolve('m').version == 1
    finally:
      manager.stop()

  def test_hot_swap_keeps_answering(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    manager = ModelManager([Config('m', str(tmp_path))], poll_seconds=0.05)
    manager.start()
    failures, seen = [], set()
    stop = threading.Event()

    def client():
      while not stop.is_set():
        try:
          servable = manager.resolve('m')
          assert _y(servable, 2.0) == 3.0
          seen.add(servable.version)
        except Exception as e:  # pylint: disable=broad-except
          failures.append(e)

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
      t.start()
    try:
      for version in (2, 3, 4):
        _publish(half_plus_two, tmp_path, version)
        deadline = 200
        while manager.resolve('m').version != version and deadline:
          stop.wait(0.05)
          deadline -= 1
        assert manager.resolve('m').version == version
      # resolve() flips to 4 before any client has answered from it: wait
      # (bounded) for one client round on the new version before stopping.
      for _ in range(200):
        if 4 in seen:
          break
        stop.wait(0.05)
    finally:
      stop.set()
      for t in threads:
        t.join()
      manager.stop()
    assert not failures
    assert {1, 4} <= seen
    states = {s.version: s.state for s in manager.status('m')}
    assert states[4] == State.AVAILABLE and states[1] == State.END

  def test_reload_config_and_labels(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path / 'a', 1)
    _publish(half_plus_two, tmp_path / 'b', 5)
    manager = ModelManager([Config('a', str(tmp_path / 'a'))], poll_seconds=0)
    manager.start()
    try:
      manager.reload_config([Config('b', str(tmp_path / 'b'), version_labels={'stable': 5})])
      assert manager.resolve('b', label='stable').version == 5
      with pytest.raises(ServingError, match=r'Latest\(a\)'):
        manager.resolve('a')
      with pytest.raises(ServingError, match='Request to assign label to version 9 of model b, '
                         'which is not currently available for inference') as info:
        manager.reload_config([Config('b', str(tmp_path / 'b'), version_labels={'x': 9})])
      assert info.value.code == Code.FAILED_PRECONDITION
    finally:
      manager.stop()

  def test_on_load_failure_ends_version(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)

    def refuse(servable):
      raise ServingError(Code.INVALID_ARGUMENT, f'warmup failed for {servable.version}')

    manager = ModelManager([Config('m', str(tmp_path))], poll_seconds=0, on_load=refuse,
                           max_load_retries=0)
    manager.start()
    try:
      (status,) = manager.status('m')
      assert status.state == State.END and status.error_message == 'warmup failed for 1'
      assert status.error_code == Code.INVALID_ARGUMENT
    finally:
      manager.stop()


class TestLifecycle:
  """Retries, rollbacks and reload rollback, driven poll by poll (poll_seconds=0)."""

  @staticmethod
  def _failing(times):
    calls = []

    def on_load(servable):
      calls.append(servable.version)
      if len(calls) <= times:
        raise ServingError(Code.UNAVAILABLE, f'not yet ({len(calls)})')
    return on_load, calls

  @staticmethod
  def _states(manager, name='m'):
    return {s.version: (s.state, s.error_message) for s in manager.status(name)}

  def test_failed_load_is_retried_on_later_polls(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    on_load, calls = self._failing(2)
    manager = ModelManager([Config('m', str(tmp_path))], poll_seconds=0, on_load=on_load,
                           max_load_retries=3, retry_interval_seconds=0)
    manager.start()
    try:
      assert self._states(manager) == {1: (State.LOADING, '')}  # TF Serving shows LOADING.
      manager.poll()
      assert self._states(manager) == {1: (State.LOADING, '')}
      manager.poll()
      assert self._states(manager) == {1: (State.AVAILABLE, '')}
      assert calls == [1, 1, 1]
    finally:
      manager.stop()

  def test_spent_retries_end_until_the_directory_changes(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    on_load, calls = self._failing(1000)
    manager = ModelManager([Config('m', str(tmp_path))], poll_seconds=0, on_load=on_load,
                           max_load_retries=1, retry_interval_seconds=0)
    manager.start()
    try:
      manager.poll()
      assert self._states(manager) == {1: (State.END, 'not yet (2)')}
      manager.poll()
      assert len(calls) == 2  # Unchanged directory: no more attempts.
      os.utime(tmp_path / '1' / 'saved_model.pb')
      manager.poll()
      assert len(calls) == 3 and self._states(manager)[1][0] == State.LOADING
    finally:
      manager.stop()

  def test_retry_waits_for_its_interval(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    on_load, calls = self._failing(1)
    manager = ModelManager([Config('m', str(tmp_path))], poll_seconds=0, on_load=on_load,
                           max_load_retries=1, retry_interval_seconds=3600)
    manager.start()
    try:
      manager.poll()
      assert calls == [1] and self._states(manager) == {1: (State.LOADING, '')}
    finally:
      manager.stop()

  def test_deleting_the_newest_loads_the_older_again(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path, 1)
    manager = ModelManager([Config('m', str(tmp_path))], poll_seconds=0)
    manager.start()
    try:
      _publish(half_plus_two, tmp_path, 2)
      manager.poll()
      assert self._states(manager) == {2: (State.AVAILABLE, ''), 1: (State.END, '')}
      shutil.rmtree(tmp_path / '2')
      manager.poll()
      assert self._states(manager) == {1: (State.AVAILABLE, '')}  # 2 forgotten.
      assert manager.resolve('m').version == 1
    finally:
      manager.stop()

  def test_unreadable_base_path_keeps_serving(self, tmp_path, half_plus_two):
    base = tmp_path / 'base'
    base.mkdir()
    _publish(half_plus_two, base, 1)
    manager = ModelManager([Config('m', str(base))], poll_seconds=0)
    manager.start()
    try:
      moved = tmp_path / 'moved'
      os.rename(base, moved)
      manager.poll()
      assert manager.resolve('m').version == 1
      os.rename(moved, base)
    finally:
      manager.stop()

  def test_failed_reload_leaves_the_previous_config(self, tmp_path, half_plus_two):
    _publish(half_plus_two, tmp_path / 'a', 1)
    _publish(half_plus_two, tmp_path / 'a', 2)
    manager = ModelManager([Config('a', str(tmp_path / 'a'), version_labels={'stable': 2})],
                           poll_seconds=0)
    manager.start()
    try:
      before = self._states(manager, 'a')
      with pytest.raises(ServingError) as info:
        manager.reload_config([
            Config('a', str(tmp_path / 'a'), All(), version_labels={'stable': 2, 'x': 9}),
            Config('b', str(tmp_path / 'a'))])
      assert info.value.code == Code.FAILED_PRECONDITION
      assert self._states(manager, 'a') == before == {2: (State.AVAILABLE, '')}
      assert manager.model_names() == ['a']
      assert manager.resolve('a', label='stable').version == 2
      manager.poll()  # The previous policy (Latest) is still the one in force.
      assert self._states(manager, 'a') == before
    finally:
      manager.stop()
