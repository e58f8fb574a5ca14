"""Admission of inference work: a byte-weighted in-flight budget and per-request deadlines.

    budget = InflightBudget(64 * 1024 * 1024)      # --max_inflight_request_bytes
    ticket = RequestTicket(deadline=time.monotonic() + 30.0)
    with budget.admit(len(body), ticket):          # waits its turn (or fails, see below)
      with bind(ticket):                           # InferenceService checks it before a run
        ...decode, run the model...

Why: decoding a request (JSON or a TensorProto) takes several times its size
in memory, so N large requests at once can exhaust the host. The budget lets
requests whose sizes add up to at most `limit_bytes` work at once (REST
weighs a request by its body length, gRPC by its serialized size); the others
wait in arrival order. A request larger than the whole budget still runs, but
only alone. Waiting counts against the request's own time limit.

A RequestTicket carries what the serving front knows about its client: the
deadline (REST --rest_api_timeout_in_ms, the gRPC deadline) and whether the
client is gone (a REST disconnect, a cancelled RPC). `check` raises
DEADLINE_EXCEEDED or CANCELLED, so a request nobody waits for any more never
starts its model run, and is counted as failed, not OK.
"""
import collections
import contextlib
import contextvars
import threading
import time
from typing import Deque, Iterator, Optional

from estimator_export.serving.status import Code, ServingError

# Longest a waiter sleeps before it looks at its ticket again (a cancel also wakes it).
_POLL_SECONDS = 0.05

_CURRENT: contextvars.ContextVar[Optional['RequestTicket']] = contextvars.ContextVar(
    'estimator_export_request_ticket', default=None)


class RequestTicket:
  """One request's deadline and cancellation state; thread-safe.

  Args:
    deadline: time.monotonic() value after which nobody waits for the answer;
      None: no deadline.
    timeout_ms: the limit the deadline came from, named in the error message.
    flag: the option that sets that limit (e.g. '--rest_api_timeout_in_ms').
  """

  def __init__(self, deadline: Optional[float] = None, timeout_ms: Optional[float] = None,
               flag: str = ''):
    self.deadline = deadline
    self._timeout_ms = timeout_ms
    self._flag = flag
    self._lock = threading.Lock()
    self._cancelled: Optional[Code] = None
    self._answered = False
    self.wakeup: Optional[threading.Condition] = None  # Set while waiting for the budget.

  def remaining(self) -> Optional[float]:
    """Seconds left before the deadline (may be negative); None without one."""
    return None if self.deadline is None else self.deadline - time.monotonic()

  def cancel(self, code: Code = Code.CANCELLED) -> bool:
    """Marks the client as gone (CANCELLED) or out of time (DEADLINE_EXCEEDED).

    Returns:
      False when the request already finished (`finish` ran first): its
      answer stands and the caller should deliver it.
    """
    with self._lock:
      if self._answered:
        return False
      if self._cancelled is None:
        self._cancelled = code
      wakeup = self.wakeup
    if wakeup is not None:
      with wakeup:
        wakeup.notify_all()
    return True

  def finish(self) -> Optional[ServingError]:
    """Claims the answer for the client; the error to report instead if it is gone."""
    with self._lock:
      if self._cancelled is None and not self._expired():
        self._answered = True
        return None
    return self.error()

  def error(self) -> Optional[ServingError]:
    """The DEADLINE_EXCEEDED / CANCELLED error if the client no longer waits, else None."""
    with self._lock:
      code = self._cancelled
      if code is None and self._expired():
        code = Code.DEADLINE_EXCEEDED
    if code is None:
      return None
    if code == Code.DEADLINE_EXCEEDED:
      limit = f' of {self._timeout_ms:g} ms' if self._timeout_ms is not None else ''
      fix = f'; raise {self._flag} or send smaller requests' if self._flag else ''
      return ServingError(code, f'Deadline exceeded: the request did not finish within its '
                                f'time limit{limit}{fix}')
    return ServingError(code, 'Request cancelled: the client went away before it was answered')

  def check(self):
    """Raises the error of `error()`, if any (call right before expensive work)."""
    error = self.error()
    if error is not None:
      raise error

  def _expired(self) -> bool:
    return self.deadline is not None and time.monotonic() >= self.deadline


def current_ticket() -> Optional[RequestTicket]:
  """The ticket `bind` set for this thread's request, or None (e.g. warmup)."""
  return _CURRENT.get()


@contextlib.contextmanager
def bind(ticket: Optional[RequestTicket]) -> Iterator[None]:
  """Makes `ticket` the current one for this thread while the block runs."""
  token = _CURRENT.set(ticket)
  try:
    yield
  finally:
    _CURRENT.reset(token)


class InflightBudget:
  """A first-come first-served, byte-weighted semaphore shared by REST and gRPC.

  Args:
    limit_bytes: bytes of requests that may be worked on at once
      (--max_inflight_request_bytes); 0 or less: no limit.
  """

  def __init__(self, limit_bytes: int):
    self.limit = int(limit_bytes)
    self._cond = threading.Condition()
    self._in_use = 0
    self._running = 0
    self._queue: Deque[object] = collections.deque()

  @property
  def in_use(self) -> int:
    with self._cond:
      return self._in_use

  @property
  def waiting(self) -> int:
    with self._cond:
      return len(self._queue)

  def _fits(self, weight: int) -> bool:
    return self._running == 0 or self._in_use + weight <= self.limit

  def acquire(self, weight: int, ticket: Optional[RequestTicket] = None):
    """Waits until `weight` bytes fit (or nothing else runs), in arrival order.

    Raises:
      ServingError: DEADLINE_EXCEEDED when the ticket's deadline passes while
        waiting, CANCELLED when its client goes away.
    """
    weight = max(0, int(weight))
    if self.limit <= 0:
      return
    me = object()
    with self._cond:
      self._queue.append(me)
      if ticket is not None:
        ticket.wakeup = self._cond
      try:
        while not (self._queue[0] is me and self._fits(weight)):
          if ticket is not None:
            ticket.check()
            remaining = ticket.remaining()
            wait = _POLL_SECONDS if remaining is None else min(_POLL_SECONDS, max(remaining, 0))
          else:
            wait = _POLL_SECONDS
          self._cond.wait(wait)
        self._in_use += weight
        self._running += 1
      finally:
        self._queue.remove(me)
        if ticket is not None:
          ticket.wakeup = None
        self._cond.notify_all()  # The next in line may fit now (or be at the head).

  def release(self, weight: int):
    if self.limit <= 0:
      return
    with self._cond:
      self._in_use -= max(0, int(weight))
      self._running -= 1
      self._cond.notify_all()

  @contextlib.contextmanager
  def admit(self, weight: int, ticket: Optional[RequestTicket] = None) -> Iterator[None]:
    """acquire / release around a block."""
    self.acquire(weight, ticket)
    try:
      yield
    finally:
      self.release(weight)
