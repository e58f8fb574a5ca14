"""Tests for estimator_export.serving.config: TF Serving's config files and flags."""
import argparse
import dataclasses
import os
import re

import pytest
from google.protobuf import text_format
from tensorflow_serving.config import model_server_config_pb2

from estimator_export.cli import serve as serve_cli
from estimator_export.serving import config
from estimator_export.serving.config import (All, BatchingParameters, ConfigError, Latest,
                                             ModelConfig, MonitoringConfig, ServerOptions,
                                             Specific)


def _fixture_text(testdata: str, name: str) -> str:
  with open(os.path.join(testdata, name), encoding='utf-8') as f:
    return f.read()


def _write(path, text: str) -> str:
  path = str(path)
  with open(path, 'w', encoding='utf-8') as f:
    f.write(text)
  return path


def _entry_text(name='m', base_path='/models/m', extra='', platform='model_platform: "tensorflow"'):
  return (f'model_config_list {{ config {{ name: "{name}" base_path: "{base_path}" {platform} '
          f'{extra} }} }}')


# ----- the upstream fixtures -----

class TestFixtures:

  def test_good_model_config_after_substitution(self, tf_serving_testdata):
    two = os.path.join(tf_serving_testdata, 'saved_model_half_plus_two_cpu')
    three = os.path.join(tf_serving_testdata, 'saved_model_half_plus_three')
    text = config.substitute(_fixture_text(tf_serving_testdata, 'good_model_config.txt'),
                             {'TEST_HALF_PLUS_TWO_DIR': two, 'TEST_HALF_PLUS_THREE_DIR': three})
    assert config.parse_model_config_text(text) == [
        ModelConfig('half_plus_two', two), ModelConfig('half_plus_three', three)]

  def test_good_model_config_placeholders_are_not_expanded(self, tf_serving_testdata,
                                                           monkeypatch):
    monkeypatch.setenv('TEST_HALF_PLUS_TWO_DIR', '/set/in/env')
    path = os.path.join(tf_serving_testdata, 'good_model_config.txt')
    with pytest.raises(ConfigError) as info:
      config.load_model_config_file(path)
    message = str(info.value)
    assert message.startswith(path + ':')
    assert ('Expected model half_plus_two to have an absolute path or URI; got '
            'base_path()=${TEST_HALF_PLUS_TWO_DIR}') in message
    assert 'substitute' in message

  def test_bad_model_config(self, tf_serving_testdata):
    path = os.path.join(tf_serving_testdata, 'bad_model_config.txt')
    with pytest.raises(ConfigError, match=re.escape(f"Invalid protobuf file: '{path}'")) as info:
      config.load_model_config_file(path)
    assert 'has no field named "improperly"' in str(info.value)
    assert (info.value.source, info.value.line) == (path, 1)

  def test_batching_config(self, tf_serving_testdata):
    params = config.load_batching_parameters_file(
        os.path.join(tf_serving_testdata, 'batching_config.txt'))
    assert params == BatchingParameters(max_batch_size=128, batch_timeout_micros=0,
                                        max_enqueued_batches=1000000, num_batch_threads=8)

  def test_monitoring_config(self, tf_serving_testdata):
    monitoring = config.load_monitoring_config_file(
        os.path.join(tf_serving_testdata, 'monitoring_config.txt'))
    assert monitoring == MonitoringConfig(prometheus_enable=True,
                                          prometheus_path='/monitoring/prometheus/metrics')

  def test_missing_file(self, tmp_path):
    missing = str(tmp_path / 'nope.config')
    with pytest.raises(ConfigError, match='Could not read the model config file') as info:
      config.load_model_config_file(missing)
    assert missing in str(info.value)


class TestSubstitute:

  def test_fills_placeholders(self):
    assert config.substitute('a: "${X}/${Y_2}" $Z', {'X': '/p', 'Y_2': 3}) == 'a: "/p/3" $Z'

  def test_missing_placeholder_is_named(self):
    with pytest.raises(ConfigError, match=re.escape('No value for placeholder(s) ${A}, ${B}')):
      config.substitute('${B} ${A} ${C}', {'C': 1})


# ----- ModelConfig and model config files -----

POLICIES = [Latest(), Latest(3), All(), Specific(frozenset({7, 1})), Specific(frozenset())]


