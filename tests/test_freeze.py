"""estimator_export.freeze: every source, pass, compression, table mode and error, for real."""
import json
import os
import warnings

import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import cli
from estimator_export.freeze import _graph as graph_lib
from estimator_export.freeze import _passes as passes_lib
from tests import toy

RNG = np.random.RandomState(0)
X = RNG.randn(5, 6).astype(np.float32)


def _build_mlp(is_training=False, fused=None, width=16, vocab=None):
  """x float32 [batch, 6] -> dense -> BatchNorm -> relu -> dense -> softmax 'probs'."""
  x = tf.compat.v1.placeholder(tf.float32, [None, 6], name='x')
  h = tf.compat.v1.layers.dense(x, width, name='hidden')
  h = tf.compat.v1.layers.batch_normalization(
      h, training=is_training, fused=fused, name='bn',
      moving_mean_initializer=tf.compat.v1.random_normal_initializer(seed=1),
      moving_variance_initializer=tf.compat.v1.random_uniform_initializer(0.5, 2.0, seed=2),
      gamma_initializer=tf.compat.v1.random_uniform_initializer(0.5, 1.5, seed=3))
  h = tf.compat.v1.layers.dropout(tf.nn.relu(h), 0.5, training=is_training)
  logits = tf.compat.v1.layers.dense(h, 3, name='logits')
  inputs, outputs = {'x': x}, {'probs': tf.nn.softmax(logits, name='probs')}
  if vocab is not None:
    words = tf.compat.v1.placeholder(tf.string, [None], name='words')
    table = tf.lookup.StaticHashTable(tf.lookup.TextFileInitializer(
        vocab, tf.string, tf.lookup.TextFileIndex.WHOLE_LINE, tf.int64,
        tf.lookup.TextFileIndex.LINE_NUMBER), -1)
    inputs['words'] = words
    outputs['ids'] = tf.identity(table.lookup(words), name='ids')
  return inputs, outputs


def _save_session_model(directory, **kwargs):
  """Builds the MLP in a session, saves model.ckpt(.meta); returns (prefix, outputs on X)."""
  os.makedirs(directory, exist_ok=True)
  graph = tf.Graph()
  with graph.as_default(), tf.compat.v1.Session() as session:
    inputs, outputs = _build_mlp(**kwargs)
    session.run([tf.compat.v1.global_variables_initializer(),
                 tf.compat.v1.tables_initializer()])
    tf.io.write_graph(graph.as_graph_def(), directory, 'graph.pbtxt', as_text=True)
    tf.io.write_graph(graph.as_graph_def(), directory, 'graph.pb', as_text=False)
    prefix = tf.compat.v1.train.Saver().save(session, os.path.join(directory, 'model.ckpt'))
    reference = session.run(outputs['probs'], {inputs['x']: X})
  return prefix, reference


@pytest.fixture(scope='module')
def session_model(tmp_path_factory):
  return _save_session_model(str(tmp_path_factory.mktemp('session')))


@pytest.fixture(scope='module')
def vocab_model(tmp_path_factory):
  directory = str(tmp_path_factory.mktemp('vocab'))
  vocab = os.path.join(directory, 'vocab.txt')
  with open(vocab, 'w') as f:
    f.write('the\ncat\nsat\n')
  prefix, _ = _save_session_model(os.path.join(directory, 'model'), vocab=vocab)
  return prefix, vocab


def _op_counts(graph_def):
  counts = {}
  for node in graph_def.node:
    counts[node.op] = counts.get(node.op, 0) + 1
  return counts


