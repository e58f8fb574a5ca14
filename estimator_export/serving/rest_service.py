"""TF Serving's REST API on aiohttp: routes, status codes and JSON bodies as in 2.15.

    POST /v1/models/NAME[/versions/N | /labels/L]:(predict|classify|regress)
    GET  /v1/models/NAME[/versions/N | /labels/L][/metadata]

Anything else under /v1 is `400 Malformed request: <METHOD> <path>`; other
paths are a plain 404. Every response is application/json; errors are
{"error": "<message>"}. Inference runs on a thread pool so the event loop
keeps accepting (keep-alive and concurrent requests work).

Bounds, each with its ServerOptions field (and flag):

* rest_api_max_body_bytes: a longer body is a 413 (refused from its
  Content-Length when it has one, before reading it).
* rest_api_max_elements: passed to the JSON decoder.
* max_inflight_request_bytes: requests are weighed by body length against the
  budget shared with gRPC (admission.InflightBudget); waiting counts against
  rest_api_timeout_in_ms.
* rest_api_header_timeout_in_ms (see _http_protocol), rest_api_body_timeout_in_ms
  (408, connection closed), rest_api_keepalive_timeout_in_ms (idle connections).
* rest_api_timeout_in_ms: past it the answer is 504 DEADLINE_EXCEEDED. A request
  whose time ran out, or whose client disconnected, before its model run
  started never runs (the RequestTicket is checked right before the run), and
  either way it is counted as DEADLINE_EXCEEDED / CANCELLED, not OK.

An unexpected failure is a 500 with a generic message and an error id; the
details are logged once, under that id.
"""
import asyncio
import concurrent.futures
import dataclasses
import json
import re
import time
import urllib.parse
from typing import Optional

from aiohttp import web
from google.protobuf import json_format
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import model_pb2

from estimator_export.serving import _http_protocol
from estimator_export.serving import admission
from estimator_export.serving import json_codec
from estimator_export.serving.status import Code, ServingError, internal_error, invalid

_POST = re.compile(r'(?i)/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?'
                   r':(classify|regress|predict)')
_GET = re.compile(r'(?i)/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?'
                  r'(?:/(metadata))?')
_V1 = re.compile(r'(?i)/v1/.*')
INT64_MAX = 2**63 - 1
JSON = 'application/json'
TIMEOUT_FLAG = '--rest_api_timeout_in_ms'

@dataclasses.dataclass
class RestServer:
  """A running REST endpoint (see start_rest_server)."""
  runner: web.BaseRunner
  port: int
  loop: asyncio.AbstractEventLoop

  async def stop(self, grace: float = 5.0):
    await self.runner.shutdown()
    await asyncio.wait_for(self.runner.cleanup(), timeout=grace + 1)


class _BodyError(Exception):
  """A body refused while reading it (too large, too slow): status and message."""

  def __init__(self, status: int, message: str):
    super().__init__(message)
    self.status, self.message = status, message


@dataclasses.dataclass
class Limits:
  """The REST bounds, from ServerOptions (see the module docstring)."""
  timeout_seconds: float = 30.0
  max_body_bytes: int = 32 * 1024 * 1024
  max_elements: int = 16 * 1024 * 1024
  body_timeout_seconds: float = 60.0

  @classmethod
  def from_options(cls, options, max_body_bytes: Optional[int] = None) -> 'Limits':
    return cls(timeout_seconds=options.rest_api_timeout_in_ms / 1000.0,
               max_body_bytes=max_body_bytes or options.rest_api_max_body_bytes,
               max_elements=options.rest_api_max_elements,
               body_timeout_seconds=options.rest_api_body_timeout_in_ms / 1000.0)