class TestModelConfig:

  @pytest.mark.parametrize('policy', POLICIES, ids=repr)
  @pytest.mark.parametrize('labels', [{}, {'stable': 1, 'canary': 7}])
  def test_round_trip_through_text(self, policy, labels):
    original = ModelConfig('m', '/models/m', version_policy=policy, version_labels=labels)
    text = text_format.MessageToString(original.to_proto())
    parsed = model_server_config_pb2.ModelConfig()
    text_format.Parse(text, parsed)
    assert ModelConfig.from_proto(parsed) == original
    assert dict(ModelConfig.from_proto(parsed).version_labels) == labels

  def test_proto_defaults_mean_latest_one(self):
    proto = model_server_config_pb2.ModelConfig(name='m', base_path='/m',
                                                model_platform='tensorflow')
    assert ModelConfig.from_proto(proto).version_policy == Latest(1)
    proto.model_version_policy.latest.num_versions = 0
    assert ModelConfig.from_proto(proto).version_policy == Latest(1)

  def test_latest_one_is_left_implicit(self):
    assert not ModelConfig('m', '/m').to_proto().HasField('model_version_policy')

  def test_deprecated_model_type(self):
    proto = model_server_config_pb2.ModelConfig(name='m', base_path='/m',
                                                model_type=model_server_config_pb2.TENSORFLOW)
    assert ModelConfig.from_proto(proto).model_platform == 'tensorflow'
    proto.model_platform = 'tensorflow'
    with pytest.raises(ConfigError, match='Illegal setting both ModelServerConfig::model_type'):
      ModelConfig.from_proto(proto)

  def test_platform_is_required(self):
    proto = model_server_config_pb2.ModelConfig(name='m', base_path='/m')
    with pytest.raises(ConfigError, match='Illegal setting neither ModelServerConfig::model_type'):
      ModelConfig.from_proto(proto)

  def test_only_tensorflow_platform(self):
    with pytest.raises(ConfigError, match='Model m requests unsupported platform pytorch'):
      ModelConfig('m', '/m', model_platform='pytorch')

  @pytest.mark.parametrize('base_path', ['gs://bucket/m', 's3://b/m', 'hdfs://host:9000/m', '/m'])
  def test_absolute_paths_and_uris(self, base_path):
    assert ModelConfig('m', base_path).base_path == base_path

  @pytest.mark.parametrize('base_path', ['models/m', './m', ''])
  def test_relative_and_empty_paths_are_refused(self, base_path):
    with pytest.raises(ConfigError, match=re.escape(
        f'Expected model m to have an absolute path or URI; got base_path()={base_path}')):
      ModelConfig('m', base_path)

  @pytest.mark.parametrize('kwargs, pattern', [
      (dict(name=''), 'non-empty name'),
      (dict(version_policy='latest'), 'unknown version policy'),
      (dict(version_labels={'stable': '1'}), r"version_labels\['stable'\] of model m must be"),
      (dict(version_labels={'': 1}), 'empty or non-string version label'),
  ])
  def test_bad_values(self, kwargs, pattern):
    values = {'name': 'm', 'base_path': '/m', **kwargs}
    with pytest.raises(ConfigError, match=pattern):
      ModelConfig(**values)

  @pytest.mark.parametrize('make', [lambda: Latest(0), lambda: Latest(True),
                                    lambda: Specific(frozenset({'1'}))])
  def test_bad_policies(self, make):
    with pytest.raises(ConfigError):
      make()

  def test_immutable_and_hashable(self):
    model = ModelConfig('m', '/m', version_policy=Specific([2, 1]), version_labels={'a': 1})
    assert model.version_policy == Specific(frozenset({1, 2}))
    assert hash(model) == hash(ModelConfig('m', '/m', version_policy=Specific({1, 2}),
                                           version_labels={'a': 1}))
    with pytest.raises(TypeError):
      model.version_labels['b'] = 2
    with pytest.raises(dataclasses.FrozenInstanceError):
      model.name = 'n'


