"""Tests for serving.json_codec: TF Serving 2.15's REST JSON rules, messages and layout."""
import json
import math
import random

import grpc
import numpy as np
import pytest
import tensorflow as tf

from estimator_export.serving import _json_request
from estimator_export.serving import _json_response
from estimator_export.serving import _json_syntax
from estimator_export.serving import _json_text
from estimator_export.serving import json_codec
from estimator_export.serving.json_codec import CodecError

INVALID, UNIMPLEMENTED = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.UNIMPLEMENTED
FLOAT, DOUBLE, INT32, UINT8, INT8, STRING, INT64, BOOL, UINT32, UINT64, HALF = (
    1, 2, 3, 4, 6, 7, 9, 10, 22, 23, 19)


def body(obj) -> bytes:
  return json.dumps(obj).encode()


def predict(raw, inputs=None):
  """Parses a predict body against {alias: dtype} (default: half_plus_two's x: float)."""
  obj = json_codec.parse_json_body(raw if isinstance(raw, bytes) else body(raw))
  return json_codec.parse_predict_request(obj, {'x': FLOAT} if inputs is None else inputs)


def error_of(fn, *args) -> CodecError:
  with pytest.raises(CodecError) as info:
    fn(*args)
  return info.value


def message(fn, *args) -> str:
  error = error_of(fn, *args)
  assert error.code == INVALID
  return error.message


def parse_example(serialized: bytes, features) -> dict:
  return {k: v.numpy() for k, v in tf.io.parse_example([serialized], features).items()}


class TestParseJsonBody:

  def test_empty_body(self):
    assert message(json_codec.parse_json_body, b'') == (
        'JSON Parse error: The document is empty')

  @pytest.mark.parametrize('raw, expected', [
      (b'   ', 'The document is empty. at offset: 3'),
      (b'garbage', 'Invalid value. at offset: 0'),
      (b'{"instances": [1.0,]}', 'Invalid value. at offset: 19'),
      (b'{"instances" [1]}', 'Missing a colon after a name of object member. at offset: 13'),
      (b'{"a": 1 "b": 2}', "Missing a comma or '}' after an object member. at offset: 8"),
      (b'{"a": [1 2]}', "Missing a comma or ']' after an array element. at offset: 9"),
      (b'{"a": 1}}', 'The document root must not be followed by other values. at offset: 8'),
      (b'{a: 1}', 'Missing a name for object member. at offset: 1'),
      (b'{"a": "\\q"}', 'Invalid escape character in string. at offset: 7'),
      (b'{"a": "\\u12G4"}', 'Incorrect hex digit after \\u escape in string. at offset: 7'),
      (b'{"a": "\\ud800x"}', 'The surrogate pair in string is invalid. at offset: 7'),
      (b'{"a": "abc', 'Missing a closing quotation mark in string. at offset: 10'),
      (b'{"a": "a\x01"}', 'Invalid encoding in string. at offset: 8'),
      (b'{"a": 1.}', 'Miss fraction part in number. at offset: 8'),
      (b'{"a": 1e+}', 'Miss exponent in number. at offset: 9'),
      (b'{"a": -}', 'Invalid value. at offset: 7'),
      (b'{"a": tru}', 'Invalid value. at offset: 9'),
      (b'{"a": 01}', "Missing a comma or '}' after an object member. at offset: 7"),
      (b'\xef\xbb\xbf', 'The document is empty. at offset: 3'),
  ])
  def test_syntax_errors_carry_rapidjson_message_and_byte_offset(self, raw, expected):
    assert message(json_codec.parse_json_body, raw) == 'JSON Parse error: ' + expected

  @pytest.mark.parametrize('raw, expected', [
      (b'[1, 2]', 'JSON Value: [\n    1,\n    2\n] Is not object'),
      (b'5', 'JSON Value: 5 Is not object'),
      (b'1.5', 'JSON Value: 1.5 Is not object'),
      (b'"s"', 'JSON Value: "s" Is not object'),
      (b'null', 'JSON Value: null Is not object'),
      (b'[]', 'JSON Value: [] Is not object'),
  ])
  def test_top_level_must_be_an_object(self, raw, expected):
    assert message(json_codec.parse_json_body, raw) == expected

  def test_accepts_nan_and_infinity(self):
    _, inputs, _ = predict(b'{"instances": [NaN, Infinity, -Infinity, 1]}')
    x = inputs['x']
    assert math.isnan(x[0]) and x[1] == np.inf and x[2] == -np.inf and x[3] == 1

  def test_number_too_big_for_a_double_is_a_parse_error(self):
    assert message(predict, b'{"instances": [1e400]}') == (
        'JSON Parse error: Number too big to be stored in double. at offset: 15')

  def test_bom_and_trailing_nul_are_ignored_like_rapidjson(self):
    assert predict(b'\xef\xbb\xbf{"instances": [1]}')[1]['x'].tolist() == [1.0]
    assert predict(b'{"instances": [1]}\x00trailing junk')[1]['x'].tolist() == [1.0]

  def test_unvalidated_utf8_in_strings_is_kept_as_bytes(self):
    _, inputs, _ = predict(b'{"instances": ["\xff\xfe", "caf\xc3\xa9"]}', {'s': STRING})
    assert inputs['s'].tolist() == [b'\xff\xfe', 'café'.encode()]

  def test_absurd_nesting_is_refused_not_a_recursion_error(self):
    error = error_of(json_codec.parse_json_body, b'[' * 100000 + b']' * 100000)
    assert error.code == INVALID and 'too deeply' in error.message
    deep = b'{"instances": ' + b'[' * 40 + b'1' + b']' * 40 + b'}'
    assert message(predict, deep) == (
        "Tensor of rank 40 is not supported: at most 32 dimensions (numpy's limit). Fix: "
        'send the tensor with fewer dimensions')


