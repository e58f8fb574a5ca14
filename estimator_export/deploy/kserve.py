"""`deploy kserve`: a KServe InferenceService (serving.kserve.io/v1beta1) on TF Serving 2.15.1.

KServe's `kserve-tensorflow-serving` ClusterServingRuntime (checked at KServe v0.14.1)
runs tensorflow/serving:2.6.2 unless the model sets `runtimeVersion`, so this sets
runtimeVersion "2.15.1": the same server the export was checked against. The runtime
starts `tensorflow_model_server --model_name=<isvc name> --port=9000
--rest_api_port=8080 --model_base_path=/mnt/models`, where KServe's storage
initializer copies `storageUri` (the export base: the numeric versions below it).
Hence the InferenceService name is the model name clients use, and must be a DNS-1035
label. Args given here are appended to the runtime's: models.config (base path
/mnt/models, the version policy), batching, monitoring and warmup, from a ConfigMap
mounted at /config.

gRPC: Knative routes one port per container; `--kserve_grpc` declares the runtime's
gRPC port 9000 as `h2c` (KServe's documented way), and REST is then not routed.
Metrics: TF Serving's Prometheus endpoint on port 8080 at METRICS_PATH, announced
with KServe's prometheus.kserve.io annotations (merged by its metric aggregation).
"""
from typing import Dict, Optional

from estimator_export.deploy import _files
from estimator_export.deploy import _plan
from estimator_export.deploy import kubernetes
from estimator_export.deploy._plan import DeployError

KSERVE_VERSION = '0.14.1'   # The CRD schema tests/test_deploy.py validates against.
KSERVE_MODEL_DIR = '/mnt/models'
KSERVE_GRPC_PORT, KSERVE_REST_PORT = 9000, 8080
KSERVE_DEFAULT_TF_SERVING = '2.6.2'


def inference_service(plan: _plan.Plan) -> dict:
  options = plan.options
  meta = {'name': plan.name}
  if options.namespace:
    meta['namespace'] = options.namespace
  meta['labels'] = kubernetes.labels(plan)
  meta['annotations'] = {
      'serving.kserve.io/enable-prometheus-scraping': 'true',
      'serving.kserve.io/enable-metric-aggregation': 'true',
      'prometheus.kserve.io/port': str(KSERVE_REST_PORT),
      'prometheus.kserve.io/path': _plan.METRICS_PATH,
  }
  model = {
      'modelFormat': {'name': 'tensorflow', 'version': '2'},
      # KServe's TF runtime defaults to TF Serving 2.6.2; pin the version the export targets.
      'runtimeVersion': _plan.TF_SERVING_VERSION,
      'storageUri': options.storage_uri,
      'args': plan.server_args(ports=False),
      'resources': kubernetes.resources(options),
      'volumeMounts': [{'name': 'tf-serving-config', 'mountPath': _plan.CONFIG_DIR,
                        'readOnly': True}],
  }
  if options.kserve_grpc:
    model['ports'] = [{'name': 'h2c', 'containerPort': KSERVE_GRPC_PORT, 'protocol': 'TCP'}]
  predictor = {'minReplicas': options.replicas, 'maxReplicas': options.max_replicas}
  if options.canary_traffic_percent is not None:
    predictor['canaryTrafficPercent'] = options.canary_traffic_percent
  if options.service_account:
    predictor['serviceAccountName'] = options.service_account
  predictor['model'] = model
  predictor['volumes'] = [{'name': 'tf-serving-config',
                           'configMap': {'name': f'{plan.name}-config'}}]
  return {'apiVersion': 'serving.kserve.io/v1beta1', 'kind': 'InferenceService',
          'metadata': meta, 'spec': {'predictor': predictor}}


def check(plan: _plan.Plan) -> None:
  """What KServe needs: storage, the model name as the object name, no TLS file.

  Raises:
    DeployError: naming the flag and the fix.
  """
  options = plan.options
  if not options.storage_uri:
    raise DeployError('kserve needs --storage_uri: KServe\'s storage initializer downloads the '
                      'export base from it', value=None,
                      fix='upload the export base and give e.g. --storage_uri '
                          f'gs://BUCKET/models/{plan.model_name} (or s3://, pvc://CLAIM/PATH)')
  if '://' not in options.storage_uri:
    raise DeployError('--storage_uri must be a URI (gs://, s3://, pvc://, https://, ...)',
                      value=options.storage_uri,
                      fix=f'give e.g. --storage_uri pvc://CLAIM/{plan.model_name}')
  if options.name and options.name != options.model_name:
    raise DeployError('KServe serves the model under the InferenceService name, so --name '
                      'must equal --model_name', value=options.name,
                      fix=f'drop --name, or give --model_name {options.name}')
  _plan.check_k8s_name(plan.model_name, '--model_name (KServe uses it as the '
                       'InferenceService name)')
  if options.namespace is not None:
    _plan.check_k8s_name(options.namespace, '--namespace', dns1035=False)
  for flag, value in (('--ssl_config_file', options.ssl_config_file), ('--pvc', options.pvc),
                      ('--host_path', options.host_path)):
    if value:
      raise DeployError(f'{flag} is not used by kserve (KServe terminates TLS at its '
                        'ingress, and reads the model from --storage_uri)', value=value,
                        fix=f'drop {flag} (use pvc://CLAIM/PATH in --storage_uri for a claim)')


def manifests(plan: _plan.Plan) -> Dict[str, dict]:
  """File name -> object: the ConfigMap of the server's files, and the InferenceService."""
  check(plan)
  config = kubernetes.configmap(plan)
  config['data'] = plan.config_files(base_path=KSERVE_MODEL_DIR)
  return {'configmap.yaml': config, 'inferenceservice.yaml': inference_service(plan)}


def kserve_files(plan: _plan.Plan, header: Optional[str] = None) -> _files.Files:
  header = header or (
      f'Model {plan.model_name!r} as a KServe InferenceService on TensorFlow Serving '
      f'{_plan.TF_SERVING_VERSION} (KServe\'s TF runtime defaults to '
      f'{KSERVE_DEFAULT_TF_SERVING}; runtimeVersion pins {_plan.TF_SERVING_VERSION}), written '
      f'by `estimator-export deploy kserve`; checked against KServe v{KSERVE_VERSION}\'s CRD.\n'
      f'Export: {plan.export.describe()}')
  return {name: _files.dump_yaml(doc, header) for name, doc in manifests(plan).items()}
