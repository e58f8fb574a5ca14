"""Prometheus metrics for the embedded server, under TF Serving's own metric names.

    metrics = ServingMetrics()                     # one private registry per server
    metrics.observe('m', 'predict', 'serving_default', 0.0012, ok=True)
    body, content_type = metrics.render()          # for /monitoring/prometheus/metrics

TF Serving exports its TF monitoring metrics by replacing every character
outside [a-zA-Z0-9_] with ':' (so `/tensorflow/serving/request_count` becomes
`:tensorflow:serving:request_count`). Those names are valid Prometheus names
and prometheus_client accepts them, so the metrics TF Serving 2.15 exports
for requests and batching keep their exact names, labels and units here:

* `:tensorflow:serving:request_count` {model_name, status}: requests, by
  status code name (OK, NOT_FOUND, ...).
* `:tensorflow:serving:request_latency` {model_name, API, entrypoint}:
  histogram of request wall time in microseconds.
* `:tensorflow:serving:batching_session:input_batch_size` {}: histogram of
  rows per request entering a batch queue.
* `:tensorflow:serving:batching_session:processed_batch_size` {}: histogram
  of rows per batch run, padding included.
* `:tensorflow:serving:batching_session:padding_size` {execution_batch_size}:
  histogram of padding rows per batch.
* `:tensorflow:serving:batching_session:queuing_latency` {thread_pool_name,
  always ""}: histogram of queueing time in microseconds.

As in TF Serving, request_latency only records successful requests, with API
`Predict`, `Classify`, `Regress` or `MultiInference` and entrypoint `GRPC` or
`REST` (whatever the caller passes; "" when it passes nothing). Buckets are
TF's: request latency 10 µs x 1.8^i (33 buckets), batch sizes 1, 2, 4, ...
8192, queuing latency 100 µs x 1.2^i (52 buckets).

Two differences in the text itself. TF Serving types request_count `counter`
but writes its samples without `_total`; prometheus_client cannot write that
combination, so it is typed `untyped` with TF's sample name (queries keep
working). And TF Serving writes no HELP lines; prometheus_client does.

Added here, under our own names:

* `estimator_export_serving_request_latency_seconds` {model_name, API,
  signature_name, status}: histogram of every request's wall time, seconds.
* `estimator_export_serving_batch_size` {model_name, signature_name}:
  histogram of rows per batch run, padding included.

Bounded size: label values come from requests, so each metric keeps at most
`max_series` label sets (DEFAULT_MAX_SERIES); past that, new label sets are
counted under one overflow set whose every label is OVERFLOW_LABEL (and a
warning is logged once per metric). The InferenceService already reports
model and signature names that name nothing served as '<unknown>', so this
cap only matters for servers with very many real models or signatures.
"""
import bisect
import logging
import threading
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import HistogramMetricFamily, UnknownMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

logger = logging.getLogger('estimator_export.serving')

# Label sets each metric keeps before new ones go to the overflow set.
DEFAULT_MAX_SERIES = 1000
OVERFLOW_LABEL = '<overflow>'

# The text format generate_latest writes (newer clients also define a 1.0.0 one).
CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8'

DEFAULT_PATH = '/monitoring/prometheus/metrics'

REQUEST_COUNT = ':tensorflow:serving:request_count'
REQUEST_LATENCY = ':tensorflow:serving:request_latency'
INPUT_BATCH_SIZE = ':tensorflow:serving:batching_session:input_batch_size'
PROCESSED_BATCH_SIZE = ':tensorflow:serving:batching_session:processed_batch_size'
PADDING_SIZE = ':tensorflow:serving:batching_session:padding_size'
QUEUING_LATENCY = ':tensorflow:serving:batching_session:queuing_latency'
SIGNATURE_LATENCY = 'estimator_export_serving_request_latency_seconds'
BATCH_SIZE = 'estimator_export_serving_batch_size'