class TestSignatureName:

  def test_absent_or_empty_means_serving_default(self):
    assert json_codec.peek_signature_name(json_codec.parse_json_body(b'{}')) == (
        'serving_default')
    obj = json_codec.parse_json_body(b'{"signature_name": ""}')
    assert json_codec.peek_signature_name(obj) == 'serving_default'
    obj = json_codec.parse_json_body(b'{"signature_name": "sig", "instances": [1]}')
    assert json_codec.peek_signature_name(obj) == 'sig'
    assert predict(obj)[0] == 'sig'

  def test_must_be_a_string(self):
    obj = json_codec.parse_json_body(b'{"signature_name": 5, "instances": [1]}')
    assert message(json_codec.peek_signature_name, obj) == (
        'JSON Value: {\n    "signature_name": 5,\n    "instances": [\n        1\n    ]\n} '
        "not formatted correctly. 'signature_name' key must be a string value.")
    assert 'must be a string value' in message(predict, obj)


class TestPredictRequest:

  def test_half_plus_two_row(self):
    name, inputs, fmt = predict({'instances': [1.0, 2.0, 5.0]})
    assert (name, fmt) == ('serving_default', 'row')
    assert inputs['x'].dtype == np.float32 and inputs['x'].tolist() == [1.0, 2.0, 5.0]

  def test_two_versions_matrix_and_columnar(self):
    assert predict({'instances': [[1.0, 2.0], [3.0, 4.0]]})[1]['x'].shape == (2, 2)
    name, inputs, fmt = predict({'signature_name': 'serving_default', 'inputs': [3.0, 4.0]})
    assert (name, fmt, inputs['x'].tolist()) == ('serving_default', 'columnar', [3.0, 4.0])
    matrix = [[[1, 2, 3], [4, 5, 6], [7, 8, 9]]]
    assert predict({'instances': matrix})[1]['x'].shape == (1, 3, 3)

  def test_both_keys(self):
    assert message(predict, {'instances': [1], 'inputs': [1]}) == (
        'JSON Value: {\n    "instances": [\n        1\n    ],\n    "inputs": [\n        1\n'
        "    ]\n} Not formatted correctly expecting only one of 'inputs' or 'instances' "
        'keys to exist ')

  @pytest.mark.parametrize('request_body, expected', [
      ({}, "Missing 'inputs' or 'instances' key"),
      ({'instances': 5}, "JSON Value: {\n    \"instances\": 5\n} Excepting 'instances' to be "
       'an list/array'),
      ({'instances': []}, "JSON Value: {\n    \"instances\": []\n} No values in 'instances' "
       'array'),
      ({'instances': ['a']}, "Failed to process element: 0 of 'instances' list. Error: "
       'INVALID_ARGUMENT: JSON Value: "a" Type: String is not of expected type: float'),
      ({'inputs': ['a']}, 'JSON Value: "a" Type: String is not of expected type: float'),
      ({'instances': [[1, 2], [1]]}, "Failed to process element: 1 of 'instances' list. "
       'Error: INVALID_ARGUMENT: Expecting tensor size: 2 but got: 1'),
      ({'instances': [[1, 2], [[1, 2]]]}, "Failed to process element: 1 of 'instances' "
       'list. Error: INVALID_ARGUMENT: Expecting shape [2] but got: [1,2]'),
      ({'inputs': [[1, 2], [1]]}, 'Encountered list at unexpected size: 1 at level: 1 '
       'expected size: 2'),
      ({'inputs': [[1, 2], 3]}, 'JSON Value: 3 found at incorrect level: 2 in the JSON DOM. '
       'Expected at level: 2'),
      ({'inputs': [1, [2]]}, 'Encountered list at unexpected level: 1 expected < 1'),
      ({'inputs': {'y': [1]}}, "Missing named input: x in 'inputs' object."),
      ({'instances': [{'x': 1}, [1]]}, 'Expecting object but got list at item 1 of input list'),
      ({'instances': [1, {'x': 1}]}, 'Expecting value/list but got object at item 1 of input '
       'list'),
      ({'inputs': [16777217]}, 'Cannot convert JSON value: 16777217 to float without loss of '
       'precision.'),
      ({'inputs': [1e39]}, 'Cannot convert JSON value: 1e+39 to float without loss of '
       'precision.'),
  ])
  def test_single_input_messages(self, request_body, expected):
    assert message(predict, request_body) == expected

  @pytest.mark.parametrize('request_body, expected', [
      ({'instances': [{'a': 1}]}, "Failed to process element: 0 of 'instances' list. "
       'JSON object: {\n    "a": 1\n} keys must be equal to: a,b'),
      ({'instances': [{'a': 1, 'b': 2, 'z': 3}]}, "Failed to process element: 0 key: z of "
       "'instances' list. Error: INVALID_ARGUMENT: JSON object: does not have named input: z"),
      ({'instances': [1, 2]}, 'instances is a plain list, but expecting list of objects as '
       'multiple input tensors required as per tensorinfo_map'),
      ({'inputs': [1, 2]}, 'inputs is a plain value/list, but expecting an object as multiple '
       'input tensors required as per tensorinfo_map'),
      ({'inputs': {'a': [1]}}, "Missing named input: b in 'inputs' object."),
  ])
  def test_several_inputs_messages(self, request_body, expected):
    assert message(predict, request_body, {'a': FLOAT, 'b': INT32}) == expected

  def test_several_inputs_row_and_columnar(self):
    inputs = {'a': FLOAT, 'b': STRING}
    _, arrays, fmt = predict({'instances': [{'a': [1, 2], 'b': 'p'},
                                            {'b': {'b64': 'cQ=='}, 'a': [3, 4]}]}, inputs)
    assert fmt == 'row' and arrays['a'].tolist() == [[1, 2], [3, 4]]
    assert arrays['b'].tolist() == [b'p', b'q']
    _, arrays, fmt = predict({'inputs': {'a': 1.5, 'b': ['x'], 'extra': 0}}, inputs)
    assert fmt == 'columnar' and arrays['a'].shape == () and arrays['b'].tolist() == [b'x']

  @pytest.mark.parametrize('dtype, values, expected', [
      (DOUBLE, [1, 2.5, 1e39], np.array([1, 2.5, 1e39])),
      (INT32, [-2**31, 2**31 - 1], np.array([-2**31, 2**31 - 1], np.int32)),
      (UINT8, [1, 255, 256], np.array([1, 255, 0], np.uint8)),  # C cast of int_val
      (INT8, [-128, 200], np.array([-128, -56], np.int8)),
      (INT64, [2**63 - 1, -2**63], np.array([2**63 - 1, -2**63], np.int64)),
      (UINT32, [0, 2**32 - 1], np.array([0, 2**32 - 1], np.uint32)),
      (UINT64, [2**64 - 1, 0], np.array([2**64 - 1, 0], np.uint64)),
      (BOOL, [True, False], np.array([True, False])),
      (STRING, ['a', {'b64': 'aGVsbG8='}], np.array([b'a', b'hello'], object)),
  ])
  def test_dtype_conversions(self, dtype, values, expected):
    array = predict({'inputs': values}, {'v': dtype})[1]['v']
    assert array.dtype == expected.dtype and array.tolist() == expected.tolist()

  @pytest.mark.parametrize('dtype, value, expected', [
      (INT32, 1.0, 'JSON Value: 1.0 Type: Number is not of expected type: int32'),
      (INT32, 2**31, 'JSON Value: 2147483648 Type: Number is not of expected type: int32'),
      (INT64, True, 'JSON Value: true Type: True is not of expected type: int64'),
      (UINT32, -1, 'JSON Value: -1 Type: Number is not of expected type: uint32'),
      (UINT64, 2**64, 'JSON Value: 1.84467441e+19 Type: Number is not of expected type: uint64'),
      (BOOL, 1, 'JSON Value: 1 Type: Number is not of expected type: bool'),
      (FLOAT, None, 'JSON Value: null Type: Null is not of expected type: float'),
      (FLOAT, {'b64': 'AA=='}, 'JSON Value: {\n    "b64": "AA=="\n} Type: Object is not of '
       'expected type: float'),
      (STRING, 1, 'JSON Value: 1 Type: Number is not of expected type: string'),
      (STRING, {'b64': 1}, 'JSON Value: {\n    "b64": 1\n} not formatted correctly for base64 '
       'data'),
      (STRING, {'b64': 'a!=='}, 'Unable to base64 decode'),
  ])
  def test_wrong_values(self, dtype, value, expected):
    assert message(predict, {'inputs': [value]}, {'v': dtype}) == expected

  def test_base64_rules(self):
    decode = lambda text: predict({'inputs': {'b64': text}}, {'v': STRING})[1]['v'].item()
    assert decode('aGVsbG8=') == b'hello'
    assert decode('aGVsbG8') == b'hello'  # absl accepts missing padding
    assert decode('aGVs\nbG8=') == b'hello'  # and skips whitespace
    assert message(predict, {'inputs': {'b64': 'aGVsbG8=='}}, {'v': STRING}) == (
        'Unable to base64 decode')

  def test_unsupported_dtype_is_unimplemented(self):
    error = error_of(predict, {'inputs': [1.0]}, {'v': HALF})
    assert error.code == UNIMPLEMENTED
    assert error.message == 'Conversion of JSON Value: 1.0 to type: half'
    assert message(predict, {'instances': [1.0]}, {'v': HALF}) == (
        "Failed to process element: 0 of 'instances' list. Error: UNIMPLEMENTED: "
        'Conversion of JSON Value: 1.0 to type: half')

  def test_accepts_tf_and_numpy_dtypes(self):
    assert predict({'inputs': [1]}, {'v': tf.int64})[1]['v'].dtype == np.int64
    assert predict({'inputs': [1]}, {'v': np.float64})[1]['v'].dtype == np.float64
    assert predict({'inputs': ['a']}, {'v': tf.string})[1]['v'].dtype == object

  def test_empty_signature_inputs(self):
    assert message(predict, {'instances': [1]}, {}) == (
        'Failed to get input map for signature: DEFAULT')

  @pytest.mark.parametrize('seed', range(4))
  def test_fast_path_matches_exact_emulation(self, seed):
    rng = random.Random(seed)
    leaves = {FLOAT: lambda: rng.choice([rng.random(), rng.randint(-9, 9), 2**25]),
              INT32: lambda: rng.randint(-2**31, 2**31 - 1), BOOL: lambda: rng.random() < .5,
              STRING: lambda: rng.choice(['ab', {'b64': 'eHk='}]), UINT64: lambda: 2**64 - 1}

    def nested(shape, leaf):
      return leaf() if not shape else [nested(shape[1:], leaf) for _ in range(shape[0])]

    for _ in range(60):
      dtype = rng.choice(list(leaves))
      shape = [rng.randint(0, 3) for _ in range(rng.randint(0, 3))]
      value = nested(shape, leaves[dtype])
      try:
        exact_shape, exact_values = _json_request._fill_exact(value, dtype)
        exact = _json_request._to_array(exact_values, exact_shape, dtype)
      except CodecError as e:
        assert message(_json_request._tensor, value, dtype) == e.message
        continue
      fast = _json_request._fast_array(value, _json_request._dense_shape(value), dtype)
      for array in [a for a in (fast, _json_request._tensor(value, dtype)) if a is not None]:
        assert array.dtype == exact.dtype and array.shape == exact.shape
        assert array.tolist() == exact.tolist()


