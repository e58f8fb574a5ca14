"""TF Serving's gRPC API (PredictionService, ModelService) over an InferenceService.

    server, port = create_grpc_server(service, manager, port=8500)
    server.start()
    ...
    server.stop(grace=5).wait()

The servicers subclass the generated ones from `tensorflow-serving-api`, so
the method names, request and response messages are TF Serving's own. Every
failure becomes a gRPC status with TF Serving's code and message (cut after
1024 characters and marked `...TRUNCATED`, as `ToGRPCStatus` does); an
unexpected exception becomes a generic INTERNAL (details logged under an error
id) and never takes the server down.

Inference RPCs (Classify, Regress, Predict, MultiInference) are weighed by
their serialized size against the in-flight budget shared with REST
(--max_inflight_request_bytes) and carry an admission.RequestTicket: waiting
counts against the RPC's deadline, and an RPC whose deadline passed or which
the client cancelled does not start its model run (DEADLINE_EXCEEDED /
CANCELLED, counted as such in the metrics).
"""
import logging
import os
import time
from concurrent import futures
from typing import Any, Callable, List, Optional, Sequence, Tuple, TypeVar

import grpc
from tensorflow_serving.apis import model_management_pb2
from tensorflow_serving.apis import model_service_pb2_grpc
from tensorflow_serving.apis import prediction_service_pb2_grpc
from tensorflow_serving.config import model_server_config_pb2

from estimator_export.serving import admission
from estimator_export.serving import config as config_lib
from estimator_export.serving.inference import InferenceService
from estimator_export.serving.manager import ModelManager
from estimator_export.serving.status import Code, ServingError, internal_error, invalid

logger = logging.getLogger('estimator_export.serving')

INT32_MAX = 2**31 - 1
# TF Serving's ToGRPCStatus keeps this many characters, then appends the marker.

RELOAD_UNSUPPORTED = ('ServerModelConfig type not supported by HandleReloadConfigRequest. '
                      'Only ModelConfigList is currently supported')

# The embedded server's own message (TF Serving always answers reloads).
RELOAD_REFUSED = ('HandleReloadConfigRequest is disabled on this server '
                  '(--allow_model_reload=false): edit its --model_config_file instead, or '
                  'restart it with --allow_model_reload=true')

_Response = TypeVar('_Response')


def _answer(method: str, handler: Callable[[], _Response], context: grpc.ServicerContext
           ) -> _Response:
  """Runs a handler; a ServingError or any other exception aborts the RPC with a status."""
  try:
    return handler()
  except ServingError as e:
    error = e
  except Exception as e:  # pylint: disable=broad-except
    error = internal_error(f'gRPC {method}', e)
  logger.debug('gRPC %s failed: %s', method, error.message)
  context.abort(error.code, error.grpc_message())
  raise AssertionError('context.abort returned')  # Unreachable: abort raises.


def _ticket(context: grpc.ServicerContext) -> admission.RequestTicket:
  """The RPC's deadline and cancellation as a RequestTicket."""
  remaining = context.time_remaining()
  deadline = None if remaining is None else time.monotonic() + remaining
  ticket = admission.RequestTicket(deadline=deadline,
                                   timeout_ms=None if remaining is None else remaining * 1000,
                                   flag='the RPC deadline')

  def ended():  # Runs when the RPC ends: answered, cancelled, or out of time.
    late = ticket.remaining() is not None and ticket.remaining() <= 0
    ticket.cancel(Code.DEADLINE_EXCEEDED if late else Code.CANCELLED)

  context.add_callback(ended)
  return ticket


def _spec_of(request):
  """The ModelSpec a request names (MultiInference: its first task's)."""
  if hasattr(request, 'tasks'):
    return request.tasks[0].model_spec if request.tasks else None
  return request.model_spec


class PredictionServiceServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
  """tensorflow.serving.PredictionService: Classify, Regress, Predict, MultiInference, metadata."""

  def __init__(self, service: InferenceService):
    self._service = service

  def _infer(self, method: str, api: str, call, request, context):
    """Runs an inference RPC under a ticket, once its size fits in the in-flight budget."""
    def handler():
      ticket = _ticket(context)
      budget = self._service.budget
      weight = request.ByteSize()
      try:
        if not context.is_active():
          raise ServingError(Code.CANCELLED, 'Request cancelled: the client went away before '
                                             'it was answered')
        budget.acquire(weight, ticket)
      except ServingError as e:
        spec = _spec_of(request)
        self._service.observe_failure(spec.name if spec is not None else '', api,
                                      None, e, 'GRPC')
        raise
      try:
        with admission.bind(ticket):
          return call(request)
      finally:
        budget.release(weight)
    return _answer(method, handler, context)

  def Classify(self, request, context):  # pylint: disable=invalid-name
    return self._infer('Classify', 'classify', self._service.classify, request, context)

  def Regress(self, request, context):  # pylint: disable=invalid-name
    return self._infer('Regress', 'regress', self._service.regress, request, context)

  def Predict(self, request, context):  # pylint: disable=invalid-name
    return self._infer('Predict', 'predict', self._service.predict, request, context)

  def MultiInference(self, request, context):  # pylint: disable=invalid-name
    return self._infer('MultiInference', 'multi_inference', self._service.multi_inference,
                       request, context)

  def GetModelMetadata(self, request, context):  # pylint: disable=invalid-name
    return _answer('GetModelMetadata', lambda: self._service.get_model_metadata(request),
                   context)


class ModelServiceServicer(model_service_pb2_grpc.ModelServiceServicer):
  """tensorflow.serving.ModelService: GetModelStatus and HandleReloadConfigRequest."""

  def __init__(self, service: InferenceService, manager: ModelManager,
               allow_reload: bool = True):
    self._service = service
    self._manager = manager
    self._allow_reload = allow_reload

  def GetModelStatus(self, request, context):  # pylint: disable=invalid-name
    return _answer('GetModelStatus', lambda: self._service.get_model_status(request), context)

  def HandleReloadConfigRequest(self, request, context):  # pylint: disable=invalid-name
    return _answer('HandleReloadConfigRequest', lambda: self._reload(request), context)

  def _reload(self, request: model_management_pb2.ReloadConfigRequest
             ) -> model_management_pb2.ReloadConfigResponse:
    """Swaps in the request's model list; the gRPC status is the reload's status.

    When the reload fails the RPC fails with the same code and message, so (as
    with TF Serving) a client sees the error as the call's status; the
    response's `status` is only delivered, as OK, on success.
    """
    if not self._allow_reload:
      logger.warning('Refused HandleReloadConfigRequest: this server runs with '
                     '--allow_model_reload=false')
      raise ServingError(Code.PERMISSION_DENIED, RELOAD_REFUSED)
    server_config = request.config
    if server_config.WhichOneof('config') != 'model_config_list':
      raise invalid(RELOAD_UNSUPPORTED)
    entries = list(server_config.model_config_list.config)
    for index, entry in enumerate(entries):
      logger.info('Reload config entry %d: name=%s base_path=%s platform=%s', index, entry.name,
                  entry.base_path, entry.model_platform)
    try:
      self._manager.reload_config(configs_from_protos(entries))
    except ServingError as e:
      logger.error('ReloadConfig failed: %s', e.message)
      raise
    response = model_management_pb2.ReloadConfigResponse()
    response.status.error_code = Code.OK.value[0]
    return response


# ----- ModelConfig protos -> manager configs -----

def configs_from_protos(entries: Sequence[model_server_config_pb2.ModelConfig]
                       ) -> List[config_lib.ModelConfig]:
  """ModelConfig protos -> config.ModelConfig, with ServerCore's checks in its order.

  See config.model_configs_from_protos, which a --model_config_file goes
  through too.

  Raises:
    ServingError: INVALID_ARGUMENT with TF Serving's message.
  """
  try:
    return config_lib.model_configs_from_protos(entries)
  except config_lib.ConfigError as e:
    raise invalid(e.message) from e