class TestFreezeCheckpoint:

  def test_meta_graph_freezes_to_constants_and_matches(self, session_model, tmp_path):
    prefix, reference = session_model
    frozen = ee.freeze_checkpoint(prefix, 'probs')
    ops = _op_counts(frozen.graph_def)
    assert 'VarHandleOp' not in ops and 'VariableV2' not in ops and 'ReadVariableOp' not in ops
    manifest_path = frozen.save(str(tmp_path / 'frozen.pb'))
    assert manifest_path == str(tmp_path / 'frozen.manifest.json')
    manifest = json.loads(open(manifest_path).read())
    assert manifest['inputs'] == {'x': {'name': 'x:0', 'dtype': 'float32', 'shape': [-1, 6]}}
    assert manifest['outputs'] == {'probs': {'name': 'probs:0', 'dtype': 'float32',
                                             'shape': [-1, 3]}}
    assert manifest['source']['kind'] == 'checkpoint'
    assert manifest['source']['checkpoint'] == prefix
    assert manifest['init_op'] is None and manifest['optimizations'] == []
    assert manifest['validation']['max_abs_diff']['probs'] <= 1e-6
    # The seed-004 workflow: import_graph_def and run by tensor name.
    graph_def = tf.compat.v1.GraphDef()
    graph_def.ParseFromString((tmp_path / 'frozen.pb').read_bytes())
    with tf.Graph().as_default() as graph:
      tf.compat.v1.import_graph_def(graph_def, name='prefix')
      with tf.compat.v1.Session(graph=graph) as session:
        got = session.run('prefix/probs:0', {'prefix/x:0': X})
    np.testing.assert_allclose(got, reference, rtol=1e-6, atol=1e-7)

  @pytest.mark.parametrize('binary', [False, True])
  def test_graph_def_file_plus_checkpoint(self, session_model, tmp_path, binary):
    prefix, reference = session_model
    directory = os.path.dirname(prefix)
    frozen, manifest = ee.freeze_graph(
        input_graph=os.path.join(directory, 'graph.pb' if binary else 'graph.pbtxt'),
        input_binary=binary, input_checkpoint=prefix, output_node_names='probs',
        output_graph=str(tmp_path / 'g.pb'))
    assert frozen.source['kind'] == 'graph_def+checkpoint'
    with ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 'g.pb')) as predict:
      np.testing.assert_allclose(predict({'x': X})['probs'], reference, rtol=1e-6, atol=1e-7)
    assert os.path.isfile(manifest)

  def test_wrong_input_binary_says_so(self, session_model, tmp_path):
    prefix, _ = session_model
    with pytest.raises(ee.FreezeError, match='input_binary=true'):
      ee.freeze_graph(input_graph=os.path.join(os.path.dirname(prefix), 'graph.pb'),
                      input_binary=False, input_checkpoint=prefix, output_node_names='probs',
                      output_graph=str(tmp_path / 'g.pb'))

  def test_unknown_output_node_suggests_names_and_outputs(self, session_model):
    prefix, _ = session_model
    with pytest.raises(ee.FreezeError) as info:
      ee.freeze_checkpoint(prefix, ['prob'])
    text = str(info.value)
    assert "output node not in the graph: got 'prob'" in text
    assert "Did you mean 'probs'?" in text
    assert 'look like outputs' in text and "'probs'" in text.split('look like outputs')[1]

  def test_checkpoint_without_output_names_or_files(self, session_model, tmp_path):
    prefix, _ = session_model
    with pytest.raises(ee.FreezeError, match='output_node_names is required'):
      ee.freeze_graph(input_checkpoint=prefix, output_graph=str(tmp_path / 'x.pb'))
    with pytest.raises(ee.FreezeError, match='checkpoint not found'):
      ee.freeze_checkpoint(str(tmp_path / 'nothing.ckpt'), ['probs'])

  def test_checkpoint_of_another_model_is_an_error_not_a_traceback(self, tmp_path, capsys):
    prefixes = {}
    for name, rows in (('a', 2), ('b', 4)):
      with tf.Graph().as_default(), tf.compat.v1.Session() as session:
        x = tf.compat.v1.placeholder(tf.float32, [None, rows], name='x')
        tf.identity(tf.matmul(x, tf.compat.v1.get_variable('w', [rows, 3])), name='y')
        session.run(tf.compat.v1.global_variables_initializer())
        prefixes[name] = tf.compat.v1.train.Saver().save(session, str(tmp_path / name / 'm'))
        tf.io.write_graph(session.graph.as_graph_def(), str(tmp_path / name), 'g.pb', False)
    code = cli.main(['freeze', f'--input_meta_graph={prefixes["a"]}.meta',
                     f'--input_checkpoint={prefixes["b"]}', '--output_node_names=y',
                     f'--output_graph={tmp_path / "x.pb"}'])
    assert code == 2
    assert ('freeze: error: the model fails on the sample inputs before freezing'
            in capsys.readouterr().err)
    with pytest.raises(ee.FreezeError, match='checkpoint does not fit the graph'):
      ee.freeze_graph(output_graph=str(tmp_path / 'x.pb'), input_binary=True,
                      input_graph=str(tmp_path / 'a' / 'g.pb'),
                      input_checkpoint=prefixes['b'], output_node_names='y')

  def test_graph_over_the_protobuf_limit_recommends_the_saved_model(self, session_model,
                                                                    monkeypatch):
    prefix, _ = session_model
    # The real limit is 2 GiB; the model is ~2 KB, so lower the limit to that scale.
    monkeypatch.setattr(graph_lib, 'PROTO_LIMIT_BYTES', 1000)
    with pytest.raises(ee.FreezeError, match='protobuf limit.*serve the SavedModel'):
      ee.freeze_checkpoint(prefix, ['probs'])


class TestInferenceGraph:

  def test_training_graph_warns_naming_nodes(self, tmp_path):
    prefix, _ = _save_session_model(str(tmp_path), is_training=True, fused=True)
    with pytest.warns(ee.FreezeWarning) as record:
      frozen = ee.freeze_checkpoint(prefix, ['probs'])
    text = str(record[0].message)
    assert 'bn/moments/mean' in text and 'batch statistics' in text
    assert 'dropout' in text and 'is_training=False' in text
    assert frozen.warnings == [text]

  def test_graph_fn_freezes_inference_mode_and_folds_batch_norm(self, tmp_path):
    prefix, _ = _save_session_model(str(tmp_path), is_training=True, fused=False)
    with warnings.catch_warnings():
      warnings.simplefilter('error', ee.FreezeWarning)
      frozen = ee.freeze_graph_fn(lambda is_training: _build_mlp(is_training, fused=False),
                                  prefix, ee.FreezeOptions(optimizations=('all',)))
    ops = _op_counts(frozen.graph_def)
    assert 'RandomUniform' not in ops and 'Rsqrt' not in ops
    assert [s['name'] for s in frozen.optimizations] == list(passes_lib.PASSES)
    notes = {s['name']: s['note'] for s in frozen.optimizations}
    assert notes['fold_batch_norms'] == '1 folded into weights'
    # Independently: the inference graph restored in a session.
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      inputs, outputs = _build_mlp(False, fused=False)
      tf.compat.v1.train.Saver().restore(session, prefix)
      expected = session.run(outputs['probs'], {inputs['x']: X})
    got = passes_lib.run_graph_def(frozen.graph_def, ['probs:0'], {'x:0': X})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)

  def test_fused_batch_norm_after_conv_is_folded(self, tmp_path):
    def build(is_training):
      images = tf.compat.v1.placeholder(tf.float32, [None, 8, 8, 2], name='images')
      net = tf.compat.v1.layers.conv2d(images, 4, 3, use_bias=True, name='conv')
      net = tf.compat.v1.layers.batch_normalization(
          net, training=is_training, name='bn',
          moving_mean_initializer=tf.compat.v1.random_normal_initializer(seed=4))
      return {'images': images}, {'out': tf.identity(net, name='out')}

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      build(False)
      session.run(tf.compat.v1.global_variables_initializer())
      prefix = tf.compat.v1.train.Saver().save(session, str(tmp_path / 'model.ckpt'))
    frozen = ee.freeze_graph_fn(build, prefix, ee.FreezeOptions(
        optimizations=('fold_batch_norms',), rtol=1e-4, atol=1e-5))
    ops = _op_counts(frozen.graph_def)
    assert 'FusedBatchNormV3' not in ops and ops['Conv2D'] == 1
    assert frozen.optimizations[0]['max_abs_diff']['out'] < 1e-4

  def test_graph_fn_with_variables_missing_from_the_checkpoint(self, session_model):
    prefix, _ = session_model

    def build(is_training):
      inputs, outputs = _build_mlp(is_training)
      extra = tf.compat.v1.get_variable('extra', [2])
      return inputs, {'probs': outputs['probs'], 'extra': extra + 0.0}

    with pytest.raises(ee.FreezeError, match='variables the checkpoint lacks'):
      ee.freeze_graph_fn(build, prefix)


