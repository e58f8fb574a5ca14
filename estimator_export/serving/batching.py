"""Server-side request batching, with the semantics of TF Serving's batching session.

    servable.batcher = Batcher(servable, params)        # or make_on_load(params)
    outputs = servable.batcher.run('serving_default', signature_def,
                                   {'x': x}, ['y'], check_dtypes=True)
    servable.batcher.stop()                              # drains, joins the threads

What TF Serving 2.15 does (tensorflow_serving/batching/batching_session.cc and
TF 2.15's core/kernels/batching_util/shared_batch_scheduler.h), and so do we:

* One queue per request signature: the same signature, input aliases and
  output aliases. A queue holds a deque of batches; the last one is open. A
  task of N rows (N = dim 0, equal across inputs) joins the open batch if it
  fits in max_batch_size rows, else the open batch closes and a new one opens.
* A task that does not fit in the open batch while the queue already holds
  max_enqueued_batches batches (the open one included) fails at once with
  UNAVAILABLE `The batch scheduling queue to which this task was submitted is
  full; currently N batches enqueued and max_enqueued_batches is M`.
* A batch is taken by a free batch thread (num_batch_threads of them) when it
  is closed, full, or batch_timeout_micros have passed since its first task
  (0: as soon as a thread is free). Until a thread takes it, the open batch
  keeps accepting tasks.
* The batch's inputs are concatenated along dim 0, run once, and the outputs
  are split back by row counts. Every output must have rank >= 1 and dim 0
  equal to the (padded) batch rows, else every task fails with
  FAILED_PRECONDITION `Batched output tensor has 0 dimensions` / `Batched
  output tensor's 0th dimension does not equal the sum of the 0th dimension
  sizes of the input tensors` -- even for a batch of one request.
* allowed_batch_sizes: the batch is padded up to the first allowed size that
  holds it, with copies of the first row of the last task; padded outputs are
  dropped. The last entry must equal max_batch_size.
* pad_variable_length_inputs: tensors of one input whose non-batch dims differ
  are padded at the end of each dim to the batch's maximum, with the tensor's
  own FIRST ELEMENT as the pad value (not zeros or empty strings; TF Serving
  pads that way so the padding is a valid value of the tensor). Outputs keep
  the padded width. Without the option, such tensors fail the whole batch
  with FAILED_PRECONDITION (TF Serving's message, missing spaces included).
* An error from the run fails every task of the batch with the same status.
* Requests are checked before queueing, with INVALID_ARGUMENT: at least one
  input, every input of rank >= 1 with the same dim 0, and no more rows than
  max_batch_size (`Task size N is larger than maximum input batch size M`).

Where we differ, deliberately:

* Requests whose inputs differ in dtype (strings aside) use separate queues,
  so a request with a wrong dtype gets the servable's own `Expects arg[i] to
  be float but string is provided` instead of breaking its batch.
* No thread hand-off when none is needed: an idle batcher runs a request
  whose batch would be taken at once (timeout 0, or a full batch) on the
  request's own thread, and a request whose batch becomes ready while a
  thread slot is free runs that batch itself. The batches and the bound of
  num_batch_threads concurrent runs are TF's; a lone request costs about 10
  microseconds more than calling the servable directly.
* After stop(), run() calls the servable directly (TF Serving keeps the
  servable, and so its batching, alive until its last request finishes).
* A queued task whose client left, or whose deadline passed, while it waited
  (its admission.RequestTicket) is finished with CANCELLED or
  DEADLINE_EXCEEDED when its batch is formed, and its rows are not run.
"""
import collections
import dataclasses
import logging
import os
import threading
import time
from typing import Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from estimator_export.serving import admission
from estimator_export.serving.status import Code, ServingError, from_tf_error, invalid

logger = logging.getLogger('estimator_export.serving')

QUEUE_FULL_MESSAGE = 'The batch scheduling queue to which this task was submitted is full'
_SHAPE_MISMATCH = ("Tensors with name '{}' from different tasks have different shapes and "
                   'padding is turned off.Set pad_variable_length_inputs to true, or ensure '
                   'that all tensors with the same namehave equal dimensions starting with '
                   'the first dim.')
