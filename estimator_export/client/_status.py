"""What both clients share: ServingClientError, the status codes and the TF Serving names."""
from typing import List, Optional, Tuple

import grpc

from estimator_export._saved_model import CLASSIFY_METHOD, REGRESS_METHOD
from estimator_export.errors import ClientInputError
from estimator_export.errors import EstimatorExportError

Code = grpc.StatusCode
INT32_MAX = 2**31 - 1
DEFAULT_GRPC_TARGET = '127.0.0.1:8500'
DEFAULT_REST_URL = 'http://127.0.0.1:8501'

Classifications = List[List[Tuple[str, float]]]


class ServingClientError(EstimatorExportError):
  """A failed request: the server's status, or a connection failure.

  Attributes:
    code: a grpc.StatusCode (for REST, the closest code to the HTTP status).
    message: TF Serving's message text (or the connection failure).
    http_status: the HTTP status for REST calls, else None.
  """

  def __init__(self, code: grpc.StatusCode, message: str, http_status: Optional[int] = None):
    super().__init__(f'{code.name}: {message}')
    self.code = code
    self.message = message
    self.http_status = http_status


def not_reachable(target: str, detail: str, protocol: str) -> ServingClientError:
  return ServingClientError(
      Code.UNAVAILABLE,
      f'Cannot reach a model server at {target} over {protocol} ({detail}). Is one running? '
      'Start it with `estimator-export serve`, or check the host and port.')


def both_version_and_label(version, label) -> ServingClientError:
  """TF Serving's own error for a request naming a version and a label."""
  return ServingClientError(Code.INVALID_ARGUMENT,
                            f'Both model version ({version}) and model version label '
                            f'({label}) cannot be supplied.')


def task_method(method: str) -> str:
  """'classify'/'regress' (or the full method names) -> TF Serving's method name."""
  full = {'classify': CLASSIFY_METHOD, 'regress': REGRESS_METHOD}.get(method, method)
  if full not in (CLASSIFY_METHOD, REGRESS_METHOD):
    raise ClientInputError("a MultiInference task's method must be classify or regress",
                           value=method, fix="pass ('SIGNATURE', 'classify') or "
                           "('SIGNATURE', 'regress') per task")
  return full
