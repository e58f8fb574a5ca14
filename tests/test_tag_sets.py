"""Several MetaGraphs in one export, selected by tag everywhere (estimator_export.tag_sets).

Real exports of the trained toy Estimator with the tag sets {serve} and
{serve, gpu}, loaded back by tag with tf.compat.v1's loader and run; the
`validate` and `diff` commands with --tag_set; the embedded server with
--saved_model_tags on real loopback ports, over gRPC and REST.
"""
import argparse
import json
import logging
import os
import re

from absl import flags as absl_flags
import numpy as np
import pytest
import tensorflow as tf

import estimator_export as ee
from estimator_export import _saved_model
from estimator_export import cli
from estimator_export import contract as contract_lib
from estimator_export import flags as export_flags
from estimator_export import tag_sets as tag_sets_lib
from estimator_export import warmup
from estimator_export.cli import serve as serve_cli
from estimator_export.client import GrpcClient, RestClient, ServingClientError
from estimator_export.errors import ConfigError
from estimator_export.serving import config as config_lib
from estimator_export.serving import server as server_lib
from tests import toy
from tests.serving_util import model_status

ALL = ['examples:classify', 'examples:predict', 'examples:regress', 'examples:serving_default',
       'predict', 'serving_default']
GPU_SUBSET = ['examples:classify', 'serving_default']
MISSING_TAGS = ('Could not find meta graph def matching supplied tags: { serve gpu }. To inspect '
                'available tag-sets in the SavedModel, please use the SavedModel CLI: '
                '`saved_model_cli`')


def _export(trained, base, **kwargs):
  model, estimator = trained
  return model.export_for_serving(estimator, str(base), samples=toy.SAMPLES, **kwargs)


@pytest.fixture(scope='module')
def exports(trained_toy, tmp_path_factory):
  """name -> ExportResult: 'default' ({serve}), 'two' ({serve}, {serve, gpu}, every
  signature), 'subset' ({serve} all, {serve, gpu} two signatures), 'gpu_only'."""
  root = tmp_path_factory.mktemp('tag_sets')
  return {
      'default': _export(trained_toy, root / 'default'),
      'two': _export(trained_toy, root / 'two', tag_sets=('serve', 'serve,gpu')),
      'subset': _export(trained_toy, root / 'subset',
                        tag_sets={'serve': None, 'serve,gpu': GPU_SUBSET}),
      'gpu_only': _export(trained_toy, root / 'gpu_only', tag_sets=[['gpu', 'serve']]),
  }


def _tag_sets_of(path):
  """[sorted tags] per MetaGraph of the SavedModel, in file order."""
  return [sorted(mg.meta_info_def.tags)
          for mg in _saved_model.read_saved_model(path).meta_graphs]


def _run_with_loader(path, tags, signature='serving_default'):
  """Loads the MetaGraph tagged `tags` with tf.compat.v1's loader and runs one signature."""
  graph = tf.Graph()
  with tf.compat.v1.Session(graph=graph) as session:
    meta_graph = tf.compat.v1.saved_model.loader.load(session, tags, path)
    signature_def = meta_graph.signature_def[signature]
    feeds = {signature_def.inputs[key].name: value for key, value in toy.SAMPLES.items()}
    fetches = {key: info.name for key, info in signature_def.outputs.items()}
    outputs = session.run(fetches, feeds)
    with graph.as_default():  # The restored variable, read through its collection.
      kernel, = [v for v in tf.compat.v1.global_variables() if v.op.name == 'logits/kernel']
    kernel = session.run(kernel)
  return outputs, kernel, sorted(meta_graph.signature_def)


