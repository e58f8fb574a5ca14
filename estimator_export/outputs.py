"""export_outputs builders for custom model_fns, checked as TF Serving checks.

TF Serving rejects at request time a Classify signature whose scores are not
DT_FLOAT [batch, num_classes] or whose classes are not DT_STRING of the same
shape, and a Regress signature whose output is not DT_FLOAT [batch] or
[batch, 1]. These builders reject the same things at export time.

tf.estimator silently leaves out (with an INFO log) a Classify or Regress
signature whose receiver is not a single serialized tf.Example string, and so
can export a model with no `serving_default`. `plan_signatures` computes the
signatures an export will really have and raises instead.
"""
from typing import Dict, Mapping, Optional, Sequence, Union

import tensorflow as tf

from estimator_export._saved_model import (CLASSIFY_METHOD, DEFAULT_SIGNATURE, PREDICT_METHOD,
                                           REGRESS_METHOD)
from estimator_export.errors import SignatureError, did_you_mean

DEFAULT_KEY = DEFAULT_SIGNATURE  # The export_outputs key of the default signature.

PredictOutput = tf.estimator.export.PredictOutput
ClassificationOutput = tf.estimator.export.ClassificationOutput
RegressionOutput = tf.estimator.export.RegressionOutput
ExportOutput = tf.estimator.export.ExportOutput

_UNSERVABLE = (tf.resource, tf.variant)
# Graph collection where build_export_outputs records 'key\tmethod' entries.
PLAN_COLLECTION = 'estimator_export_planned_outputs'


def method_of(output: ExportOutput) -> str:
  if isinstance(output, ClassificationOutput):
    return CLASSIFY_METHOD
  if isinstance(output, RegressionOutput):
    return REGRESS_METHOD
  if isinstance(output, PredictOutput):
    return PREDICT_METHOD
  raise SignatureError('unknown export output type', value=type(output).__name__,
                       fix='use predict_output, classify_output or regress_output')


def predict_output(outputs: Union[tf.Tensor, Mapping[str, tf.Tensor]],
                   default_key: str = 'output') -> PredictOutput:
  """A Predict signature output: one tensor (keyed `default_key`) or a dict."""
  if not isinstance(outputs, Mapping):
    outputs = {default_key: outputs}
  if not outputs:
    raise SignatureError('predict_output needs at least one tensor', value={},
                         fix="return e.g. {'probabilities': probs}")
  checked = {}
  for key, tensor in outputs.items():
    if not isinstance(key, str) or not key:
      raise SignatureError('predict output keys must be non-empty strings', value=key,
                           fix='name every output, e.g. "probabilities"')
    if isinstance(tensor, (tf.SparseTensor, tf.RaggedTensor)):
      raise SignatureError(f'predict output {key!r} is a {type(tensor).__name__}; '
                           'signatures carry dense tensors only', value=key,
                           fix='convert it with tf.sparse.to_dense / .to_tensor()')
    if not isinstance(tensor, tf.Tensor):
      raise SignatureError(f'predict output {key!r} is not a Tensor',
                           value=type(tensor).__name__, fix='pass graph tensors')
    if tensor.dtype.base_dtype in _UNSERVABLE:
      raise SignatureError(f'predict output {key!r} has dtype {tensor.dtype.name}, which '
                           'TF Serving cannot return', value=tensor.dtype.name,
                           fix='output a numeric or string tensor')
    checked[key] = tensor
  return PredictOutput(checked)