def text_of(array, fmt='row', name='y'):
  return json_codec.format_predict_response({name: array}, fmt)


class TestFloatFormat:

  @pytest.mark.parametrize('value, dtype, expected', [
      (3, np.float32, '3.0'), (9000000, np.float32, '9e+06'), (0.1, np.float32, '0.1'),
      (1 / 3, np.float32, '0.333333343'), (1 / 3, np.float64, '0.33333333333333331'),
      (999999, np.float32, '999999.0'), (0.0003, np.float32, '0.0003'),
      (3e-05, np.float32, '3e-05'), (555557.5, np.float32, '555557.5'),
      (1234567, np.float32, '1234567.0'), (-0.0, np.float32, '-0.0'),
      (0.2, np.float64, '0.2'), (1e100, np.float64, '1e+100'),
      (np.nan, np.float32, 'NaN'), (np.inf, np.float32, 'Infinity'),
      (-np.inf, np.float64, '-Infinity'),
  ])
  def test_write_decimal(self, value, dtype, expected):
    assert text_of(np.array([value], dtype)) == (
        '{\n    "predictions": [%s\n    ]\n}' % expected)

  def test_six_digit_precision_table_of_tf_serving(self):
    array = np.array([[9000000, 999999, 0.5], [0.0003, 0.00003, 555557.5]], np.float32)
    assert text_of(array, 'row') == (
        '{\n    "predictions": [[9e+06, 999999.0, 0.5], [0.0003, 3e-05, 555557.5]\n    ]\n}')

  @pytest.mark.filterwarnings('ignore::RuntimeWarning')  # building NaN / inf test data
  def test_vectorised_float32_matches_reference(self):
    rng = np.random.default_rng(7)
    values = np.concatenate([
        rng.standard_normal(20000), np.exp(rng.uniform(-100, 100, 20000)),
        rng.integers(-10**7, 10**7, 5000), np.round(rng.standard_normal(5000), 3),
        rng.integers(0, 2**32, 20000, dtype=np.uint64).astype(np.uint32).view(np.float32),
        10.0**np.arange(-45, 39), 9.0 * 10.0**np.arange(-45, 38), [0, -0.0, 16777216, 9999995,
                                                                  999999.5, 123456.5]]
    ).astype(np.float32)
    expected = [_json_text.decimal_text(float(v), False) for v in values]
    assert _json_response._float_strings(values, False) == expected

  def test_vectorised_float64_matches_reference(self):
    rng = np.random.default_rng(8)
    values = np.concatenate([rng.standard_normal(5000), np.exp(rng.uniform(-700, 700, 5000)),
                             np.round(rng.standard_normal(2000), 4), [1e16, 1e17, 0.1, 5e-324]])
    expected = [_json_text.decimal_text(float(v), True) for v in values]
    assert _json_response._float_strings(values, True) == expected