class TestExportWithTagSets:

  def test_each_tag_set_loads_by_tag_and_runs(self, exports):
    path = exports['two'].path
    assert _tag_sets_of(path) == [['serve'], ['gpu', 'serve']]
    serve, serve_kernel, serve_names = _run_with_loader(path, ['serve'])
    for tags in (['serve', 'gpu'], ['gpu', 'serve']):
      gpu, gpu_kernel, gpu_names = _run_with_loader(path, tags)
      assert gpu_names == serve_names == ALL
      np.testing.assert_array_equal(gpu_kernel, serve_kernel)
      for key, value in serve.items():
        np.testing.assert_array_equal(gpu[key], value)
    with pytest.raises(RuntimeError, match=r"MetaGraphDef associated with tags 'gpu' could "
                                           r'not be found'):
      _run_with_loader(path, ['gpu'])

  def test_the_meta_graphs_share_one_variables_directory(self, exports):
    result = exports['two']
    files = [os.path.relpath(os.path.join(d, n), result.path)
             for d, _, names in os.walk(result.path) for n in names]
    assert sorted(f for f in files if 'variables' in f) == [
        os.path.join('variables', 'variables.data-00000-of-00001'),
        os.path.join('variables', 'variables.index')]
    assert sum(f.endswith('variables.index') for f in files) == 1
    meta_graphs = _saved_model.read_saved_model(result.path).meta_graphs
    assert meta_graphs[0].saver_def == meta_graphs[1].saver_def
    assert meta_graphs[0].graph_def == meta_graphs[1].graph_def
    # Both restore what the checkpoint holds: the one variables/ directory.
    expected = tf.train.load_variable(result.checkpoint_path, 'logits/kernel')
    for tags in (['serve'], ['serve', 'gpu']):
      np.testing.assert_array_equal(_run_with_loader(result.path, tags)[1], expected)

  def test_result_and_manifest_record_the_tag_sets(self, exports):
    result = exports['subset']
    assert result.tag_sets == {'serve': ALL, 'gpu,serve': GPU_SUBSET}
    assert result.signatures == {name: ee.Predictor.from_saved_model(
        result.path).signatures[name].method_name for name in ALL}
    manifest = json.load(open(result.manifest_path))
    assert manifest['tag_sets'] == {'serve': ALL, 'gpu,serve': GPU_SUBSET}
    assert exports['default'].tag_sets == {'serve': ALL}
    assert json.load(open(exports['default'].manifest_path))['tag_sets'] == {'serve': ALL}

  def test_default_export_keeps_one_serve_meta_graph(self, exports):
    assert _tag_sets_of(exports['default'].path) == [['serve']]
    assert sorted(_saved_model.signature_defs(exports['default'].path)) == ALL

  def test_a_tag_set_carries_only_its_signatures(self, exports):
    path = exports['subset'].path
    assert sorted(_saved_model.signature_defs(path, 'serve,gpu')) == GPU_SUBSET
    examples = toy.ToyClassifier.feature_spec.to_examples(toy.SAMPLES)
    with ee.Predictor.from_saved_model(path, tags=['serve', 'gpu']) as predictor:
      assert sorted(predictor.signatures) == GPU_SUBSET
      scores = predictor.for_signature('examples:classify')({'inputs': examples})['scores']
      np.testing.assert_allclose(scores, predictor(toy.SAMPLES)['probabilities'], rtol=1e-5)
      with pytest.raises(ee.SignatureError, match=r"got 'predict'"):
        predictor.for_signature('predict')

  def test_warmup_holds_the_signatures_every_tag_set_carries(self, exports):
    logs = warmup.read_warmup_requests(exports['subset'].path)
    names = sorted(log.WhichOneof('log_type') + ':' + getattr(
        log, log.WhichOneof('log_type')).request.model_spec.signature_name for log in logs)
    assert names == ['classify_log:examples:classify', 'predict_log:serving_default']
    assert exports['subset'].warmup_records == 2
    assert exports['two'].warmup_records == len(ALL)
    # TF Serving replays the one file against whichever tag set it loads.
    for tags in (['serve'], ['serve', 'gpu']):
      with ee.Predictor.from_saved_model(exports['subset'].path, tags=tags) as predictor:
        assert warmup.replay_warmup(predictor, logs) == 2

  def test_only_a_custom_tag_set(self, exports):
    path = exports['gpu_only'].path
    assert _tag_sets_of(path) == [['gpu', 'serve']]
    assert exports['gpu_only'].tag_sets == {'gpu,serve': ALL}
    with pytest.raises(ee.ContractError, match=r'has no MetaGraph with these tags'):
      ee.Predictor.from_saved_model(path)

  def test_unknown_signature_fails_before_publishing(self, trained_toy, tmp_path):
    with pytest.raises(ee.SignatureError, match=r"tag set 'gpu,serve' names a signature the "
                                                r"export does not have: got 'predcit'.*"
                                                r"Did you mean 'predict'\?"):
      _export(trained_toy, tmp_path / 'm', tag_sets={'serve': None, 'serve,gpu': ['predcit']})
    assert os.listdir(tmp_path / 'm') == []


