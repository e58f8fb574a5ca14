"""Predict, Classify, Regress, MultiInference, metadata and status, as TF Serving answers them.

Two layers: array-level calls (`predict_arrays`, `classify_examples`,
`regress_examples`) that the REST service uses after decoding JSON, and
proto-level calls taking the `tensorflow-serving-api` request messages that the
gRPC service (and warmup replay) use. Both go through the same checks, so the
two APIs fail alike, with TF Serving's codes and messages.

Every request is counted in the metrics. Names a client made up (a model
that is not configured, a signature the servable lacks) are counted under
UNKNOWN_LABEL, so clients cannot grow the metrics without bound. A request
running under an admission.RequestTicket (REST, gRPC) is checked right before
its model run: one whose deadline passed or whose client left never runs, and
is counted as DEADLINE_EXCEEDED / CANCELLED (also when the run had begun).
"""
import time
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf
from tensorflow.core.framework import types_pb2
from tensorflow_serving.apis import classification_pb2
from tensorflow_serving.apis import get_model_metadata_pb2
from tensorflow_serving.apis import get_model_status_pb2
from tensorflow_serving.apis import inference_pb2
from tensorflow_serving.apis import predict_pb2
from tensorflow_serving.apis import regression_pb2

from estimator_export._saved_model import CLASSIFY_METHOD, DEFAULT_SIGNATURE, REGRESS_METHOD
from estimator_export.serving import admission
from estimator_export.serving.manager import ModelManager
from estimator_export.serving.servable import Servable
from estimator_export.serving.status import Code, ServingError, invalid

CLASSIFY, REGRESS = 'classify', 'regress'
# The metric label of a model or signature name that names nothing served.
UNKNOWN_LABEL = '<unknown>'


def _join(names) -> str:
  return ','.join(sorted(names))


