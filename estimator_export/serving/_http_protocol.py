"""The REST server's HTTP connections: a header deadline and one-line answers to bad requests.

aiohttp (3.x) closes idle kept-alive connections (`keepalive_timeout`) but has
no limit on the time a client takes to send a request's headers: a client
that trickles them, or connects and sends half a request line, holds a
connection and a file descriptor for as long as it likes. `Protocol` adds that
limit (--rest_api_header_timeout_in_ms): a timer runs from a connection's
first byte (or from the first byte after an answered request) until the REST
handler receives the request, which calls `request_started`; when it fires
the connection is closed. The body has its own limit, enforced by the
handler while it reads it.

Requests aiohttp's parser refuses (a request line over `max_line_size`, a
header over `max_field_size`, bytes that are not HTTP) are answered with a
JSON error (414, 431 or 400) and logged in one line; aiohttp itself would log
each with a full traceback and answer in text/plain.

aiohttp builds its connection objects in `web.Server.__call__` with no hook
for a subclass, so `Server` overrides that call (it is asyncio's protocol
factory) and builds `Protocol`, a `web.RequestHandler` subclass, with the
keyword arguments given here.
"""
import asyncio
import json
import logging
from typing import Any, Dict, Optional

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong

logger = logging.getLogger('estimator_export.serving')

JSON = 'application/json'


class Protocol(web.RequestHandler):
  """One HTTP connection, with a deadline for each request's headers.

  Args:
    manager: the Server.
    header_timeout: seconds a client has to send a request's headers; 0: none.
    **kwargs: web.RequestHandler's (loop, keepalive_timeout, max_line_size, ...).
  """

  def __init__(self, manager: 'Server', *, header_timeout: float, **kwargs: Any):
    super().__init__(manager, **kwargs)
    self._header_timeout = header_timeout
    self._header_timer: Optional[asyncio.TimerHandle] = None
    self._in_request = False

  # ----- asyncio.Protocol -----
  def connection_made(self, transport: asyncio.BaseTransport) -> None:
    super().connection_made(transport)
    self._arm()  # A client that connects and sends nothing counts too.

  def data_received(self, data: bytes) -> None:
    if not self._in_request and self._header_timer is None and data:
      self._arm()
    super().data_received(data)

  def connection_lost(self, exc: Optional[BaseException]) -> None:
    self._disarm()
    super().connection_lost(exc)

  # ----- called by the REST handler -----
  def request_started(self) -> None:
    """The handler has a request: its headers all arrived in time."""
    self._in_request = True
    self._disarm()

  def request_finished(self) -> None:
    """The handler is done; the next request's bytes start a new header deadline."""
    self._in_request = False

  def _arm(self) -> None:
    if self._header_timeout > 0 and self._header_timer is None:
      loop = asyncio.get_running_loop()
      self._header_timer = loop.call_later(self._header_timeout, self._expire)

  def _disarm(self) -> None:
    if self._header_timer is not None:
      self._header_timer.cancel()
      self._header_timer = None

  def _expire(self) -> None:
    self._header_timer = None
    if self._in_request:
      return
    peer = self.transport.get_extra_info('peername') if self.transport is not None else None
    logger.info('Closed REST connection from %s: no complete request headers within %g ms '
                '(--rest_api_header_timeout_in_ms)', peer, self._header_timeout * 1000)
    self.force_close()

  # ----- requests the parser refused -----
  def handle_error(self, request, status: int = 500, exc: Optional[BaseException] = None,
                   message: Optional[str] = None) -> web.StreamResponse:
    """A JSON answer and one log line for a request aiohttp could not parse."""
    if not isinstance(exc, HttpProcessingError):
      return super().handle_error(request, status, exc, message)
    limit = None
    if isinstance(exc, LineTooLong):
      start, limit = exc.args[0], exc.args[1]
      if isinstance(start, (bytes, bytearray)):  # The C parser gives the URL as a bytearray.
        start = bytes(start).decode('utf-8', 'replace')
      if str(start).startswith('/'):
        status, text = 414, (f'Request URL is longer than the limit of {limit} bytes (it starts '
                              f'with {start}); send large inputs in a POST body instead')
      else:
        status, text = 431, (f'Request header is longer than the limit of {limit} bytes (it '
                              f'starts with {start}); send shorter headers')
    else:
      status, text = 400, f'Malformed HTTP request: {exc.message}'
    log = logger.debug if isinstance(exc, BadHttpMethod) else logger.warning
    log('Refused an HTTP request from %s with %d: %s', request.remote, status, text[:300])
    body = json.dumps({'error': text}).encode('utf-8')
    response = web.Response(status=status, body=body, headers={'Content-Type': JSON})
    response.force_close()
    return response


class Server(web.Server):
  """aiohttp's low-level server, building `Protocol` connections.

  Args:
    handler: the request handler coroutine.
    protocol_kwargs: Protocol's keyword arguments (header_timeout, keepalive_timeout, ...).
    **kwargs: web.Server's (handler_cancellation, ...).
  """

  def __init__(self, handler, protocol_kwargs: Dict[str, Any], **kwargs: Any):
    super().__init__(handler, **kwargs)
    self._protocol_kwargs = dict(protocol_kwargs)

  def __call__(self) -> Protocol:
    return Protocol(self, loop=asyncio.get_running_loop(), **self._protocol_kwargs)
