"""`estimator-export deploy`: the files it writes are valid, and what they configure serves.

* Every manifest is checked offline against published schemas with pinned validators:
  Kubernetes objects with kubernetes-validate 1.37.0 in strict mode (Kubernetes 1.30),
  the InferenceService against KServe v0.14.1's CRD schema (vendored), the compose
  file against the Compose specification's schema (vendored). A misspelt field fails
  each of them.
* What can run here runs: the compose, Kubernetes, KServe and Dockerfile targets'
  models.config, batching and monitoring files and flags start the embedded server
  (the flags parsed by `estimator-export serve`'s parser, the container paths rewritten
  to the local export here), which answers predictions over REST and gRPC and serves
  Prometheus metrics where prometheus.yml scrapes.
* The readiness probe's request fails until a version is AVAILABLE, and passes after.
* Mistakes exit 2 with the bad value and the fix.
"""
import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess

import grpc
import jsonschema
import kubernetes_validate
import numpy as np
import pytest
import tensorflow as tf
import yaml
from tensorflow_serving.apis import prediction_service_pb2_grpc

from estimator_export import deploy
from estimator_export import cli as cli_lib
from estimator_export.cli import serve as serve_cli
from estimator_export.deploy import compose as compose_lib
from estimator_export.deploy import kserve as kserve_lib
from estimator_export.serving import server as server_lib
from tests import crd_schema
from tests.serving_util import predict_request, rest_request, save_tf1_model, wait_for
from tests.serving_util import self_signed_ssl_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCHEMAS = os.path.join(REPO, 'estimator_export', 'deploy_schemas')
TESTDATA = os.path.join(REPO, '..', 'shared', 'fixtures', 'tf_serving_testdata')
TWO_VERSIONS = os.path.join(TESTDATA, 'saved_model_half_plus_two_2_versions')
MODEL = 'half-plus-two'


# ----- fixtures and helpers -----

@pytest.fixture(scope='module')
def base(tmp_path_factory):
  """A copy of TF Serving's half_plus_two export base (versions 00000123 and 00000124)."""
  path = str(tmp_path_factory.mktemp('exports') / 'half_plus_two')
  shutil.copytree(TWO_VERSIONS, path)
  return path


@pytest.fixture(scope='module')
def tls(tmp_path_factory):
  """(ssl.config path, certificate PEM): a self-signed certificate for localhost."""
  if not shutil.which('openssl'):
    pytest.skip('needs openssl to make a certificate')
  return self_signed_ssl_config(tmp_path_factory.mktemp('tls'))


@pytest.fixture(scope='module')
def ssl_file(tls):
  return tls[0]


def make_plan(base, **options):
  return deploy.plan(base, deploy.DeployOptions(model_name=MODEL, **options))


def documents(files):
  """{relative path: parsed YAML} of the YAML files."""
  return {p: yaml.safe_load(t) for p, t in files.items() if p.endswith(('.yml', '.yaml'))}


def k8s_validate(document):
  return kubernetes_validate.validate(document, deploy.KUBERNETES_VERSION, strict=True)


def _load_schema(name, key):
  with open(os.path.join(SCHEMAS, name), encoding='utf-8') as f:
    doc = json.load(f)
  assert doc['source'].startswith('https://github.com/') and doc['version']
  return doc, doc[key]


@pytest.fixture(scope='module')
def kserve_validator():
  doc, schema = _load_schema('kserve_inferenceservice_v1beta1.json', 'openAPIV3Schema')
  assert '/v0.14.1/' in doc['source']
  return jsonschema.Draft7Validator(crd_schema.strict(schema))


@pytest.fixture(scope='module')
def compose_validator():
  doc, schema = _load_schema('compose_spec.json', 'schema')
  assert 'compose-spec/compose-spec' in doc['source']
  return jsonschema.Draft7Validator(schema)


def errors(validator, document):
  return sorted(e.message for e in validator.iter_errors(document))


# ----- schemas -----

