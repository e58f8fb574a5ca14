"""The embedded model server: gRPC + REST over one ModelManager.

    server = create_server(ServerOptions(model_name='m', model_base_path='/models/m',
                                         port=0, rest_api_port=0))
    print(server.grpc_port, server.rest_port)   # the bound ports (0 picks free ones)
    ...
    server.stop(grace=5)                          # in-flight requests finish

Start-up follows tensorflow_model_server: the initial versions load (with
warmup and batching) before the ports answer; then the file system is polled
every --file_system_poll_wait_seconds, and the --model_config_file every
--model_config_file_poll_wait_seconds (0: never). A failed load is retried
--max_num_load_retries times, --load_retry_interval_micros apart (see
serving.manager for the version lifecycle); a config file that does not apply
leaves the previous config serving and is logged (see _poll_config).
"""
import asyncio
import logging
import os
import threading
from typing import Callable, List, Optional

import tensorflow as tf

from estimator_export import precision
from estimator_export import warmup as warmup_lib
from estimator_export.errors import ExportError
from estimator_export.serving import config as config_lib
from estimator_export.serving import grpc_service
from estimator_export.serving.inference import InferenceService
from estimator_export.serving.manager import ModelManager
from estimator_export.serving.servable import Servable
from estimator_export.serving.status import Code, ServingError

logger = logging.getLogger('estimator_export.serving')

# Counted when monitoring is on (exported as ..._total); our name, TF Serving has none.
CONFIG_RELOAD_FAILURES = 'estimator_export_serving_model_config_reload_failures'


def warmup_servable(service: InferenceService, servable: Servable, iterations: int = 1) -> int:
  """Replays assets.extra/tf_serving_warmup_requests against one servable.

  Requests run on this version whatever model/version they name, as in TF
  Serving. A bad file fails the load with TF Serving's messages; the records
  are decoded and replayed by warmup.replay, as the library's replay_warmup.
  """
  path = os.path.join(servable.path, warmup_lib.ASSETS_EXTRA, warmup_lib.WARMUP_FILENAME)
  if not tf.io.gfile.exists(path):  # Any file system the base_path is on (gs://, ram://...).
    return 0
  try:
    logs = warmup_lib.read_warmup_requests(path)
  except ExportError as e:
    raise ServingError(Code.INVALID_ARGUMENT, str(e.what)) from e

  def run(call: warmup_lib.WarmupCall):
    if call.method == tf.saved_model.PREDICT_METHOD_NAME:
      service.predict_arrays(servable, call.signature_name, call.inputs,
                             list(call.output_filter))
    elif call.method == tf.saved_model.CLASSIFY_METHOD_NAME:
      service.classify_examples(servable, call.signature_name, list(call.examples))
    else:
      service.regress_examples(servable, call.signature_name, list(call.examples))

  count = warmup_lib.replay(logs, run, iterations)
  logger.info('Finished reading warmup data for model at %s. Number of warmup records read: '
              '%d.', path, len(logs))
  return count


