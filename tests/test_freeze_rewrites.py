"""The transformer rewrites of freeze (fold_shapes, fuse_dense, fold_scales, prune_rows),
FrozenPredictor's constant lifting and bfloat16 option, on a tiny real BERT.

Every rewrite is checked here by the largest output difference from the
unfrozen SavedModel on samples, at batch sizes other than the one freeze
checked, as well as by what it did to the graph.
"""
import collections

import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from bert_example import modeling
from estimator_export import precision
from estimator_export.freeze import _graph as graph_lib
from estimator_export.freeze import _passes as passes_lib
from estimator_export.freeze import _predictor as predictor_lib

SEQ = 16
CONFIG = modeling.BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=2,
                             num_attention_heads=4, intermediate_size=64,
                             max_position_embeddings=64)
NAMES = ('input_ids', 'input_mask', 'segment_ids')
ATOL = 2e-5


def build_bert(export_dir: str, seq=SEQ, sequence_output=False) -> None:
  """Random tiny BERT SavedModel: ids, mask, segments [batch, seq] -> pooled (+ sequence)."""
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session() as session:
    tf.compat.v1.set_random_seed(1)
    inputs = {n: tf.compat.v1.placeholder(tf.int32, [None, seq], name=n) for n in NAMES}
    model = modeling.BertModel(CONFIG, False, inputs['input_ids'], inputs['input_mask'],
                               inputs['segment_ids'])
    outputs = {'pooled': tf.identity(model.get_pooled_output(), 'pooled')}
    if sequence_output:
      outputs['sequence'] = tf.identity(model.get_sequence_output(), 'sequence')
    session.run(tf.compat.v1.global_variables_initializer())
    builder = tf.compat.v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(session, [tf.saved_model.SERVING], signature_def_map={
        'serving_default': tf.compat.v1.saved_model.predict_signature_def(inputs, outputs)})
    builder.save()


