"""TF Serving 2.15's REST JSON codec: request bodies to arrays, arrays to response text.

The front the server imports; the work is split by job into private modules:

  _json_syntax    rapidjson's parse-error messages and byte offsets (a small scanner;
                  why not python-rapidjson is in its docstring)
  _json_request   body -> dict, signature name, JSON values -> input arrays (predict)
  _json_example   JSON examples -> serialized tf.Example (classify / regress)
  _json_response  output arrays -> response text (WriteDecimal floats, PrettyWriter layout)
  _json_text      CodecError and the rapidjson text of values that they all share

Pure modules (no HTTP, no sessions; only the Example protobuf class from TensorFlow).
The REST service calls, in this order:

  obj = parse_json_body(body, max_elements=N)      # syntax, top level must be an object;
                                                   # more than N scalars: INVALID_ARGUMENT
  # predict
  name = peek_signature_name(obj)                  # '' -> 'serving_default'
  ...the caller resolves the signature (unknown signature is its error)...
  name, inputs, fmt = parse_predict_request(obj, {alias: dtype})
  text = format_predict_response(outputs, fmt)
  # classify / regress (the caller resolves the signature afterwards, as TF Serving does)
  name, examples = parse_classify_regress_request(obj, 'classify')
  text = format_classify_response(classes, scores)  # or format_regress_response(values)
  # any failure
  text = format_error(error.message)

Every failure is a `CodecError` carrying TF Serving's status code and exact message
(tensorflow_serving/util/json_tensor.cc behaviour, see spec/tf_serving_contract.md).
Output text is byte-for-byte what TF Serving's rapidjson PrettyWriter prints, e.g.
'{\\n    "predictions": [2.5, 3.0, 4.5\\n    ]\\n}'.

Decisions and known differences from TF Serving (all documented at the point of use):
  * dtypes are given as DataType enum ints (TensorInfo.dtype), tf.DType, or numpy dtypes.
  * Numbers follow TF Serving's code, which is stricter than the contract's wording:
    a float input rejects finite numbers beyond float range and integers above 2**24-1
    ('Cannot convert JSON value: 16777217 to float without loss of precision.').
  * Output maps, and several inputs, are walked in sorted alias order (TF Serving walks a
    protobuf map, whose order is unspecified).
  * Non-UTF-8 bytes in DT_STRING outputs (not `_bytes`) become U+FFFD; TF Serving copies
    them raw, which makes its body invalid JSON.
  * Echoed request values in messages are cut after 64 KiB (TF Serving echoes all).
  * A feature name that is not valid UTF-8 is left out of the Example (see _json_example).
  * Python's parser refuses documents nested deeper than ~900 levels; tensors are limited
    to rank 32 (numpy's limit: 'Tensor of rank 33 is not supported: at most 32
    dimensions ...'). Both give INVALID_ARGUMENT, never RecursionError.
  * Long arrays of plain numbers are decoded from their text by numpy (PackedArray, see
    _json_syntax), so a body costs about its size, not ~50 bytes per number.
  * Accepted by rapidjson but refused here: the literals `Inf`, `-Inf`, `-NaN`.
  * Numbers too big for a double are reported (as rapidjson's parse error) when a tensor
    or feature uses them, not when they sit in an ignored key. Duplicate keys: last wins.
"""
from estimator_export._saved_model import DEFAULT_SIGNATURE
from estimator_export.serving._json_example import parse_classify_regress_request
from estimator_export.serving._json_request import parse_json_body
from estimator_export.serving._json_request import parse_predict_request
from estimator_export.serving._json_request import peek_signature_name
from estimator_export.serving._json_response import format_classify_response
from estimator_export.serving._json_response import format_error
from estimator_export.serving._json_response import format_predict_response
from estimator_export.serving._json_response import format_regress_response
from estimator_export.serving._json_text import COLUMNAR
from estimator_export.serving._json_text import MAX_ECHO_CHARS
from estimator_export.serving._json_text import MAX_TENSOR_RANK
from estimator_export.serving._json_text import ROW
from estimator_export.serving._json_text import CodecError

__all__ = [
    'CodecError', 'ROW', 'COLUMNAR', 'DEFAULT_SIGNATURE', 'MAX_ECHO_CHARS', 'MAX_TENSOR_RANK',
    'parse_json_body', 'peek_signature_name', 'parse_predict_request',
    'parse_classify_regress_request', 'format_predict_response', 'format_classify_response',
    'format_regress_response', 'format_error',
]