class TestPredictResponse:

  def test_half_plus_two_layout_is_rapidjson_pretty_writer(self):
    # The documented body {"predictions": [2.5, 3.0, 4.5]}, in TF Serving's exact layout.
    text = text_of(np.array([2.5, 3.0, 4.5], np.float32))
    assert text == '{\n    "predictions": [2.5, 3.0, 4.5\n    ]\n}'
    assert json.loads(text) == {'predictions': [2.5, 3.0, 4.5]}

  @pytest.mark.parametrize('array, fmt, expected', [
      (np.array([[2.5, 3.0], [3.5, 4.0]], np.float32), 'row',
       {'predictions': [[2.5, 3.0], [3.5, 4.0]]}),
      (np.array([3.5, 4.0], np.float32), 'columnar', {'outputs': [3.5, 4.0]}),
      (np.array([[[2.5, 3, 3.5], [4, 4.5, 5], [5.5, 6, 6.5]]], np.float32), 'row',
       {'predictions': [[[2.5, 3, 3.5], [4, 4.5, 5], [5.5, 6, 6.5]]]}),
      (np.array(7, np.int64), 'columnar', {'outputs': 7}),
      (np.array([[True], [False]]), 'row', {'predictions': [[True], [False]]}),
      (np.zeros((0, 2), np.float32), 'row', {'predictions': []}),
  ])
  def test_documented_pairs(self, array, fmt, expected):
    assert json.loads(text_of(array, fmt)) == expected

  def test_columnar_layout(self):
    assert text_of(np.array([[1, 2], [3, 4]], np.int32), 'columnar') == (
        '{\n    "outputs": [\n        [\n            1,\n            2\n        ],\n'
        '        [\n            3,\n            4\n        ]\n    ]\n}')

  def test_several_outputs_and_bytes(self):
    outputs = {'b_bytes': np.array([b'hi', b'\xff'], object), 'a': np.array([[1], [2]]),
               's': np.array(['t\u00e9', 'u'])}
    assert json_codec.format_predict_response(outputs, 'row') == (
        '{\n    "predictions": [\n        {\n            "a": [1],\n'
        '            "b_bytes": {\n                "b64": "aGk="\n            },\n'
        '            "s": "t\u00e9"\n        },\n        {\n            "a": [2],\n'
        '            "b_bytes": {\n                "b64": "/w=="\n            },\n'
        '            "s": "u"\n        }\n    ]\n}')
    assert json.loads(json_codec.format_predict_response(outputs, 'columnar')) == {
        'outputs': {'a': [[1], [2]], 'b_bytes': [{'b64': 'aGk='}, {'b64': '/w=='}],
                    's': ['t\u00e9', 'u']}}

  def test_invalid_utf8_strings_become_replacement_characters(self):
    text = text_of(np.array([b'ok\xff'], object), 'columnar')
    assert json.loads(text) == {'outputs': ['ok\ufffd']}

  @pytest.mark.parametrize('outputs, fmt, expected', [
      ({'a': np.zeros(2), 'b': np.zeros(3)}, 'row',
       'Tensor name: b has inconsistent batch size: 3 expecting: 2'),
      ({'a': np.zeros(2), 'b': np.array(1.0)}, 'row', 'Tensor name: b has no shape information '),
      ({}, 'row', 'Cannot convert empty tensor map to JSON'),
      ({'a': np.zeros(2, np.float16)}, 'row', 'Failed to write JSON value for tensor type: half'),
  ])
  def test_errors(self, outputs, fmt, expected):
    assert message(json_codec.format_predict_response, outputs, fmt) == expected

  def test_unsupported_dtype_with_nothing_to_write_is_fine(self):
    assert json.loads(text_of(np.zeros((0,), np.float16))) == {'predictions': []}