class RestHandler:
  """Maps HTTP requests to InferenceService calls."""

  def __init__(self, service, manager, limits: Optional[Limits] = None, cors: bool = False,
               metrics=None, metrics_path: Optional[str] = None, workers: int = 16):
    self.service = service
    self.manager = manager
    self.limits = limits or Limits()
    self.timeout = self.limits.timeout_seconds
    self.cors = cors
    self.metrics = metrics
    self.metrics_path = metrics_path
    self.budget = getattr(service, 'budget', None) or admission.InflightBudget(0)
    self.pool = concurrent.futures.ThreadPoolExecutor(max_workers=workers,
                                                      thread_name_prefix='rest-inference')

  # ----- entry point -----
  async def handle(self, request: web.BaseRequest) -> web.StreamResponse:
    protocol = request.protocol
    if isinstance(protocol, _http_protocol.Protocol):
      protocol.request_started()
    try:
      return await self._handle(request)
    finally:
      if isinstance(protocol, _http_protocol.Protocol):
        protocol.request_finished()

  async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
    path = request.raw_path.split('?', 1)[0]
    if self.metrics is not None and request.method == 'GET' and path == self.metrics_path:
      body, content_type = self.metrics.render()
      return web.Response(body=body, headers={'Content-Type': content_type})
    if not _V1.fullmatch(path):
      return web.Response(status=404)
    close = False
    try:
      status, body = await self._dispatch(request, path)
    except ServingError as e:
      status, body = e.http_status, json_codec.format_error(e.message)
    except json_codec.CodecError as e:
      error = ServingError(e.code, e.message)
      status, body = error.http_status, json_codec.format_error(e.message)
    except _BodyError as e:
      status, body, close = e.status, json_codec.format_error(e.message), True
    except Exception as e:  # pylint: disable=broad-except
      error = internal_error(f'REST {request.method} {path[:200]}', e)
      status, body = error.http_status, json_codec.format_error(error.message)
    headers = {'Content-Type': JSON}
    if self.cors:
      headers.update({'Access-Control-Allow-Origin': '*',
                      'Access-Control-Allow-Methods': 'POST, GET',
                      'Access-Control-Allow-Headers': 'Content-Type'})
    response = web.Response(status=status, body=body.encode('utf-8'), headers=headers)
    if close:
      response.force_close()  # The rest of the body is never read.
    return response

  async def _dispatch(self, request: web.BaseRequest, path: str):
    method = request.method
    malformed = invalid(f'Malformed request: {method} {path}')
    if method == 'POST':
      match = _POST.fullmatch(path)
      if not match or match.group(4) not in ('predict', 'classify', 'regress'):
        raise malformed
      name, version, label, verb = match.groups()
      spec = self._model_spec(name, version, label)
      try:
        body = await self._read_body(request)
      except ConnectionError:  # The client left mid-body: nothing to answer, one to count.
        gone = ServingError(Code.CANCELLED, 'Request cancelled: the client went away before '
                                            'its body arrived')
        self.service.observe_failure(spec.name, verb, None, gone, 'REST')
        raise gone from None
      return 200, await self._run(self._infer, verb, spec, body)
    if method == 'GET':
      match = _GET.fullmatch(path)
      if not match:
        raise malformed
      name, version, label, subresource = match.groups()
      metadata = subresource == 'metadata'  # Any other case ('METADATA') asks for status.
      if not name:
        raise invalid('Missing model name in request.')
      spec = self._model_spec(name, version, label)
      if metadata:
        return 200, await self._run(self._metadata, spec)
      return 200, await self._run(self._status, spec)
    raise malformed

  async def _read_body(self, request: web.BaseRequest) -> bytes:
    """The whole body, within rest_api_max_body_bytes and rest_api_body_timeout_in_ms."""
    limit = self.limits.max_body_bytes
    too_large = _BodyError(413, f'Request body is larger than the limit of {limit} bytes '
                                '(--rest_api_max_body_bytes); send smaller batches or raise '
                                'the limit')
    length = request.content_length
    if length is not None and length > limit:
      raise too_large
    chunks, size = [], 0

    async def read():
      nonlocal size
      while True:
        chunk = await request.content.readany()
        if not chunk:
          return
        size += len(chunk)
        if size > limit:
          raise too_large
        chunks.append(chunk)

    seconds = self.limits.body_timeout_seconds
    try:
      await asyncio.wait_for(read(), timeout=seconds)
    except asyncio.TimeoutError:
      raise _BodyError(408, f'Request body not received within {seconds * 1000:g} ms '
                            f'({size} bytes arrived; --rest_api_body_timeout_in_ms); send it '
                            'faster or raise the limit') from None
    return b''.join(chunks)

  def _model_spec(self, name, version, label) -> model_pb2.ModelSpec:
    spec = model_pb2.ModelSpec(name=urllib.parse.unquote(name))
    if version is not None and label is not None:
      raise invalid(f'Both model version ({version}) and model version label ({label}) '
                    'cannot be supplied.')
    if version is not None:
      if int(version) > INT64_MAX:
        raise invalid(f'Failed to convert version: {version} to numeric.')
      spec.version.value = int(version)
    elif label is not None:
      spec.version_label = urllib.parse.unquote(label)
    return spec

  async def _run(self, fn, *args):
    """Runs fn on the pool with a RequestTicket bound (admission.current_ticket).

    The ticket's deadline is rest_api_timeout_in_ms from now. When it passes
    (or the client disconnects: aiohttp then cancels this coroutine) the
    ticket is cancelled, so work not yet started never starts; an answer the
    worker already claimed (`RequestTicket.finish`) is still delivered.
    """
    loop = asyncio.get_running_loop()
    ticket = admission.RequestTicket(deadline=time.monotonic() + self.timeout,
                                     timeout_ms=self.timeout * 1000, flag=TIMEOUT_FLAG)
    future = loop.run_in_executor(self.pool, self._work, ticket, fn, *args)
    future.add_done_callback(_consume)
    try:
      return await asyncio.wait_for(asyncio.shield(future), timeout=self.timeout)
    except asyncio.TimeoutError:
      if ticket.cancel(Code.DEADLINE_EXCEEDED):
        raise ticket.error() from None
      return await future
    except asyncio.CancelledError:
      ticket.cancel(Code.CANCELLED)
      raise

  @staticmethod
  def _work(ticket: admission.RequestTicket, fn, *args):
    with admission.bind(ticket):
      result = fn(*args)
    late = ticket.finish()
    if late is not None:
      raise late
    return result

  # ----- handlers (run on the thread pool) -----
  def _infer(self, verb: str, spec, body: bytes) -> str:
    """Decodes and runs one request once its body length fits in the in-flight budget."""
    weight = len(body)
    try:
      self.budget.acquire(weight, admission.current_ticket())
    except ServingError as e:
      self.service.observe_failure(spec.name, verb, None, e, 'REST')
      raise
    try:
      return self._decode_and_run(verb, spec, body)
    finally:
      self.budget.release(weight)

  def _decode_and_run(self, verb: str, spec, body: bytes) -> str:
    obj = json_codec.parse_json_body(body, max_elements=self.limits.max_elements)
    servable = self.service.servable_for(spec, verb, 'REST')
    if verb == 'predict':
      name = json_codec.peek_signature_name(obj) or 'serving_default'
      signature = servable.signature_defs.get(name)
      if signature is None:
        error = invalid(f'Serving signature name: "{name}" not found in signature def')
        self.service.observe_failure(servable.name, verb, None, error, 'REST')
        raise error
      dtypes = {alias: info.dtype for alias, info in signature.inputs.items()}
      _, inputs, fmt = json_codec.parse_predict_request(obj, dtypes)
      _, outputs = self.service.predict_arrays(servable, name, inputs, rest=True)
      return json_codec.format_predict_response(outputs, fmt)
    name, examples = json_codec.parse_classify_regress_request(obj, verb)
    if verb == 'classify':
      _, classes, scores = self.service.classify_examples(servable, name, examples, 'REST')
      return json_codec.format_classify_response(classes, scores)
    _, values = self.service.regress_examples(servable, name, examples, 'REST')
    return json_codec.format_regress_response(values)

  def _status(self, spec) -> str:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = spec.name  # Labels are ignored by the status endpoint.
    if spec.WhichOneof('version_choice') == 'version':
      request.model_spec.version.value = spec.version.value
    response = self.service.get_model_status(request)
    return json_format.MessageToJson(response, including_default_value_fields=True, indent=1)

  def _metadata(self, spec) -> str:
    request = get_model_metadata_pb2.GetModelMetadataRequest(model_spec=spec,
                                                             metadata_field=['signature_def'])
    response = self.service.get_model_metadata(request)
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    response.metadata['signature_def'].Unpack(sig_map)
    body = {
        'model_spec': json_format.MessageToDict(
            response.model_spec, including_default_value_fields=True,
            preserving_proto_field_name=True),
        'metadata': {'signature_def': json_format.MessageToDict(
            sig_map, including_default_value_fields=True, preserving_proto_field_name=True)},
    }
    return json.dumps(body, indent=1)