class TestPassesAndValidation:

  def test_every_pass_is_checked_and_shrinks_the_graph(self, session_model):
    prefix, reference = session_model
    plain = ee.freeze_checkpoint(prefix, 'probs')
    frozen = ee.freeze_checkpoint(prefix, 'probs', options=ee.FreezeOptions(
        optimizations=('fold_constants', 'strip_unused')))
    assert [s['name'] for s in frozen.optimizations] == ['strip_unused', 'fold_constants']
    assert len(frozen.graph_def.node) < len(plain.graph_def.node)
    got = passes_lib.run_graph_def(frozen.graph_def, ['probs:0'], {'x:0': X})[0]
    np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)

  def test_remove_training_nodes_drops_identity_and_stop_gradient(self, tmp_path):
    def build(is_training):
      del is_training
      x = tf.compat.v1.placeholder(tf.float32, [None, 6], name='x')
      w = tf.compat.v1.get_variable('w', [6, 2])
      y = tf.identity(tf.stop_gradient(tf.matmul(x, w)) * 2.0, name='y')
      return {'x': x}, {'y': tf.nn.relu(y, name='out')}

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      build(False)
      session.run(tf.compat.v1.global_variables_initializer())
      prefix = tf.compat.v1.train.Saver().save(session, str(tmp_path / 'model.ckpt'))
      expected = session.run('out:0', {'x:0': X})
    frozen = ee.freeze_graph_fn(build, prefix, ee.FreezeOptions(
        optimizations=('remove_training_nodes',)))
    ops = _op_counts(frozen.graph_def)
    assert 'StopGradient' not in ops and 'Identity' not in ops
    got = passes_lib.run_graph_def(frozen.graph_def, ['out:0'], {'x:0': X})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-6)

  def test_difference_names_the_output_and_size(self):
    expected = {'a': np.zeros(3, np.float32), 'b': np.arange(3)}
    with pytest.raises(ee.FreezeError, match=r"output 'a' differs .* after the x pass by up "
                       r'to 0\.5'):
      passes_lib.compare_outputs(expected, {'a': np.array([0, 0.5, 0], np.float32),
                                                'b': np.arange(3)}, 1e-5, 1e-5,
                                     'after the x pass')
    with pytest.raises(ee.FreezeError, match="output 'b' differs"):
      passes_lib.compare_outputs(expected, {'a': expected['a'], 'b': np.ones(3)}, 0, 0,
                                     'after freezing')

  def test_ints_must_be_equal_whatever_the_tolerance(self):
    with pytest.raises(ee.FreezeError, match=r"output 'ids' differs .* by up to 1 "):
      passes_lib.compare_outputs({'ids': np.array([100000])}, {'ids': np.array([100001])},
                                 1e-5, 1e-5, 'after freezing')

  def test_generated_samples_keep_a_known_batch_size(self, tmp_path):
    def build(is_training):
      del is_training
      x = tf.compat.v1.placeholder(tf.float32, [3, 6], name='x')
      w = tf.compat.v1.get_variable('w', [6, 2])
      return {'x': x}, {'y': tf.matmul(x, w, name='y')}

    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      build(False)
      session.run(tf.compat.v1.global_variables_initializer())
      prefix = tf.compat.v1.train.Saver().save(session, str(tmp_path / 'model.ckpt'))
    frozen = ee.freeze_graph_fn(build, prefix)
    assert frozen.validation['samples'] == 3 and frozen.validation['max_abs_diff']['y'] == 0

  def test_options_are_validated(self):
    with pytest.raises(ee.FreezeError, match="unknown optimization.*'fold_all'"):
      ee.FreezeOptions(optimizations=('fold_all',))
    with pytest.raises(ee.FreezeError, match='compression'):
      ee.FreezeOptions(compression='int4')
    with pytest.raises(ee.FreezeError, match='tables'):
      ee.FreezeOptions(tables='copy')
    with pytest.raises(ee.FreezeError, match='rtol'):
      ee.FreezeOptions(rtol=-1)
    with pytest.raises(ee.FreezeError, match=r'checkpoint_version must be 1 \(V1\) or 2.*got 3'):
      ee.FreezeOptions(checkpoint_version=3)
    with pytest.raises(ee.FreezeError, match='both variable_names_denylist and its old name'):
      ee.FreezeOptions(variable_names_denylist=['a'], variable_names_blacklist=['b'])

  def test_name_lists_take_freeze_graph_strings(self):
    options = ee.FreezeOptions(variable_names_denylist='a, b', variable_names_whitelist='c',
                               initializer_nodes='init')
    assert options.variable_names_denylist == ('a', 'b')
    assert options.variable_names_whitelist == ('c',) and options.initializer_nodes == ('init',)
    same = ee.FreezeOptions(variable_names_denylist=['a'], variable_names_blacklist=('a',))
    assert same.variable_names_denylist == same.variable_names_blacklist == ('a',)


