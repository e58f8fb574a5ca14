"""bench/ort_bench.py's conversion: a tiny frozen BERT through tf2onnx runs in ONNX Runtime.

The bench's timings are only as good as this: the ONNX model ORT runs must be
the same function as the frozen graph and the SavedModel TF runs.
"""
import pytest

pytest.importorskip('onnxruntime', reason="ONNX Runtime is a bench extra: pip install -e '.[bench]'")
pytest.importorskip('tf2onnx', reason="tf2onnx is a bench extra: pip install -e '.[bench]'")

# pylint: disable=g-import-not-at-top,wrong-import-position
import numpy as np

import estimator_export as ee
from bench import freeze_bench
from bench import ort_bench
from bert_example import modeling

SEQ = 16
TINY = modeling.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64,
                           max_position_embeddings=SEQ)


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """(SavedModel dir, FrozenGraph, .pb path, .onnx path, ONNX op histogram) of a tiny BERT."""
  work = tmp_path_factory.mktemp('ort')
  export_dir = str(work / 'saved_model')
  freeze_bench.build_saved_model(export_dir, TINY, SEQ)
  frozen = ee.freeze_saved_model(export_dir, options=ee.FreezeOptions(
      optimizations=('all',), samples=freeze_bench.sample(2, SEQ, TINY.vocab_size, 1)))
  pb_path = str(work / 'frozen.pb')
  frozen.save(pb_path)
  onnx_path = str(work / 'model.onnx')
  _, ops = ort_bench.to_onnx(frozen, onnx_path)
  return export_dir, frozen, pb_path, onnx_path, ops


def test_ort_agrees_with_tf_on_a_tiny_bert(converted):
  export_dir, frozen, pb_path, onnx_path, ops = converted
  assert ops['MatMul'] >= 2 * 6  # Q, K, V, output, up and down per layer: the encoder is there.
  ort = ort_bench.OrtRunner(ort_bench.ort_session(onnx_path, threads=1), frozen)
  feeds = freeze_bench.sample(3, SEQ, TINY.vocab_size, seed=5)
  with ee.Predictor.from_saved_model(export_dir) as saved, \
      ee.FrozenPredictor.from_frozen_graph(pb_path) as frozen_predictor:
    reference = saved(feeds)
    got = ort(feeds)
    assert set(got) == set(reference) == {'pooled_output'}
    assert got['pooled_output'].shape == (3, TINY.hidden_size)
    assert ort_bench.max_diff(reference, got) < 1e-4
    assert ort_bench.max_diff(frozen_predictor(feeds), got) < 1e-4
    # A different input gives a different output: the ids reach the model.
    other = dict(feeds, input_ids=(feeds['input_ids'] + 1) % TINY.vocab_size)
    assert ort_bench.max_diff(ort(other), got) > 1e-3
    assert ort_bench.max_diff(saved(other), ort(other)) < 1e-4


def test_batch_size_is_dynamic_in_onnx(converted):
  _, frozen, _, onnx_path, _ = converted
  ort = ort_bench.OrtRunner(ort_bench.ort_session(onnx_path, threads=1), frozen)
  for batch in (1, 5):
    out = ort(freeze_bench.sample(batch, SEQ, TINY.vocab_size, seed=batch))
    assert out['pooled_output'].shape == (batch, TINY.hidden_size)


def test_plot_writes_a_png(tmp_path):
  pytest.importorskip('matplotlib', reason="matplotlib is a bench extra: pip install -e '.[bench]'")
  path = str(tmp_path / 'latency.png')
  ort_bench.plot({1: {'SavedModel': 30.0, 'ORT': 20.0}, 8: {'SavedModel': 150.0, 'ORT': 90.0}},
                 path, 'test')
  with open(path, 'rb') as f:
    assert f.read(8) == b'\x89PNG\r\n\x1a\n'