class TestTagSetOptions:

  @pytest.mark.parametrize('tag_sets,pattern', [
      ([], r'no tag set to export: got \[\]'),
      ('serve,gpu', r"tag_sets takes a list of tag sets, not one string: got 'serve,gpu'\. "
                    r"Fix: tag_sets=\['serve,gpu'\] for one MetaGraph"),
      ([''], r"empty tag set: got ''"),
      (['serve,'], r"tag set 'serve,' has a blank tag or a tag with a comma: got ''"),
      ([['serve', 'a,b']], r"has a blank tag or a tag with a comma: got 'a,b'"),
      (['serve,serve'], r"tag set 'serve,serve' names a tag twice: got 'serve'"),
      (['serve,gpu', ' gpu , serve'], r"the same tag set is given twice \(tags match as a "
                                      r"set\): got 'gpu,serve'. Fix: drop one of 'serve,gpu'"),
      ({'serve': []}, r"tag set 'serve' carries no signature"),
      ({'serve': ['predict', 'predict']}, r"tag set 'serve' names a signature twice: got "
                                          r"'predict'"),
      ([[1]], r"has a tag that is not a string: got 1"),
  ])
  def test_bad_tag_sets_are_named(self, tag_sets, pattern):
    with pytest.raises(ee.TagSetError, match=pattern):
      ee.ExportOptions(tag_sets=tag_sets)

  def test_spellings_normalise_to_specs(self):
    spec = ee.MetaGraphSpec
    assert ee.ExportOptions().tag_sets == (spec(('serve',)),)
    options = ee.ExportOptions(tag_sets=['serve', ' serve , gpu ', spec('train', ['a'])])
    assert options.tag_sets == (spec(('serve',)), spec(('serve', 'gpu')),
                                spec(('train',), ('a',)))
    assert ee.ExportOptions(tag_sets=options.tag_sets) == options  # Idempotent.
    assert ee.ExportOptions(tag_sets={('serve', 'gpu'): 'predict'}).tag_sets == (
        spec(('serve', 'gpu'), ('predict',)),)

  def test_flags(self):
    fv = absl_flags.FlagValues()
    export_flags.define_export_flags(fv)
    fv(['prog', '--export_tag_sets=serve', '--export_tag_sets=serve,gpu=serving_default, '
        'examples:classify'])
    options = export_flags.export_settings_from_flags(fv).options
    assert options.tag_sets == (ee.MetaGraphSpec('serve'), ee.MetaGraphSpec(
        'serve,gpu', ('serving_default', 'examples:classify')))
    fv = absl_flags.FlagValues()
    export_flags.define_export_flags(fv)
    fv(['prog', '--export_tag_sets=serve,,gpu'])
    with pytest.raises(ee.TagSetError, match=r"^--export_tag_sets: tag set 'serve,,gpu' has a "
                                             r'blank tag'):
      export_flags.export_settings_from_flags(fv)

  def test_plan(self):
    layout = tag_sets_lib.plan({'serve': None, 'gpu,serve': ['b']}, ['b', 'a'])
    assert layout.meta_graphs == ((('serve',), ('a', 'b')), (('gpu', 'serve'), ('b',)))
    assert (layout.written, layout.common) == (['a', 'b'], ['b'])
    assert layout.as_dict() == {'serve': ['a', 'b'], 'gpu,serve': ['b']}
    assert tag_sets_lib.plan(['serve'], ['a']).is_single_serve(['a'])
    assert not tag_sets_lib.plan(['serve,gpu'], ['a']).is_single_serve(['a'])