class TestFreezeGraphFlags:
  """--variable_names_denylist (alias --variable_names_blacklist) and --checkpoint_version."""

  def test_denylisted_variable_stays_a_variable_and_is_not_checked(self, session_model):
    prefix, _ = session_model
    with pytest.warns(ee.FreezeWarning, match=r"1 variable\(s\) stay variables.*hidden/kernel"):
      frozen = ee.freeze_checkpoint(prefix, 'probs', options=ee.FreezeOptions(
          variable_names_denylist=['hidden/kernel']))
    assert graph_lib.variable_nodes(frozen.graph_def) == ['hidden/kernel']
    assert frozen.validation == {} and 'not compared with the model' in frozen.warnings[0]

  def test_blacklist_is_the_old_name_of_denylist(self, session_model):
    prefix, _ = session_model
    with pytest.warns(ee.FreezeWarning, match='stay variables.*hidden/kernel'):
      frozen = ee.freeze_checkpoint(prefix, 'probs', options=ee.FreezeOptions(
          variable_names_blacklist=['hidden/kernel']))
    assert graph_lib.variable_nodes(frozen.graph_def) == ['hidden/kernel']

  def test_cli_takes_the_blacklist_alias(self, session_model, tmp_path, capsys):
    prefix, _ = session_model
    out = str(tmp_path / 'deny.pb')
    code = cli.main(['freeze', f'--input_checkpoint={prefix}', '--output_node_names=probs',
                     f'--output_graph={out}', '--variable_names_blacklist=hidden/kernel'])
    assert code == 0
    assert 'freeze: warning: 1 variable(s) stay variables' in capsys.readouterr().err
    assert 'hidden/kernel' in ee.read_frozen_manifest(out)['warnings'][0]

  def test_input_node_names_cut_the_graph_where_the_caller_feeds(self, session_model,
                                                                  tmp_path, capsys):
    prefix, _ = session_model
    frozen = ee.freeze_checkpoint(prefix, 'probs', input_node_names='hidden/BiasAdd')
    assert frozen.inputs == {'hidden/BiasAdd': {'name': 'hidden/BiasAdd:0',
                                                'dtype': 'float32', 'shape': [-1, 16]}}
    assert frozen.validation['max_abs_diff']['probs'] <= 1e-6  # Fed there, in both graphs.
    hidden = RNG.randn(3, 16).astype(np.float32)
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      tf.compat.v1.train.import_meta_graph(prefix + '.meta').restore(session, prefix)
      expected = session.run('probs:0', {'hidden/BiasAdd:0': hidden})
    got = passes_lib.run_graph_def(frozen.graph_def, ['probs:0'], {'hidden/BiasAdd:0': hidden})
    np.testing.assert_allclose(got[0], expected, rtol=1e-6)
    code = cli.main(['freeze', f'--input_checkpoint={prefix}', '--output_node_names=probs',
                     '--input_node_names=hidden/BiasAd', f'--output_graph={tmp_path / "x.pb"}'])
    assert code == 2
    assert ("input node not in the graph: got 'hidden/BiasAd'. Fix: use node names of this "
            "graph. Did you mean 'hidden/BiasAdd'? Placeholders the outputs depend on: ['x']"
            in capsys.readouterr().err)

  def test_v1_checkpoint_needs_checkpoint_version_1(self, tmp_path):
    directory = str(tmp_path / 'v1')
    os.makedirs(directory)  # The V1 Saver does not create it.
    graph = tf.Graph()
    with graph.as_default(), tf.compat.v1.Session() as session:
      inputs, outputs = _build_mlp()
      session.run(tf.compat.v1.global_variables_initializer())
      saver = tf.compat.v1.train.Saver(write_version=tf.compat.v1.train.SaverDef.V1)
      prefix = saver.save(session, os.path.join(directory, 'model.ckpt'))
      reference = session.run(outputs['probs'], {inputs['x']: X})
    assert not os.path.exists(prefix + '.index')
    with pytest.raises(ee.FreezeError, match=r'a V1 checkpoint but checkpoint_version is 2.*'
                       r'checkpoint_version=1'):
      ee.freeze_checkpoint(prefix, 'probs')
    for checkpoint in (prefix, directory):
      frozen = ee.freeze_checkpoint(checkpoint, 'probs',
                                    options=ee.FreezeOptions(checkpoint_version=1))
      got = passes_lib.run_graph_def(frozen.graph_def, ['probs:0'], {'x:0': X})[0]
      np.testing.assert_allclose(got, reference, rtol=1e-6)

  def test_cli_refuses_a_v2_checkpoint_as_v1(self, session_model, tmp_path, capsys):
    prefix, _ = session_model
    code = cli.main(['freeze', f'--input_checkpoint={prefix}', '--output_node_names=probs',
                     f'--output_graph={tmp_path / "x.pb"}', '--checkpoint_version=1'])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith('estimator-export freeze: error: the checkpoint is a V2 checkpoint '
                          'but checkpoint_version is 1')
    assert '--checkpoint_version=2' in err and not os.path.exists(tmp_path / 'x.pb')

  @pytest.mark.parametrize('samples, message', [
      ('{"x": [[1.0', '--samples is not valid JSON'),
      ('[1, 2]', '--samples must be a JSON object'),
      ('@/nonexistent/samples.json', "--samples: cannot read '/nonexistent/samples.json'")])
  def test_cli_bad_samples_exit_2(self, session_model, tmp_path, capsys, samples, message):
    prefix, _ = session_model
    code = cli.main(['freeze', f'--input_checkpoint={prefix}', '--output_node_names=probs',
                     f'--output_graph={tmp_path / "x.pb"}', '--samples', samples])
    assert code == 2
    assert capsys.readouterr().err.startswith(f'estimator-export freeze: error: {message}')

  def test_every_flag_has_help(self):
    parser = cli.build_parser()
    freeze = next(a for a in parser._actions if a.dest == 'command').choices['freeze']
    assert freeze.description and 'examples:' in freeze.epilog
    for action in freeze._actions:
      assert action.help, action.option_strings