class InferenceService:
  """Answers requests against the servables of a ModelManager.

  Args:
    manager: the ModelManager.
    metrics: optional object with `observe(model, api, signature, seconds, ok)`.
    max_inflight_bytes: the in-flight budget REST and gRPC share
      (--max_inflight_request_bytes); 0: unlimited.
  """

  def __init__(self, manager: ModelManager, metrics=None, max_inflight_bytes: int = 0):
    self.manager = manager
    self.metrics = metrics
    self.budget = admission.InflightBudget(max_inflight_bytes)

  # ----- resolution -----
  def servable_for(self, model_spec, api: Optional[str] = None,
                   entrypoint: Optional[str] = None) -> Servable:
    """The servable a ModelSpec proto names (version or version_label).

    With `api`, a failure (unknown model, version or label) is counted in the
    metrics, as TF Serving counts every request.
    """
    started = time.perf_counter()
    try:
      if not model_spec.name:
        raise invalid('ModelSpec has no name specified.')
      which = model_spec.WhichOneof('version_choice')
      version = model_spec.version.value if which == 'version' else None
      label = model_spec.version_label if which == 'version_label' else None
      return self.manager.resolve(model_spec.name, version, label)
    except ServingError as e:
      if api:
        self.observe_failure(model_spec.name, api, None, e, entrypoint, started)
      raise

  def observe_failure(self, model_name: str, api: str, signature: Optional[str],
                      error: Exception, entrypoint: Optional[str] = None,
                      started: Optional[float] = None):
    """Counts a request that failed before a servable (or signature) was resolved.

    A model name that is not configured, and a signature name of None, are
    counted as UNKNOWN_LABEL.
    """
    if self.metrics is None:
      return
    if model_name not in self.manager.model_names():
      model_name = UNKNOWN_LABEL
    self._observe(model_name, api, signature or UNKNOWN_LABEL,
                  time.perf_counter() if started is None else started, error, entrypoint)

  def _observe(self, servable_name, api, signature, started, error, entrypoint=None):
    """Records one request; `error` is the exception it failed with, or None.

    A success whose client no longer waits (the bound ticket's deadline passed
    or it was cancelled) is recorded with that error instead.
    """
    ticket = admission.current_ticket()
    if error is None and ticket is not None:
      error = ticket.finish()
    if self.metrics is not None:
      code = getattr(error, 'code', Code.UNKNOWN) if error is not None else Code.OK
      self.metrics.observe(servable_name, api, signature, time.perf_counter() - started,
                           error is None, code=code, entrypoint=entrypoint)

  # ----- Predict -----
  def predict_arrays(self, servable: Servable, signature_name: str,
                     inputs: Mapping[str, np.ndarray], output_filter: Sequence[str] = (),
                     rest: bool = False) -> Tuple[str, Dict[str, np.ndarray]]:
    """Runs a Predict on numpy inputs; returns (signature name, outputs by alias)."""
    started = time.perf_counter()
    name = signature_name or DEFAULT_SIGNATURE
    error, label = None, name
    try:
      signature = servable.signature_defs.get(name)
      if signature is None:
        label = UNKNOWN_LABEL
        if rest:
          raise invalid(f'Serving signature name: "{name}" not found in signature def')
        raise ServingError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
      _check_inputs(signature, inputs)
      aliases = _output_aliases(signature, output_filter)
      return name, _run(servable, name, signature, dict(inputs), aliases, check_dtypes=True)
    except Exception as e:
      error = e
      raise
    finally:
      self._observe(servable.name, 'predict', label, started, error, 'REST' if rest else 'GRPC')

  def predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
    if not request.HasField('model_spec'):
      raise invalid('Missing ModelSpec')
    servable = self.servable_for(request.model_spec, 'predict', 'GRPC')
    inputs = {alias: _to_ndarray(alias, proto) for alias, proto in request.inputs.items()}
    name, outputs = self.predict_arrays(servable, request.model_spec.signature_name, inputs,
                                        list(request.output_filter))
    response = predict_pb2.PredictResponse()
    _fill_model_spec(response.model_spec, servable, name)
    for alias, value in outputs.items():
      response.outputs[alias].CopyFrom(tf.make_tensor_proto(value))
    return response

  # ----- Classify / Regress -----
  def classify_examples(self, servable: Servable, signature_name: str,
                        examples: Sequence[bytes], entrypoint: str = 'GRPC'
                       ) -> Tuple[str, Optional[np.ndarray], Optional[np.ndarray]]:
    """Returns (signature name, classes [n, k] bytes or None, scores [n, k] float or None)."""
    name, outputs = self._run_examples(servable, signature_name, examples, CLASSIFY,
                                       entrypoint)
    return name, outputs.get('classes'), outputs.get('scores')

  def regress_examples(self, servable: Servable, signature_name: str,
                       examples: Sequence[bytes], entrypoint: str = 'GRPC'
                      ) -> Tuple[str, np.ndarray]:
    """Returns (signature name, float values [n])."""
    name, outputs = self._run_examples(servable, signature_name, examples, REGRESS, entrypoint)
    return name, outputs['outputs']

  def _run_examples(self, servable, signature_name, examples, method, entrypoint):
    started = time.perf_counter()
    name = signature_name or DEFAULT_SIGNATURE
    error, label = None, name
    try:
      signature = servable.signature_defs.get(name)
      if signature is None:
        label = UNKNOWN_LABEL
        raise invalid(f'No signature was found with the name: {name}')
      check = _check_classify_signature if method == CLASSIFY else _check_regress_signature
      aliases = check(signature)
      if not examples:
        raise invalid('Input is empty.')
      batch = np.array(list(examples), dtype=object)
      outputs = _run(servable, name, signature, {'inputs': batch}, aliases, check_dtypes=False)
      post = _check_classify_outputs if method == CLASSIFY else _check_regress_outputs
      return name, post(outputs, len(examples))
    except Exception as e:
      error = e
      raise
    finally:
      self._observe(servable.name, method, label, started, error, entrypoint)

  def classify(self, request: classification_pb2.ClassificationRequest
              ) -> classification_pb2.ClassificationResponse:
    if not request.HasField('model_spec'):
      raise invalid('Missing ModelSpec')
    servable = self.servable_for(request.model_spec, CLASSIFY, 'GRPC')
    response = classification_pb2.ClassificationResponse()
    name, classes, scores = self.classify_examples(
        servable, request.model_spec.signature_name, serialize_input(request.input))
    _fill_model_spec(response.model_spec, servable, name)
    fill_classification_result(response.result, classes, scores)
    return response

  def regress(self, request: regression_pb2.RegressionRequest
             ) -> regression_pb2.RegressionResponse:
    if not request.HasField('model_spec'):
      raise invalid('Missing ModelSpec')
    servable = self.servable_for(request.model_spec, REGRESS, 'GRPC')
    response = regression_pb2.RegressionResponse()
    name, values = self.regress_examples(servable, request.model_spec.signature_name,
                                         serialize_input(request.input))
    _fill_model_spec(response.model_spec, servable, name)
    for value in values:
      response.result.regressions.add().value = float(value)
    return response

  def multi_inference(self, request: inference_pb2.MultiInferenceRequest
                     ) -> inference_pb2.MultiInferenceResponse:
    if not request.tasks:
      raise invalid('ModelSpec has no name specified.')
    model_name = request.tasks[0].model_spec.name
    seen = set()
    for task in request.tasks:
      if not task.model_spec.name:
        raise invalid('Found ModelSpec with an empty model name.')
      if task.model_spec.name != model_name:
        raise invalid('All ModelSpecs in a MultiInferenceRequest must access the same model '
                      'name.')
      key = task.model_spec.signature_name or DEFAULT_SIGNATURE
      if key in seen:
        raise invalid(f'Duplicate evaluation of signature: {key}')
      seen.add(key)
    servable = self.servable_for(request.tasks[0].model_spec)
    for task in request.tasks:
      key = task.model_spec.signature_name or DEFAULT_SIGNATURE
      if key not in servable.signature_defs:
        raise invalid(f'Requested signature not found in model graph: {key}')
      if task.method_name not in (CLASSIFY_METHOD, REGRESS_METHOD):
        raise ServingError(Code.UNIMPLEMENTED,
                           f'Unsupported signature method_name: {task.method_name}')
    examples = serialize_input(request.input)
    response = inference_pb2.MultiInferenceResponse()
    for task in request.tasks:
      result = response.results.add()
      if task.method_name == CLASSIFY_METHOD:
        name, classes, scores = self.classify_examples(
            servable, task.model_spec.signature_name, examples)
        fill_classification_result(result.classification_result, classes, scores)
      else:
        name, values = self.regress_examples(servable, task.model_spec.signature_name,
                                             examples)
        for value in values:
          result.regression_result.regressions.add().value = float(value)
      _fill_model_spec(result.model_spec, servable, name)
    return response

  # ----- metadata and status -----
  def get_model_metadata(self, request: get_model_metadata_pb2.GetModelMetadataRequest
                        ) -> get_model_metadata_pb2.GetModelMetadataResponse:
    if not request.HasField('model_spec'):
      raise invalid('Missing ModelSpec')
    if not request.metadata_field:
      raise invalid('GetModelMetadataRequest must specify at least one metadata_field')
    for field in request.metadata_field:
      if field != 'signature_def':
        raise invalid(f'Metadata field {field} is not supported')
    servable = self.servable_for(request.model_spec)
    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = servable.name
    response.model_spec.version.value = servable.version
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sig in servable.signature_defs.items():
      sig_map.signature_def[key].CopyFrom(sig)
    response.metadata['signature_def'].Pack(sig_map)
    return response

  def get_model_status(self, request: get_model_status_pb2.GetModelStatusRequest
                      ) -> get_model_status_pb2.GetModelStatusResponse:
    if not request.HasField('model_spec'):
      raise invalid('Missing ModelSpec')
    spec = request.model_spec  # TF Serving does not check for an empty name here.
    version = spec.version.value if spec.WhichOneof('version_choice') == 'version' else None
    response = get_model_status_pb2.GetModelStatusResponse()
    for status in self.manager.status(spec.name, version):
      entry = response.model_version_status.add()
      entry.version = status.version
      entry.state = status.state
      entry.status.error_code = status.error_code.value[0]
      entry.status.error_message = status.error_message
    return response