# The API label TF Serving uses for each InferenceService method.
API_NAMES = {'predict': 'Predict', 'classify': 'Classify', 'regress': 'Regress',
             'multi_inference': 'MultiInference'}


def exponential_buckets(scale: float, growth: float, count: int) -> Tuple[float, ...]:
  """TF's Buckets::Exponential bounds, scale * growth**i for i in [0, count).

  Rounded to 6 significant digits, as TF Serving prints them (`le="32.4"`).
  """
  return tuple(float(f'{scale * growth ** i:.6g}') for i in range(count))


_REQUEST_LATENCY_BUCKETS = exponential_buckets(10, 1.8, 33)
_BATCH_SIZE_BUCKETS = exponential_buckets(1, 2, 14)
_QUEUING_BUCKETS = exponential_buckets(100, 1.2, 52)
_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


def _bounded_key(cells: Dict, key: Tuple[str, ...], max_series: int, name: str
                ) -> Tuple[str, ...]:
  """`key`, or the overflow key once `cells` holds max_series other label sets."""
  if key in cells or len(cells) < max_series:
    return key
  overflow = (OVERFLOW_LABEL,) * len(key)
  if overflow not in cells:
    logger.warning('Metric %s reached %d label sets; further label sets are counted under '
                   'label values "%s"', name, max_series, OVERFLOW_LABEL)
  return overflow


class _Histogram:
  """Cumulative-on-read bucket counts per label tuple (callers hold the lock)."""

  def __init__(self, name: str, documentation: str, labels: Sequence[str],
               bounds: Sequence[float], max_series: int = DEFAULT_MAX_SERIES):
    self.name, self.documentation, self.labels = name, documentation, list(labels)
    self.bounds = tuple(bounds)
    self.max_series = max_series
    self._cells: Dict[Tuple[str, ...], List[float]] = {}  # counts..., sum

  def observe(self, label_values: Tuple[str, ...], value: float):
    label_values = _bounded_key(self._cells, label_values, self.max_series, self.name)
    cell = self._cells.get(label_values)
    if cell is None:
      cell = self._cells[label_values] = [0] * (len(self.bounds) + 1) + [0.0]
    cell[bisect.bisect_left(self.bounds, value)] += 1
    cell[-1] += value

  def family(self) -> HistogramMetricFamily:
    family = HistogramMetricFamily(self.name, self.documentation, labels=self.labels)
    limits = [floatToGoString(b) for b in self.bounds] + ['+Inf']
    for label_values, cell in sorted(self._cells.items()):
      total, buckets = 0, []
      for limit, count in zip(limits, cell[:-1]):
        total += count
        buckets.append((limit, total))
      family.add_metric(list(label_values), buckets, cell[-1])
    return family


class _Collector(Collector):
  """Hands a consistent snapshot of ServingMetrics to the registry."""

  def __init__(self, metrics: 'ServingMetrics'):
    self._metrics = metrics

  def collect(self) -> Iterable:
    return self._metrics.families()