_MAX_PAD_RANK = 6


@dataclasses.dataclass(frozen=True)
class BatchOptions:
  """Validated batching parameters; unset (None) fields take TF Serving's defaults.

  Attributes:
    max_batch_size: rows per batch, and the largest request accepted (1000).
    batch_timeout_micros: how long an open batch waits for more tasks (0).
    max_enqueued_batches: batches a queue may hold, the open one included (10).
    num_batch_threads: threads (and concurrent runs) per servable (CPU count).
    allowed_batch_sizes: batch sizes to pad up to; last entry == max_batch_size.
    pad_variable_length_inputs: pad differing non-batch dims (see module doc).
  """
  max_batch_size: int = 1000
  batch_timeout_micros: int = 0
  max_enqueued_batches: int = 10
  num_batch_threads: int = os.cpu_count() or 1
  allowed_batch_sizes: Tuple[int, ...] = ()
  pad_variable_length_inputs: bool = False

  def __post_init__(self):
    if self.max_batch_size <= 0:
      raise invalid(f'input_batch_size_limit must be positive; was {self.max_batch_size}')
    if self.batch_timeout_micros < 0:
      raise invalid(f'batch_timeout_micros must be non-negative; was '
                    f'{self.batch_timeout_micros}')
    if self.max_enqueued_batches < 0:
      raise invalid(f'max_enqueued_batches must be positive; was {self.max_enqueued_batches}')
    if self.max_enqueued_batches == 0:  # TF rewrites 0 to 1 for old configs.
      object.__setattr__(self, 'max_enqueued_batches', 1)
    if self.num_batch_threads < 1:
      raise invalid(f'num_batch_threads must be positive; was {self.num_batch_threads}')
    sizes = tuple(int(s) for s in self.allowed_batch_sizes)
    object.__setattr__(self, 'allowed_batch_sizes', sizes)
    if sizes and sizes[-1] != self.max_batch_size:
      raise invalid(f'Last entry in allowed_batch_sizes must match max_batch_size; last entry '
                    f'was {sizes[-1]}; expected {self.max_batch_size}')

  @classmethod
  def from_params(cls, params) -> 'BatchOptions':
    """From any object with BatchingParameters' attribute names (None: default)."""
    if isinstance(params, cls):
      return params
    values = {}
    for field in dataclasses.fields(cls):
      value = getattr(params, field.name, None) if params is not None else None
      if value is not None:
        values[field.name] = value
    return cls(**values)

  def padded_size(self, rows: int) -> int:
    """The first allowed batch size that holds `rows` (rows itself if none set)."""
    for size in self.allowed_batch_sizes:
      if size >= rows:
        return size
    return rows


class _Task:
  """One request waiting in a queue; `wait()` blocks until `finish()`."""
  __slots__ = ('inputs', 'rows', 'output_aliases', 'enqueued', 'outputs', 'error', 'ticket',
               '_done')

  def __init__(self, inputs: Mapping[str, np.ndarray], rows: int,
               output_aliases: Tuple[str, ...]):
    self.inputs = inputs
    self.ticket = admission.current_ticket()  # The request's deadline and cancellation.
    self.rows = rows
    self.output_aliases = output_aliases
    self.enqueued = 0.0
    self.outputs: Optional[Dict[str, np.ndarray]] = None
    self.error: Optional[ServingError] = None
    self._done = threading.Lock()  # A one-shot latch: the cheapest wait in CPython.
    self._done.acquire()

  def finish(self, outputs=None, error: Optional[ServingError] = None):
    self.outputs, self.error = outputs, error
    self._done.release()

  def wait(self):
    self._done.acquire()


class _Batch:
  __slots__ = ('tasks', 'rows', 'opened')

  def __init__(self):
    self.tasks: List[_Task] = []
    self.rows = 0
    self.opened = 0.0