# ----- helpers -----

_MAX_RANK = 32  # numpy's limit (TensorFlow's TensorShape allows 254)


def _to_ndarray(alias: str, proto) -> np.ndarray:
  """TensorProto -> numpy; an invalid shape (unknown rank, negative dims) is refused.

  A rank above numpy's 32 dimensions is refused as INVALID_ARGUMENT naming the limit
  (TF Serving would take it; numpy cannot hold it).
  """
  shape = proto.tensor_shape
  if len(shape.dim) > _MAX_RANK:
    raise invalid(f'tensor parsing error: {alias}: Tensor of rank {len(shape.dim)} is not '
                  f"supported: at most {_MAX_RANK} dimensions (numpy's limit). Fix: send the "
                  'tensor with fewer dimensions')
  if shape.unknown_rank or any(d.size < 0 for d in shape.dim):
    raise invalid(f'tensor parsing error: {alias}')
  try:
    return tf.make_ndarray(proto)
  except Exception as e:  # pylint: disable=broad-except
    raise invalid(f'tensor parsing error: {alias}') from e


def serialize_input(input_proto) -> List[bytes]:
  """tensorflow.serving.Input -> serialized Examples (context first, example wins)."""
  which = input_proto.WhichOneof('kind')
  if which == 'example_list':
    return [ex.SerializeToString() for ex in input_proto.example_list.examples]
  if which == 'example_list_with_context':
    ctx = input_proto.example_list_with_context.context.SerializeToString()
    return [ctx + ex.SerializeToString()
            for ex in input_proto.example_list_with_context.examples]
  return []


