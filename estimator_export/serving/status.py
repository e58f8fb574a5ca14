"""TF Serving's status codes and messages, for gRPC and REST alike."""
import logging
import uuid

import grpc

from estimator_export.errors import EstimatorExportError

Code = grpc.StatusCode

logger = logging.getLogger('estimator_export.serving')

# google.rpc code -> HTTP status, as TF Serving's REST handler maps them.
HTTP_STATUS = {
    Code.OK: 200, Code.CANCELLED: 499, Code.UNKNOWN: 500, Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504, Code.NOT_FOUND: 404, Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403, Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400, Code.ABORTED: 409, Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501, Code.INTERNAL: 500, Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500, Code.UNAUTHENTICATED: 401,
}

# tensorflow.error.Code names as printed in model status ("OK", "NOT_FOUND", ...).
ERROR_CODE_NAMES = {code: code.name for code in Code}

GRPC_MESSAGE_LIMIT = 1024
_TRUNCATED = '...TRUNCATED'

# TF's DataTypeString names (DataType enum -> "float", "int64", ...).
_TF_TYPE_NAMES = {1: 'float', 2: 'double', 3: 'int32', 4: 'uint8', 5: 'int16', 6: 'int8',
                  7: 'string', 8: 'complex64', 9: 'int64', 10: 'bool', 14: 'bfloat16',
                  17: 'uint16', 18: 'complex128', 19: 'half', 22: 'uint32', 23: 'uint64'}


class ServingError(EstimatorExportError):
  """A request failure with TF Serving's status code and message."""

  def __init__(self, code: grpc.StatusCode, message: str):
    super().__init__(message)
    self.code = code
    self.message = message

  @property
  def http_status(self) -> int:
    return HTTP_STATUS.get(self.code, 500)

  def grpc_message(self) -> str:
    """The message as TF Serving sends it over gRPC: the first 1024 bytes + '...TRUNCATED'."""
    raw = self.message.encode('utf-8')
    if len(raw) <= GRPC_MESSAGE_LIMIT:
      return self.message
    return raw[:GRPC_MESSAGE_LIMIT].decode('utf-8', 'ignore') + _TRUNCATED

  def __repr__(self):
    return f'ServingError({self.code.name}, {self.message!r})'


def invalid(message: str) -> ServingError:
  return ServingError(Code.INVALID_ARGUMENT, message)


def tf_type_name(dtype_enum: int) -> str:
  """DataType enum -> TF's short name ('float', 'string', ...)."""
  return _TF_TYPE_NAMES.get(int(dtype_enum), f'type{int(dtype_enum)}')


def from_tf_error(error: Exception) -> ServingError:
  """Maps a tf.errors.OpError (or anything else) to a ServingError."""
  code = getattr(error, 'error_code', None)
  if code is not None:
    for status in Code:
      if status.value[0] == code:
        return ServingError(status, getattr(error, 'message', str(error)))
  return ServingError(Code.INTERNAL, str(error))


def internal_error(where: str, error: BaseException) -> ServingError:
  """An unexpected failure as a generic INTERNAL error; the details are logged once.

  Clients get no exception text (it can carry paths, values or other
  requests' data), only an id to find the log entry with.
  """
  error_id = uuid.uuid4().hex[:12]
  logger.error('%s failed with an unexpected error [error id %s]: %s: %s', where, error_id,
               type(error).__name__, error, exc_info=error)
  return ServingError(Code.INTERNAL, f'Internal error [error id {error_id}]; the server log '
                                     'has the details under this id')