class TestParseModelConfigText:

  def test_policies_and_labels(self):
    text = '''
      # Two models.
      model_config_list {
        config {
          name: "a" base_path: "/models/a" model_platform: "tensorflow"
          model_version_policy { specific { versions: 1 versions: 2 } }
          version_labels { key: "stable" value: 1 }
          version_labels { key: "canary" value: 2 }
        }
        config {
          name: "b" base_path: "gs://bucket/b" model_platform: "tensorflow"
          model_version_policy { all {} }
        }
      }'''
    a, b = config.parse_model_config_text(text)
    assert a == ModelConfig('a', '/models/a', version_policy=Specific({1, 2}),
                            version_labels={'stable': 1, 'canary': 2})
    assert b == ModelConfig('b', 'gs://bucket/b', version_policy=All())

  def test_duplicate_names(self, tmp_path):
    path = _write(tmp_path / 'models.config', 'model_config_list { '
                  'config { name: "a" base_path: "/a" model_platform: "tensorflow" } '
                  'config { name: "a" base_path: "relative" model_platform: "tensorflow" } }')
    with pytest.raises(ConfigError, match=re.escape(
        f'{path}: Illegal to list model a multiple times in config list')):
      config.load_model_config_file(path)

  def test_relative_path_hint_uses_the_config_directory(self, tmp_path):
    path = _write(tmp_path / 'models.config', _entry_text(base_path='exports/m'))
    with pytest.raises(ConfigError) as info:
      config.load_model_config_file(path)
    assert 'got base_path()=exports/m' in str(info.value)
    assert os.path.join(str(tmp_path), 'exports', 'm') in info.value.fix

  def test_errors_name_the_source(self):
    with pytest.raises(ConfigError, match='^my.config: Model m requests unsupported platform x'):
      config.parse_model_config_text(_entry_text(platform='model_platform: "x"'), 'my.config')

  def test_custom_model_config_is_refused(self):
    with pytest.raises(ConfigError, match='ModelServer does not yet support custom model config'):
      config.parse_model_config_text('custom_model_config { type_url: "x/y" }')

  @pytest.mark.parametrize('text', ['', '# nothing\n', 'model_config_list {}'])
  def test_empty_configs_serve_nothing(self, text):
    assert config.parse_model_config_text(text) == []

  def test_syntax_error_position(self):
    with pytest.raises(ConfigError, match=r"Invalid protobuf file: '<string>': 2:\d+ :"):
      config.parse_model_config_text('model_config_list {\n  config { name: 3 } }')


