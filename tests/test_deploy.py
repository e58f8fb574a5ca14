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
from tests.serving_util import predict_request, rest_request, save_tf1_model, wait_for

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
  directory = tmp_path_factory.mktemp('tls')
  key, cert = directory / 'server.key', directory / 'server.crt'
  subprocess.run(['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '1',
                  '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost',
                  '-keyout', str(key), '-out', str(cert)], check=True, capture_output=True,
                 timeout=60)
  path = directory / 'ssl.config'
  path.write_text(f'server_key: {json.dumps(key.read_text())}\n'
                  f'server_cert: {json.dumps(cert.read_text())}\n')
  return str(path), cert.read_bytes()


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


def _strict(schema):
  """A CRD schema rejecting fields it does not declare (the API server would prune them)."""
  if isinstance(schema, list):
    return [_strict(s) for s in schema]
  if not isinstance(schema, dict):
    return schema
  out = {k: _strict(v) for k, v in schema.items()}
  if ('properties' in schema and 'additionalProperties' not in schema and
      not schema.get('x-kubernetes-preserve-unknown-fields')):
    out['additionalProperties'] = False
  return out


def _load_schema(name, key):
  with open(os.path.join(SCHEMAS, name), encoding='utf-8') as f:
    doc = json.load(f)
  assert doc['source'].startswith('https://github.com/') and doc['version']
  return doc, doc[key]


@pytest.fixture(scope='module')
def kserve_validator():
  doc, schema = _load_schema('kserve_inferenceservice_v1beta1.json', 'openAPIV3Schema')
  assert '/v0.14.1/' in doc['source']
  return jsonschema.Draft7Validator(_strict(schema))


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