class TestSchemas:

  def test_kubernetes_objects_are_valid_in_strict_mode(self, base, ssl_file):
    for source in ({'storage_uri': 'gs://bucket/exports/half_plus_two'},
                   {'storage_uri': 's3://bucket/exports/half_plus_two/'},
                   {'pvc': 'models', 'pvc_sub_path': 'half_plus_two'},
                   {'host_path': '/data/exports/half_plus_two'}):
      plan = make_plan(base, ssl_config_file=ssl_file, namespace='ml', **source)
      docs = documents(deploy.render('kubernetes', plan))
      kinds = sorted(d['kind'] for d in docs.values())
      assert kinds == ['ConfigMap', 'Deployment', 'HorizontalPodAutoscaler', 'Secret',
                       'Service', 'Service'], source
      for document in docs.values():
        assert k8s_validate(document) == deploy.KUBERNETES_VERSION

  def test_kubernetes_objects_hold_what_the_issue_asks(self, base):
    plan = make_plan(base, storage_uri='gs://bucket/m', cpu='2', memory='4Gi', replicas=3,
                     max_replicas=9, target_cpu_percent=60)
    docs = documents(deploy.render('kubernetes', plan))
    pod = docs['deployment.yaml']['spec']['template']
    container, = pod['spec']['containers']
    assert container['image'] == 'tensorflow/serving:2.15.1'
    assert {p['name']: p['containerPort'] for p in container['ports']} == {
        'grpc': 8500, 'http': 8501}
    assert container['readinessProbe']['httpGet'] == {
        'path': f'/v1/models/{MODEL}/metadata', 'port': 'http'}
    assert container['livenessProbe']['tcpSocket'] == {'port': 'grpc'}
    assert container['resources']['requests'] == {'cpu': '2', 'memory': '4Gi'}
    assert '--enable_model_warmup=true' in container['args']
    init, = pod['spec']['initContainers']
    assert init['command'][:4] == ['gsutil', '-m', 'rsync', '-r']
    assert pod['metadata']['annotations']['prometheus.io/path'] == deploy.METRICS_PATH
    headless = docs['service-headless.yaml']['spec']
    assert headless['clusterIP'] == 'None' and headless['ports'][0]['port'] == 8500
    hpa = docs['hpa.yaml']['spec']
    assert (hpa['minReplicas'], hpa['maxReplicas']) == (3, 9)
    assert hpa['metrics'][0]['resource']['target']['averageUtilization'] == 60
    assert set(docs['configmap.yaml']['data']) == {
        'models.config', 'batching.config', 'monitoring.config'}

  def test_kubernetes_validator_rejects_a_wrong_field(self, base):
    docs = documents(deploy.render('kubernetes', make_plan(base, host_path='/data/m')))
    bad = json.loads(json.dumps(docs['deployment.yaml']))
    container = bad['spec']['template']['spec']['containers'][0]
    container['readynessProbe'] = container.pop('readinessProbe')
    with pytest.raises(kubernetes_validate.ValidationError, match='readynessProbe'):
      k8s_validate(bad)
    bad = json.loads(json.dumps(docs['hpa.yaml']))
    bad['spec']['minReplicas'] = 'two'
    with pytest.raises(kubernetes_validate.ValidationError, match="'two' is not of type"):
      k8s_validate(bad)

  def test_inference_service_against_the_kserve_crd(self, base, kserve_validator):
    plan = make_plan(base, storage_uri='gs://bucket/exports/half_plus_two', namespace='ml',
                     canary_traffic_percent=10, kserve_grpc=True, replicas=1, max_replicas=3)
    docs = documents(deploy.render('kserve', plan))
    isvc = docs['inferenceservice.yaml']
    assert errors(kserve_validator, isvc) == []
    assert k8s_validate(docs['configmap.yaml']) == deploy.KUBERNETES_VERSION
    predictor = isvc['spec']['predictor']
    model = predictor['model']
    assert model['modelFormat']['name'] == 'tensorflow'
    assert model['runtimeVersion'] == '2.15.1'
    assert model['storageUri'] == 'gs://bucket/exports/half_plus_two'
    assert model['ports'] == [{'name': 'h2c', 'containerPort': 9000, 'protocol': 'TCP'}]
    assert predictor['canaryTrafficPercent'] == 10
    assert (predictor['minReplicas'], predictor['maxReplicas']) == (1, 3)
    assert 'base_path: "/mnt/models"' in docs['configmap.yaml']['data']['models.config']

  def test_kserve_validator_rejects_a_wrong_field(self, base, kserve_validator):
    docs = documents(deploy.render('kserve', make_plan(base, storage_uri='s3://b/m')))
    bad = json.loads(json.dumps(docs['inferenceservice.yaml']))
    bad['spec']['predictor']['model']['storageURI'] = bad['spec']['predictor']['model'].pop(
        'storageUri')
    assert errors(kserve_validator, bad) == [
        "Additional properties are not allowed ('storageURI' was unexpected)"]
    bad['spec']['predictor']['model']['storageUri'] = 's3://b/m'
    bad['spec']['predictor']['model'].pop('storageURI')
    bad['spec']['predictor']['canaryTrafficPercent'] = '10%'
    assert errors(kserve_validator, bad) == ["'10%' is not of type 'integer'"]

  def test_compose_files_against_the_compose_spec(self, base, ssl_file, compose_validator):
    files = deploy.render('compose', make_plan(base, ssl_config_file=ssl_file))
    assert sorted(files) == ['config/batching.config', 'config/models.config',
                             'config/monitoring.config', 'docker-compose.yml', 'prometheus.yml']
    document = yaml.safe_load(files['docker-compose.yml'])
    assert errors(compose_validator, document) == []
    server = document['services']['tf-serving']
    assert server['image'] == 'tensorflow/serving:2.15.1'
    mounts = {v['target']: v['source'] for v in server['volumes']}
    assert mounts == {f'/models/{MODEL}': f'${{MODEL_DIR:-{base}}}', '/config': './config'}
    assert '--ssl_config_file=/run/secrets/ssl.config' in server['command']
    assert document['secrets']['ssl_config']['file'] == ssl_file
    assert document['services']['prometheus']['depends_on'] == ['tf-serving']
    # The repository's hand-written compose file is valid too, and mounts what it names.
    with open(os.path.join(REPO, 'deploy', 'docker-compose.yml'), encoding='utf-8') as f:
      static = yaml.safe_load(f)
    assert errors(compose_validator, static) == []
    static_server = static['services']['tf-serving']
    targets = [v['target'] for v in static_server['volumes']]
    for flag in static_server['command']:
      if flag.startswith(('--batching_parameters_file=', '--monitoring_config_file=')):
        path = flag.split('=', 1)[1]
        assert os.path.dirname(path) in targets, flag
        assert os.path.exists(os.path.join(REPO, 'deploy', 'config', os.path.basename(path)))

  def test_compose_validator_rejects_a_wrong_field(self, base, compose_validator):
    document = yaml.safe_load(deploy.render('compose', make_plan(base))['docker-compose.yml'])
    document['services']['tf-serving']['volume'] = document['services']['tf-serving'].pop(
        'volumes')
    assert errors(compose_validator, document) == [
        "'volume' does not match any of the regexes: '^x-'"]


