"""Tests for the estimator-export command, run as a real subprocess on real exports."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from tests import toy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
  return subprocess.run([sys.executable, '-m', 'estimator_export.cli'] + list(args),
                        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)


def _normalised(text):
  """saved_model_cli prints the op list as a Python set, in hash order: sort it."""
  lines = []
  for line in text.strip().splitlines():
    head, sep, ops = line.partition('contains the following ops: ')
    lines.append(head + sep + ','.join(sorted(ops.strip('{}').split(', '))) if sep else line)
  return lines


@pytest.fixture(scope='module')
def exports(trained_toy, tmp_path_factory):
  """Two versions of the toy model: v1 combined, v2 raw-only (a breaking change)."""
  model, estimator = trained_toy
  base = tmp_path_factory.mktemp('cli_exports')
  v1 = model.export_for_serving(estimator, str(base), version=1, samples=toy.SAMPLES)

  class PredictOnly(toy.ToyClassifier):
    label_vocabulary = None

    def regress_head(self, predictions):
      return None

  other = PredictOnly()
  v2 = other.export_for_serving(other.make_estimator(estimator.model_dir), str(base),
                                other.serving_input_receiver_fn('raw'), version=2)
  return v1.path, v2.path


class TestCli:

  def test_show_all_matches_saved_model_cli(self, exports):
    ours = cli('show', '--dir', exports[0], '--all')
    assert ours.returncode == 0, ours.stderr
    saved_model_cli = os.path.join(os.path.dirname(sys.executable), 'saved_model_cli')
    theirs = subprocess.run([saved_model_cli, 'show', '--dir', exports[0], '--all'],
                            capture_output=True, text=True, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3'))
    assert _normalised(ours.stdout) == _normalised(theirs.stdout)
    assert "signature_def['examples:classify']:" in ours.stdout

  def test_show_json_contract(self, exports):
    out = cli('show', '--dir', exports[0], '--json')
    assert out.returncode == 0, out.stderr
    contract = json.loads(out.stdout)
    assert 'examples:classify' in json.dumps(contract)

  def test_diff_breaking_exit_1(self, exports):
    out = cli('diff', exports[0], exports[1])
    assert out.returncode == 1, out.stdout + out.stderr
    assert 'examples:classify' in out.stdout and 'BREAKING' in out.stdout

  def test_diff_compatible_exit_0(self, exports):
    out = cli('diff', exports[1], exports[0])
    assert out.returncode == 0, out.stdout + out.stderr
    assert 'compatible' in out.stdout

  def test_diff_same_exit_0(self, exports):
    out = cli('diff', exports[0], exports[0])
    assert out.returncode == 0 and 'no changes' in out.stdout

  def test_diff_error_exit_2(self, exports, tmp_path):
    out = cli('diff', exports[0], str(tmp_path))
    assert out.returncode == 2
    assert 'error' in out.stderr and str(tmp_path) in out.stderr

  def test_validate(self, exports):
    out = cli('validate', '--dir', exports[0])
    assert out.returncode == 0, out.stderr
    assert 'examples:classify: ok' in out.stdout and 'serving_default: ok' in out.stdout

  def test_validate_catches_broken_export(self, exports, tmp_path):
    broken = tmp_path / '1'
    shutil.copytree(exports[0], broken)
    for name in os.listdir(broken / 'variables'):
      if name.startswith('variables.data'):
        (broken / 'variables' / name).write_bytes(b'garbage')
    out = cli('validate', '--dir', str(broken))
    assert out.returncode != 0

  def test_console_script_installed(self):
    script = os.path.join(os.path.dirname(sys.executable), 'estimator-export')
    if not os.path.exists(script):
      pytest.skip('project not pip-installed in this interpreter (make test installs it)')
    out = subprocess.run([script, '--help'], capture_output=True, text=True)
    assert out.returncode == 0 and 'show' in out.stdout and 'diff' in out.stdout


class TestUserErrors:
  """A user's mistake exits 2 with `estimator-export CMD: error: ...`, never a traceback."""

  def _assert_user_error(self, out, command, *fragments):
    assert out.returncode == 2, out.stdout + out.stderr
    assert 'Traceback' not in out.stderr
    assert f'estimator-export {command}: error: ' in out.stderr
    for fragment in fragments:
      assert fragment in out.stderr

  def test_corrupt_saved_model_pb(self, exports, tmp_path):
    broken = tmp_path / '1'
    shutil.copytree(exports[0], broken)
    (broken / 'saved_model.pb').write_bytes(b'\x0a\xff\xff not a proto')
    self._assert_user_error(cli('show', '--dir', str(broken)), 'show',
                            'cannot parse the SavedModel file', 'Fix: re-export')
    self._assert_user_error(cli('servable', str(broken)), 'servable',
                            'cannot parse the SavedModel file')

  def test_missing_directory(self, tmp_path):
    missing = str(tmp_path / 'nope')
    self._assert_user_error(cli('validate', '--dir', missing), 'validate',
                            'does not exist', missing, 'Fix:')

  def test_model_base_directory_names_its_newest_version(self, exports):
    base = os.path.dirname(exports[0])
    self._assert_user_error(cli('show', '--dir', base, '--all'), 'show',
                            f"its newest '{exports[1]}'")

  def test_bad_flag(self):
    out = cli('diff', '--no_such_flag', 'a', 'b')
    self._assert_user_error(out, 'diff', '--no_such_flag')

  def test_bad_samples_json(self, exports):
    self._assert_user_error(cli('validate', '--dir', exports[0], '--samples', '{"x": [1,'),
                            'validate', '--samples is not valid JSON', 'Fix:')

  def test_missing_samples_file(self, exports, tmp_path):
    self._assert_user_error(
        cli('validate', '--dir', exports[0], '--samples', f'@{tmp_path / "none.json"}'),
        'validate', 'none.json')