def classify_output(scores: Optional[tf.Tensor] = None, classes: Optional[tf.Tensor] = None,
                    label_vocabulary: Optional[Sequence[str]] = None) -> ClassificationOutput:
  """A Classify signature output.

  Args:
    scores: float32 Tensor [batch, num_classes].
    classes: string Tensor [batch, num_classes]; built in-graph from
      `label_vocabulary` when omitted.
    label_vocabulary: class names, one per score column.
  """
  if scores is None and classes is None and label_vocabulary is None:
    raise SignatureError('classify_output needs scores, classes or both', value=None,
                         fix='pass scores=<float32 [batch, num_classes]>')
  if scores is not None:
    _check_rank2(scores, 'scores')
    if scores.dtype != tf.float32:
      raise SignatureError('classify scores must be float32 (TF Serving expects DT_FLOAT)',
                           value=scores.dtype.name, fix='tf.cast(scores, tf.float32)')
  if label_vocabulary is not None:
    if classes is not None:
      raise SignatureError('give classes or label_vocabulary, not both',
                           value=list(label_vocabulary), fix='drop one of them')
    vocab = list(label_vocabulary)
    if not vocab or not all(isinstance(v, (str, bytes)) for v in vocab):
      raise SignatureError('label_vocabulary must be a non-empty list of strings',
                           value=vocab, fix="e.g. ['negative', 'positive']")
    if scores is None:
      raise SignatureError('classes from a label_vocabulary need scores for the batch size',
                           value=vocab, fix='pass scores too')
    width = scores.shape[-1]
    if width is not None and width != len(vocab):
      raise SignatureError(f'label_vocabulary has {len(vocab)} names but scores have '
                           f'{width} columns', value=vocab,
                           fix='give one name per score column')
    classes = class_names_tensor(vocab, tf.shape(scores)[0])
  if classes is not None:
    _check_rank2(classes, 'classes')
    if classes.dtype != tf.string:
      raise SignatureError('classify classes must be strings (TF Serving expects DT_STRING)',
                           value=classes.dtype.name,
                           fix='pass label_vocabulary=[...] to build string classes in-graph, '
                           'or tf.strings.as_string(class_ids)')
  if scores is not None and classes is not None:
    s, c = scores.shape.as_list(), classes.shape.as_list()
    if s[1] is not None and c[1] is not None and s[1] != c[1]:
      raise SignatureError('classify scores and classes differ in width',
                           value={'scores': s, 'classes': c},
                           fix='give one class per score column')
  return ClassificationOutput(scores=scores, classes=classes)


def class_names_tensor(label_vocabulary: Sequence[str], batch_size) -> tf.Tensor:
  """string Tensor [batch, num_classes]: the vocabulary repeated for each row."""
  names = tf.constant([v if isinstance(v, bytes) else v.encode('utf-8')
                       for v in label_vocabulary], dtype=tf.string)
  return tf.tile(tf.expand_dims(names, 0), tf.stack([batch_size, 1]), name='class_names')


def regress_output(value: tf.Tensor) -> RegressionOutput:
  """A Regress signature output: float32 Tensor [batch] or [batch, 1]."""
  if not isinstance(value, tf.Tensor):
    raise SignatureError('regress value must be a Tensor', value=type(value).__name__,
                         fix='pass a float32 Tensor [batch] or [batch, 1]')
  if value.dtype != tf.float32:
    raise SignatureError('regress value must be float32 (TF Serving expects DT_FLOAT)',
                         value=value.dtype.name, fix='tf.cast(value, tf.float32)')
  shape = value.shape
  if shape.rank is not None and (shape.rank not in (1, 2) or
                                 (shape.rank == 2 and shape[1] not in (None, 1))):
    raise SignatureError('regress value must have shape [batch] or [batch, 1]',
                         value=shape.as_list(),
                         fix='reshape it, e.g. tf.reshape(value, [-1])')
  return RegressionOutput(value=value)


def _check_rank2(tensor, what: str):
  if not isinstance(tensor, tf.Tensor):
    raise SignatureError(f'classify {what} must be a Tensor', value=type(tensor).__name__,
                         fix=f'pass {what} as a [batch, num_classes] Tensor')
  if tensor.shape.rank is not None and tensor.shape.rank != 2:
    raise SignatureError(f'classify {what} must have rank 2 [batch, num_classes]',
                         value=tensor.shape.as_list(),
                         fix='for a single score per example use regress_output, or '
                         'stack [1 - p, p] into two columns')


def build_export_outputs(predictions: Optional[Mapping[str, tf.Tensor]] = None,
                         classify: Optional[ClassificationOutput] = None,
                         regress: Optional[RegressionOutput] = None,
                         default: str = 'predict',
                         extra: Optional[Mapping[str, ExportOutput]] = None
                        ) -> Dict[str, ExportOutput]:
  """The export_outputs dict of an EstimatorSpec.

  Keys: 'predict', 'classify', 'regress' for what is given, any `extra` heads,
  and 'serving_default' pointing at the one named by `default`.
  """
  outputs: Dict[str, ExportOutput] = {}
  if predictions is not None:
    outputs['predict'] = (predictions if isinstance(predictions, PredictOutput)
                          else predict_output(predictions))
  if classify is not None:
    outputs['classify'] = _expect(classify, ClassificationOutput, 'classify')
  if regress is not None:
    outputs['regress'] = _expect(regress, RegressionOutput, 'regress')
  for key, out in (extra or {}).items():
    if key in outputs or key == DEFAULT_KEY:
      raise SignatureError('extra export output key is taken', value=key,
                           fix='rename the head')
    outputs[key] = _expect(out, ExportOutput, key)
  return with_default(outputs, default)


