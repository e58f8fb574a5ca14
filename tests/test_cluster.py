"""Tests for estimator_export.cluster, `estimator-export cluster` and run_classifier on a cluster.

The launcher tests run small Python commands as roles (no TensorFlow) and check
TF_CONFIG, progress lines, failures and that every process is stopped. The
cluster test trains a tiny BERT with 1 chief + 1 worker + 1 ps + 1 evaluator on
127.0.0.1; every version the evaluator exports is served by the embedded server
and must agree with estimator.predict on its checkpoint.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from estimator_export import cluster
from estimator_export import flags as export_flags
from tests import crd_schema

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, 'PYTHONPATH': REPO, 'TF_CPP_MIN_LOG_LEVEL': '3'}
ENV.pop('TF_CONFIG', None)
SCHEMA = os.path.join(REPO, 'estimator_export', 'deploy_schemas', 'kubeflow_tfjob_v1.json')

# A role: writes its TF_CONFIG (and the PID of a child it starts) to DIR/<task>.json, then
# ps sleeps "forever", FAIL_ROLE exits 3, others sleep SLEEP seconds and exit 0.
ROLE = r'''
import json, os, subprocess, sys, time
config = json.loads(os.environ["TF_CONFIG"])
task = config["task"]
name = f'{task["type"]}-{task["index"]}'
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
with open(os.path.join(sys.argv[1], name + ".json"), "w") as f:
  json.dump({"config": config, "pid": os.getpid(), "child": child.pid}, f)
print(name, "up", flush=True)
if task["type"] == "ps":
  time.sleep(300)
if name == sys.argv[2]:
  sys.exit(3)
time.sleep(float(sys.argv[3]))
child.kill()
'''


def _role_command(tmp_path, fail_role='none', sleep=0.5):
  return [sys.executable, '-c', ROLE, str(tmp_path), fail_role, str(sleep)]


def _alive(pid):
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  with open(f'/proc/{pid}/stat') as f:  # A zombie (exited, not yet reaped) is not alive.
    return f.read().rsplit(')', 1)[1].split()[0] != 'Z'


def _written(tmp_path):
  return {p[:-5]: json.loads((tmp_path / p).read_text())
          for p in os.listdir(tmp_path) if p.endswith('.json')}


class TestTfConfig:

  def test_local_cluster(self):
    spec = cluster.local_cluster(workers=2, ps=2)
    assert sorted(spec) == ['chief', 'ps', 'worker']
    assert [len(spec['chief']), len(spec['worker']), len(spec['ps'])] == [1, 2, 2]
    addresses = [a for role in spec.values() for a in role]
    assert all(a.startswith('127.0.0.1:') for a in addresses)
    assert len(set(addresses)) == 5
    assert 'ps' not in cluster.local_cluster(workers=0, ps=0)

  def test_run_config_reads_it(self, monkeypatch):
    """tf.estimator.RunConfig, the reader that matters, sees each role as intended."""
    spec = cluster.local_cluster(workers=2, ps=1)
    for task, master in ((cluster.Task('chief'), spec['chief'][0]),
                         (cluster.Task('worker', 1), spec['worker'][1]),
                         (cluster.Task('ps'), spec['ps'][0]),
                         (cluster.Task('evaluator'), None)):
      monkeypatch.setenv('TF_CONFIG', json.dumps(cluster.tf_config(spec, task)))
      config = tf.estimator.RunConfig()
      assert (config.task_type, config.task_id) == (task.type, task.index)
      if master:
        assert config.master == f'grpc://{master}'
        assert (config.num_ps_replicas, config.num_worker_replicas) == (1, 3)
        assert config.is_chief == (task.type == 'chief')

  def test_read_tf_config(self):
    assert cluster.read_tf_config({}) is None
    assert cluster.read_tf_config({'TF_CONFIG': '{}'}) is None
    config = {'cluster': {'chief': ['127.0.0.1:1']}, 'task': {'type': 'chief', 'index': 0}}
    assert cluster.task_of(cluster.read_tf_config({'TF_CONFIG': json.dumps(config)})) == (
        cluster.Task('chief', 0))
    with pytest.raises(ValueError, match='TF_CONFIG is not JSON.*unset it'):
      cluster.read_tf_config({'TF_CONFIG': '{cluster'})
    with pytest.raises(ValueError, match="task .*'boss'.* is not valid"):
      cluster.read_tf_config({'TF_CONFIG': json.dumps({**config, 'task': {'type': 'boss'}})})
    with pytest.raises(ValueError, match='worker-2 is not in the cluster'):
      cluster.tf_config({'worker': ['127.0.0.1:1']}, cluster.Task('worker', 2))


class TestLauncher:

  def test_every_role_gets_its_tf_config(self, tmp_path):
    lines = []
    result = cluster.run_local_cluster(_role_command(tmp_path), str(tmp_path / 'logs'),
                                       workers=2, ps=1, evaluator=True, env=ENV,
                                       print_fn=lines.append, timeout_secs=60)
    assert result.ok, lines
    written = _written(tmp_path)
    assert sorted(written) == ['chief-0', 'evaluator-0', 'ps-0', 'worker-0', 'worker-1']
    for name, seen in written.items():
      assert seen['config']['cluster'] == result.cluster  # Same cluster everywhere ...
      task = seen['config']['task']
      assert f'{task["type"]}-{task["index"]}' == name  # ... each its own task.
      assert 'evaluator' not in seen['config']['cluster']
    statuses = {r.task.name: (r.status, r.returncode) for r in result.roles}
    assert statuses == {'ps-0': ('stopped', -signal.SIGTERM), 'chief-0': ('ok', 0),
                        'worker-0': ('ok', 0), 'worker-1': ('ok', 0), 'evaluator-0': ('ok', 0)}
    for role in result.roles:  # One log per role, its output in it.
      log = open(role.log_path).read()
      assert log.startswith('# TF_CONFIG=') and f'{role.task.name} up' in log
    assert not any(_alive(s['pid']) for s in written.values())
    assert not _alive(written['ps-0']['child'])  # The ps's own child went with it.
    assert any(line.startswith('cluster: started ps-0 (pid') for line in lines)
    assert any(line.startswith('cluster: chief-0 finished (exit 0)') for line in lines)
    assert any(line.startswith('cluster: stopped ps-0') for line in lines)

  def test_failing_role_stops_the_others(self, tmp_path):
    lines = []
    result = cluster.run_local_cluster(_role_command(tmp_path, 'worker-0', sleep=300),
                                       str(tmp_path / 'logs'), workers=1, ps=1, env=ENV,
                                       print_fn=lines.append, stop_grace_secs=2,
                                       timeout_secs=60)
    assert not result.ok
    assert result.failed.task.name == 'worker-0' and result.failed.returncode == 3
    log = str(tmp_path / 'logs' / 'worker-0.log')
    assert result.failed.log_path == log
    assert f'cluster: worker-0 failed with exit status 3; log {log}; stopping the other ' \
           'roles' in lines
    assert {r.task.name: r.status for r in result.roles} == {
        'ps-0': 'stopped', 'chief-0': 'stopped', 'worker-0': 'failed', 'evaluator-0': 'stopped'}
    assert result.seconds < 30  # Not the chief's 300 s.
    written = _written(tmp_path)
    assert not any(_alive(s['pid']) or _alive(s['child']) for s in written.values())

  def test_ps_exiting_is_a_failure(self, tmp_path):
    command = [sys.executable, '-c', 'import json, os, sys, time; t = json.loads(os.environ['
               '"TF_CONFIG"])["task"]; sys.exit(0) if t["type"] == "ps" else time.sleep(300)']
    result = cluster.run_local_cluster(command, str(tmp_path), ps=1, workers=0,
                                       evaluator=False, env=ENV, print_fn=lambda m: None,
                                       timeout_secs=60)
    assert result.failed.task.name == 'ps-0'
    assert result.role('chief-0').status == 'stopped'

  def test_timeout(self, tmp_path):
    result = cluster.run_local_cluster(_role_command(tmp_path, sleep=300), str(tmp_path / 'l'),
                                       workers=0, ps=0, evaluator=False, env=ENV,
                                       print_fn=lambda m: None, timeout_secs=1)
    assert result.failed.task.name == 'chief-0' and result.failed.status == 'stopped'
    assert not _alive(_written(tmp_path)['chief-0']['pid'])

  def test_cli_reports_and_ctrl_c_stops_all(self, tmp_path):
    cli = subprocess.Popen(
        [sys.executable, '-m', 'estimator_export.cli', 'cluster', '--workers', '1',
         '--evaluator', '--logdir', str(tmp_path / 'logs'), '--'] +
        _role_command(tmp_path, sleep=300), env=ENV, cwd=REPO, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    try:
      deadline = time.monotonic() + 60
      while len(_written(tmp_path)) < 4 and time.monotonic() < deadline:
        time.sleep(0.1)
      assert len(_written(tmp_path)) == 4
      cli.send_signal(signal.SIGINT)
      out, _ = cli.communicate(timeout=60)
    finally:
      cli.kill()
      cli.wait()
    assert cli.returncode == 130, out
    assert 'cluster: interrupted; every role was stopped' in out
    written = _written(tmp_path)
    assert not any(_alive(s['pid']) or _alive(s['child']) for s in written.values())

  @pytest.mark.parametrize('argv, message', [
      (['--logdir', 'x'], 'no command to run'),
      (['--', 'python', 'x.py'], '--logdir is required'),
      (['--tfjob', 'j.yaml', '--', 'python'], '--tfjob needs --image'),
      (['--tfjob', 'j.yaml', '--image', 'i', '--name', 'Bad_Name', '--', 'python'],
       "TFJob name 'Bad_Name' is not a DNS-1123 label"),
      (['--ps', '-1', '--logdir', 'x', '--', 'python'], '--ps=-1 is negative'),
  ])
  def test_cli_usage_errors(self, argv, message, tmp_path):
    proc = subprocess.run([sys.executable, '-m', 'estimator_export.cli', 'cluster'] + argv,
                          env=ENV, cwd=str(tmp_path), capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.startswith('estimator-export cluster: error: ') and message in proc.stderr
    assert 'Traceback' not in proc.stderr


class TestTfJob:
  COMMAND = ['python', '-m', 'bert_example.run_classifier', '--do_train', '--do_eval']

  @pytest.fixture(scope='class')
  def validator(self):
    jsonschema = pytest.importorskip('jsonschema')
    with open(SCHEMA) as f:
      doc = json.load(f)
    assert doc['source'].endswith('v1.9.0/manifests/base/crds/kubeflow.org_tfjobs.yaml')
    return jsonschema.Draft7Validator(crd_schema.strict(doc['openAPIV3Schema']))

  def test_manifest_against_the_crd_schema(self, validator):
    manifest = cluster.tfjob_manifest('bert-sst2', 'registry.example.com/bert:1', self.COMMAND,
                                      workers=3, ps=2, evaluator=True, namespace='ml',
                                      env={'TF_CPP_MIN_LOG_LEVEL': '2'})
    assert list(validator.iter_errors(manifest)) == []
    specs = manifest['spec']['tfReplicaSpecs']
    assert {k: v['replicas'] for k, v in specs.items()} == {
        'Chief': 1, 'Worker': 3, 'PS': 2, 'Evaluator': 1}
    for spec in specs.values():
      container, = spec['template']['spec']['containers']
      assert container['command'] + container['args'] == self.COMMAND
      assert spec['restartPolicy'] == 'OnFailure'
    # The validator is strict: a misspelt field fails.
    bad = json.loads(json.dumps(manifest))
    bad['spec']['tfReplicaSpecs']['PS']['replica'] = 2
    assert [e.message for e in validator.iter_errors(bad)] == [
        "Additional properties are not allowed ('replica' was unexpected)"]

  def test_manifest_round_trips_through_the_operator_types(self):
    training = pytest.importorskip('kubeflow.training')
    manifest = cluster.tfjob_manifest('job', 'img:1', self.COMMAND, workers=0, ps=1,
                                      evaluator=False)
    api = training.ApiClient()
    job = api._ApiClient__deserialize(manifest, 'KubeflowOrgV1TFJob')  # pylint: disable=protected-access
    assert isinstance(job, training.KubeflowOrgV1TFJob)
    assert api.sanitize_for_serialization(job) == manifest  # No field lost: all are known.
    assert job.kind == training.constants.TFJOB_KIND
    constants = training.constants
    assert set(job.spec.tf_replica_specs) == {constants.REPLICA_TYPE_CHIEF,
                                              constants.REPLICA_TYPE_PS}
    assert {k.lower() for k in job.spec.tf_replica_specs} <= set(constants.TFJOB_REPLICA_TYPES)
    container = job.spec.tf_replica_specs['Chief'].template.spec.containers[0]
    assert container.name == training.constants.TFJOB_CONTAINER

  def test_cli_writes_it(self, tmp_path, validator):
    yaml = pytest.importorskip('yaml')
    out = tmp_path / 'job.yaml'
    proc = subprocess.run([sys.executable, '-m', 'estimator_export.cli', 'cluster', '--workers',
                           '2', '--evaluator', '--tfjob', str(out), '--image', 'img:1',
                           '--name', 'bert', '--'] + self.COMMAND, env=ENV, cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f'kubectl apply -f {out}' in proc.stdout
    manifest = yaml.safe_load(out.read_text())
    assert manifest == cluster.tfjob_manifest('bert', 'img:1', self.COMMAND, workers=2,
                                              evaluator=True)
    assert list(validator.iter_errors(manifest)) == []


class TestEvalTimingFlags:

  def test_defaults_and_help(self):
    from absl import flags  # pylint: disable=g-import-not-at-top
    fv = flags.FlagValues()
    export_flags.define_eval_timing_flags(fv)
    fv(['prog'])
    assert export_flags.eval_timing_from_flags(fv) == export_flags.EvalTiming(5.0, 30.0)
    help_text = ' '.join(fv.module_help(export_flags.__name__).split())
    assert "TF's default of 600" in help_text and "TF's default is 120" in help_text
    fv(['prog', '--eval_throttle_secs=2'])
    assert fv.eval_throttle_secs == 2.0
    with pytest.raises(flags.IllegalFlagValueError):
      fv(['prog', '--eval_start_delay_secs=-1'])


# ----- a real cluster: 1 chief + 1 worker + 1 ps + 1 evaluator training a tiny BERT -----
MODEL = 'bert'
SENTENCES = ['a truly great film', 'The acting was awful.', 'not good at all']
TRAIN_STEPS = 8  # 64 examples, batch 16, 2 epochs.


def _tiny_bert(root):
  """Demo data, its vocabulary and a 2-layer BERT config; returns run_classifier flags."""
  from bert_example import data as data_lib  # pylint: disable=g-import-not-at-top
  from bert_example import demo_data  # pylint: disable=g-import-not-at-top
  from bert_example import modeling  # pylint: disable=g-import-not-at-top
  data_dir = os.path.join(root, 'data')
  demo_data.generate_demo_dataset(data_dir, num_train=64, num_dev=16, num_test=8)
  vocab = os.path.join(root, 'vocab.txt')
  size = data_lib.build_vocab(data_lib.get_processor('demo').get_train_examples(data_dir), vocab)
  config = modeling.BertConfig(vocab_size=size, hidden_size=32, num_hidden_layers=2,
                               num_attention_heads=2, intermediate_size=64,
                               max_position_embeddings=64)
  config_file = os.path.join(root, 'bert_config.json')
  with open(config_file, 'w') as f:
    f.write(config.to_json_string())
  return {'task_name': 'demo', 'data_dir': data_dir, 'vocab_file': vocab,
          'bert_config_file': config_file, 'output_dir': os.path.join(root, 'out'),
          'max_seq_length': '16', 'train_batch_size': '16', 'num_train_epochs': '2',
          'save_checkpoints_steps': '4', 'export_dir': os.path.join(root, 'export'),
          'export_formats': 'raw,example,text', 'eval_start_delay_secs': '0',
          'eval_throttle_secs': '1'}


def _flags(values, *extra):
  return [f'--{k}={v}' for k, v in values.items()] + list(extra)


@pytest.fixture(scope='module')
def bert_cluster(tmp_path_factory):
  pytest.importorskip('tensorflow_text', reason='the text signature needs tensorflow-text')
  root = str(tmp_path_factory.mktemp('bert_cluster'))
  values = _tiny_bert(root)
  lines = []
  command = [sys.executable, '-m', 'bert_example.run_classifier'] + _flags(
      values, '--do_train', '--do_eval', '--do_export')
  result = cluster.run_local_cluster(command, os.path.join(root, 'logs'), workers=1, ps=1,
                                     evaluator=True, env=ENV, cwd=REPO, print_fn=lines.append,
                                     timeout_secs=240)
  return values, result, lines


def _estimator_probabilities(values, checkpoint):
  from bert_example import pipeline  # pylint: disable=g-import-not-at-top
  settings = pipeline.ClassifierSettings(
      task_name='demo', data_dir=values['data_dir'], vocab_file=values['vocab_file'],
      bert_config_file=values['bert_config_file'], output_dir=values['output_dir'],
      max_seq_length=16, train_batch_size=16)
  model = pipeline.build_model(settings, ['negative', 'positive'], TRAIN_STEPS)
  estimator = model.make_estimator(values['output_dir'])
  feats = model.samples(SENTENCES)
  ids = {k: feats[k] for k in ('input_ids', 'input_mask', 'segment_ids')}
  input_fn = lambda params=None: tf.data.Dataset.from_tensor_slices(ids).batch(len(SENTENCES))
  return np.stack([p['probabilities'] for p in estimator.predict(input_fn,
                                                                 checkpoint_path=checkpoint)])


class TestBertOnACluster:

  def test_every_role_but_the_ps_exits_zero(self, bert_cluster):
    _, result, lines = bert_cluster
    assert result.ok, '\n'.join(lines) + ''.join(
        open(r.log_path).read()[-3000:] for r in result.roles if r.status == 'failed')
    assert {r.task.name: r.returncode for r in result.roles if r.task.type != 'ps'} == {
        'chief-0': 0, 'worker-0': 0, 'evaluator-0': 0}
    assert result.role('ps-0').status == 'stopped'
    chief_log = open(result.role('chief-0').log_path).read()
    assert f'step {TRAIN_STEPS}/{TRAIN_STEPS}' in chief_log
    assert 'exports run on the evaluator task' in chief_log
    evaluator_log = open(result.role('evaluator-0').log_path).read()
    assert 'accuracy' in evaluator_log and 'export: published version' in evaluator_log

  def test_the_evaluator_exports_every_evaluated_checkpoint(self, bert_cluster):
    values, result, _ = bert_cluster
    assert result.ok
    versions = sorted(int(v) for v in os.listdir(values['export_dir']))
    assert versions and versions[-1] == TRAIN_STEPS, versions  # The final checkpoint.
    assert all(v % 4 == 0 for v in versions)  # Checkpoint steps only, published whole.
    published = open(result.role('evaluator-0').log_path).read().count('export: published')
    assert published == len(versions)
    for name in ('chief-0', 'worker-0'):  # Only the evaluator exports.
      assert 'export: ' not in open(result.role(name).log_path).read()
    eval_results = open(os.path.join(values['output_dir'], 'eval_results.txt')).read()
    assert f'global_step = {float(TRAIN_STEPS)}' in eval_results

  def test_each_version_serves_text_like_estimator_predict(self, bert_cluster, tmp_path):
    from estimator_export.client import GrpcClient  # pylint: disable=g-import-not-at-top
    from estimator_export.serving.server import create_server  # pylint: disable=g-import-not-at-top
    from tests.serving_util import model_status, wait_for  # pylint: disable=g-import-not-at-top
    values, result, _ = bert_cluster
    assert result.ok
    versions = sorted(int(v) for v in os.listdir(values['export_dir']))
    config = tmp_path / 'models.config'
    config.write_text('model_config_list { config { name: "%s" base_path: "%s" '
                      'model_platform: "tensorflow" model_version_policy { all {} } } }'
                      % (MODEL, values['export_dir']))
    server = create_server(model_config_file=str(config), port=0, rest_api_port=0)
    try:
      wait_for(lambda: sorted(v for v, s in model_status(server.rest_port, MODEL).items()
                              if s['state'] == 'AVAILABLE') == versions, 60,
               f'versions {versions} available')
      compared = []
      with GrpcClient(f'127.0.0.1:{server.grpc_port}') as client:
        for version in versions:
          checkpoint = os.path.join(values['output_dir'], f'model.ckpt-{version}')
          out = client.predict(MODEL, {'text': np.array(SENTENCES, object)},
                               signature_name='text', version=version)
          assert out['probabilities'].shape == (len(SENTENCES), 2)
          if tf.io.gfile.glob(checkpoint + '.index'):  # The chief keeps the newest three.
            np.testing.assert_allclose(out['probabilities'],
                                       _estimator_probabilities(values, checkpoint), atol=1e-5)
            compared.append(version)
      assert TRAIN_STEPS in compared
    finally:
      server.stop(grace=1)

  def test_evaluator_keeps_exports_to_keep(self, bert_cluster, tmp_path, monkeypatch):
    """The evaluator role alone, on the cluster's checkpoints: retention applies there."""
    from bert_example import distributed  # pylint: disable=g-import-not-at-top
    from bert_example import run_classifier  # pylint: disable=g-import-not-at-top
    from absl import flags  # pylint: disable=g-import-not-at-top
    values, result, _ = bert_cluster
    assert result.ok
    values = dict(values, output_dir=str(tmp_path / 'out'), export_dir=str(tmp_path / 'exp'))
    shutil.copytree(bert_cluster[0]['output_dir'], values['output_dir'])
    shutil.copytree(os.path.join(bert_cluster[0]['export_dir'], str(TRAIN_STEPS)),
                    os.path.join(values['export_dir'], '3'))  # An older version to retire.
    fv = flags.FlagValues()
    run_classifier.define_flags(fv)
    fv(['run_classifier'] + _flags(values, '--do_train', '--do_export', '--exports_to_keep=1',
                                   '--export_allow_single_version'))
    config = {'cluster': cluster.local_cluster(workers=0, ps=1),
              'task': {'type': 'evaluator', 'index': 0}}
    monkeypatch.setenv('TF_CONFIG', json.dumps(config))
    metrics = distributed.run(run_classifier.settings_from_flags(fv), config,
                              print_fn=lambda m: None)
    assert metrics['global_step'] == TRAIN_STEPS
    assert os.listdir(values['export_dir']) == [str(TRAIN_STEPS)]


class TestClusterSettings:

  def test_what_a_cluster_cannot_do(self):
    from bert_example import distributed  # pylint: disable=g-import-not-at-top
    from bert_example import pipeline  # pylint: disable=g-import-not-at-top
    base = dict(task_name='demo', data_dir='d', vocab_file='v', bert_config_file='c',
                output_dir='o')
    config = {'cluster': {'chief': ['127.0.0.1:1']}, 'task': {'type': 'chief', 'index': 0}}
    with pytest.raises(ValueError, match='--do_train is not set: a cluster trains'):
      distributed.check_cluster_settings(pipeline.ClassifierSettings(**base, do_eval=True),
                                         config)
    with pytest.raises(ValueError, match='--do_predict does not run in a cluster'):
      distributed.check_cluster_settings(
          pipeline.ClassifierSettings(**base, do_train=True, do_predict=True), config)