def _fill_model_spec(spec, servable: Servable, signature_name: str):
  spec.name = servable.name
  spec.version.value = servable.version
  spec.signature_name = signature_name


def _check_inputs(signature, inputs: Mapping[str, np.ndarray]):
  sent, wanted = set(inputs), set(signature.inputs)
  if sent == wanted:
    return
  if len(sent) != len(wanted):
    raise invalid(
        f'input size does not match signature: {len(sent)}!={len(wanted)} '
        f'len({{{_join(sent)}}}) != len({{{_join(wanted)}}}). '
        f'Sent extra: {{{_join(sent - wanted)}}}. '
        f'Missing but required: {{{_join(wanted - sent)}}}.')
  unknown = sorted(sent - wanted)[0]
  raise invalid(f'input tensor alias not found in signature: {unknown}. '
                f'Inputs expected to be in the set {{{_join(wanted)}}}.')


def _output_aliases(signature, output_filter: Sequence[str]) -> List[str]:
  if not output_filter:
    return sorted(signature.outputs)
  seen = []
  for alias in output_filter:
    if alias not in signature.outputs:
      raise invalid(f'output tensor alias not found in signature: {alias} '
                    f'Outputs expected to be in the set {{{_join(signature.outputs)}}}.')
    if alias not in seen:
      seen.append(alias)
  return seen


def _run(servable: Servable, name: str, signature, inputs, aliases, check_dtypes: bool):
  """Runs the model, unless the request's client no longer waits for the answer."""
  ticket = admission.current_ticket()
  if ticket is not None:
    ticket.check()
  batcher = servable.batcher
  if batcher is not None:
    return batcher.run(name, signature, inputs, aliases, check_dtypes)
  return servable.run(signature, inputs, aliases, check_dtypes=check_dtypes)


