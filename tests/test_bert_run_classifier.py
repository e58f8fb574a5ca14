"""Tests for bert_example.run_classifier (flags -> settings -> pipeline) and its errors."""
import os
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from bert_example import checkpoint as checkpoint_lib
from bert_example import data as data_lib
from bert_example import demo_data
from bert_example import modeling
from bert_example import pipeline
from bert_example import run_classifier

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny(root, hidden=32, num_train=64):
  """Demo data, a vocab built from it and a tiny config; returns the base flags."""
  data_dir = os.path.join(root, 'data')
  demo_data.generate_demo_dataset(data_dir, num_train=num_train, num_dev=16, num_test=8)
  vocab = os.path.join(root, 'vocab.txt')
  size = data_lib.build_vocab(data_lib.get_processor('demo').get_train_examples(data_dir), vocab)
  config = modeling.BertConfig(vocab_size=size, hidden_size=hidden, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=2 * hidden,
                               max_position_embeddings=64)
  config_file = os.path.join(root, f'bert_config_{hidden}.json')
  with open(config_file, 'w') as f:
    f.write(config.to_json_string())
  return {'task_name': 'demo', 'data_dir': data_dir, 'vocab_file': vocab,
          'bert_config_file': config_file, 'output_dir': os.path.join(root, 'out'),
          'max_seq_length': '16', 'train_batch_size': '16'}, config


def _argv(values, *extra):
  return ['run_classifier'] + [f'--{k}={v}' for k, v in values.items()] + list(extra)


def _cli(values, *extra):
  return subprocess.run([sys.executable, '-m', 'bert_example.run_classifier'] +
                        _argv(values, *extra)[1:], cwd=REPO, capture_output=True, text=True,
                        timeout=300, env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})


class TestFlags:

  def test_settings_from_flags(self, tmp_path):
    fv = flags.FlagValues()
    run_classifier.define_flags(fv)
    base, _ = _tiny(str(tmp_path))
    fv(_argv(base, '--do_train', '--learning_rate=3e-5', '--do_export',
             f'--export_dir={tmp_path / "exp"}', '--exports_to_keep=2'))
    s = run_classifier.settings_from_flags(fv)
    assert (s.task_name, s.max_seq_length, s.learning_rate, s.do_train, s.do_eval) == (
        'demo', 16, 3e-5, True, False)
    assert s.export_formats == ('raw', 'example', 'text')  # BERT's default: all three.
    assert s.export_options.keep == 2 and s.export_dir == str(tmp_path / 'exp')

  def test_required_flags(self):
    fv = flags.FlagValues()
    run_classifier.define_flags(fv)
    with pytest.raises(flags.IllegalFlagValueError, match='task_name'):
      fv(['run_classifier', '--do_train'])

  def test_import_defines_no_flags(self):
    code = ('from absl import flags; import bert_example.run_classifier, bert_example.client, '
            'bert_example.demo; assert "task_name" not in flags.FLAGS and "text" not in '
            'flags.FLAGS and "use_pretrained" not in flags.FLAGS')
    subprocess.run([sys.executable, '-c', code], cwd=REPO, check=True, timeout=120)


class TestCommandLine:

  def test_train_eval_export(self, tmp_path):
    base, _ = _tiny(str(tmp_path))
    export_dir = tmp_path / 'export'
    proc = _cli(base, '--do_train', '--do_eval', '--num_train_epochs=1', '--do_export',
                f'--export_dir={export_dir}', '--export_formats=raw,example')
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert 'step 4/4' in proc.stdout and 'accuracy' in proc.stdout
    assert os.listdir(export_dir) == ['4']
    assert 'accuracy = ' in (tmp_path / 'out' / 'eval_results.txt').read_text()

  def test_export_without_checkpoint(self, tmp_path):
    base, _ = _tiny(str(tmp_path))
    proc = _cli(base, '--do_export', f'--export_dir={tmp_path / "export"}')
    assert proc.returncode == 2
    assert 'no trained checkpoint in --output_dir' in proc.stderr
    assert 'run with --do_train first' in proc.stderr
    assert not (tmp_path / 'export').exists()

  def test_nothing_to_do(self, tmp_path):
    base, _ = _tiny(str(tmp_path))
    proc = _cli(base)
    assert proc.returncode == 2 and 'nothing to do' in proc.stderr


class TestBadSettings:

  def test_config_that_does_not_match_the_checkpoint(self, tmp_path):
    base, small = _tiny(str(tmp_path), hidden=32)
    # A checkpoint for hidden 32 ...
    shapes = checkpoint_lib.google_variable_shapes(small)
    rng = np.random.RandomState(0)
    weights = {n: rng.randn(*s).astype(np.float32) for n, s in shapes.items()}
    ckpt = checkpoint_lib.save_google_checkpoint(weights, str(tmp_path / 'ckpt' / 'bert_model.ckpt'))
    # ... loaded into a hidden-48 model.
    other, _ = _tiny(str(tmp_path / 'other'), hidden=48)
    settings = pipeline.ClassifierSettings(
        task_name='demo', data_dir=base['data_dir'], vocab_file=base['vocab_file'],
        bert_config_file=other['bert_config_file'], output_dir=str(tmp_path / 'run'),
        init_checkpoint=ckpt, max_seq_length=16, train_batch_size=16, do_train=True)
    with pytest.raises(ValueError) as info:
      pipeline.run(settings, print_fn=lambda m: None)
    message = str(info.value)
    first = sorted(n for n in shapes if n.startswith('bert/'))[0]
    assert f'Shape mismatch initialising {first}' in message
    assert str(list(shapes[first])) in message  # The checkpoint's shape ...
    assert '48' in message                      # ... and the graph's.

  def test_casing_contradicts_checkpoint_name(self, tmp_path):
    base, _ = _tiny(str(tmp_path))
    settings = pipeline.ClassifierSettings(
        task_name='demo', data_dir=base['data_dir'], vocab_file=base['vocab_file'],
        bert_config_file=base['bert_config_file'], output_dir=str(tmp_path / 'run'),
        init_checkpoint='/ckpts/cased_L-12_H-768_A-12/bert_model.ckpt', do_lower_case=True,
        do_train=True)
    with pytest.raises(ValueError, match='set do_lower_case=False'):
      pipeline.check_settings(settings)

  def test_missing_vocab(self, tmp_path):
    base, _ = _tiny(str(tmp_path))
    settings = pipeline.ClassifierSettings(
        task_name='demo', data_dir=base['data_dir'], vocab_file=str(tmp_path / 'nope.txt'),
        bert_config_file=base['bert_config_file'], output_dir=str(tmp_path / 'run'),
        do_train=True)
    with pytest.raises(ValueError, match=r"--vocab_file='.*nope.txt' does not exist"):
      pipeline.check_settings(settings)

  def test_seq_longer_than_positions(self, tmp_path):
    base, config = _tiny(str(tmp_path))
    with pytest.raises(ValueError, match='max_seq_length=100 exceeds .*max_position_embeddings=64'):
      pipeline.build_model(pipeline.ClassifierSettings(
          task_name='demo', data_dir=base['data_dir'], vocab_file=base['vocab_file'],
          bert_config_file=base['bert_config_file'], output_dir=str(tmp_path),
          max_seq_length=100), ['a', 'b'], 10, config)