def samples(batch: int, seed: int, seq=SEQ):
  rng = np.random.RandomState(seed)
  mask = np.ones([batch, seq], np.int32)
  mask[:, seq * 3 // 4:] = 0
  return {'input_ids': rng.randint(0, CONFIG.vocab_size, [batch, seq]).astype(np.int32),
          'input_mask': mask, 'segment_ids': rng.randint(0, 2, [batch, seq]).astype(np.int32)}


@pytest.fixture(scope='module')
def bert(tmp_path_factory) -> str:
  path = str(tmp_path_factory.mktemp('bert') / 'saved_model')
  build_bert(path)
  return path


def freeze(export_dir, passes, seq=SEQ, **options):
  return ee.freeze_saved_model(export_dir, options=ee.FreezeOptions(
      optimizations=passes, samples=samples(2, 0, seq), rtol=1e-4, atol=1e-4, **options))


def max_diff_from_saved_model(export_dir, frozen, batches=(1, 3), seq=SEQ):
  """Largest |frozen - SavedModel| over every output, on fresh samples per batch size."""
  worst = 0.0
  with ee.Predictor.from_saved_model(export_dir) as saved, \
      ee.FrozenPredictor(frozen.graph_def, frozen.manifest()) as run:
    for batch in batches:
      feeds = samples(batch, 10 + batch, seq)
      want, got = saved(feeds), run(feeds)
      for key in want:
        assert got[key].shape == want[key].shape
        worst = max(worst, float(np.max(np.abs(got[key] - want[key]))))
  return worst


def ops(frozen):
  return collections.Counter(n.op for n in frozen.graph_def.node)


def note(frozen, name):
  return {s['name']: s['note'] for s in frozen.optimizations}[name]


class TestFoldShapes:

  def test_tensordot_shape_chains_become_constants(self, bert):
    before = freeze(bert, ('fold_constants',))
    after = freeze(bert, ('fold_constants', 'fold_shapes'))
    assert ops(before)['Shape'] > 0 and ops(before)['Prod'] > 0
    assert ops(after)['Shape'] == 0 and ops(after)['Prod'] == 0
    assert ops(after)['Transpose'] < ops(before)['Transpose']  # tensordot's identity ones
    for node in after.graph_def.node:
      if node.op == 'Reshape':
        target = next(n for n in after.graph_def.node if n.name == node.input[1])
        assert target.op == 'Const'
        assert list(tf.make_ndarray(target.attr['value'].tensor)).count(-1) <= 1
    assert max_diff_from_saved_model(bert, after) < ATOL

  def test_variable_sequence_length_keeps_its_shape_ops(self, tmp_path):
    export_dir = str(tmp_path / 'any_length')
    build_bert(export_dir, seq=None)
    frozen = freeze(export_dir, ('fold_constants', 'fold_shapes'), seq=SEQ)
    assert ops(frozen)['Shape'] > 0  # Targets with batch and length unknown stay computed.
    for seq in (SEQ, 9):
      assert max_diff_from_saved_model(export_dir, frozen, seq=seq) < ATOL


class TestFuseDense:

  def test_every_dense_layer_becomes_matmul_bias_add(self, bert):
    frozen = freeze(bert, ('fold_constants', 'fold_shapes', 'fuse_dense'))
    counts = ops(frozen)
    assert counts['MatMul'] == counts['BiasAdd'] == 6 * CONFIG.num_hidden_layers + 1
    for node in frozen.graph_def.node:
      if node.op == 'BiasAdd':
        producer = next(n for n in frozen.graph_def.node if n.name == node.input[0])
        assert producer.op == 'MatMul'
    assert f'{counts["MatMul"]} dense layers' in note(frozen, 'fuse_dense')
    assert max_diff_from_saved_model(bert, frozen) < ATOL

  def test_protected_output_name_survives(self, bert):
    frozen = freeze(bert, ('all',))
    names = {n.name for n in frozen.graph_def.node}
    assert 'pooled' in names and frozen.outputs['pooled']['name'] == 'pooled:0'


class TestFoldScales:

  def test_no_division_and_no_score_scaling_left(self, bert):
    before = freeze(bert, ('fold_constants', 'fold_shapes', 'fuse_dense'))
    after = freeze(bert, ('fold_constants', 'fold_shapes', 'fuse_dense', 'fold_scales'))
    assert ops(before)['RealDiv'] == CONFIG.num_hidden_layers  # GELU's x / sqrt(2)
    assert ops(after)['RealDiv'] == 0
    by_name = {n.name: n for n in after.graph_def.node}
    users = collections.defaultdict(list)
    for node in after.graph_def.node:
      for inp in node.input:
        users[inp.split(':')[0]].append(by_name[node.name].op)
    scores = [n for n in after.graph_def.node
              if n.op == 'BatchMatMulV2' and n.attr['adj_y'].b]
    assert len(scores) == CONFIG.num_hidden_layers
    assert all(users[s.name] == ['AddV2'] for s in scores)  # Straight to the mask.
    halves = [n for n in after.graph_def.node if n.op == 'Mul' and any(
        by_name[i].op == 'Const' and tf.make_ndarray(by_name[i].attr['value'].tensor).size == 1
        and float(tf.make_ndarray(by_name[i].attr['value'].tensor)) == 0.5 for i in n.input)]
    assert not halves  # GELU's 0.5 is in the next dense layer's weights.
    # Per layer: GELU's division, the attention scale and GELU's 0.5.
    assert note(after, 'fold_scales').startswith(f'{3 * CONFIG.num_hidden_layers} scales folded')
    assert max_diff_from_saved_model(bert, after) < ATOL


class TestPruneRows:

  def test_last_layer_runs_at_the_pooled_position_only(self, bert):
    before = freeze(bert, ('fold_constants', 'fold_shapes', 'fuse_dense', 'fold_scales'))
    after = freeze(bert, ('all',))
    moved = int(note(after, 'prune_rows').split()[0])
    assert moved > 20
    assert ops(after)['MatMul'] == ops(before)['MatMul']  # Moved, not duplicated.
    graph = graph_lib.import_graph_def(after.graph_def)
    last = f'bert/encoder/layer_{CONFIG.num_hidden_layers - 1}/'
    rows = {}
    with tf.compat.v1.Session(graph=graph) as session:
      feeds = {f'{k}:0': v for k, v in samples(3, 5).items()}
      for op in graph.get_operations():
        if op.type == 'MatMul' and op.name.startswith(last):
          rows[op.name] = session.run(op.outputs[0], feeds).shape[0]
    # Keys and values need every position; the query, output and feed-forward one each.
    assert sorted(rows.values()) == [3, 3, 3, 3, 3 * SEQ, 3 * SEQ]
    assert max_diff_from_saved_model(bert, after) < ATOL

  def test_nothing_moves_when_the_whole_sequence_is_an_output(self, tmp_path):
    export_dir = str(tmp_path / 'with_sequence')
    build_bert(export_dir, sequence_output=True)
    frozen = freeze(export_dir, ('all',))
    assert note(frozen, 'prune_rows').startswith('0 ')
    assert max_diff_from_saved_model(export_dir, frozen) < ATOL


class TestFrozenPredictorLoading:

  def test_large_constants_are_lifted_into_variables(self, bert, tmp_path, monkeypatch):
    frozen = freeze(bert, ('all',))
    path = str(tmp_path / 'bert.pb')
    frozen.save(path)
    monkeypatch.setattr(predictor_lib, 'LIFT_MIN_BYTES', 4096)  # The tiny model's weights.
    with ee.FrozenPredictor.from_frozen_graph(path) as run:
      lifted = [op for op in run.graph.get_operations()
                if op.type == 'VarHandleOp' and op.name.startswith(predictor_lib.LIFTED_SCOPE)]
      assert lifted
      feeds = samples(2, 3)
      got = run(feeds)
    want = passes_lib.run_graph_def(frozen.graph_def, ['pooled:0'],
                                    {f'{k}:0': v for k, v in feeds.items()})[0]
    np.testing.assert_allclose(got['pooled'], want, rtol=0, atol=1e-6)  # Grappler's fusions differ.

  def test_small_graphs_import_as_they_are(self, bert):
    frozen = freeze(bert, ('all',))
    with ee.FrozenPredictor(frozen.graph_def, frozen.manifest()) as run:
      assert not [op for op in run.graph.get_operations() if op.type == 'VarHandleOp']


class TestMixedPrecision:

  def test_freeze_records_mode_and_drift_and_the_predictor_applies_it(self, bert, tmp_path):
    frozen = freeze(bert, ('all',), mixed_precision='bfloat16')
    recorded = frozen.manifest()['mixed_precision']
    assert recorded['mode'] == 'bfloat16' and recorded['native'] == precision.native_bf16()
    assert set(recorded['max_abs_diff']) == {'pooled'}
    assert recorded['max_abs_diff']['pooled'] < 0.05  # bfloat16 keeps ~3 significant digits.
    path = str(tmp_path / 'bf16.pb')
    frozen.save(path)
    with ee.FrozenPredictor.from_frozen_graph(path) as run:
      # The session's ConfigProto has no public getter; BaseSession keeps it as _config.
      options = run.session._config.graph_options.rewrite_options  # pylint: disable=protected-access
      assert options.auto_mixed_precision_onednn_bfloat16 == 1  # ON
    assert max_diff_from_saved_model(bert, frozen) < 0.05

  def test_unknown_mode_is_refused_with_the_fix(self):
    with pytest.raises(ee.FreezeError, match=r"unknown FreezeOptions.mixed_precision.*"
                       r"got 'float16'.*bfloat16"):
      ee.FreezeOptions(mixed_precision='float16')

  def test_predictor_option_sets_the_rewrite(self, bert):
    with ee.Predictor.from_saved_model(bert, mixed_precision='bfloat16') as predictor:
      options = predictor.session._config.graph_options.rewrite_options  # pylint: disable=protected-access
      assert options.auto_mixed_precision_onednn_bfloat16 == 1
      feeds = samples(2, 4)
      with ee.Predictor.from_saved_model(bert) as fp32:
        drift = np.max(np.abs(predictor(feeds)['pooled'] - fp32(feeds)['pooled']))
    assert drift < 0.05

  @pytest.mark.skipif(precision.native_bf16() is None,
                      reason='this CPU has no native bfloat16 (avx512_bf16 or amx_bf16): the '
                      'rewrite does not run here, so there is no bfloat16 drift to measure')
  def test_native_bfloat16_changes_outputs_only_slightly(self, bert):
    frozen = freeze(bert, ('all',), mixed_precision='bfloat16')
    drift = frozen.mixed_precision['max_abs_diff']['pooled']
    assert 0 < drift < 0.05