# ----- what the files configure serves -----

def _rewrite_models_config(text, container_base, local_base):
  """models.config with the container's base path replaced by the local export (explicitly)."""
  line = f'base_path: "{container_base}"'
  assert text.count(line) == 1, text
  return text.replace(line, f'base_path: "{local_base}"')


def start_server(args, container_files, root, container_base, local_base, **overrides):
  """Lays container_files (container path -> text) under root and starts the embedded server.

  The container's paths in `args` become root/path; models.config's base path becomes
  local_base. The flags are parsed by `estimator-export serve`'s parser, so a flag that
  tensorflow_model_server does not have fails here. Ports become 0 (free ports).
  """
  for path, text in container_files.items():
    if path.endswith('/models.config'):
      text = _rewrite_models_config(text, container_base, local_base)
    local = os.path.join(root, path.lstrip('/'))
    os.makedirs(os.path.dirname(local), exist_ok=True)
    with open(local, 'w', encoding='utf-8') as f:
      f.write(text)
  local_args = []
  for arg in args:
    flag, _, value = arg.partition('=')
    if value in container_files:
      arg = f'{flag}={os.path.join(root, value.lstrip("/"))}'
    local_args.append(arg)
  parser = serve_cli.add_server_arguments(argparse.ArgumentParser())
  options = serve_cli.options_from_args(parser.parse_args(local_args))
  options = dataclasses.replace(options, port=0, rest_api_port=0, host='127.0.0.1', **overrides)
  return server_lib.create_server(options)


def rest_status(port, path):
  return rest_request(port, 'GET', path).status