class ModelServer:
  """gRPC and REST endpoints over one ModelManager. Use `create_server`."""

  def __init__(self, options: 'config_lib.ServerOptions'):
    self.options = options
    self.metrics = None
    self.manager: Optional[ModelManager] = None
    self.service: Optional[InferenceService] = None
    self.grpc_port: Optional[int] = None
    self.rest_port: Optional[int] = None
    self._grpc_server = None
    self._rest = None
    self._config_thread: Optional[threading.Thread] = None
    self._config_failures = None  # A Prometheus counter when monitoring is on.
    self._stopped = threading.Event()

  # ----- start -----
  def start(self) -> 'ModelServer':
    opts = self.options
    monitoring = opts.monitoring()
    if monitoring is not None and monitoring.prometheus_enable:
      from estimator_export.serving import monitoring as monitoring_lib  # pylint: disable=g-import-not-at-top
      self.metrics = monitoring_lib.ServingMetrics()
    ssl = opts.ssl_config()
    if self.metrics is not None:
      from prometheus_client import Counter  # pylint: disable=g-import-not-at-top
      self._config_failures = Counter(
          CONFIG_RELOAD_FAILURES, 'Re-reads of --model_config_file that were not applied (the '
          'previous config stays in effect).', registry=self.metrics.registry)
    precision.warn_if_emulated(opts.mixed_precision or None)
    self.manager = ModelManager(opts.model_configs(), poll_seconds=opts.file_system_poll_wait_seconds,
                                on_load=self._on_load_hooks(),
                                session_config=opts.session_config(),
                                max_load_retries=opts.max_num_load_retries,
                                retry_interval_seconds=opts.load_retry_interval_micros / 1e6,
                                saved_model_tags=opts.saved_model_tags)
    self.service = InferenceService(self.manager, self.metrics,
                                    max_inflight_bytes=opts.max_inflight_request_bytes)
    self.manager.start()
    self._grpc_server, self.grpc_port = grpc_service.create_grpc_server(
        self.service, self.manager, host=opts.host, port=opts.port,
        max_workers=opts.grpc_max_threads or 16, max_message_bytes=opts.grpc_max_message_bytes,
        socket_path=opts.grpc_socket_path, channel_arguments=opts.grpc_channel_arguments,
        credentials=ssl.server_credentials() if ssl else None,
        allow_reload=opts.allow_model_reload)
    self._grpc_server.start()
    logger.info('Running gRPC ModelServer at %s:%d ...', opts.host, self.grpc_port)
    if opts.grpc_socket_path:
      logger.info('Running gRPC ModelServer at UNIX socket %s ...', opts.grpc_socket_path)
    if opts.rest_api_port is not None:  # None: no REST (the CLI's --rest_api_port=0).
      self._start_rest()
    if opts.model_config_file and opts.model_config_file_poll_wait_seconds > 0:
      self._config_thread = threading.Thread(target=self._poll_config, daemon=True,
                                             name='model-config-poller')
      self._config_thread.start()
    return self

  def _on_load_hooks(self) -> Callable[[Servable], None]:
    opts = self.options
    hooks: List[Callable[[Servable], None]] = []
    if opts.enable_batching:
      from estimator_export.serving import batching  # pylint: disable=g-import-not-at-top
      hooks.append(batching.make_on_load(opts.batching_parameters(), metrics=self.metrics))
    if opts.enable_model_warmup:
      hooks.append(lambda servable: warmup_servable(
          self.service, servable, opts.num_request_iterations_for_warmup))

    def on_load(servable: Servable):
      for hook in hooks:
        hook(servable)
    return on_load

  def _start_rest(self):
    from estimator_export.serving import rest_service  # pylint: disable=g-import-not-at-top
    ready = threading.Event()
    errors = []

    def run_loop():
      loop = asyncio.new_event_loop()
      asyncio.set_event_loop(loop)
      try:
        self._rest = loop.run_until_complete(rest_service.start_rest_server(
            self.service, self.manager, self.options, self.metrics))
        self.rest_port = self._rest.port
      except Exception as e:  # pylint: disable=broad-except
        errors.append(e)
        ready.set()
        return
      ready.set()
      loop.run_forever()
      loop.run_until_complete(self._rest.stop(self._grace))
      loop.close()

    self._grace = 5.0
    self._rest_loop_thread = threading.Thread(target=run_loop, daemon=True, name='rest-server')
    self._rest_loop_thread.start()
    ready.wait()
    if errors:
      raise errors[0]
    logger.info('Exporting HTTP/REST API at:%s:%d ...', self.options.host, self.rest_port)

  def _poll_config(self):
    """Re-reads --model_config_file whenever its contents change, and applies it.

    A file that does not parse or does not apply (e.g. a label on a version that
    is not loaded) leaves the previous config in effect, as in TF Serving; it is
    reported in one ERROR line naming the file, the error and the fix, and
    counted in CONFIG_RELOAD_FAILURES when monitoring is on. It is tried again
    when the file changes.
    """
    opts = self.options
    path, period = opts.model_config_file, opts.model_config_file_poll_wait_seconds
    last = _read(path)
    while not self._stopped.wait(period):
      text = _read(path)
      if text is None:
        if last is not None:
          logger.warning('Cannot read model config file %s; still serving the previous config. '
                         'Fix: restore the file (it is re-read every %d s).', path, period)
        last = None
        continue
      if text == last:
        continue
      last = text
      try:
        configs = config_lib.parse_model_config_text(text, source=path)
        self.manager.reload_config(configs)
      except Exception as e:  # pylint: disable=broad-except
        self._config_failed(path, period, e)
      else:
        logger.info('Reloaded model config from %s', path)

  def _config_failed(self, path: str, period: int, error: Exception):
    """Logs (one line, no traceback) and counts a config file that was not applied."""
    if isinstance(error, config_lib.ConfigError):
      detail = str(error)
    elif isinstance(error, ServingError):
      detail = f'{error.code.name}: {error.message}'
    else:
      detail = f'{type(error).__name__}: {error}'
    logger.error('Model config file %s was not applied: %s -- still serving the previous '
                 'config. Fix the file; it is applied as soon as it changes (checked every '
                 '%d s).', path, detail, period)
    if self._config_failures is not None:
      self._config_failures.inc()

  # ----- stop -----
  def stop(self, grace: float = 5.0):
    """Stops accepting requests, lets in-flight ones finish (up to `grace` s), unloads."""
    if self._stopped.is_set():
      return
    self._stopped.set()
    self._grace = grace
    if self._grpc_server is not None:
      self._grpc_server.stop(grace).wait()
    if self._rest is not None:
      loop = self._rest.loop
      loop.call_soon_threadsafe(loop.stop)
      self._rest_loop_thread.join(timeout=grace + 5)
    if self.manager is not None:
      self.manager.stop()

  def wait(self):
    """Blocks until stop() (e.g. from a signal handler)."""
    while not self._stopped.wait(1.0):
      pass

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.stop()


def _read(path: str) -> Optional[str]:
  try:
    with open(path) as f:
      return f.read()
  except OSError:
    return None


def create_server(options: Optional['config_lib.ServerOptions'] = None, **overrides
                 ) -> ModelServer:
  """Creates and starts a server; keyword overrides apply to ServerOptions fields."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  options = options or config_lib.ServerOptions()
  if overrides:
    options = dataclasses.replace(options, **overrides)
  server = ModelServer(options)
  try:
    return server.start()
  except BaseException:
    server.stop(grace=0)  # What did start (model loads, the gRPC server) must not linger.
    raise