class TestCompression:

  @pytest.fixture(scope='class')
  def wide_model(self, tmp_path_factory):
    return _save_session_model(str(tmp_path_factory.mktemp('wide')), width=512)

  # int8: the [6, 512] kernel pays 512 float32 scales for 3072 weights, hence 0.45
  # here; bench/freeze_bench.py measures the 0.30 goal on a BERT-sized graph.
  @pytest.mark.parametrize('mode,limit,max_diff', [('fp16', 0.55, 2e-3), ('int8', 0.45, 2e-2)])
  def test_weights_shrink_and_outputs_stay_close(self, wide_model, tmp_path, mode, limit,
                                                 max_diff):
    prefix, reference = wide_model
    frozen = ee.freeze_checkpoint(prefix, 'probs', options=ee.FreezeOptions(
        optimizations=('all',), compression=mode, min_compress_elements=500,
        samples={'x': X}))
    stats = frozen.compression
    assert stats['mode'] == mode and stats['tensors'] == 3  # Two kernels, the folded bias.
    assert stats['size_ratio'] < limit
    frozen.save(str(tmp_path / 'c.pb'))
    fp32 = ee.freeze_checkpoint(prefix, 'probs', options=ee.FreezeOptions(
        optimizations=('all',)))
    fp32.save(str(tmp_path / 'f.pb'))
    assert os.path.getsize(tmp_path / 'c.pb') < limit * os.path.getsize(tmp_path / 'f.pb')
    dtype = tf.float16 if mode == 'fp16' else tf.int8
    assert any(n.op == 'Const' and n.attr['dtype'].type == dtype.as_datatype_enum
               for n in frozen.graph_def.node)
    with ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 'c.pb')) as predict:
      got = predict({'x': X})['probs']
    diff = float(np.max(np.abs(got - reference)))
    assert 0 < diff < max_diff
    assert stats['max_abs_diff']['probs'] == pytest.approx(diff, abs=1e-6)


class TestTables:

  def test_embedded_vocabulary_needs_no_file(self, vocab_model, tmp_path):
    prefix, vocab = vocab_model
    frozen = ee.freeze_checkpoint(prefix, 'probs,ids', options=ee.FreezeOptions(
        samples={'x': X[:2], 'words': [b'cat', b'dog']}, optimizations=('all',)))
    assert frozen.init_op == 'frozen_tables_init'
    assert frozen.tables[0]['storage'] == 'embedded' and frozen.tables[0]['size'] == 3
    frozen.save(str(tmp_path / 't.pb'))
    moved = vocab + '.moved'
    os.rename(vocab, moved)
    try:
      with ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 't.pb')) as predict:
        ids = predict({'x': X[:3], 'words': ['sat', 'the', 'dog']}, outputs='ids')['ids']
    finally:
      os.rename(moved, vocab)
    assert ids.tolist() == [2, 0, -1]

  def test_referenced_vocabulary_is_copied_and_fed(self, vocab_model, tmp_path):
    prefix, _ = vocab_model
    frozen = ee.freeze_checkpoint(prefix, ['probs', 'ids'], options=ee.FreezeOptions(
        tables='reference', samples={'x': X[:2], 'words': [b'cat', b'the']}))
    manifest = json.loads(open(frozen.save(str(tmp_path / 'r.pb'))).read())
    (tensor, relative), = manifest['assets'].items()
    assert relative == os.path.join('r.assets', 'vocab.txt')
    assert (tmp_path / relative).read_text() == 'the\ncat\nsat\n'
    with ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 'r.pb')) as predict:
      assert predict(x=X[:1], words=['cat'])['ids'].tolist() == [1]
    assert tensor.endswith(':0')

  def test_missing_vocabulary_file_is_refused(self, tmp_path):
    vocab = str(tmp_path / 'vocab.txt')
    with open(vocab, 'w') as f:
      f.write('a\n')
    prefix, _ = _save_session_model(str(tmp_path / 'm'), vocab=vocab)
    os.remove(vocab)
    with pytest.raises(ee.FreezeError, match='initialised from a file that does not exist.*vocab'):
      ee.freeze_checkpoint(prefix, ['ids'], options=ee.FreezeOptions(
          samples={'words': [b'a']}))

  def test_mutable_table_is_refused(self, tmp_path):
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      keys = tf.compat.v1.placeholder(tf.int64, [None], name='keys')
      table = tf.lookup.experimental.MutableHashTable(tf.int64, tf.float32, -1.0)
      tf.identity(table.lookup(keys), name='values')
      tf.compat.v1.get_variable('w', [1])
      session.run(tf.compat.v1.global_variables_initializer())
      prefix = tf.compat.v1.train.Saver().save(session, str(tmp_path / 'model.ckpt'))
    with pytest.raises(ee.FreezeError, match='mutable lookup table.*StaticHashTable'):
      ee.freeze_checkpoint(prefix, ['values'])