def check_serves(server, versions, metrics_path, readiness_path, root_certificates=None):
  """Ready per the probe, predicts over REST and gRPC, and exports metrics where scraped."""
  wait_for(lambda: rest_status(server.rest_port, readiness_path) == 200, 30, 'readiness')
  status = rest_request(server.rest_port, 'GET', f'/v1/models/{MODEL}').json()
  assert sorted((v['version'], v['state']) for v in status['model_version_status']) == [
      (str(int(v)), 'AVAILABLE') for v in versions]
  x = np.array([[1.0], [4.0]], np.float32)
  reply = rest_request(server.rest_port, 'POST', f'/v1/models/{MODEL}:predict',
                       {'instances': x.tolist()})
  assert reply.status == 200, reply.body
  assert reply.json()['predictions'] == (0.5 * x + 2).tolist()  # y = x / 2 + 2.
  target = f'127.0.0.1:{server.grpc_port}'
  if root_certificates:
    channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates),
                                  options=[('grpc.ssl_target_name_override', 'localhost')])
  else:
    channel = grpc.insecure_channel(target)
  with channel:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    response = stub.Predict(predict_request(MODEL, x), timeout=30)
  assert tf.make_ndarray(response.outputs['y']).tolist() == (0.5 * x + 2).tolist()
  metrics = rest_request(server.rest_port, 'GET', metrics_path)
  assert metrics.status == 200
  assert re.search(rf':tensorflow:serving:request_count{{.*model_name="{MODEL}".*}} [1-9]',
                   metrics.body.decode('utf-8')), metrics.body[:2000]
  assert server.options.enable_batching
  assert server.options.batching_parameters().max_batch_size == 32


class TestTheFilesServe:

  def test_compose(self, base, tmp_path):
    out = tmp_path / 'out'
    deploy.write_files(deploy.render('compose', make_plan(base, versions='all')), str(out))
    document = yaml.safe_load((out / 'docker-compose.yml').read_text())
    service = document['services']['tf-serving']
    mounts = {v['target']: v['source'] for v in service['volumes']}
    config_dir = out / mounts['/config']
    container_files = {f'/config/{name}': (config_dir / name).read_text()
                       for name in os.listdir(config_dir)}
    prometheus = yaml.safe_load((out / 'prometheus.yml').read_text())
    scrape, = prometheus['scrape_configs']
    assert scrape['static_configs'][0]['targets'] == ['tf-serving:8501']
    healthcheck = service['healthcheck']['test']
    assert healthcheck[:3] == ['CMD', 'bash', '-c']
    with start_server(service['command'], container_files, str(tmp_path / 'root'),
                      f'/models/{MODEL}', base) as server:
      check_serves(server, ['00000123', '00000124'], scrape['metrics_path'],
                   deploy.metadata_path(MODEL))
      # The healthcheck command itself passes against the ready server.
      command = healthcheck[3].replace('/dev/tcp/127.0.0.1/8501',
                                       f'/dev/tcp/127.0.0.1/{server.rest_port}')
      assert subprocess.run(['bash', '-c', command], timeout=30).returncode == 0

  def test_kubernetes_with_tls(self, base, tls, tmp_path):
    ssl_path, certificate = tls
    docs = documents(deploy.render('kubernetes', make_plan(base, host_path='/data/m',
                                                           ssl_config_file=ssl_path)))
    pod = docs['deployment.yaml']['spec']['template']
    container, = pod['spec']['containers']
    volumes = {v['name']: v for v in pod['spec']['volumes']}
    container_files = {}
    for mount in container['volumeMounts']:
      volume = volumes[mount['name']]
      if 'configMap' in volume:
        data = docs['configmap.yaml']['data']
        assert volume['configMap']['name'] == docs['configmap.yaml']['metadata']['name']
      elif 'secret' in volume:
        data = docs['secret.yaml']['stringData']
        assert volume['secret']['secretName'] == docs['secret.yaml']['metadata']['name']
      else:
        assert volume['hostPath']['path'] == '/data/m'
        assert mount['mountPath'] == f'/models/{MODEL}'
        continue
      container_files.update({f'{mount["mountPath"]}/{k}': v for k, v in data.items()})
    assert container['command'] == ['/usr/bin/tensorflow_model_server']
    annotations = pod['metadata']['annotations']
    assert annotations['prometheus.io/port'] == '8501'
    with start_server(container['args'], container_files, str(tmp_path / 'root'),
                      f'/models/{MODEL}', base) as server:
      check_serves(server, ['00000124'], annotations['prometheus.io/path'],
                   container['readinessProbe']['httpGet']['path'], root_certificates=certificate)

  def test_kserve(self, base, tmp_path):
    docs = documents(deploy.render('kserve', make_plan(base, storage_uri='gs://b/m',
                                                       versions='latest:2')))
    predictor = docs['inferenceservice.yaml']['spec']['predictor']
    mount, = predictor['model']['volumeMounts']
    volume, = predictor['volumes']
    assert volume['name'] == mount['name']
    container_files = {f'{mount["mountPath"]}/{k}': v
                       for k, v in docs['configmap.yaml']['data'].items()}
    # The runtime's own flags (config/runtimes/kserve-tensorflow-serving.yaml), then ours.
    args = [f'--model_name={MODEL}', '--port=9000', '--rest_api_port=8080',
            f'--model_base_path={kserve_lib.KSERVE_MODEL_DIR}',
            '--rest_api_timeout_in_ms=60000'] + predictor['model']['args']
    annotations = docs['inferenceservice.yaml']['metadata']['annotations']
    with start_server(args, container_files, str(tmp_path / 'root'),
                      kserve_lib.KSERVE_MODEL_DIR, base) as server:
      check_serves(server, ['00000123', '00000124'], annotations['prometheus.kserve.io/path'],
                   f'/v1/models/{MODEL}/metadata')

  def test_dockerfile_image_layout(self, base, tmp_path):
    context = tmp_path / 'context'
    written = deploy.write_files(deploy.render('dockerfile', make_plan(base)), str(context))
    assert written['model'] > 0
    lines = (context / 'Dockerfile').read_text().splitlines()
    instructions = [line for line in lines if line and not line.startswith(('#', ' '))]
    assert instructions[0] == 'FROM tensorflow/serving:2.15.1'
    assert f'ENV MODEL_NAME={MODEL}' in instructions
    # "Build" the image's file system: each COPY puts a context directory at its target.
    image_root = tmp_path / 'image'
    for line in instructions:
      if line.startswith('COPY '):
        source, target = line.split()[1:]
        shutil.copytree(context / source, str(image_root) + target, dirs_exist_ok=True)
    model_dir = image_root / 'models' / MODEL
    assert sorted(os.listdir(model_dir)) == ['00000124']  # Only the version served.
    entrypoint = json.loads(next(i for i in instructions
                                 if i.startswith('ENTRYPOINT '))[len('ENTRYPOINT '):])
    assert entrypoint[0] == '/usr/bin/tensorflow_model_server'
    container_files = {'/' + str(p.relative_to(image_root)): p.read_text()
                       for p in (image_root / 'config').iterdir()}
    with start_server(entrypoint[1:], container_files, str(tmp_path / 'root'),
                      f'/models/{MODEL}', str(model_dir)) as server:
      check_serves(server, ['00000124'], deploy.METRICS_PATH, f'/v1/models/{MODEL}/metadata')