class _Queue:
  """The batches of one request signature; `batches[-1]` is the open one."""
  __slots__ = ('signature_name', 'signature_def', 'output_aliases', 'check_dtypes', 'batches')

  def __init__(self, signature_name, signature_def, output_aliases, check_dtypes):
    self.signature_name = signature_name
    self.signature_def = signature_def
    self.output_aliases = output_aliases
    self.check_dtypes = check_dtypes
    self.batches = collections.deque([_Batch()])


class Batcher:
  """Batches concurrent `run` calls on one Servable (see the module docstring).

  Args:
    servable: anything with `name` and `run(signature_def, inputs,
      output_aliases, check_dtypes=...)`, normally a Servable.
    params: BatchOptions, or any object with BatchingParameters' attributes.
    metrics: optional object with `observe_batch(model, signature, batch_size,
      padding_size, task_sizes, queuing_seconds)`, called after every batch.

  Raises:
    ServingError: INVALID_ARGUMENT for invalid parameters (TF's messages).
  """

  def __init__(self, servable, params, metrics=None):
    self._servable = servable
    self.options = BatchOptions.from_params(params)
    self._metrics = metrics
    self._timeout = self.options.batch_timeout_micros / 1e6
    self._cv = threading.Condition(threading.Lock())
    self._queues: Dict[tuple, _Queue] = {}
    self._order: List[_Queue] = []
    self._next = 0
    self._busy = 0
    self._pending = 0  # Tasks in queues, not yet taken by a thread.
    self._stopping = False
    self._threads = [
        threading.Thread(target=self._work, daemon=True,
                         name=f'batch-{getattr(servable, "name", "servable")}-{i}')
        for i in range(self.options.num_batch_threads)]
    for thread in self._threads:
      thread.start()

  # ----- requests -----
  def run(self, signature_name: str, signature_def, inputs: Mapping[str, np.ndarray],
          output_aliases: Sequence[str], check_dtypes: bool = True) -> Dict[str, np.ndarray]:
    """Runs one request as part of a batch; blocks until its batch has run.

    Returns:
      Outputs by alias (in `output_aliases` order), this request's rows only.

    Raises:
      ServingError: INVALID_ARGUMENT for an unbatchable request, UNAVAILABLE
        when the queue is full, or the batch's error.
    """
    rows = _task_rows(inputs)
    limit = self.options.max_batch_size
    if rows > limit:
      raise invalid(f'Task size {rows} is larger than maximum input batch size {limit}')
    aliases = tuple(output_aliases)
    with self._cv:
      stopped = self._stopping
      # Idle and the batch would be taken at once: run it here, skipping the queue.
      alone = (not stopped and not self._pending and self._busy < len(self._threads) and
               (not self._timeout or rows >= limit))
      if alone:
        self._busy += 1
    if stopped:  # The servable is still valid (a request in flight at unload): run unbatched.
      return self._servable.run(signature_def, inputs, aliases, check_dtypes=check_dtypes)
    if alone:
      try:
        return self._run_alone(signature_name, signature_def, inputs, rows, aliases,
                               check_dtypes)
      finally:
        self._release_slot()
    return self._run_queued(signature_name, signature_def, inputs, rows, aliases, check_dtypes)

  def _run_alone(self, signature_name, signature_def, inputs, rows, aliases, check_dtypes):
    """A batch of one, run on the caller's thread (it holds a slot)."""
    padded = self.options.padded_size(rows) if rows else 0
    try:
      outputs = self._run_batch(signature_def, aliases, check_dtypes, [(inputs, rows, aliases)],
                                padded)[0]
    except ServingError:
      raise
    except Exception as e:  # pylint: disable=broad-except
      raise from_tf_error(e) from e
    self._observe_batch(signature_name, padded, [rows], [0.0])
    return outputs

  def _run_queued(self, signature_name, signature_def, inputs, rows, aliases, check_dtypes):
    """Queues the request, then waits for (or runs) the batch it lands in."""
    key = (signature_name, bool(check_dtypes), tuple(sorted(aliases)),
           tuple(sorted((alias, _dtype_class(value)) for alias, value in inputs.items())))
    task = _Task(inputs, rows, aliases)
    batch = None
    with self._cv:
      if self._stopping:
        queue = None
      else:
        queue = self._queues.get(key)
        if queue is None:
          queue = self._add_queue_locked(key, signature_name, signature_def, aliases,
                                         check_dtypes)
        now = time.monotonic()
        opened = self._enqueue_locked(queue, task, now)
        if self._busy < len(self._threads):
          if len(queue.batches) == 1 and self._ready_locked(queue.batches[0], now):
            batch = self._take_locked(queue)  # Ours and ready: no hand-off to a thread.
            self._busy += 1
            if self._pending:
              self._cv.notify()
          elif opened or len(queue.batches) > 1:
            self._cv.notify()  # A new deadline or a closed batch for a batch thread.
        # (With every slot busy, the next _release_slot wakes a batch thread.)
    if queue is None:
      return self._servable.run(signature_def, inputs, aliases, check_dtypes=check_dtypes)
    if batch is not None:
      try:
        self._process(queue, batch)
      finally:
        self._release_slot()
    task.wait()
    if task.error is not None:
      raise ServingError(task.error.code, task.error.message) from task.error
    return task.outputs

  def num_enqueued_tasks(self) -> int:
    """Tasks accepted but not yet taken by a batch thread (for tests and metrics)."""
    with self._cv:
      return self._pending

  def stop(self, timeout: Optional[float] = None):
    """Runs every queued task at once (no more waiting for timeouts), then joins.

    Later `run` calls go straight to the servable, unbatched.
    """
    with self._cv:
      self._stopping = True
      self._cv.notify_all()
    for thread in self._threads:
      thread.join(timeout)

  # ----- queueing (under self._cv) -----
  def _add_queue_locked(self, key, signature_name, signature_def, aliases, check_dtypes):
    queue = _Queue(signature_name, signature_def, aliases, check_dtypes)
    self._queues[key] = queue
    self._order.append(queue)
    return queue

  def _enqueue_locked(self, queue: _Queue, task: _Task, now: float) -> bool:
    """Adds a task (or raises UNAVAILABLE); True when it opened a batch."""
    batches = queue.batches
    open_batch = batches[-1]
    if open_batch.rows + task.rows > self.options.max_batch_size:
      if len(batches) >= self.options.max_enqueued_batches:
        raise ServingError(Code.UNAVAILABLE,
                           f'{QUEUE_FULL_MESSAGE}; currently {len(batches)} batches enqueued '
                           f'and max_enqueued_batches is {self.options.max_enqueued_batches}')
      open_batch = _Batch()
      batches.append(open_batch)
    opened = not open_batch.tasks
    if opened:
      open_batch.opened = now
    task.enqueued = now
    self._pending += 1
    open_batch.tasks.append(task)
    open_batch.rows += task.rows
    return opened

  def _ready_locked(self, batch: _Batch, now: float) -> bool:
    return bool(batch.tasks) and (self._stopping or
                                  batch.rows >= self.options.max_batch_size or
                                  now >= batch.opened + self._timeout)

  def _take_locked(self, queue: _Queue) -> _Batch:
    batch = queue.batches.popleft()
    if not queue.batches:
      queue.batches.append(_Batch())
    self._pending -= len(batch.tasks)
    return batch

  def _next_work_locked(self, now: float):
    """(queue, batch, None) for a batch ready to run, else (None, None, seconds to wait).

    The wait is None (until notified) when every slot is busy or nothing waits
    on a timeout. Queues are visited round-robin, as TF's batch threads do.
    """
    if self._busy >= len(self._threads):
      return None, None, None
    wait = None
    count = len(self._order)
    for step in range(count):
      index = (self._next + step) % count
      queue = self._order[index]
      if len(queue.batches) > 1 or self._ready_locked(queue.batches[0], now):
        self._next = index + 1
        return queue, self._take_locked(queue), None
      open_batch = queue.batches[0]
      if open_batch.tasks:
        left = open_batch.opened + self._timeout - now
        wait = left if wait is None else min(wait, left)
    return None, None, wait

  # ----- batch threads -----
  def _work(self):
    while True:
      with self._cv:
        while True:
          queue, batch, wait = self._next_work_locked(time.monotonic())
          if batch is not None:
            self._busy += 1
            if self._pending:
              self._cv.notify()  # Hand the remaining deadlines to an idle thread.
            break
          if self._stopping and not self._pending:
            return
          self._cv.wait(wait)
      try:
        self._process(queue, batch)
      finally:
        self._release_slot()

  def _release_slot(self):
    with self._cv:
      self._busy -= 1
      if self._pending:
        self._cv.notify()  # A batch thread may be waiting for this slot.

  def _process(self, queue: _Queue, batch: _Batch):
    """Runs one batch and finishes every task in it, whatever happens.

    A task whose client left or whose deadline passed while it was queued is
    finished with that error and left out of the run.
    """
    tasks = []
    for task in batch.tasks:
      gone = task.ticket.error() if task.ticket is not None else None
      if gone is None:
        tasks.append(task)
      else:
        task.finish(error=gone)
    if not tasks:
      return
    started = time.monotonic()
    rows = sum(t.rows for t in tasks)
    padded = self.options.padded_size(rows) if rows else 0
    results = None
    try:
      results = self._run_batch(queue.signature_def, queue.output_aliases, queue.check_dtypes,
                                [(t.inputs, t.rows, t.output_aliases) for t in tasks], padded)
    except ServingError as e:
      error = e
    except Exception as e:  # pylint: disable=broad-except
      logger.exception('batch of %d tasks failed', len(tasks))
      error = from_tf_error(e)
    if results is None:
      for task in tasks:
        task.finish(error=error)
    else:
      for task, outputs in zip(tasks, results):
        task.finish(outputs)
    self._observe_batch(queue.signature_name, padded, [t.rows for t in tasks],
                        [started - t.enqueued for t in tasks])

  def _run_batch(self, signature_def, run_aliases: Tuple[str, ...], check_dtypes: bool,
                 parts: List[Tuple[Mapping[str, np.ndarray], int, Tuple[str, ...]]],
                 padded: int) -> List[Dict[str, np.ndarray]]:
    """Merges, runs and splits; parts are (inputs, rows, output aliases) per task."""
    rows = sum(part[1] for part in parts)
    pad_lengths = self.options.pad_variable_length_inputs
    if len(parts) == 1 and padded == rows and not pad_lengths:
      merged = parts[0][0]
    else:
      merged = _merge_inputs([part[0] for part in parts], padded - rows, pad_lengths)
    outputs = self._servable.run(signature_def, merged, run_aliases, check_dtypes=check_dtypes)
    for value in outputs.values():
      shape = getattr(value, 'shape', ())  # Scalar strings come back as bytes.
      if not shape:
        raise ServingError(Code.FAILED_PRECONDITION, 'Batched output tensor has 0 dimensions')
      if shape[0] != padded:
        raise ServingError(Code.FAILED_PRECONDITION,
                           "Batched output tensor's 0th dimension does not equal the sum of "
                           'the 0th dimension sizes of the input tensors')
    if len(parts) == 1 and padded == rows:
      return [{alias: outputs[alias] for alias in parts[0][2]}]
    results, start = [], 0
    for _, task_rows, aliases in parts:
      end = start + task_rows
      results.append({alias: outputs[alias][start:end] for alias in aliases})
      start = end
    return results

  def _observe_batch(self, signature_name: str, padded: int, task_rows: List[int],
                     waits: List[float]):
    if self._metrics is None:
      return
    try:
      self._metrics.observe_batch(self._servable.name, signature_name, padded,
                                  padded - sum(task_rows), task_rows, waits)
    except Exception:  # pylint: disable=broad-except
      logger.exception('batch metrics hook failed')

  def __repr__(self):
    return f'Batcher({self._servable!r}, {self.options})'