class TestSavedModelAndEstimator:

  @pytest.fixture(scope='class')
  def export(self, trained_toy, tmp_path_factory):
    model, estimator = trained_toy
    base = str(tmp_path_factory.mktemp('exports'))
    return model.export_for_serving(estimator, base, samples=toy.SAMPLES)

  def test_outputs_come_from_the_signature(self, export, tmp_path):
    frozen = ee.freeze_saved_model(export.path, options=ee.FreezeOptions(
        optimizations=('all',), samples=toy.SAMPLES))
    assert sorted(frozen.inputs) == ['n', 'x']
    assert sorted(frozen.outputs) == ['class_ids', 'logits', 'probabilities']
    assert frozen.source['kind'] == 'saved_model' and frozen.source['step'] == 20
    assert frozen.source['signature'] == 'serving_default'
    frozen.save(str(tmp_path / 's.pb'))
    with ee.Predictor.from_saved_model(export.path) as saved, \
        ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 's.pb')) as predict:
      expected, got = saved(toy.SAMPLES), predict(toy.SAMPLES)
    for key in expected:
      np.testing.assert_allclose(got[key], expected[key], rtol=1e-5, atol=1e-6, err_msg=key)

  def test_unknown_signature_and_tags(self, export):
    with pytest.raises(ee.SignatureError, match="Did you mean 'predict'"):
      ee.freeze_saved_model(export.path, signature_name='predikt')
    with pytest.raises(ee.FreezeError,
                       match=r"no MetaGraph with this tag set: got 'train'.*\['serve'\]"):
      ee.freeze_saved_model(export.path, tags='train')

  def test_estimator_predict_graph_directly(self, trained_toy, export):
    model, estimator = trained_toy
    frozen = ee.freeze_estimator(estimator, model.serving_input_receiver_fn('raw'),
                                 options=ee.FreezeOptions(samples=toy.SAMPLES))
    assert frozen.source['kind'] == 'estimator' and frozen.source['step'] == 20
    with ee.Predictor.from_saved_model(export.path) as saved:
      expected = saved(toy.SAMPLES)
    with ee.FrozenPredictor(frozen.graph_def, frozen.manifest()) as predict:
      got = predict(toy.SAMPLES)
    np.testing.assert_allclose(got['probabilities'], expected['probabilities'], rtol=1e-5)

  def test_cli_takes_freeze_graph_flags(self, export, tmp_path, capsys):
    out = str(tmp_path / 'cli.pb')
    code = cli.main(['freeze', f'--input_saved_model_dir={export.path}',
                     '--saved_model_tags=serve', f'--output_graph={out}',
                     '--clear_devices=true', '--optimize=all', '--compress=fp16',
                     '--samples', json.dumps({k: v.tolist() for k, v in toy.SAMPLES.items()})])
    assert code == 0
    printed = capsys.readouterr().out
    assert 'output probabilities: probabilities:0 float32 [-1, 2]' in printed
    assert 'fp16: size ratio' in printed
    assert ee.read_frozen_manifest(out)['compression']['mode'] == 'fp16'

  def test_cli_reports_unknown_node(self, session_model, tmp_path, capsys):
    prefix, _ = session_model
    code = cli.main(['freeze', f'--input_meta_graph={prefix}.meta',
                     f'--input_checkpoint={prefix}', '--input_binary=true',
                     '--output_node_names=softmax', f'--output_graph={tmp_path / "x.pb"}',
                     '--restore_op_name=save/restore_all',
                     '--filename_tensor_name=save/Const:0'])
    assert code == 2
    assert "output node not in the graph: got 'softmax'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / 'x.pb')


class TestFrozenPredictor:

  def test_errors_name_the_bad_key(self, session_model, tmp_path):
    prefix, _ = session_model
    ee.freeze_checkpoint(prefix, 'probs').save(str(tmp_path / 'p.pb'))
    with ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 'p.pb')) as predict:
      with pytest.raises(ee.SignatureError, match="unknown input key.*'y'"):
        predict({'y': X})
      with pytest.raises(ee.SignatureError, match="Did you mean 'probs'"):
        predict({'x': X}, outputs='prob')
      with pytest.raises(ee.SignatureError, match="Did you mean 'probs'"):
        predict.run_tensors({'x:0': X}, ['prob:0'])
      with pytest.raises(ee.SignatureError, match='expects shape'):
        predict({'x': X[:, :2]})
    os.remove(tmp_path / 'p.manifest.json')
    with pytest.raises(ee.FreezeError, match='no manifest beside the frozen graph'):
      ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 'p.pb'))
    with ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 'p.pb'), manifest=False) as p:
      assert p.run_tensors({'x:0': X}, 'probs:0')[0].shape == (5, 3)
    with pytest.raises(ee.FreezeError, match='frozen predictor is closed.*from_frozen_graph'):
      p.run_tensors({'x:0': X}, 'probs:0')


def test_saved_model_vocabulary_comes_from_its_assets(tmp_path):
  """The table's file is read from <export>/assets, not from where it was at export."""
  vocab = str(tmp_path / 'vocab.txt')
  with open(vocab, 'w') as f:
    f.write('red\ngreen\nblue\n')
  export_dir = str(tmp_path / 'saved')
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    inputs, outputs = _build_mlp(vocab=vocab)
    session.run([tf.compat.v1.global_variables_initializer(),
                 tf.compat.v1.tables_initializer()])
    builder = tf.compat.v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(
        session, ['serve'], main_op=tf.compat.v1.tables_initializer(),
        assets_collection=tf.compat.v1.get_collection(tf.compat.v1.GraphKeys.ASSET_FILEPATHS),
        signature_def_map={'lookup': tf.compat.v1.saved_model.predict_signature_def(
            {'words': inputs['words']}, {'ids': outputs['ids']})})
    builder.save()
  os.remove(vocab)
  assert os.path.isfile(os.path.join(export_dir, 'assets', 'vocab.txt'))
  for tables in ('embed', 'reference'):
    frozen = ee.freeze_saved_model(export_dir, 'lookup', options=ee.FreezeOptions(
        tables=tables, samples={'words': [b'blue', b'black']}))
    path = str(tmp_path / f'{tables}.pb')
    frozen.save(path)
    with ee.FrozenPredictor.from_frozen_graph(path) as predict:
      assert predict(words=['green', 'blue', 'x'])['ids'].tolist() == [1, 2, -1], tables