class TestNewCommands:

  def test_validate_with_samples_and_tolerances(self, exports):
    samples = json.dumps({k: v.tolist() for k, v in toy.SAMPLES.items()})
    out = cli('validate', '--dir', exports[0], '--samples', samples, '--rtol', '1e-3',
              '--atol', '1e-4')
    assert out.returncode == 0, out.stderr
    assert 'examples:predict: ok' in out.stdout

  def test_servable_export(self, exports):
    out = cli('servable', exports[0])
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('servable on TF Serving 2.15.1')

  def test_query_takes_model_name(self):
    from estimator_export import cli as cli_lib  # pylint: disable=g-import-not-at-top
    args = cli_lib.build_parser().parse_args(['query', '--model_name', 'm', '--inputs', '[1]'])
    assert args.model == 'm'


class TestHelp:
  """--help and --version work without TensorFlow; every flag is documented."""

  def test_help_imports_no_tensorflow(self):
    code = ('import sys, contextlib, io\n'
            'import estimator_export.cli as cli\n'
            'with contextlib.redirect_stdout(io.StringIO()):\n'
            '  try:\n'
            '    cli.main(["--help"])\n'
            '  except SystemExit:\n'
            '    pass\n'
            'print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=REPO,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == '[]' and out.stderr == ''

  def test_version(self):
    out = cli('--version')
    assert out.returncode == 0 and out.stdout.strip() == 'estimator-export 0.1.0'

  def test_every_subcommand_and_argument_is_documented(self):
    import argparse  # pylint: disable=g-import-not-at-top
    from estimator_export import cli as cli_lib  # pylint: disable=g-import-not-at-top
    parser = cli_lib.build_parser()
    subparsers = next(a for a in parser._actions  # pylint: disable=protected-access
                      if isinstance(a, argparse._SubParsersAction))  # pylint: disable=protected-access
    assert sorted(subparsers.choices) == sorted(cli_lib.SUBCOMMANDS)
    for name, sub in subparsers.choices.items():
      assert sub.description and 'examples:' in sub.epilog, name
      assert f'estimator-export {name}' in sub.epilog, name
      for action in sub._actions:  # pylint: disable=protected-access
        assert action.help, f'{name} {action.option_strings or action.dest} has no help'

  def test_diff_help_documents_exit_codes(self):
    out = cli('diff', '--help')
    assert out.returncode == 0
    for line in ('0  compatible', '1  breaking', '2  error'):
      assert line in out.stdout


class TestServeAndQuery:

  def test_serve_query_and_stop(self, exports, tmp_path):
    import re  # pylint: disable=g-import-not-at-top
    import signal  # pylint: disable=g-import-not-at-top
    import socket  # pylint: disable=g-import-not-at-top
    with socket.socket() as sock:  # --rest_api_port=0 means "no REST", as in TF Serving.
      sock.bind(('127.0.0.1', 0))
      free_port = sock.getsockname()[1]
    from estimator_export.serving import config as serving_config  # pylint: disable=g-import-not-at-top
    serving_config.write_models_config(
        serving_config.models_config_for_exports({'toy': os.path.dirname(exports[0])},
                                                 policy=serving_config.All()),
        str(tmp_path / 'models.config'))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3')
    proc = subprocess.Popen(
        [sys.executable, '-m', 'estimator_export.cli', 'serve', '--server_binary=embedded',
         '--port=0', f'--rest_api_port={free_port}',
         f'--model_config_file={tmp_path / "models.config"}'],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
      line = ''
      for line in proc.stdout:
        if line.startswith('estimator-export serve:'):
          break
      match = re.search(r'gRPC on 127.0.0.1:(\d+), REST on 127.0.0.1:(\d+) \(models: toy\)', line)
      assert match, line
      grpc_port, rest_port = match.groups()
      out = cli('query', '--server', f'127.0.0.1:{grpc_port}', '--model', 'toy',
                '--inputs', '{"x": [[1.0, 2.0, 3.0]], "n": [1]}')
      assert out.returncode == 0, out.stderr
      assert len(json.loads(out.stdout)['probabilities'][0]) == 2
      out = cli('query', '--protocol', 'rest', '--server', f'http://127.0.0.1:{rest_port}',
                '--model', 'toy', '--version', '1', '--method', 'classify', '--signature_name',
                'examples:classify', '--examples', '[{"x": [1.0, 2.0, 3.0], "n": 1}]')
      assert out.returncode == 0, out.stderr
      assert {label for label, _ in json.loads(out.stdout)[0]} == {'neg', 'pos'}
      out = cli('query', '--server', f'127.0.0.1:{grpc_port}', '--model', 'nope', '--inputs', '[1.0]')
      assert out.returncode != 0 and 'Servable not found for request: Latest(nope)' in out.stderr
    finally:
      proc.send_signal(signal.SIGINT)
      assert proc.wait(timeout=30) == 0


class TestServeFlags:
  """tensorflow_model_server's flags: passed to the real binary, or checked by the embedded one."""

  def test_real_binary_gets_the_flags_given(self, tmp_path):
    record = tmp_path / 'argv.txt'
    fake = tmp_path / 'bin' / 'tensorflow_model_server'
    fake.parent.mkdir()
    fake.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done > {record}\n')
    fake.chmod(0o755)
    env = dict(os.environ, PATH=f'{fake.parent}{os.pathsep}{os.environ.get("PATH", "")}')
    out = subprocess.run(
        [sys.executable, '-m', 'estimator_export.cli', 'serve', '--server_binary=auto',
         '--port', '9000', '--rest_api_port=9001', '--model_name=m', '--model_base_path=/m',
         '--enable_batching', '--host=0.0.0.0', '--grpc_channel_arguments=a=1,b=x',
         '--prefer_tflite_model=false'],
        capture_output=True, text=True, cwd=REPO, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert record.read_text().splitlines() == [
        '--port=9000', '--rest_api_port=9001', '--enable_batching=true', '--model_name=m',
        '--model_base_path=/m', '--grpc_channel_arguments=a=1,b=x',
        '--prefer_tflite_model=false']

  def test_readme_table_matches_the_flags(self):
    from estimator_export.cli import serve  # pylint: disable=g-import-not-at-top
    with open(os.path.join(REPO, 'README.md'), encoding='utf-8') as f:
      rows = [line.split('|') for line in f if line.startswith('| `--')]
    table = {cells[1].strip().strip('`').lstrip('-'): cells[3].strip() for cells in rows
             if len(cells) == 6}
    assert table == {name: flag.status for name, flag in serve.FLAGS.items()}
    assert len(table) == 46
    ours = {cells[1].strip().strip('`').lstrip('-'): cells[2].strip().strip('`')
            for cells in rows if len(cells) == 5}
    assert ours == {name: serve._render(flag.default)
                    for name, flag in serve.EMBEDDED_FLAGS.items()}

  @pytest.mark.parametrize('flag, name', [
      ('--platform_config_file=/p.config', 'platform_config_file'),
      ('--prefer_tflite_model', 'prefer_tflite_model'),
      ('--enable_grpc_healthcheck_service=true', 'enable_grpc_healthcheck_service'),
  ])
  def test_refused_flags_name_themselves(self, flag, name):
    out = cli('serve', '--server_binary=embedded', '--model_base_path=/m', flag)
    assert out.returncode == 2
    assert out.stderr.startswith(f'estimator-export serve: error: --{name}=')
    assert 'is not supported by the embedded server' in out.stderr
    assert 'Traceback' not in out.stderr and 'unrecognized arguments' not in out.stderr

  def test_every_tf_serving_flag_is_accepted_at_its_default(self):
    from estimator_export.cli import serve  # pylint: disable=g-import-not-at-top
    flags = [f'--{name}={serve._render(flag.default)}' for name, flag in serve.FLAGS.items()
             if flag.default is not None and name not in ('version', 'port')]
    out = cli('serve', '--server_binary=embedded', *flags, '--num_tflite_pools=3',
              '--grpc_max_threads=4', '--version')
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith('TensorFlow ModelServer: ')

  def test_errors_exit_2_without_traceback(self, exports, tmp_path):
    import socket  # pylint: disable=g-import-not-at-top
    bad = tmp_path / 'bad.config'
    bad.write_text('improperly formatted file')
    out = cli('serve', '--server_binary=embedded', f'--model_config_file={bad}')
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert 'Error parsing text-format tensorflow.serving.ModelServerConfig: 1:1: ' in out.stderr
    assert f"estimator-export serve: error: Invalid protobuf file: '{bad}'" in out.stderr
    out = cli('serve', '--server_binary=embedded')
    assert out.returncode == 2 and 'Traceback' not in out.stderr
    assert ('estimator-export serve: error: Both server_options.model_base_path and '
            'server_options.model_config_file are empty!') in out.stderr
    with socket.socket() as taken:
      taken.bind(('127.0.0.1', 0))
      taken.listen(1)
      port = taken.getsockname()[1]
      out = cli('serve', '--server_binary=embedded', f'--port={port}',
                f'--model_base_path={os.path.dirname(exports[0])}')
    assert out.returncode == 2 and 'Traceback' not in out.stderr, out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith(
        f'estimator-export serve: error: Could not bind the gRPC server to 127.0.0.1:{port}')