class TestWriteModelsConfig:

  def test_round_trip_and_real_proto(self, tmp_path):
    configs = [ModelConfig('a', '/models/a'),
               ModelConfig('b', '/models/b', version_policy=All(),
                           version_labels={'stable': 3, 'canary': 4}),
               ModelConfig('c', 'gs://bucket/c', version_policy=Specific({5, 4})),
               ModelConfig('d', '/models/d', version_policy=Latest(2))]
    path = str(tmp_path / 'models.config')
    text = config.write_models_config(configs, path)
    with open(path, encoding='utf-8') as f:
      assert f.read() == text
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    assert config.load_model_config_file(path) == configs
    proto = model_server_config_pb2.ModelServerConfig()
    text_format.Parse(text, proto)  # What tensorflow_model_server does with the file.
    assert [c.name for c in proto.model_config_list.config] == ['a', 'b', 'c', 'd']
    assert list(proto.model_config_list.config[2].model_version_policy.specific.versions) == [4, 5]
    assert os.listdir(tmp_path) == ['models.config']  # No temporary file left behind.

  def test_no_models(self):
    assert config.parse_model_config_text(config.write_models_config([])) == []

  def test_duplicate_names(self):
    with pytest.raises(ConfigError, match='Illegal to list model a multiple times'):
      config.write_models_config([ModelConfig('a', '/a'), ModelConfig('a', '/b')])

  def test_models_config_for_exports(self, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    configs = config.models_config_for_exports(
        {'wide': 'exports/wide', 'deep': '/srv/deep'}, policy={'deep': All()},
        labels={'deep': {'stable': 1}})
    assert configs == [
        ModelConfig('wide', os.path.join(str(tmp_path), 'exports', 'wide')),
        ModelConfig('deep', '/srv/deep', version_policy=All(), version_labels={'stable': 1})]
    in_container = config.models_config_for_exports({'wide': 'wide'}, policy=Latest(2),
                                                    root='/models')
    assert in_container == [ModelConfig('wide', '/models/wide', version_policy=Latest(2))]

  def test_models_config_for_exports_unknown_model(self):
    with pytest.raises(ConfigError, match="labels names models that are not in base_dirs.*"
                                          "Did you mean 'wide'"):
      config.models_config_for_exports({'wide': '/w'}, labels={'wdie': {'a': 1}})


class TestModelConfigFromFlags:

  def test_single_model(self):
    assert config.model_config_from_flags(model_base_path='/models/x') == ModelConfig(
        'default', '/models/x')

  def test_no_base_path(self):
    with pytest.raises(ConfigError, match=re.escape(
        'Both server_options.model_base_path and server_options.model_config_file are '
        'empty!')):
      config.model_config_from_flags('m', '')

  def test_relative_base_path(self):
    with pytest.raises(ConfigError, match='Expected model m to have an absolute path'):
      config.model_config_from_flags('m', 'models/m')


# ----- BatchingParameters -----

class TestBatchingParameters:

  def test_defaults_are_tf_servings(self):
    params = BatchingParameters()
    assert (params.max_batch_size, params.batch_timeout_micros, params.max_enqueued_batches,
            params.num_batch_threads, params.allowed_batch_sizes,
            params.pad_variable_length_inputs) == (1000, 0, 10, None, (), False)

  def test_full_syntax(self):
    text = '''
      # Every construct of the subset.
      max_batch_size { value: 0x40 },   # hex
      batch_timeout_micros: { value: 1000 };
      max_enqueued_batches < value: 100 >
      num_batch_threads { value: 4 }
      thread_pool_name { value: "pool" "_a" }
      allowed_batch_sizes: 8
      allowed_batch_sizes: [16, 32]
      allowed_batch_sizes: 64
      pad_variable_length_inputs: True
    '''
    assert config.parse_batching_parameters(text) == BatchingParameters(
        max_batch_size=64, batch_timeout_micros=1000, max_enqueued_batches=100,
        num_batch_threads=4, thread_pool_name='pool_a', allowed_batch_sizes=(8, 16, 32, 64),
        pad_variable_length_inputs=True)

  def test_empty_file_is_all_defaults(self):
    assert config.parse_batching_parameters('# nothing\n') == BatchingParameters()

  def test_large_batch_splitting(self):
    params = config.parse_batching_parameters(
        'max_batch_size { value: 100 } enable_large_batch_splitting { value: true } '
        'max_execution_batch_size { value: 32 } allowed_batch_sizes: [16, 32]')
    assert params.enable_large_batch_splitting and params.execution_batch_size == 32
    with pytest.raises(ConfigError, match='must be equal to max_execution_batch_size; last '
                                          'entry was 16; expected 32'):
      dataclasses.replace(params, allowed_batch_sizes=(8, 16))
    with pytest.raises(ConfigError, match='must be less than or equal to max_batch_size'):
      dataclasses.replace(params, allowed_batch_sizes=(32, 200))

  @pytest.mark.parametrize('text, line, pattern', [
      ('max_batch_size { value: 128 }\nallowed_batch_sizes: [8, 64]', 2,
       'Last entry in allowed_batch_sizes must match max_batch_size; last entry was 64; '
       'expected 128'),
      ('max_batch_size { value: 8 }\n\nallowed_batch_sizes: [4, 2, 8]', 3,
       'allowed_batch_sizes entries must be monotonically increasing'),
      ('allowed_batch_sizes: [8, 1000]\nallowed_batch_sizes: 1000', 1, 'monotonically'),
      ('\nmax_batch_size: 128', 2,
       'Field "max_batch_size" is a google.protobuf.Int64Value message.*'
       r'write `max_batch_size \{ value: ... \}`'),
      ('max_batchsize { value: 1 }', 1,
       'BatchingParameters has no field named "max_batchsize".*Did you mean \'max_batch_size\''),
      ('max_batch_size { value: 1.5 }', 1, 'expects an int64 integer'),
      ('max_batch_size { value: 99999999999999999999 }', 1, 'expects an int64 integer'),
      ('max_batch_size { value: 1 }\nmax_batch_size { value: 2 }', 2,
       'Non-repeated field "max_batch_size" is specified multiple times'),
      ('pad_variable_length_inputs: yes', 1, 'expects true or false'),
      ('num_batch_threads { value: 0 }', 1, 'num_batch_threads must be >= 1'),
      ('max_batch_size { }', 1, 'max_batch_size must be >= 1: got 0'),
      ('batch_timeout_micros { value: -1 }', 1, 'batch_timeout_micros must be >= 0'),
      ('max_batch_size {\n value: 12\n', 2, "Expected '}' to close"),
      ('max_batch_size { value: 1 } @', 1, "Unexpected character '@'"),
      ('thread_pool_name { value: batch }', 1, 'expects a quoted string'),
      ('allowed_batch_sizes: [8 16]', 1, 'Expected "," or "]"'),
  ])
  def test_errors_name_file_and_line(self, text, line, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
      config.parse_batching_parameters(text, source='batching.config')
    assert (info.value.source, info.value.line) == ('batching.config', line)
    assert str(info.value).startswith(f'batching.config:{line}: ')

  def test_constructor_validates(self):
    with pytest.raises(ConfigError, match='last entry was 4; expected 8'):
      BatchingParameters(max_batch_size=8, allowed_batch_sizes=(2, 4))

  def test_feeds_the_embedded_batcher(self):
    from estimator_export.serving import batching  # pylint: disable=g-import-not-at-top
    options = batching.BatchOptions.from_params(config.parse_batching_parameters(
        'max_batch_size { value: 4 } allowed_batch_sizes: [2, 4] '
        'pad_variable_length_inputs: true'))
    assert (options.max_batch_size, options.allowed_batch_sizes, options.max_enqueued_batches,
            options.pad_variable_length_inputs) == (4, (2, 4), 10, True)


# ----- MonitoringConfig -----

class TestMonitoringConfig:

  @pytest.mark.parametrize('text, expected', [
      ('', MonitoringConfig()),
      ('prometheus_config { enable: true }', MonitoringConfig(True)),
      ('prometheus_config: < enable: true; path: "" >', MonitoringConfig(True)),
      ("prometheus_config { enable: 1, path: '/metrics' }", MonitoringConfig(True, '/metrics')),
  ])
  def test_parse(self, text, expected):
    assert config.parse_monitoring_config(text) == expected

  @pytest.mark.parametrize('text, line, pattern', [
      ('prometheus_config {\n  path: "metrics"\n}', 2, 'must be a URL path starting with "/"'),
      ('prometheus_config {\n  enabled: true }', 2, 'has no field named "enabled"'),
      ('prometheus { enable: true }', 1, 'MonitoringConfig has no field named "prometheus"'),
  ])
  def test_errors(self, text, line, pattern):
    with pytest.raises(ConfigError, match=pattern) as info:
      config.parse_monitoring_config(text, 'monitoring.config')
    assert info.value.line == line


# ----- ServerOptions and flags -----

def _parse_flags(*argv: str) -> ServerOptions:
  parser = serve_cli.add_server_arguments(argparse.ArgumentParser(prog='server'))
  return serve_cli.options_from_args(parser.parse_args(list(argv)))


class TestServerOptions:

  def test_defaults_are_tensorflow_model_servers(self):
    options = ServerOptions()
    assert (options.port, options.rest_api_port, options.model_name,
            options.file_system_poll_wait_seconds, options.model_config_file_poll_wait_seconds,
            options.enable_batching, options.enable_model_warmup,
            options.num_request_iterations_for_warmup, options.rest_api_timeout_in_ms,
            options.rest_api_enable_cors_support, options.grpc_max_message_bytes) == (
                8500, None, 'default', 1, 0, False, True, 0, 30000, False, 2**31 - 1)
    assert _parse_flags() == options

  @pytest.mark.parametrize('argv', [['--port=9000', '--rest_api_port=9001'],
                                    ['--port', '9000', '--rest_api_port', '9001']])
  def test_both_flag_forms(self, argv):
    options = _parse_flags(*argv)
    assert (options.port, options.rest_api_port) == (9000, 9001)

  @pytest.mark.parametrize('argv, expected', [
      ([], False), (['--enable_batching'], True), (['--enable_batching=true'], True),
      (['--enable_batching=True'], True), (['--enable_batching=1'], True),
      (['--enable_batching=false'], False), (['--enable_batching', 'false'], False),
      (['--enable_batching=0'], False),
  ])
  def test_bool_flags(self, argv, expected):
    assert _parse_flags(*argv).enable_batching is expected

  def test_mixed_precision_bfloat16_sets_the_onednn_rewrite(self):
    options = _parse_flags('--mixed_precision=bfloat16')
    assert options.mixed_precision == 'bfloat16'
    config = options.session_config()
    assert config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == 1  # ON
    assert ServerOptions().session_config() is None  # float32: TensorFlow's own session.

  def test_mixed_precision_keeps_the_session_config_files_fields(self, tmp_path):
    path = tmp_path / 'session.pbtxt'
    path.write_text('allow_soft_placement: true\n')
    config = _parse_flags(f'--tensorflow_session_config_file={path}',
                          '--mixed_precision=bfloat16').session_config()
    assert config.graph_options.rewrite_options.auto_mixed_precision_onednn_bfloat16 == 1
    assert config.allow_soft_placement

  def test_unknown_mixed_precision_names_the_choices(self):
    with pytest.raises(ConfigError, match=r"mixed_precision.*got 'fp16'.*'bfloat16'"):
      ServerOptions(mixed_precision='fp16')

  def test_bad_bool_flag(self, capsys):
    with pytest.raises(SystemExit):
      _parse_flags('--enable_model_warmup=maybe')
    assert "Couldn't interpret value maybe" in capsys.readouterr().err

  def test_all_tf_serving_flag_names(self):
    options = _parse_flags(
        '--port=1', '--rest_api_port=2', '--model_name=m', '--model_base_path=/m',
        '--model_config_file=', '--model_config_file_poll_wait_seconds=5',
        '--file_system_poll_wait_seconds=0', '--enable_batching', '--batching_parameters_file=/b',
        '--enable_model_warmup=false', '--num_request_iterations_for_warmup=3',
        '--rest_api_timeout_in_ms=100', '--rest_api_enable_cors_support=true',
        '--monitoring_config_file=/mon', '--host=0.0.0.0')
    assert options == ServerOptions(
        port=1, rest_api_port=2, host='0.0.0.0', model_name='m', model_base_path='/m',
        model_config_file=None, model_config_file_poll_wait_seconds=5,
        file_system_poll_wait_seconds=0, enable_batching=True, batching_parameters_file='/b',
        enable_model_warmup=False, num_request_iterations_for_warmup=3,
        rest_api_timeout_in_ms=100, rest_api_enable_cors_support=True,
        monitoring_config_file='/mon')

  def test_rest_api_port_zero_means_no_rest(self):
    assert _parse_flags('--rest_api_port=0').rest_api_port is None
    assert ServerOptions(rest_api_port=0).rest_api_port == 0  # Programmatic: a free port.

  def test_same_port_twice(self):
    with pytest.raises(ConfigError, match='http_port cannot be same as grpc_port'):
      _parse_flags('--port=8500', '--rest_api_port=8500')

  def test_batching_file_needs_enable_batching(self):
    with pytest.raises(ConfigError, match=re.escape(
        'server_options.batching_parameters_file is set without setting '
        'server_options.enable_batching to true.')):
      ServerOptions(batching_parameters_file='/b')

  @pytest.mark.parametrize('kwargs', [dict(port=70000), dict(port=-1), dict(rest_api_port='x'),
                                      dict(enable_batching='yes'), dict(model_name='')])
  def test_bad_values(self, kwargs):
    with pytest.raises(ConfigError):
      ServerOptions(**kwargs)

  def test_model_configs(self, tmp_path):
    assert ServerOptions(model_name='m', model_base_path='/models/m').model_configs() == [
        ModelConfig('m', '/models/m')]
    path = _write(tmp_path / 'models.config', _entry_text('from_file', '/models/f'))
    options = ServerOptions(model_base_path='/ignored', model_config_file=path)
    assert options.model_configs() == [ModelConfig('from_file', '/models/f')]
    with pytest.raises(ConfigError, match='model_base_path and server_options.model_config_file '
                                          'are empty'):
      ServerOptions().model_configs()

  def test_batching_parameters(self, tmp_path):
    assert ServerOptions().batching_parameters() is None
    assert ServerOptions(enable_batching=True).batching_parameters() == BatchingParameters(
        thread_pool_name='model_server_batch_threads')
    path = _write(tmp_path / 'batching.config', 'max_batch_size { value: 3 }')
    options = ServerOptions(enable_batching=True, batching_parameters_file=path)
    assert options.batching_parameters().max_batch_size == 3

  def test_monitoring(self, tmp_path):
    assert ServerOptions().monitoring() is None
    path = _write(tmp_path / 'monitoring.config', 'prometheus_config { enable: true }')
    assert ServerOptions(rest_api_port=0, monitoring_config_file=path).monitoring() == (
        MonitoringConfig(True))


# ----- real messages, SSLConfig, channel arguments -----

class TestRealMessages:

  def test_descriptors_are_tf_servings(self):
    from estimator_export.serving import _protos  # pylint: disable=g-import-not-at-top
    fields = {f.name: (f.number, f.type) for f in _protos.BatchingParameters.DESCRIPTOR.fields}
    assert fields['allowed_batch_sizes'] == (6, 3)  # TYPE_INT64
    assert fields['enable_large_batch_splitting'][0] == 8
    assert fields['max_execution_batch_size'][0] == 9
    assert [f.name for f in _protos.SSLConfig.DESCRIPTOR.fields] == [
        'server_key', 'server_cert', 'custom_ca', 'client_verify']
    assert _protos.MonitoringConfig.DESCRIPTOR.full_name == 'tensorflow.serving.MonitoringConfig'

  def test_parser_fills_the_real_message(self):
    from estimator_export.serving import _protos, _textproto  # pylint: disable=g-import-not-at-top
    proto = _protos.BatchingParameters()
    lines = _textproto.parse('max_batch_size { value: 4 }\nallowed_batch_sizes: [2, 4]', proto)
    assert proto.max_batch_size.value == 4 and list(proto.allowed_batch_sizes) == [2, 4]
    assert (lines['max_batch_size'], lines['allowed_batch_sizes']) == (1, 2)
    assert text_format.MessageToString(proto).startswith('max_batch_size {')

  def test_malformed_model_config_logs_tf_servings_line(self, caplog):
    with pytest.raises(ConfigError):
      config.parse_model_config_text('improperly formatted', 'bad.config')
    assert ('Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: Message type '
            '"tensorflow.serving.ModelServerConfig" has no field named "improperly".'
            in caplog.text)

  def test_ssl_config(self, tmp_path):
    text = 'server_key: "KEY"\nserver_cert: "CERT"\ncustom_ca: "CA"\nclient_verify: true'
    path = _write(tmp_path / 'ssl.config', text)
    assert config.load_ssl_config_file(path) == config.SSLConfig('KEY', 'CERT', 'CA', True)
    with pytest.raises(ConfigError, match='client_verify needs custom_ca') as info:
      config.parse_ssl_config('server_key: "K" server_cert: "C"\nclient_verify: true', 's')
    assert info.value.line == 2
    with pytest.raises(ConfigError, match='server_cert is empty'):
      config.parse_ssl_config('server_key: "K"')

  @pytest.mark.parametrize('text, expected', [
      ('', ()),
      ('grpc.max_connection_age_ms=2000', (('grpc.max_connection_age_ms', 2000),)),
      ('a=-3,b=x,c=99999999999', (('a', -3), ('b', 'x'), ('c', '99999999999'))),
  ])
  def test_grpc_channel_arguments(self, text, expected):
    assert config.parse_grpc_channel_arguments(text) == expected
    assert config.options_from_flags({'grpc_channel_arguments': text}).grpc_channel_arguments == (
        expected)

  def test_bad_grpc_channel_arguments(self):
    with pytest.raises(ConfigError, match="key=value pairs: got 'novalue'"):
      config.parse_grpc_channel_arguments('a=1,novalue')

  def test_session_config(self, tmp_path):
    assert ServerOptions().session_config() is None
    path = _write(tmp_path / 'session.config', 'intra_op_parallelism_threads: 7 '
                                               'allow_soft_placement: true')
    session = ServerOptions(tensorflow_session_config_file=path,
                            tensorflow_session_parallelism=2).session_config()
    assert (session.intra_op_parallelism_threads, session.inter_op_parallelism_threads,
            session.allow_soft_placement) == (2, 2, True)
    with pytest.raises(ConfigError, match='You cannot configure all'):
      ServerOptions(tensorflow_session_parallelism=1, tensorflow_intra_op_parallelism=1,
                    tensorflow_inter_op_parallelism=1)