def _save_tagged_model(export_dir, tag='my_model'):
  """A Builder SavedModel tagged only `tag`, with no SignatureDef (the freeze_graph article's).

  Placeholders: 'x' float32 [batch, 6], 'scale' float32 [], 'unused' float32 [batch].
  Outputs: 'y' = relu(x @ w) [batch, 2] (needs x only), 'z' = y * scale (x and scale),
  'words_len' = strings.length(words) * k (string Placeholder 'words' [batch]).
  Returns {output: value on X, scale 3, words ['ab', 'cde']} from the saving session.
  """
  with tf.Graph().as_default(), tf.compat.v1.Session() as session:
    x = tf.compat.v1.placeholder(tf.float32, [None, 6], name='x')
    scale = tf.compat.v1.placeholder(tf.float32, [], name='scale')
    tf.compat.v1.placeholder(tf.float32, [None], name='unused')
    words = tf.compat.v1.placeholder(tf.string, [None], name='words')
    w = tf.compat.v1.get_variable('w', [6, 2], initializer=tf.compat.v1.random_normal_initializer(
        seed=5))
    k = tf.compat.v1.get_variable('k', [], tf.int32, initializer=tf.compat.v1.constant_initializer(
        7))
    y = tf.nn.relu(tf.matmul(x, w), name='y')
    z = tf.multiply(y, scale, name='z')
    words_len = tf.multiply(tf.strings.length(words), k, name='words_len')
    session.run(tf.compat.v1.global_variables_initializer())
    reference = dict(zip(('y', 'z', 'words_len'), session.run(
        [y, z, words_len], {x: X, scale: 3.0, words: [b'ab', b'cde']})))
    builder = tf.compat.v1.saved_model.Builder(export_dir)
    builder.add_meta_graph_and_variables(session, [tag])
    builder.save()
  return reference


@pytest.fixture(scope='module')
def tagged_model(tmp_path_factory):
  export_dir = str(tmp_path_factory.mktemp('tagged') / 'saved')
  return export_dir, _save_tagged_model(export_dir)


class TestTagOnlySavedModel:
  """freeze_graph's --input_saved_model_dir --saved_model_tags --output_node_names route."""

  def test_tags_and_output_names_are_enough(self, tagged_model, tmp_path):
    export_dir, reference = tagged_model
    saved = tf.compat.v1.saved_model.loader  # The SavedModel really has no signature.
    with tf.Graph().as_default(), tf.compat.v1.Session() as session:
      assert dict(saved.load(session, ['my_model'], export_dir).signature_def) == {}
    frozen = ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='y',
                                   options=ee.FreezeOptions(optimizations=('all',)))
    assert frozen.inputs == {'x': {'name': 'x:0', 'dtype': 'float32', 'shape': [-1, 6]}}
    assert list(frozen.outputs) == ['y']
    assert frozen.source['signature'] is None and frozen.source['method'] is None
    assert frozen.source['tags'] == ['my_model']
    assert frozen.source['output_node_names'] == ['y']
    assert frozen.validation['max_abs_diff'] == {'y': 0.0}
    assert [s['name'] for s in frozen.optimizations] == list(passes_lib.PASSES)
    assert not graph_lib.variable_nodes(frozen.graph_def)
    frozen.save(str(tmp_path / 't.pb'))
    with ee.FrozenPredictor.from_frozen_graph(str(tmp_path / 't.pb')) as predict:
      np.testing.assert_allclose(predict({'x': X})['y'], reference['y'], rtol=1e-6)

  def test_inputs_are_the_placeholders_each_output_needs(self, tagged_model):
    export_dir, reference = tagged_model
    frozen = ee.freeze_saved_model(export_dir, tags=['my_model'], output_node_names=['z', 'y'],
                                   options=ee.FreezeOptions(samples={'x': X, 'scale': 3.0}))
    assert sorted(frozen.inputs) == ['scale', 'x']  # Not 'unused', not 'words'.
    got = passes_lib.run_graph_def(frozen.graph_def, ['z:0', 'y:0'], {'x:0': X, 'scale:0': 3.0})
    np.testing.assert_allclose(got[0], reference['z'], rtol=1e-6)
    np.testing.assert_allclose(got[1], reference['y'], rtol=1e-6)

  def test_string_input_needs_samples_to_be_checked(self, tagged_model):
    export_dir, reference = tagged_model
    unchecked = ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='words_len')
    assert unchecked.validation == {} and list(unchecked.inputs) == ['words']
    checked = ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='words_len',
                                    options=ee.FreezeOptions(samples={'words': [b'ab', b'cde']}))
    assert checked.validation['max_abs_diff'] == {'words_len': 0.0}
    got = passes_lib.run_graph_def(checked.graph_def, ['words_len:0'],
                                   {'words:0': np.array([b'ab', b'cde'], dtype=object)})[0]
    assert got.tolist() == reference['words_len'].tolist() == [14, 21]

  def test_input_node_names_are_checked(self, tagged_model):
    export_dir, _ = tagged_model
    frozen = ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='z',
                                   input_node_names='scale,x:0',
                                   options=ee.FreezeOptions(samples={'x': X, 'scale': 2.0}))
    assert sorted(frozen.inputs) == ['scale', 'x']
    with pytest.raises(ee.FreezeError, match=r"input node not in the graph: got 'scal'.*"
                       r"Did you mean 'scale'\?.*\['x', 'scale'\]"):
      ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='z',
                            input_node_names='x,scal')
    with pytest.raises(ee.FreezeError, match=r"do not depend on this input node: got 'unused'"):
      ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='y',
                            input_node_names='x,unused')
    with pytest.raises(ee.FreezeError, match=r"also depend on Placeholders that are not input "
                       r"nodes: got \['scale'\].*--input_node_names"):
      ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='z',
                            input_node_names='x')

  def test_unknown_output_node_says_did_you_mean(self, tagged_model):
    export_dir, _ = tagged_model
    with pytest.raises(ee.FreezeError, match=r"output node not in the graph: got 'yy'.*"
                       r"Did you mean 'y'\?"):
      ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='yy')
    with pytest.raises(ee.FreezeError, match=r"node 'y' has 1 output\(s\): got 'y:1'.*'y:0'"):
      ee.freeze_saved_model(export_dir, tags='my_model', output_node_names='y:1')

  def test_unknown_tag_set_lists_the_available_ones(self, tagged_model):
    export_dir, _ = tagged_model
    for tags, hint in (('serve', ''), ('my_modle', " Did you mean 'my_model'?")):
      with pytest.raises(ee.FreezeError) as info:
        ee.freeze_saved_model(export_dir, tags=tags, output_node_names='y')
      assert str(info.value) == (
          f"the SavedModel has no MetaGraph with this tag set: got '{tags}'. Fix: pass one of "
          "its tag sets ['my_model'] as saved_model_tags (--saved_model_tags=my_model)."
          + hint)

  def test_no_signature_and_no_output_names_says_what_to_pass(self, tagged_model):
    export_dir, _ = tagged_model
    with pytest.raises(ee.SignatureError) as info:
      ee.freeze_saved_model(export_dir, tags='my_model')
    text = str(info.value)
    assert text.startswith("the MetaGraph tagged 'my_model' has no SignatureDef")
    assert "got 'serving_default'" in text and '--output_node_names=' in text
    assert text.endswith("Nodes that look like outputs: ['z', 'words_len']")  # y feeds z.
    with pytest.raises(ee.SignatureError, match='no SignatureDef'):  # Asked for by name.
      ee.freeze_saved_model(export_dir, 'serving_default', 'my_model', 'y')

  def test_signature_is_optional_with_an_estimator_export(self, trained_toy, tmp_path):
    model, estimator = trained_toy
    export = model.export_for_serving(estimator, str(tmp_path / 'exports'),
                                      samples=toy.SAMPLES)
    by_signature = ee.freeze_saved_model(export.path, options=ee.FreezeOptions(
        samples=toy.SAMPLES))
    node = graph_lib.node_name(by_signature.outputs['probabilities']['name'])
    # The raw inputs are placeholder_with_default over the parsed Example: by node names
    # alone the input is the serialized-Example Placeholder, which samples cannot be made for.
    by_node = ee.freeze_saved_model(export.path, output_node_names=node)
    assert by_node.source['signature'] is None
    assert [v['dtype'] for v in by_node.inputs.values()] == ['string']
    assert by_node.validation == {}
    raw_inputs = [by_signature.inputs[k]['name'] for k in ('x', 'n')]
    by_names = ee.freeze_saved_model(export.path, output_node_names=node,
                                     input_node_names=raw_inputs, options=ee.FreezeOptions(
                                         samples={n: toy.SAMPLES[k] for k, n in
                                                  zip(('x', 'n'), raw_inputs)}))
    assert sorted(v['name'] for v in by_names.inputs.values()) == sorted(raw_inputs)
    # An explicit signature still supplies the inputs, by its keys.
    mixed = ee.freeze_saved_model(export.path, 'serving_default', output_node_names=node,
                                  options=ee.FreezeOptions(samples=toy.SAMPLES))
    assert sorted(mixed.inputs) == ['n', 'x'] and list(mixed.outputs) == [node]
    feeds = {by_signature.inputs[k]['name']: v for k, v in toy.SAMPLES.items()}
    want = passes_lib.run_graph_def(by_signature.graph_def, [node + ':0'], feeds)[0]
    for frozen in (by_names, mixed):
      got = passes_lib.run_graph_def(frozen.graph_def, [node + ':0'], feeds)[0]
      np.testing.assert_allclose(got, want, rtol=1e-6)