class TestClassifyRegressRequest:

  def parse(self, request_body, method='classify'):
    obj = json_codec.parse_json_body(body(request_body))
    return json_codec.parse_classify_regress_request(obj, method)

  def test_integral_json_number_is_int64_and_fails_a_float_parse(self):
    _, (int_example,) = self.parse({'examples': [{'x': 2}]})
    _, (float_example,) = self.parse({'examples': [{'x': 2.0}]}, 'regress')
    proto = tf.train.Example.FromString(int_example)
    assert list(proto.features.feature['x'].int64_list.value) == [2]
    spec = {'x': tf.io.FixedLenFeature([1], tf.float32)}
    assert parse_example(float_example, spec)['x'].tolist() == [[2.0]]
    with pytest.raises(tf.errors.InvalidArgumentError, match="Data types don't match"):
      parse_example(int_example, spec)

  def test_feature_mapping(self):
    name, (example,) = self.parse({
        'signature_name': 'classify_x_to_y',
        'examples': [{'s': 'a', 'b': {'b64': 'aGk='}, 'f': [1.5, NAN], 'i': [1, -7, True, False],
                      'e': 1e3, 'empty': []}]})
    assert name == 'classify_x_to_y'
    feature = tf.train.Example.FromString(example).features.feature
    assert feature['s'].bytes_list.value == [b'a'] and feature['b'].bytes_list.value == [b'hi']
    assert feature['f'].float_list.value[0] == 1.5 and math.isnan(feature['f'].float_list.value[1])
    assert list(feature['i'].int64_list.value) == [1, -7, 1, 0]
    assert list(feature['e'].float_list.value) == [1000.0]
    assert feature['empty'].WhichOneof('kind') is None

  def test_context_bytes_come_first_and_the_example_wins(self):
    _, examples = self.parse({'context': {'x': 1.0, 'c': 'q'},
                              'examples': [{'x': 2.0}, {'y': 3}]})
    spec = {'x': tf.io.FixedLenFeature([1], tf.float32, default_value=[0.0]),
            'c': tf.io.FixedLenFeature([1], tf.string)}
    assert parse_example(examples[0], spec) == {'x': [[2.0]], 'c': [[b'q']]}
    assert parse_example(examples[1], spec)['x'].tolist() == [[1.0]]

  def test_regress_documented_request(self):
    obj = json_codec.parse_json_body(b'{"signature_name": "tensorflow/serving/regress", '
                                     b'"examples": [{"x": 1.0}, {"x": 2.0}]}')
    name, examples = json_codec.parse_classify_regress_request(obj, 'regress')
    assert name == 'tensorflow/serving/regress' and len(examples) == 2
    spec = {'x': tf.io.FixedLenFeature([1], tf.float32)}
    assert [parse_example(e, spec)['x'].item() for e in examples] == [1.0, 2.0]

  @pytest.mark.parametrize('method', ['classify', 'regress'])
  def test_missing_examples_says_classify_for_both(self, method):
    assert message(self.parse, {'context': {}}, method) == (
        'JSON Value: {\n    "context": {}\n} When method is classify, key \'examples\' is '
        'expected and was not found')

  @pytest.mark.parametrize('request_body, expected', [
      ({'examples': {'x': 1}}, "Expecting 'examples' value to be an list/array"),
      ({'examples': []}, "'examples' value is an empty array"),
      ({'examples': [[{'x': 1}]]}, 'Example must be JSON object but got JSON Array'),
      ({'context': [1], 'examples': [{}]}, 'Example must be JSON object but got JSON Array'),
      ({'examples': [{'names': [10, None]}]},
       'Feature: names has element with unexpected JSON type: Null'),
      ({'examples': [{'names': [10, 10.0]}]},
       'Unexpected element type in feature: names expecting type: int64'),
      ({'examples': [{'names': [10, {'test': 10}]}]},
       'Feature: names has element with unexpected JSON type: Object'),
      ({'examples': [{'names': [[10], 20]}]},
       'Feature: names has element with unexpected JSON type: Array'),
      ({'examples': [{'names': [20, 18446744073709551603]}]},
       'Feature: names has uint64 element. Only int64 is supported.'),
      ({'examples': [{'names': 1e39}]},
       'Cannot convert JSON value: 1e+39 to float without loss of precision.'),
      ({'signature_name': ['hello'], 'examples': [{}]},
       "'signature_name' key must be a string value."),
  ])
  def test_messages(self, request_body, expected):
    assert message(self.parse, request_body).endswith(expected)


  def test_examples_serialize_as_deterministic_tf_examples(self):
    _, (first,) = self.parse({'examples': [{'b': [1.5, 2.25], 'a': [1, -2], 's': 'x'}]})
    _, (second,) = self.parse({'examples': [{'s': 'x', 'a': [1, -2], 'b': [1.5, 2.25]}]})
    expected = tf.train.Example()
    expected.features.feature['a'].int64_list.value.extend([1, -2])
    expected.features.feature['b'].float_list.value.extend([1.5, 2.25])
    expected.features.feature['s'].bytes_list.value.append(b'x')
    assert first == second == expected.SerializeToString(deterministic=True)
    assert self.parse({'examples': [{}]})[1] == [b'']

  def test_a_feature_name_that_is_not_utf8_is_left_out(self):
    obj = json_codec.parse_json_body(b'{"examples": [{"\xff": [1], "x": [2.0]}]}')
    _, (example,) = json_codec.parse_classify_regress_request(obj, 'regress')
    assert list(tf.train.Example.FromString(example).features.feature) == ['x']
    obj = json_codec.parse_json_body(b'{"examples": [{"\xff": [null]}]}')
    assert message(json_codec.parse_classify_regress_request, obj, 'regress').endswith(
        'has element with unexpected JSON type: Null')