def test_readiness_fails_until_a_version_is_available(base, tmp_path):
  """The probe's GET is 404 on an empty base and on a failed load, 200 once a version is AVAILABLE.

  The status URL (/v1/models/NAME) would pass a pod whose only version failed to load
  (state END), hence the metadata URL.
  """
  docs = documents(deploy.render('kubernetes', make_plan(base, pvc='models')))
  container, = docs['deployment.yaml']['spec']['template']['spec']['containers']
  probe_path = container['readinessProbe']['httpGet']['path']
  container_files = {f'/config/{k}': v for k, v in docs['configmap.yaml']['data'].items()}
  empty_base = tmp_path / 'empty_base'
  empty_base.mkdir()
  healthcheck = compose_lib.healthcheck_command(MODEL)
  status_path = f'/v1/models/{MODEL}'
  with start_server(container['args'], container_files, str(tmp_path / 'root'),
                    f'/models/{MODEL}', str(empty_base), max_num_load_retries=0) as server:
    check = healthcheck.replace('/dev/tcp/127.0.0.1/8501',
                                f'/dev/tcp/127.0.0.1/{server.rest_port}')
    for _ in range(3):  # Several polls: no version, never ready.
      assert rest_status(server.rest_port, probe_path) == 404
      assert subprocess.run(['bash', '-c', check], timeout=30).returncode != 0
    broken = tmp_path / 'broken'
    broken.mkdir()
    (broken / 'saved_model.pb').write_bytes(b'not a SavedModel')
    os.rename(broken, empty_base / '00000100')
    wait_for(lambda: rest_status(server.rest_port, status_path) == 200, 30, 'version 100 to end')
    wait_for(lambda: rest_request(server.rest_port, 'GET', status_path).json()[
        'model_version_status'][0]['state'] == 'END', 30, 'version 100 to end')
    assert rest_status(server.rest_port, probe_path) == 404  # Status 200, yet not ready.
    assert subprocess.run(['bash', '-c', check], timeout=30).returncode != 0
    staging = tmp_path / 'staging'
    shutil.copytree(os.path.join(base, '00000124'), staging)
    os.rename(staging, empty_base / '00000124')  # Published atomically.
    wait_for(lambda: rest_status(server.rest_port, probe_path) == 200, 30,
             'the readiness path to answer 200', interval=0.1)
    status = rest_request(server.rest_port, 'GET', status_path).json()
    assert status['model_version_status'][0] == {
        'version': '124', 'state': 'AVAILABLE', 'status': {'error_code': 'OK', 'error_message': ''}}
    assert subprocess.run(['bash', '-c', check], timeout=30).returncode == 0