class TestTagOnlyCli:

  def test_freeze_graph_flags_freeze_it(self, tagged_model, tmp_path, capsys):
    export_dir, reference = tagged_model
    out = str(tmp_path / 'cli.pb')
    code = cli.main(['freeze', '--input_saved_model_dir', export_dir, '--saved_model_tags',
                     'my_model', '--output_node_names', 'z,y', '--output_graph', out,
                     '--optimize=all', '--samples', json.dumps({'x': X.tolist(), 'scale': 3.0})])
    assert code == 0
    printed = capsys.readouterr().out
    assert 'input  scale: scale:0 float32 []' in printed
    assert 'input  x: x:0 float32 [-1, 6]' in printed
    assert "checked on 5 sample(s): max |diff| {'y': 0.0, 'z': 0.0}" in printed
    with ee.FrozenPredictor.from_frozen_graph(out) as predict:
      got = predict({'x': X, 'scale': np.float32(3.0)})
    np.testing.assert_allclose(got['z'], reference['z'], rtol=1e-6)
    assert ee.read_frozen_manifest(out)['source']['tags'] == ['my_model']

  def test_unchecked_string_input_is_said(self, tagged_model, tmp_path, capsys):
    export_dir, _ = tagged_model
    code = cli.main(['freeze', f'--input_saved_model_dir={export_dir}',
                     '--saved_model_tags=my_model', '--output_node_names=words_len',
                     f'--output_graph={tmp_path / "w.pb"}'])
    assert code == 0
    assert 'not checked against the model' in capsys.readouterr().out

  @pytest.mark.parametrize('flags, message', [
      (['--saved_model_tags=serve', '--output_node_names=y'],
       "the SavedModel has no MetaGraph with this tag set: got 'serve'. Fix: pass one of its "
       "tag sets ['my_model']"),
      (['--saved_model_tags=my_model'],
       "the MetaGraph tagged 'my_model' has no SignatureDef"),
      (['--saved_model_tags=my_model', '--output_node_names=y,zz'],
       "output node not in the graph: got 'zz'. Fix: use node names of this graph. Did you "
       "mean 'z'?"),
      (['--saved_model_tags=my_model', '--output_node_names=z', '--input_node_names=x'],
       "the outputs also depend on Placeholders that are not input nodes: got ['scale']"),
  ])
  def test_mistakes_exit_2_with_one_line(self, tagged_model, tmp_path, capsys, flags, message):
    export_dir, _ = tagged_model
    code = cli.main(['freeze', f'--input_saved_model_dir={export_dir}',
                     f'--output_graph={tmp_path / "x.pb"}'] + flags)
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith(f'estimator-export freeze: error: {message}'), err
    assert len(err.strip().splitlines()) == 1 and 'Traceback' not in err
    assert not os.path.exists(tmp_path / 'x.pb')