# ----- server assembly -----

def add_services(server: grpc.Server, service: InferenceService, manager: ModelManager,
                 allow_reload: bool = True):
  """Registers PredictionService and ModelService on `server`."""
  prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
      PredictionServiceServicer(service), server)
  model_service_pb2_grpc.add_ModelServiceServicer_to_server(
      ModelServiceServicer(service, manager, allow_reload), server)


def create_grpc_server(service: InferenceService, manager: ModelManager,
                       host: str = '127.0.0.1', port: int = 0, max_workers: int = 16,
                       max_message_bytes: int = INT32_MAX, socket_path: Optional[str] = None,
                       channel_arguments: Sequence[Tuple[str, Any]] = (),
                       credentials: Optional[grpc.ServerCredentials] = None,
                       allow_reload: bool = True) -> Tuple[grpc.Server, int]:
  """Builds (but does not start) a gRPC server with both services bound to host:port.

  Messages up to `max_message_bytes` (TF Serving: INT32_MAX) are accepted and
  sent. The port is bound exclusively (no SO_REUSEPORT), so a port already in
  use fails here instead of silently sharing traffic with another process.

  Args:
    service, manager: what the services answer from.
    host, port: the TCP address; port 0 picks a free port.
    max_workers: threads handling RPCs (--grpc_max_threads).
    max_message_bytes: the send and receive limit.
    socket_path: also listen on this Unix domain socket (--grpc_socket_path),
      as TF Serving does with `unix:PATH`.
    channel_arguments: (key, value) pairs for the server
      (--grpc_channel_arguments); they override the settings above.
    credentials: TLS credentials for every port (--ssl_config_file); None:
      insecure.
    allow_reload: False refuses HandleReloadConfigRequest with
      PERMISSION_DENIED (--allow_model_reload=false).

  Returns:
    (server, bound_port).

  Raises:
    OSError: an address cannot be bound.
  """
  options = {
      'grpc.max_send_message_length': max_message_bytes,
      'grpc.max_receive_message_length': max_message_bytes,
      'grpc.so_reuseport': 0,
  }
  options.update(channel_arguments)  # A key given twice to gRPC keeps its first value.
  server = grpc.server(futures.ThreadPoolExecutor(max_workers=max_workers,
                                                  thread_name_prefix='grpc-serving'),
                       options=list(options.items()))
  add_services(server, service, manager, allow_reload)
  address = f'[{host}]:{port}' if ':' in host else f'{host}:{port}'
  bound = _add_port(server, address, credentials,
                    f'is another server already using port {port}?')
  if socket_path:
    hint = 'check that its directory exists and is writable'
    if len(os.fsencode(socket_path)) > _MAX_SOCKET_PATH:
      hint = (f'the path is {len(os.fsencode(socket_path))} bytes; a UNIX socket path may have '
              f'at most {_MAX_SOCKET_PATH}: use a shorter one, e.g. under /tmp')
    _add_port(server, f'unix:{socket_path}', credentials, hint)
  return server, bound


# sockaddr_un.sun_path holds 108 bytes on Linux, the last one a NUL.
_MAX_SOCKET_PATH = 107


def _add_port(server: grpc.Server, address: str, credentials, hint: str) -> int:
  try:
    if credentials is None:
      bound = server.add_insecure_port(address)
    else:
      bound = server.add_secure_port(address, credentials)
  except RuntimeError as e:  # grpcio >= 1.49 raises; older versions return 0.
    bound, cause = 0, e
  else:
    cause = None
  if not bound:
    server.stop(None)
    raise OSError(f'Could not bind the gRPC server to {address} ({hint})') from cause
  return bound