def multi_head_outputs(heads: Mapping[str, ExportOutput], default: str
                      ) -> Dict[str, ExportOutput]:
  """export_outputs for several heads, with `default` also as serving_default."""
  return with_default({k: _expect(v, ExportOutput, k) for k, v in heads.items()}, default)


def with_default(outputs: Mapping[str, ExportOutput], default: str
                ) -> Dict[str, ExportOutput]:
  outputs = dict(outputs)
  if not outputs:
    raise SignatureError('no export outputs', value={},
                         fix='give predictions, classify or regress outputs')
  if default not in outputs:
    raise SignatureError('default export output is not among the outputs', value=default,
                         fix=f'choose one of {sorted(outputs)}' +
                         did_you_mean(default, outputs))
  outputs[DEFAULT_KEY] = outputs[default]
  _record_plan(outputs)
  return outputs


def _record_plan(outputs: Mapping[str, ExportOutput]):
  """Remembers 'key<TAB>method' in the graph, so the export can spot drops."""
  graph = tf.compat.v1.get_default_graph()
  recorded = graph.get_collection(PLAN_COLLECTION)
  for key, out in outputs.items():
    entry = f'{key}\t{method_of(out)}'
    if entry not in recorded:
      graph.add_to_collection(PLAN_COLLECTION, entry)


def recorded_outputs(entries: Sequence[Union[str, bytes]]) -> Dict[str, str]:
  """Parses PLAN_COLLECTION entries back into key -> method."""
  out = {}
  for entry in entries:
    if isinstance(entry, bytes):
      entry = entry.decode('utf-8')
    key, method = entry.split('\t', 1)
    out[key] = method
  return out


def _expect(value, cls, key):
  if not isinstance(value, cls):
    raise SignatureError(f'export output {key!r} is a {type(value).__name__}',
                         value=key, fix=f'build it with the {cls.__name__} helper')
  return value


def plan_signatures(output_methods: Mapping[str, str],
                    receivers: Mapping[str, Sequence[str]],
                    single_string_receivers: Sequence[str]) -> Dict[str, str]:
  """The signatures an export will carry: name -> method name.

  Args:
    output_methods: export_outputs key -> method name (see `method_of`).
    receivers: receiver name ('' = primary) -> its input keys.
    single_string_receivers: receiver names whose one input is serialized
      tf.Examples; only these get Classify and Regress signatures.

  Raises:
    SignatureError: where tf.estimator would silently drop a signature so
      that an export output ends up in none, or `serving_default` is missing.
  """
  outputs = dict(output_methods)
  if len(outputs) > 1 and DEFAULT_KEY not in outputs:
    raise SignatureError('several export_outputs and none is serving_default',
                         value=sorted(outputs),
                         fix="use build_export_outputs(..., default='predict')")
  if len(outputs) == 1 and DEFAULT_KEY not in outputs:
    outputs = {DEFAULT_KEY: next(iter(outputs.values()))}
  planned: Dict[str, str] = {}
  for key, method in outputs.items():
    homes = [r for r in receivers if method == PREDICT_METHOD or r in single_string_receivers]
    if not homes:
      raise SignatureError(
          f'{_short(method)} output {key!r} would be silently dropped: Classify and '
          'Regress signatures need a receiver whose only input is serialized tf.Examples',
          value={r or 'primary': list(k) for r, k in receivers.items()},
          fix='export with build_example_receiver_fn, or a combined receiver with an '
          "'examples' alternative")
    for r in homes:
      planned[f'{r}:{key}' if r else key] = method
  if DEFAULT_KEY not in planned:
    raise SignatureError(
        "the export would have no 'serving_default' signature: the default output is a "
        f'{_short(outputs[DEFAULT_KEY])} output but the primary receiver is not serialized '
        'tf.Examples', value=list(receivers['']),
        fix='make the default output a predict output, or make the example receiver primary')
  return planned


def _short(method: str) -> str:
  return method.rsplit('/', 1)[-1]