def test_caller_mistakes_are_codec_errors_naming_the_value_and_the_fix():
  obj = json_codec.parse_json_body(b'{"examples": [{}]}')
  for call, args in ((json_codec.parse_classify_regress_request, (obj, 'predict')),
                     (json_codec.format_classify_response, (None, None)),
                     (json_codec.parse_predict_request, (obj, {'x': np.dtype('M8[s]')}))):
    error = error_of(call, *args)
    assert error.code == grpc.StatusCode.INTERNAL and 'got ' in error.message
    assert 'Fix: ' in error.message


NAN = float('nan')


class TestClassifyRegressResponse:

  def test_scores_only(self):
    text = json_codec.format_classify_response(None, np.array([[12.0]], np.float32))
    assert text == '{\n    "results": [[["", 12.0]]\n    ]\n}'
    assert json.loads(text) == {'results': [[['', 12.0]]]}

  def test_classes_and_scores(self):
    classes = np.array([[b'car', b'bike'], [b'bus', b'car']], object)
    scores = np.array([[0.2, 0.7], [0.1, 0.25]], np.float32)
    assert json.loads(json_codec.format_classify_response(classes, scores)) == {
        'results': [[['car', 0.2], ['bike', 0.7]], [['bus', 0.1], ['car', 0.25]]]}
    assert json.loads(json_codec.format_classify_response(classes, None)) == {
        'results': [[['car', 0.0], ['bike', 0.0]], [['bus', 0.0], ['car', 0.0]]]}

  def test_regress(self):
    assert json_codec.format_regress_response(np.array([[42.0]], np.float32)) == (
        '{\n    "results": [42.0]\n}')
    assert json.loads(json_codec.format_regress_response(np.array([3.5, 4.0]))) == {
        'results': [3.5, 4.0]}

  def test_errors(self):
    assert message(json_codec.format_regress_response, np.zeros((2, 2))).startswith(
        'Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got')
    assert message(json_codec.format_regress_response, np.zeros(0)) == (
        'Cannot convert empty RegressionResults to JSON')
    assert message(json_codec.format_classify_response, None, np.zeros((0, 2))) == (
        'Cannot convert empty ClassificationResults to JSON')


class TestFormatError:

  def test_escapes_like_rapidjson(self):
    text = json_codec.format_error('Bad key: "key"\n\t\\ \x01 caf\u00e9 \ud800')
    assert text == ('{\n    "error": "Bad key: \\"key\\"\\n\\t\\\\ \\u0001 caf\u00e9 '
                    '\ufffd"\n}')
    assert json.loads(text)['error'].startswith('Bad key: "key"')
    text.encode('utf-8')  # always encodable: the REST layer sends it as UTF-8


def random_json(rng: random.Random, depth: int = 0):
  """A random JSON-able value that leans towards tensor and example shapes."""
  kind = rng.random()
  if depth > 4 or kind < 0.35:
    return rng.choice([rng.randint(-5, 5), rng.random() * 10, 2**70, -2**64, 1e39, True,
                       None, 'a', '\u00e9', {'b64': rng.choice(['aGk=', 'x!'])}, NAN])
  if kind < 0.75:
    return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
  return {rng.choice(['x', 'a', 'b', 'b64', 'instances', 'inputs', 'examples', 'context',
                      'signature_name']): random_json(rng, depth + 1)
          for _ in range(rng.randint(0, 3))}


def regular_tensor(rng: random.Random):
  shape = [rng.randint(1, 3) for _ in range(rng.randint(0, 2))]
  leaf = rng.choice([lambda: rng.random(), lambda: rng.randint(-3, 3), lambda: 'ab',
                     lambda: {'b64': 'aGk='}, lambda: rng.random() < 0.5])

  def build(dims):
    return leaf() if not dims else [build(dims[1:]) for _ in range(dims[0])]
  return build(shape)


def random_body(rng: random.Random) -> bytes:
  top = {}
  if rng.random() < 0.4:  # mostly well-formed requests, so success paths run too
    choice = rng.randrange(3)
    if choice == 0:
      top['instances'] = [regular_tensor(rng)] * rng.randint(1, 3)
    elif choice == 1:
      top['inputs'] = rng.choice([regular_tensor(rng), {'a': regular_tensor(rng),
                                                        'b': regular_tensor(rng)}])
    else:
      top['examples'] = [{'x': rng.choice([1.5, [1, 2], 'q', True])}]
  for key in rng.sample(['instances', 'inputs', 'examples', 'context', 'signature_name'],
                        rng.randint(0, 2)):
    top[key] = random_json(rng, 1)
  raw = json.dumps(top if rng.random() < 0.9 else random_json(rng)).encode()
  mutation = rng.random()
  if mutation < 0.3:  # flip, drop or insert a few bytes
    data = bytearray(raw)
    for _ in range(rng.randint(1, 3)):
      i = rng.randrange(len(data) + 1)
      choice = rng.random()
      if choice < 0.4 and i < len(data):
        data[i] = rng.randrange(256)
      elif choice < 0.7 and i < len(data):
        del data[i]
      else:
        data[i:i] = rng.choice([b'[', b']', b'{', b',', b'"', b'\\', b'\\u', b'1e999', b'\0',
                                b'NaN', b'\xff', b'-', b'.', b'tru'])
    raw = bytes(data)
  elif mutation < 0.4:
    raw = raw[:rng.randrange(len(raw) + 1)]
  return raw