class ServingMetrics:
  """Request and batching metrics in a private CollectorRegistry.

  Several servers in one process each keep their own counts. Thread-safe.

  Args:
    registry: the registry to register in; a new private one by default.
    max_series: label sets kept per metric before new ones share the overflow set.
  """

  def __init__(self, registry: Optional[CollectorRegistry] = None,
               max_series: int = DEFAULT_MAX_SERIES):
    self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
    self.max_series = max(1, int(max_series))
    self._lock = threading.Lock()
    self._request_count: Dict[Tuple[str, str], int] = {}
    self._request_latency = _Histogram(
        REQUEST_LATENCY, 'Distribution of wall time (in microseconds) for Tensorflow Serving '
        'request.', ('model_name', 'API', 'entrypoint'), _REQUEST_LATENCY_BUCKETS,
        self.max_series)
    self._signature_latency = _Histogram(
        SIGNATURE_LATENCY, 'Request wall time in seconds, by model, API, signature and status.',
        ('model_name', 'API', 'signature_name', 'status'), _SECONDS_BUCKETS, self.max_series)
    self._input_batch_size = _Histogram(
        INPUT_BATCH_SIZE, 'Tracks the batch size distribution on the inputs.', (),
        _BATCH_SIZE_BUCKETS, self.max_series)
    self._processed_batch_size = _Histogram(
        PROCESSED_BATCH_SIZE, 'Tracks the batch size distribution on processing.', (),
        _BATCH_SIZE_BUCKETS, self.max_series)
    self._padding_size = _Histogram(
        PADDING_SIZE, 'Tracks the padding size distribution on batches.',
        ('execution_batch_size',), _BATCH_SIZE_BUCKETS, self.max_series)
    self._queuing_latency = _Histogram(
        QUEUING_LATENCY, 'Distribution of wall time spent (in microseconds) in queuing',
        ('thread_pool_name',), _QUEUING_BUCKETS, self.max_series)
    self._batch_size = _Histogram(
        BATCH_SIZE, 'Rows per batch run (after padding), by model and signature.',
        ('model_name', 'signature_name'), _BATCH_SIZE_BUCKETS, self.max_series)
    self.registry.register(_Collector(self))

  def observe(self, model: str, api: str, signature: str, seconds: float, ok: bool,
              code=None, entrypoint: Optional[str] = None) -> None:
    """Records one request (InferenceService calls this for every request).

    Args:
      model: model name.
      api: 'predict', 'classify', 'regress' (or TF's 'Predict', ...).
      signature: the signature name the request resolved to.
      seconds: wall time of the request.
      ok: whether it succeeded.
      code: the failure's grpc.StatusCode (or its name); 'UNKNOWN' if omitted.
      entrypoint: 'GRPC' or 'REST' when the caller knows it.
    """
    status = 'OK' if ok else _code_name(code)
    api_label = API_NAMES.get(api, api)
    with self._lock:
      key = _bounded_key(self._request_count, (model, status), self.max_series, REQUEST_COUNT)
      self._request_count[key] = self._request_count.get(key, 0) + 1
      if ok:
        self._request_latency.observe((model, api_label, entrypoint or ''), seconds * 1e6)
      self._signature_latency.observe((model, api_label, signature, status), seconds)

  def observe_batch(self, model: str, signature: str, batch_size: int, padding_size: int,
                    task_sizes: Sequence[int] = (),
                    queuing_seconds: Sequence[float] = ()) -> None:
    """Records one batch run (the Batcher's hook).

    Args:
      model: model name.
      signature: signature name.
      batch_size: rows run, padding included.
      padding_size: rows of padding among them.
      task_sizes: rows of each request in the batch.
      queuing_seconds: time each request waited in the queue.
    """
    with self._lock:
      self._processed_batch_size.observe((), batch_size)
      self._padding_size.observe((str(batch_size),), padding_size)
      self._batch_size.observe((model, signature), batch_size)
      for rows in task_sizes:
        self._input_batch_size.observe((), rows)
      for seconds in queuing_seconds:
        self._queuing_latency.observe(('',), seconds * 1e6)

  def families(self) -> List:
    """The metric families, built under the lock (one consistent snapshot)."""
    with self._lock:
      count = UnknownMetricFamily(REQUEST_COUNT, 'The total number of requests.',
                                  labels=('model_name', 'status'))
      for (model, status), value in sorted(self._request_count.items()):
        count.add_metric((model, status), value)
      return [count] + [h.family() for h in (
          self._request_latency, self._signature_latency, self._input_batch_size,
          self._processed_batch_size, self._padding_size, self._queuing_latency,
          self._batch_size)]

  def render(self) -> Tuple[bytes, str]:
    """(body, Content-Type) for the /monitoring/prometheus/metrics route."""
    return generate_latest(self.registry), CONTENT_TYPE


def _code_name(code) -> str:
  if code is None:
    return 'UNKNOWN'
  return getattr(code, 'name', None) or str(code)