def _check_classify_signature(signature) -> List[str]:
  if len(signature.inputs) != 1:
    raise invalid('Expected one input Tensor.')
  if len(signature.outputs) not in (1, 2):
    raise invalid(f'Expected one or two output Tensors, found {len(signature.outputs)}')
  if 'inputs' not in signature.inputs:
    raise invalid(f'No classification inputs found in SignatureDef: {signature}')
  aliases = [a for a in ('classes', 'scores') if a in signature.outputs]
  if not aliases:
    raise invalid('Expected classification signature outputs to contain at least one of '
                  f'"classes" or "scores". Signature was: {signature}')
  return aliases


def _check_regress_signature(signature) -> List[str]:
  if len(signature.inputs) != 1:
    raise invalid('Expected one input Tensor.')
  if len(signature.outputs) != 1:
    raise invalid('Expected one output Tensor.')
  if 'inputs' not in signature.inputs:
    raise invalid(f'No regression inputs found in SignatureDef: {signature}')
  if 'outputs' not in signature.outputs:
    raise invalid(f'No regression outputs found in SignatureDef: {signature}')
  return ['outputs']


def _check_classify_outputs(outputs, num_examples):
  for alias in ('classes', 'scores'):
    value = outputs.get(alias)
    if value is None:
      continue
    if value.ndim != 2:
      raise invalid('Expected Tensor shape: [batch_size num_classes] but got '
                    f'[{",".join(str(d) for d in value.shape)}]')
    if alias == 'classes' and value.dtype.kind not in 'OSU':
      raise invalid(f'Expected classes Tensor of DT_STRING. Got: {_type_name(value)}')
    if alias == 'scores' and value.dtype != np.float32:
      raise invalid(f'Expected scores Tensor of DT_FLOAT. Got: {_type_name(value)}')
    if value.shape[0] != num_examples:
      raise invalid(f'Expected {alias} output batch size of {num_examples}. '
                    f'Got: {value.shape[0]}')
  classes, scores = outputs.get('classes'), outputs.get('scores')
  if classes is not None and scores is not None and classes.shape[1] != scores.shape[1]:
    raise invalid('Tensors class and score should match in dim_size(1). Got '
                  f'{classes.shape[1]} vs. {scores.shape[1]}')
  return outputs


def _check_regress_outputs(outputs, num_examples):
  value = outputs['outputs']
  if not (value.ndim == 1 or (value.ndim == 2 and value.shape[1] == 1)):
    raise invalid('Expected output Tensor shape to be either [batch_size] or [batch_size, 1] '
                  f'but got [{",".join(str(d) for d in value.shape)}]')
  if value.dtype != np.float32:
    raise invalid(f'Expected output Tensor of DT_FLOAT.  Got: {_type_name(value)}')
  if value.shape[0] != num_examples:
    raise invalid(f'Input batch size did not match output batch size: {num_examples} vs. '
                  f'{value.shape[0]}')
  return {'outputs': value.reshape(-1)}


def _type_name(value: np.ndarray) -> str:
  if value.dtype.kind in 'OSU':
    return 'DT_STRING'
  return types_pb2.DataType.Name(tf.dtypes.as_dtype(value.dtype).as_datatype_enum)


def fill_classification_result(result, classes, scores):
  """Fills a ClassificationResult from classes [n, k] and/or scores [n, k]."""
  ref = classes if classes is not None else scores
  for i in range(ref.shape[0]):
    entry = result.classifications.add()
    for c in range(ref.shape[1]):
      cls = entry.classes.add()
      if classes is not None:
        label = classes[i, c]
        cls.label = label.decode('utf-8', 'replace') if isinstance(label, bytes) else str(label)
      if scores is not None:
        cls.score = float(scores[i, c])