def test_fuzzed_bodies_only_raise_codec_errors():
  """2000 random and malformed bodies through every parse entry point."""
  rng = random.Random(20251122)
  signatures = [{'x': FLOAT}, {'x': STRING}, {'a': INT32, 'b': BOOL}, {'x': HALF},
                {'x': UINT64}, {'a': DOUBLE, 'b': STRING, 'x': INT8}, {'x': BOOL},
                {'a': FLOAT, 'b': FLOAT}]
  outcomes = {'ok': 0, 'error': 0}
  for _ in range(2000):
    raw = random_body(rng)
    try:
      obj = json_codec.parse_json_body(raw)
      json_codec.peek_signature_name(obj)
    except CodecError:
      outcomes['error'] += 1
      continue
    for call in (lambda: json_codec.parse_predict_request(obj, rng.choice(signatures)),
                 lambda: json_codec.parse_classify_regress_request(obj, 'regress')):
      try:
        call()
        outcomes['ok'] += 1
      except CodecError as e:
        assert e.code in (INVALID, UNIMPLEMENTED) and e.message
        json_codec.format_error(e.message).encode('utf-8')
        outcomes['error'] += 1
  assert outcomes['ok'] > 100 and outcomes['error'] > 500, outcomes


@pytest.mark.filterwarnings('ignore:overflow encountered in cast:RuntimeWarning')
def test_fuzzed_outputs_format_or_raise_codec_errors():
  rng = np.random.default_rng(3)
  dtypes = [np.float32, np.float64, np.int32, np.int64, np.uint8, np.bool_, object, np.float16]
  for _ in range(200):
    outputs = {}
    for alias in rng.choice(['y', 'z_bytes', 'w'], size=rng.integers(1, 4), replace=False):
      shape = tuple(rng.integers(0, 3, size=rng.integers(0, 4)))
      dtype = dtypes[rng.integers(len(dtypes))]
      values = rng.standard_normal(shape) * 10.0**rng.integers(-5, 8)
      outputs[str(alias)] = (values.astype(str).astype(object) if dtype is object
                             else values.astype(dtype))
    for fmt in ('row', 'columnar'):
      try:
        text = json_codec.format_predict_response(outputs, fmt)
      except CodecError as e:
        assert e.code == INVALID
        continue
      parsed = json.loads(text)  # always valid JSON (NaN / Infinity tokens aside)
      assert list(parsed) == ['predictions' if fmt == 'row' else 'outputs']


# ----------------------------------------------------------------------------------------
# Long numeric arrays are packed as text (memory); the results and messages must not change.
def _outcome(raw, inputs, method=None):
  """(('ok', name, {alias: (dtype, shape, bytes)}, fmt) or ('error', code, message))."""
  try:
    obj = json_codec.parse_json_body(raw)
    if method:
      return ('ok',) + json_codec.parse_classify_regress_request(obj, method)
    name, arrays, fmt = json_codec.parse_predict_request(obj, inputs)
  except CodecError as e:
    return ('error', e.code, e.message)
  return ('ok', name, {k: (v.dtype, v.shape, v.tobytes() if v.dtype != object else v.tolist())
                       for k, v in arrays.items()}, fmt)


def _packed_and_plain(monkeypatch, raw, inputs, method=None):
  monkeypatch.setattr(_json_syntax, 'PACK_MIN_BYTES', 10**12)
  plain = _outcome(raw, inputs, method)
  monkeypatch.setattr(_json_syntax, 'PACK_MIN_BYTES', 1)
  _, packs = _json_syntax.pack_numeric_arrays(raw)
  return _outcome(raw, inputs, method), plain, packs


_PACK_BODIES = [
    b'{"instances": [1.0, 2.5, -3, 0, -0, -0.0, 1e3, 2E-2, 16777215, -16777215]}',
    b'{"instances": [16777216]}', b'{"instances": [16777217]}', b'{"instances": [1e400]}',
    b'{"instances": [3.5e38]}', b'{"instances": [-0]}', b'{"instances": [1, 2.0, 3e0]}',
    b'{"instances": [[1, 2], [3, 4]]}', b'{"instances": [[1, 2], [3]]}',
    b'{"instances": [[[1], [2]], [[3], [4]]]}', b'{"inputs": {"x": [[1.5, 2], [3, 4]]}}',
    b'{"inputs": [[1, 2] , [ 3 , 4 ]]}', b'{"inputs": [1 2]}', b'{"inputs": [01]}',
    b'{"inputs": [1.]}', b'{"inputs": [.5]}', b'{"inputs": [+1]}', b'{"inputs": [1e]}',
    b'{"inputs": [1,,2]}', b'{"inputs": [1,2,]}', b'{"inputs": [-]}', b'{"inputs": [1e5.5]}',
    b'{"inputs": [1, 2], "instances": [3, 4]}', b'{"signature_name": [1, 2], "inputs": [1]}',
    b'[1, 2, 3]', b'{"inputs": [[1, 2]]]}', b'{"inputs": "x[1,2]", "y": [1, 2]}',
    b'{"inputs": {"x": [1, 2], [3, 4]: 5}}', b'{"instances": [{"x": [1, 2]}, {"x": [3, 4]}]}',
    b'{"instances": [["a", [1, 2]], [3]]}', b'{"inputs": {"x": ["a", [1, 2]]}}',
    b'{"instances": ' + b'[' * 32 + b'1' + b']' * 32 + b'}',
    b'{"inputs": ' + b'[' * 33 + b'1, 2' + b']' * 33 + b'}',
    b'{"instances": [1, 2], "x": ' + b'1' * 400 + b'}',
]


