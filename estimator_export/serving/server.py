"""The embedded model server: gRPC + REST over one ModelManager.

    server = create_server(ServerOptions(model_name='m', model_base_path='/models/m',
                                         port=0, rest_api_port=0))
    print(server.grpc_port, server.rest_port)   # the bound ports (0 picks free ones)
    ...
    server.stop(grace=5)                          # in-flight requests finish

Start-up follows tensorflow_model_server: the initial versions load (with
warmup and batching) before the ports answer; then the file system is polled
every --file_system_poll_wait_seconds, and the --model_config_file every
--model_config_file_poll_wait_seconds (0: never).
"""
import asyncio
import logging
import os
import threading
from typing import Callable, List, Optional

import tensorflow as tf

from estimator_export import warmup as warmup_lib
from estimator_export.errors import ExportError
from estimator_export.serving import config as config_lib
from estimator_export.serving import grpc_service
from estimator_export.serving.inference import InferenceService
from estimator_export.serving.manager import ModelManager
from estimator_export.serving.servable import Servable
from estimator_export.serving.status import Code, ServingError

logger = logging.getLogger('estimator_export.serving')


def warmup_servable(service: InferenceService, servable: Servable, iterations: int = 1) -> int:
  """Replays assets.extra/tf_serving_warmup_requests against one servable.

  Requests run on this version whatever model/version they name, as in TF
  Serving. A bad file fails the load with TF Serving's messages; the records
  are decoded and replayed by warmup.replay, as the library's replay_warmup.
  """
  path = os.path.join(servable.path, warmup_lib.ASSETS_EXTRA, warmup_lib.WARMUP_FILENAME)
  if not os.path.exists(path):
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
    self._stopped = threading.Event()

  # ----- start -----
  def start(self) -> 'ModelServer':
    opts = self.options
    monitoring = opts.monitoring()
    if monitoring is not None and monitoring.prometheus_enable:
      from estimator_export.serving import monitoring as monitoring_lib  # pylint: disable=g-import-not-at-top
      self.metrics = monitoring_lib.ServingMetrics()
    ssl = opts.ssl_config()
    self.manager = ModelManager(opts.model_configs(), poll_seconds=opts.file_system_poll_wait_seconds,
                                on_load=self._on_load_hooks(),
                                session_config=opts.session_config())
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
    opts = self.options
    last = _read(opts.model_config_file)
    while not self._stopped.wait(opts.model_config_file_poll_wait_seconds):
      text = _read(opts.model_config_file)
      if text is None or text == last:
        continue
      last = text
      try:
        configs = config_lib.parse_model_config_text(text, source=opts.model_config_file)
        self.manager.reload_config(configs)
        logger.info('Reloaded model config from %s', opts.model_config_file)
      except Exception as e:  # pylint: disable=broad-except
        logger.error('Failed to reload model config %s: %s', opts.model_config_file, e)

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