# ----- reading the export -----

def test_read_export_reports_versions_signatures_and_warmup(base, tmp_path):
  info, _ = deploy.read_export(base, 'all')
  assert info.versions == ('00000123', '00000124') and info.served == info.versions
  assert info.signatures['serving_default'].inputs == ('x: float [-1, 1]',)
  assert info.signatures['serving_default'].method_name == 'tensorflow/serving/predict'
  assert info.warmup == () and info.unbatchable == ()
  plan = make_plan(base)
  assert any('tf_serving_warmup_requests' in note for note in plan.notes)
  assert 'x: float [-1, 1] -> y: float [-1, 1]' in plan.models_config()
  # A version with a warmup file is reported, and the warning goes away.
  warm = tmp_path / 'warm'
  shutil.copytree(base, warm)
  (warm / '00000124' / 'assets.extra').mkdir()
  (warm / '00000124' / 'assets.extra' / 'tf_serving_warmup_requests').write_bytes(b'')
  info, _ = deploy.read_export(str(warm), 'latest')
  assert info.served == ('00000124',) and info.warmup == ('00000124',)
  assert make_plan(str(warm)).notes == ()


def _scalar_model(export_dir):
  def build():
    x = tf.compat.v1.placeholder(tf.float32, shape=[], name='x')
    y = tf.identity(x * 2.0, name='y')
    return {'serving_default': tf.compat.v1.saved_model.predict_signature_def({'x': x},
                                                                              {'y': y})}
  save_tf1_model(export_dir, build)


def test_batching_follows_the_signatures(tmp_path):
  scalar_base = tmp_path / 'scalar'
  _scalar_model(str(scalar_base / '1'))
  plan = make_plan(str(scalar_base), host_path='/m')  # auto: off, with a note.
  assert plan.batching_config is None and '--enable_batching=true' not in plan.server_args()
  assert any('serving_default/x' in note for note in plan.notes)
  assert 'batching.config' not in documents(deploy.render('kubernetes', plan))[
      'configmap.yaml']['data']
  with pytest.raises(deploy.DeployError, match=r"serving_default/x.*Fix: give --batching off"):
    make_plan(str(scalar_base), batching='on')


# ----- the command line -----

def run_cli(capsys, *argv):
  code = cli_lib.main(['deploy', *argv])
  out, err = capsys.readouterr()
  return code, out, err