@pytest.mark.parametrize('dtype', [FLOAT, DOUBLE, INT32, INT8, UINT8, INT64, UINT64, BOOL,
                                   STRING, HALF])
def test_packed_arrays_decode_exactly_as_json_does(monkeypatch, dtype):
  packed_any = 0
  for raw in _PACK_BODIES:
    packed, plain, packs = _packed_and_plain(monkeypatch, raw, {'x': dtype})
    assert packed == plain, raw
    packed_any += bool(packs)
  assert packed_any > 15


def test_packed_arrays_in_examples_and_echoes(monkeypatch):
  for raw in [b'{"examples": [{"x": [1, 2.5]}, {"x": [3e1]}]}', b'{"examples": [1, 2]}',
              b'{"context": [1, 2], "examples": [{"x": 1}]}',
              b'{"examples": [{"x": [[1, 2], [3, 4]]}]}']:
    packed, plain, packs = _packed_and_plain(monkeypatch, raw, None, 'regress')
    assert packs and packed == plain, raw
  big = (b'{"instances": [' + b', '.join(b'%d.25' % i for i in range(40000)) + b'], '
         b'"inputs": 1}')
  packed, plain, packs = _packed_and_plain(monkeypatch, big, {'x': FLOAT})
  assert packs and packed == plain and '3919.25...' in packed[2]  # echo cut at 64 KiB


def test_random_numeric_bodies_decode_exactly_as_json_does(monkeypatch):
  rng = random.Random(11)
  tokens = ['0', '-0', '1', '-7', '16777215', '16777216', '9007199254740993', '1.5', '-0.0',
            '2.5e3', '1E-400', '1e400', '3.4028236e38', '0.1', '123456789012345678901234567890',
            '01', '1.', '.5', '+1', '1e', '--1', '1e+5', '-1.25E-3']
  for _ in range(300):
    shape = [rng.randint(1, 3) for _ in range(rng.randint(1, 3))]
    count = int(np.prod(shape))
    flat = [rng.choice(tokens[:15] if rng.random() < 0.9 else tokens) for _ in range(count)]

    def nest(values, dims):
      if len(dims) == 1:
        return '[' + ', '.join(values) + ']'
      step = len(values) // dims[0]
      return '[' + ', '.join(nest(values[i:i + step], dims[1:])
                             for i in range(0, len(values), step)) + ']'

    key = rng.choice(['instances', 'inputs'])
    raw = f'{{"{key}": {nest(flat, shape)}}}'.encode()
    dtype = rng.choice([FLOAT, DOUBLE, INT32, INT64, UINT8, UINT64])
    packed, plain, _ = _packed_and_plain(monkeypatch, raw, {'x': dtype})
    assert packed == plain, raw


def _count_by_json(value):
  if isinstance(value, list):
    return sum(_count_by_json(v) for v in value)
  if isinstance(value, dict):
    return sum(_count_by_json(v) for v in value.values())
  return 1


def test_count_values_counts_the_scalars_json_finds():
  bodies = [b'{}', b'[]', b'1', b'"a"', b'{"a": [1, -2.5e3, true, null, "x,y:z"]}',
            b'{"k\\"": "\\\\", "n": ["\\\\\\"[1,2]", false, NaN, -Infinity]}',
            b'{"instances": [{"b64": "aGk="}, {"b64": ""}], "signature_name": ""}',
            b' [ 1 , [ 2 , 3 ] , { "a" : { "b" : 4 } } ] ']
  for raw in bodies:
    expected = _count_by_json(json.loads(raw))
    assert _json_syntax.count_values(raw) == expected, raw
  rng = random.Random(5)
  for _ in range(25):  # across the 4 MiB chunk border (escapes, strings and numbers)
    pieces = [rng.choice(['1', '"a\\\\"', '"b\\"c"', '"\\\\\\\\"', 'true', '-2.5', '"x:y"'])
              for _ in range(rng.randint(1, 50))]
    raw = ('[' + ' ' * rng.randint(0, 40) + ', '.join(pieces) + ']').encode()
    pad = _json_syntax._COUNT_CHUNK - rng.randint(0, len(raw))
    raw = b'[' + b' ' * pad + raw + b']'
    assert _json_syntax.count_values(raw) == _count_by_json(json.loads(raw)), raw[pad:]


def test_max_elements_refuses_a_body_before_decoding_it():
  raw = b'{"signature_name": "", "instances": [' + b', '.join([b'1.5'] * 1000) + b']}'
  assert json_codec.parse_json_body(raw, max_elements=1001)['instances'] is not None
  error = error_of(json_codec.parse_json_body, raw, 1000)
  assert error.code == INVALID and error.message == (
      'The request has 1001 values (numbers, strings, booleans, nulls), more than the limit '
      'of 1000 (--rest_api_max_elements). Fix: send fewer rows per request, or raise '
      '--rest_api_max_elements')
  examples = b'{"examples": [' + b', '.join([b'{"x": [1.0, "a"]}'] * 6) + b']}'
  assert 'has 12 values' in message(json_codec.parse_json_body, examples, 11)
  assert json_codec.parse_json_body(examples, max_elements=12)