def make_on_load(params, metrics=None) -> Callable[[object], None]:
  """Builds the ModelManager `on_load` hook that attaches a Batcher to each servable.

  Args:
    params: BatchOptions or a BatchingParameters-like object; validated now,
      so a bad batching config fails at server start as in TF Serving.
    metrics: optional `observe_batch` sink (e.g. monitoring.ServingMetrics).

  Returns:
    A function (servable) -> None.
  """
  options = BatchOptions.from_params(params)

  def attach_batcher(servable) -> None:
    """Sets `servable.batcher` to a new Batcher (stopped by the manager on unload)."""
    servable.batcher = Batcher(servable, options, metrics=metrics)
  return attach_batcher


# ----- tensors -----

def _task_rows(inputs: Mapping[str, np.ndarray]) -> int:
  """The request's dim 0, with TF Serving's checks (INVALID_ARGUMENT)."""
  if not inputs:
    raise invalid('Batching Run() must have at least one input tensor')
  rows = None
  for value in inputs.values():
    shape = value.shape if isinstance(value, np.ndarray) else np.shape(value)
    if not shape:
      raise invalid('Batching Run() input tensors must have at least one dimension')
    if rows is None:
      rows = shape[0]
    elif shape[0] != rows:
      raise invalid('Batching Run() input tensors must have equal 0th-dimension size')
  return rows