def _consume(future: asyncio.Future):
  """Retrieves a worker's exception nobody awaits any more (no 'never retrieved' log)."""
  if not future.cancelled():
    future.exception()


async def start_rest_server(service, manager, options, metrics=None,
                            max_body_bytes: Optional[int] = None) -> RestServer:
  """Starts the REST endpoint on options.host:options.rest_api_port (0: a free port).

  Args:
    service, manager: what the handlers answer from.
    options: ServerOptions (timeouts, limits, CORS, monitoring path).
    metrics: ServingMetrics for the Prometheus path, or None.
    max_body_bytes: overrides options.rest_api_max_body_bytes.
  """
  monitoring = options.monitoring() if hasattr(options, 'monitoring') else None
  handler = RestHandler(
      service, manager, Limits.from_options(options, max_body_bytes),
      cors=options.rest_api_enable_cors_support, metrics=metrics,
      metrics_path=monitoring.prometheus_path if monitoring else None)
  server = _http_protocol.Server(
      handler.handle, handler_cancellation=True,  # A disconnect cancels the handler.
      protocol_kwargs=dict(
          header_timeout=options.rest_api_header_timeout_in_ms / 1000.0,
          keepalive_timeout=options.rest_api_keepalive_timeout_in_ms / 1000.0,
          access_log=None))
  runner = web.ServerRunner(server, handle_signals=False)
  await runner.setup()
  site = web.TCPSite(runner, options.host, options.rest_api_port or 0, reuse_address=True)
  await site.start()
  port = runner.addresses[0][1]
  return RestServer(runner=runner, port=port, loop=asyncio.get_running_loop())
