"""estimator_export.servability: a graph's ops against TF Serving 2.15.1's (TF 2.15 + TF Text 2.12.1).

The BERT tokenizer's graph is checked in test_bert_text_ops.py; here, small graphs and
real exports.
"""
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import servability


def _core_graph():
  with tf.Graph().as_default() as graph:
    codes = tf.compat.v1.placeholder(tf.int32, [None, None], name='codes')
    tf.strings.unicode_encode(tf.RaggedTensor.from_tensor(codes), 'UTF-8', name='text')
  return graph


class TestCheckServability:

  def test_core_graph_is_servable(self):
    report = servability.check_servability(_core_graph())
    assert report.ok, str(report)
    assert 'UnicodeEncode' in report.ops_used
    assert str(report).startswith(f'servable on {servability.TARGET}')

  def test_made_up_op_is_named_with_a_hint(self):
    graph_def = _core_graph().as_graph_def()
    next(n for n in graph_def.node if n.op == 'UnicodeEncode').op = 'UnicodeEncodeV9'
    report = servability.check_servability(graph_def)
    assert report.bad_ops == ('UnicodeEncodeV9',)
    assert "Did you mean 'UnicodeEncode'?" in str(report)

  def test_unknown_and_disallowed_attrs(self):
    graph_def = _core_graph().as_graph_def()
    node = next(n for n in graph_def.node if n.op == 'UnicodeEncode')
    node.attr['made_up'].i = 1
    node.attr['output_encoding'].s = b'UTF-7'
    reasons = [p.reason for p in servability.check_servability(graph_def).problems]
    assert any("attr 'made_up' is not in the server's OpDef" in r for r in reasons)
    assert any("'output_encoding' = b'UTF-7' is not allowed" in r for r in reasons)

  def test_tf_text_op_added_after_2_12_1_is_reported(self):
    tf_text = pytest.importorskip('tensorflow_text')
    with tf.Graph().as_default() as graph:
      tf_text.utf8_binarize(tf.constant(['abc']))
    report = servability.check_servability(graph.as_graph_def())
    assert not report.ok
    assert 'TFText>Utf8Binarize' in report.bad_ops
    with pytest.raises(servability.UnservableGraphError, match='TFText>Utf8Binarize'):
      servability.assert_servable(graph)

  def test_op_defs_come_from_tf_text_2_12_1(self):
    with open(servability.TF_TEXT_OPS_FILE, encoding='utf-8') as f:
      assert 'tensorflow-text 2.12.1' in f.readline()
    defs = servability.tf_text_op_defs()
    assert 'WordpieceTokenizeWithOffsets' in defs and 'TFText>Utf8Binarize' not in defs
    assert not set(defs) & set(servability.core_op_defs())


class TestSources:

  def test_export_directory(self, trained_toy, tmp_path):
    model, estimator = trained_toy
    result = model.export_for_serving(estimator, str(tmp_path), version=1, validate=False,
                                      warmup=False)
    assert ee.check_servability(result.path).ok

  def test_frozen_graph_file(self, tmp_path):
    path = tmp_path / 'frozen.pb'
    path.write_bytes(_core_graph().as_graph_def().SerializeToString())
    assert servability.check_servability(str(path)).ok

  def test_missing_saved_model(self, tmp_path):
    with pytest.raises(ee.ContractError, match='no saved_model.pb'):
      servability.check_servability(str(tmp_path))

  def test_not_a_graph(self):
    with pytest.raises(ee.ValidationError, match="cannot check this object.*got 'int'"):
      servability.check_servability(3)