@pytest.mark.parametrize('target, argv, message', [
    ('compose', ['--versions', '7'], "names versions the export base does not hold (it holds "
     "123, 124): got [7]. Fix: give --versions latest"),
    ('compose', ['--versions', 'newest'], "--versions is not a version policy: got 'newest'"),
    ('kserve', [], 'kserve needs --storage_uri'),
    ('kserve', ['--storage_uri', 'gs://b/m', '--name', 'other'],
     "--name must equal --model_name: got 'other'. Fix: drop --name"),
    ('kubernetes', ['--host_path', '/m', '--name', 'Half_Plus_Two'],
     "--name is not a Kubernetes name (a DNS-1035 label"),
    ('kubernetes', ['--host_path', '/m', '--namespace', 'Prod'],
     "got 'Prod'. Fix: give --namespace prod"),
    ('kubernetes', [], 'exactly one place the pods read the export base from'),
    ('kubernetes', ['--storage_uri', 'hdfs://nn/m'], "must be gs:// or s3://"),
    ('kubernetes', ['--host_path', '/m', '--replicas', '3', '--max_replicas', '2'],
     '--max_replicas is below --replicas: got 2. Fix: give --max_replicas 3 or more'),
    ('kubernetes', ['--host_path', '/m', '--cpu', 'lots'], "--cpu is not a Kubernetes quantity"),
    ('kubernetes', ['--host_path', '/m', '--output_dir', '-', '--canary_traffic_percent', '101'],
     '--canary_traffic_percent must be 0 to 100'),
    ('compose', ['--output_dir', '-'], 'compose writes several files'),
    ('dockerfile', ['--output_dir', '-'], 'dockerfile writes several files'),
])
def test_cli_errors_name_the_value_and_the_fix(base, tmp_path, capsys, target, argv, message):
  model = ['--model_name', MODEL]
  if '--output_dir' not in argv:
    argv = argv + ['--output_dir', str(tmp_path / 'out')]
  code, out, err = run_cli(capsys, target, base, *model, *argv)
  assert code == 2, (out, err)
  assert err.startswith(f'estimator-export deploy: error: ') and message in err, err
  assert 'Fix:' in err and 'Traceback' not in err
  assert not (tmp_path / 'out').exists()  # Nothing written.


def test_cli_errors_on_bad_bases_and_model_names(tmp_path, base, capsys):
  empty = tmp_path / 'empty'
  empty.mkdir()
  code, _, err = run_cli(capsys, 'compose', str(empty), '--model_name', MODEL, '--output_dir',
                         str(tmp_path / 'o'))
  assert code == 2 and 'the export base holds no numeric version directory' in err
  assert str(empty) in err and 'Fix: give the directory export_for_serving wrote into' in err
  code, _, err = run_cli(capsys, 'compose', os.path.join(base, '00000124'), '--model_name',
                         MODEL, '--output_dir', str(tmp_path / 'o'))
  assert code == 2 and 'holds no numeric version directory' in err
  code, _, err = run_cli(capsys, 'kserve', base, '--model_name', 'half_plus_two',
                         '--storage_uri', 'gs://b/m', '--output_dir', '-')
  assert code == 2 and "got 'half_plus_two'. Fix: give --model_name (KServe uses it as the " \
      "InferenceService name) half-plus-two" in err


def test_cli_writes_files_and_streams_manifests(base, tmp_path, capsys):
  code, out, err = run_cli(capsys, 'kubernetes', base, '--model_name', MODEL, '--pvc', 'models',
                           '--namespace', 'ml', '--output_dir', '-')
  assert code == 0, err
  assert 'tf_serving_warmup_requests' in err  # The note goes to stderr, manifests to stdout.
  streamed = list(yaml.safe_load_all(out))
  assert [d['kind'] for d in streamed] == ['ConfigMap', 'Deployment', 'Service', 'Service',
                                           'HorizontalPodAutoscaler']
  for document in streamed:
    assert k8s_validate(document) and document['metadata']['namespace'] == 'ml'
  out_dir = tmp_path / 'k8s'
  code, out, _ = run_cli(capsys, 'kubernetes', base, '--model_name', MODEL, '--pvc', 'models',
                         '--namespace', 'ml', '--output_dir', str(out_dir))
  assert code == 0 and f'kubectl apply -f {out_dir}' in out
  assert [yaml.safe_load((out_dir / n).read_text()) for n in sorted(os.listdir(out_dir))] == [
      streamed[i] for i in (0, 1, 4, 3, 2)]  # configmap, deployment, hpa, headless, service.
  code, out, _ = run_cli(capsys, 'dockerfile', base, '--model_name', MODEL, '--versions', 'all',
                         '--output_dir', str(tmp_path / 'img'))
  assert code == 0 and 'docker build -t IMAGE' in out
  assert sorted(os.listdir(tmp_path / 'img' / 'model')) == ['00000123', '00000124']
  # Regenerating with another policy leaves no stale version in the build context.
  code, _, _ = run_cli(capsys, 'dockerfile', base, '--model_name', MODEL,
                       '--output_dir', str(tmp_path / 'img'))
  assert code == 0 and os.listdir(tmp_path / 'img' / 'model') == ['00000124']