# ----- the command line: validate and diff by --tag_set -----

def _cli(capsys, *argv):
  """(exit code, stdout without validate's fingerprint line, stderr) of the command."""
  code = cli.main(list(argv))
  out = capsys.readouterr()
  lines = [l for l in out.out.splitlines(keepends=True) if not l.startswith('fingerprint: ok')]
  return code, ''.join(lines), out.err


class TestValidateAndDiffByTagSet:

  def test_validate_runs_the_chosen_meta_graph(self, exports, capsys):
    path = exports['subset'].path
    code, out, err = _cli(capsys, 'validate', '--dir', path, '--tag_set', 'serve,gpu')
    assert code == 0, err
    assert sorted(line.split(': ok ')[0] for line in out.splitlines()) == GPU_SUBSET
    code, out, _ = _cli(capsys, 'validate', '--dir', path)  # Default: serve.
    assert code == 0 and len(out.splitlines()) == len(ALL)

  def test_validate_names_the_available_tag_sets(self, exports, capsys):
    path = exports['subset'].path
    code, out, err = _cli(capsys, 'validate', '--dir', path, '--tag_set', 'gpu')
    assert code == 2 and out == ''
    assert err == (f"estimator-export validate: error: no MetaGraphDef with this tag-set in "
                   f"{path!r}: got 'gpu'. Fix: use one of the tag-sets: 'gpu,serve', 'serve'.\n")
    code, _, err = _cli(capsys, 'validate', '--dir', exports['gpu_only'].path)
    assert code == 2 and "got 'serve'. Fix: use one of the tag-sets: 'gpu,serve'." in err

  def test_diff_compares_the_chosen_meta_graph(self, exports, capsys):
    default, two, subset = (exports[k].path for k in ('default', 'two', 'subset'))
    assert _cli(capsys, 'diff', default, two) == (0, 'no changes\n', '')
    assert _cli(capsys, 'diff', '--all_tag_sets', default, two) == (
        0, 'compatible gpu,serve: tag-set added\n', '')
    code, out, _ = _cli(capsys, 'diff', '--tag_set', 'gpu,serve', two, subset)
    assert code == 1
    assert out.splitlines() == [
        f'BREAKING  gpu,serve/{name}: signature removed'
        for name in sorted(set(ALL) - set(GPU_SUBSET))]
    assert _cli(capsys, 'diff', '--tag_set', ' serve , gpu', subset, two)[:2] == (
        0, 'compatible gpu,serve/examples:predict: signature added\n'
        'compatible gpu,serve/examples:regress: signature added\n'
        'compatible gpu,serve/examples:serving_default: signature added\n'
        'compatible gpu,serve/predict: signature added\n')

  def test_diff_names_the_export_lacking_the_tag_set(self, exports, capsys):
    default, two = exports['default'].path, exports['two'].path
    code, out, err = _cli(capsys, 'diff', '--tag_set', 'serve,gpu', default, two)
    assert code == 2 and out == ''
    assert err == (f"estimator-export diff: error: no MetaGraphDef with this tag-set in "
                   f"{default!r}: got 'gpu,serve'. Fix: use one of the tag-sets: 'serve'. "
                   "Did you mean 'serve'?\n")
    code, _, err = _cli(capsys, 'diff', '--tag_set', 'serve', '--all_tag_sets', default, two)
    assert code == 2 and '--tag_set=serve and --all_tag_sets contradict' in err

  def test_library_diff_with_and_without_tag_set(self, exports):
    default, gpu_only = exports['default'].path, exports['gpu_only'].path
    assert [str(c) for c in contract_lib.diff(default, gpu_only)] == [
        'compatible gpu,serve: tag-set added', 'BREAKING  serve: tag-set removed']
    with pytest.raises(ee.ContractError, match=re.escape(f'tag-set in {gpu_only!r}: got '
                                                         "'serve'")):
      contract_lib.diff(default, gpu_only, tag_set='serve')


