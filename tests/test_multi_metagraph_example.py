"""examples/multi_metagraph_export.py run as a program: two MetaGraphs, each served by its tags.

The program trains, exports {serve} (every signature) and {serve, gpu}
(serving_default only) into one version, then serves each tag set with
`estimator-export serve --saved_model_tags=TAGS` in a subprocess on a loopback
port, queries it over gRPC and stops it by its PID. Checked here against the
export itself, loaded by tag.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np

import estimator_export as ee
from estimator_export import _saved_model
from examples import multi_metagraph_export
from tests.conftest import REPO


def test_two_meta_graphs_served_by_tag(tmp_path):
  env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=REPO)
  proc = subprocess.run(
      [sys.executable, '-m', 'examples.multi_metagraph_export', f'--output_dir={tmp_path}',
       '--train_steps=200'], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
  out = proc.stdout
  assert out.rstrip().endswith('done.')
  for line in ('[2/4] exporting MetaGraphs {serve}, {serve,gpu} to',
               "The given SavedModel contains the following tag-sets:\n'serve'\n'gpu, serve'\n",
               '      {serve}: predict, serving_default\n',
               '      {gpu,serve}: serving_default\n',
               '(signatures served: predict, serving_default)',
               '(signatures served: serving_default)'):
    assert line in out, line

  summary = json.loads((tmp_path / 'summary.json').read_text())
  path = summary['export']
  assert summary['tag_sets'] == {'serve': ['predict', 'serving_default'],
                                 'gpu,serve': ['serving_default']}
  assert summary['served_signatures'] == {'serve': ['predict', 'serving_default'],
                                          'serve,gpu': ['serving_default']}
  proto = _saved_model.read_saved_model(path)
  assert [sorted(mg.meta_info_def.tags) for mg in proto.meta_graphs] == [
      ['serve'], ['gpu', 'serve']]
  assert sorted(os.listdir(os.path.join(path, 'variables'))) == [
      'variables.data-00000-of-00001', 'variables.index']
  for tags in ('serve', 'serve,gpu'):
    with ee.Predictor.from_saved_model(path, tags=tags.split(',')) as predictor:
      expected = predictor({'x': multi_metagraph_export.QUERY})['y']
    np.testing.assert_allclose(summary['answers'][tags]['y'], expected, rtol=1e-6)
  # The model learned y = 3 x0 - 2 x1 + 1 (0.0 and 4.5 for the query).
  np.testing.assert_allclose(summary['answers']['serve']['y'], [0.0, 4.5], atol=0.1)

  # Each server was stopped by its PID: none of them is still running.
  pids = [int(p) for p in re.findall(r'pid (\d+): gRPC on 127\.0\.0\.1:\d+', out)]
  assert len(pids) == 2
  for pid in pids:
    try:
      with open(f'/proc/{pid}/cmdline', 'rb') as f:
        assert b'--saved_model_tags' not in f.read()
    except FileNotFoundError:
      pass