def _dtype_class(value) -> str:
  """Queue key part: all string kinds batch together, other dtypes only with themselves."""
  dtype = getattr(value, 'dtype', None)
  if dtype is None:
    dtype = np.asarray(value).dtype
  return 'string' if dtype.kind in 'OSU' else dtype.str


def _merge_inputs(task_inputs: List[Mapping[str, np.ndarray]], padding_rows: int,
                  pad_lengths: bool) -> Dict[str, np.ndarray]:
  """Concatenates each input along dim 0 (in the first task's alias order)."""
  merged = {}
  for alias in task_inputs[0]:
    parts = [np.asarray(inputs[alias]) for inputs in task_inputs]
    if pad_lengths:
      parts = _pad_to_common_shape(alias, parts)
    else:
      inner = parts[0].shape[1:]
      for part in parts[1:]:
        if part.shape[1:] != inner:
          raise ServingError(Code.FAILED_PRECONDITION, _SHAPE_MISMATCH.format(alias))
    if padding_rows:
      source = parts[-1] if len(parts[-1]) else next(p for p in parts if len(p))
      parts.append(np.repeat(source[:1], padding_rows, axis=0))
    merged[alias] = _concat(parts)
  return merged


def _pad_to_common_shape(alias: str, parts: List[np.ndarray]) -> List[np.ndarray]:
  """Pads non-batch dims to the maximum over tasks, with each tensor's first element."""
  rank = parts[0].ndim
  if any(part.ndim != rank for part in parts):
    raise invalid(f"Tensors with name '{alias}' from different tasks have different ranks "
                  f'({sorted({p.ndim for p in parts})}); padding cannot make them batchable.')
  if not 1 <= rank <= _MAX_PAD_RANK:
    raise invalid('Only tensors with rank from 1 to 6 can be padded.')
  inner = tuple(max(part.shape[d] for part in parts) for d in range(1, rank))
  padded = []
  for part in parts:
    if part.shape[1:] == inner:
      padded.append(part)
      continue
    shape = (part.shape[0],) + inner
    if int(np.prod(shape)) == part.size:  # No rows: only the shape changes.
      padded.append(part.reshape(shape))
      continue
    if part.size == 0:
      raise invalid('Got empty tensor in batch of non-empty tensors.')
    out = np.full(shape, part.flat[0], dtype=part.dtype)
    out[tuple(slice(0, n) for n in part.shape)] = part
    padded.append(out)
  return padded


def _concat(parts: List[np.ndarray]) -> np.ndarray:
  if len(parts) == 1:
    return parts[0]
  first = parts[0].dtype
  if any(part.dtype != first for part in parts[1:]):
    # Only string kinds reach here (the queue key separates other dtypes):
    # '<U3' + '<U5' concatenate as they are; bytes mixed with str need object.
    if any(part.dtype.kind != first.kind for part in parts):
      parts = [part.astype(object) for part in parts]
  return np.concatenate(parts, axis=0)