# ----- the embedded server: --saved_model_tags -----

def _start(base, **options):
  return server_lib.create_server(config_lib.ServerOptions(
      port=0, rest_api_port=0, model_name='toy', model_base_path=base,
      file_system_poll_wait_seconds=0, max_num_load_retries=0, **options))


class TestServerSavedModelTags:

  def test_serves_the_meta_graph_with_exactly_those_tags(self, exports, caplog):
    result = exports['subset']
    with ee.Predictor.from_saved_model(result.path, tags=['serve', 'gpu']) as predictor:
      expected = predictor(toy.SAMPLES)
    caplog.set_level(logging.INFO, logger='estimator_export.serving')
    server = _start(os.path.dirname(result.path), saved_model_tags='serve,gpu')
    try:
      assert server.options.saved_model_tags == ('serve', 'gpu')
      assert model_status(server.rest_port, 'toy')[result.version]['state'] == 'AVAILABLE'
      with GrpcClient(f'127.0.0.1:{server.grpc_port}') as client:
        assert sorted(client.metadata('toy')) == GPU_SUBSET
        got = client.predict('toy', toy.SAMPLES)
        np.testing.assert_allclose(got['probabilities'], expected['probabilities'], rtol=1e-6)
        with pytest.raises(ServingClientError, match='Serving signature key "predict" not '
                                                     'found'):
          client.predict('toy', toy.SAMPLES, signature_name='predict')
      with RestClient(f'http://127.0.0.1:{server.rest_port}') as client:
        got = client.predict('toy', toy.SAMPLES)
        np.testing.assert_allclose(got['probabilities'], expected['probabilities'], rtol=1e-6)
    finally:
      server.stop(grace=1.0)
    assert ('Number of warmup records read: 2.') in caplog.text

  def test_a_version_without_those_tags_fails_to_load(self, exports):
    result = exports['default']
    server = _start(os.path.dirname(result.path), saved_model_tags='serve,gpu')
    try:
      assert model_status(server.rest_port, 'toy') == {result.version: {
          'version': str(result.version), 'state': 'END',
          'status': {'error_code': 'NOT_FOUND', 'error_message': MISSING_TAGS}}}
      with GrpcClient(f'127.0.0.1:{server.grpc_port}') as client:
        with pytest.raises(ServingClientError, match=re.escape(
            'Servable not found for request: Latest(toy)')):
          client.predict('toy', toy.SAMPLES)
    finally:
      server.stop(grace=1.0)

  def test_default_tags_refuse_a_model_without_serve(self, exports):
    result = exports['gpu_only']
    server = _start(os.path.dirname(result.path))
    try:
      status = model_status(server.rest_port, 'toy')[result.version]
      assert status['state'] == 'END'
      assert status['status']['error_message'].startswith(
          'Could not find meta graph def matching supplied tags: { serve }.')
    finally:
      server.stop(grace=1.0)

  @pytest.mark.parametrize('value', ['serve,', '', 'serve, gpu', ('serve', '')])
  def test_blank_or_padded_tags_are_config_errors(self, value):
    with pytest.raises(ConfigError, match=r'saved_model_tags has an empty or space-padded tag'):
      config_lib.ServerOptions(saved_model_tags=value)

  def test_flag_value_becomes_tags(self):
    assert config_lib.options_from_flags(
        {'saved_model_tags': 'serve,gpu,serve'}).saved_model_tags == ('serve', 'gpu')
    assert config_lib.ServerOptions().saved_model_tags == ('serve',)

  def test_serve_command_takes_the_flag(self):
    args = serve_cli.add_server_arguments(argparse.ArgumentParser()).parse_args(
        ['--model_base_path=/m', '--saved_model_tags=serve,gpu'])
    serve_cli.check_supported(serve_cli.given_flags(args))  # No longer refused.
    assert serve_cli.options_from_args(args).saved_model_tags == ('serve', 'gpu')
    assert serve_cli.FLAGS['saved_model_tags'].status == serve_cli.IMPLEMENTED
