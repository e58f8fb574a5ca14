"""`deploy kubernetes`: a Deployment of TF Serving 2.15.1 with Services, autoscaling and metrics.

Objects (one file each, or one stream on stdout), all named from --name (default: the
model name) and labelled app.kubernetes.io/name=NAME:

    configmap.yaml        NAME-config: models.config, batching.config, monitoring.config
    secret.yaml           NAME-tls: ssl.config (only with --ssl_config_file)
    deployment.yaml       NAME: the server, ports grpc 8500 / http 8501
    service.yaml          NAME: ClusterIP, both ports (kube-proxy balances per connection)
    service-headless.yaml NAME-headless: clusterIP None, one DNS record per ready pod, for
                          gRPC clients balancing per request (dns:///NAME-headless:8500 with
                          round_robin); a plain Service pins a gRPC channel to one pod
    hpa.yaml              NAME: autoscaling/v2, CPU utilization target

Probes: startup (tcpSocket grpc; TF Serving opens its ports only once the initial
versions loaded, so slow loads are not killed), liveness (tcpSocket grpc), readiness
(GET /v1/models/NAME/metadata on http: 200 only while a version is AVAILABLE;
/v1/models/NAME answers 200 while LOADING or END too). The model comes from one of:
--pvc (read-only claim; new versions appear live), --host_path (single-node clusters),
or --storage_uri (gs:// or s3://: an init container copies the export base into an
emptyDir at pod start; restart the Deployment to pick up new versions).
"""
import hashlib
import json
import posixpath
from typing import Dict, List, Optional

from estimator_export.deploy import _files
from estimator_export.deploy import _plan
from estimator_export.deploy._plan import DeployError

CONTAINER = 'tf-serving'
# The images copying the export base from object storage (pin them; override with --copy_image).
COPY_IMAGES = {'gs': 'google/cloud-sdk:467.0.0-slim', 's3': 'amazon/aws-cli:2.15.30'}


def labels(plan: _plan.Plan) -> Dict[str, str]:
  return {'app.kubernetes.io/name': plan.name, 'app.kubernetes.io/component': 'model-server',
          'app.kubernetes.io/part-of': 'estimator-export'}


def metadata(plan: _plan.Plan, name: str) -> dict:
  meta = {'name': name}
  if plan.options.namespace:
    meta['namespace'] = plan.options.namespace
  meta['labels'] = labels(plan)
  return meta



def resources(options: _plan.DeployOptions) -> dict:
  requests = {'cpu': options.cpu, 'memory': options.memory}
  limits = {'memory': options.memory_limit or options.memory}
  if options.cpu_limit:
    limits['cpu'] = options.cpu_limit
  return {'requests': requests, 'limits': limits}


def copy_command(storage_uri: str, destination: str) -> List[str]:
  """The init container's command copying the export base at storage_uri to destination."""
  scheme = storage_uri.split('://', 1)[0]
  if scheme == 'gs':
    return ['gsutil', '-m', 'rsync', '-r', storage_uri, destination]
  if scheme == 's3':
    return ['aws', 's3', 'sync', storage_uri, destination, '--only-show-errors']
  raise DeployError('--storage_uri must be gs:// or s3:// (an init container copies it)',
                    value=storage_uri,
                    fix='copy the export base to a PersistentVolumeClaim and give --pvc NAME '
                        '(or --host_path on a single-node cluster)')


def _model_volume(plan: _plan.Plan):
  """The model volume and, for --storage_uri, the init container filling it."""
  options = plan.options
  sources = [flag for flag, value in (('--storage_uri', options.storage_uri),
                                      ('--pvc', options.pvc), ('--host_path', options.host_path))
             if value]
  if len(sources) != 1:
    raise DeployError('kubernetes needs exactly one place the pods read the export base from',
                      value=sources or None,
                      fix='give one of --storage_uri gs://BUCKET/PATH (or s3://), --pvc CLAIM '
                          '[--pvc_sub_path DIR], or --host_path /path/on/every/node')
  if options.pvc_sub_path and not options.pvc:
    raise DeployError('--pvc_sub_path needs --pvc', value=options.pvc_sub_path,
                      fix='give --pvc CLAIM too, or drop --pvc_sub_path')
  if options.pvc:
    _plan.check_k8s_name(options.pvc, '--pvc', dns1035=False, max_length=253)
    return {'name': 'model', 'persistentVolumeClaim': {'claimName': options.pvc,
                                                       'readOnly': True}}, None
  if options.host_path:
    if not posixpath.isabs(options.host_path):
      raise DeployError('--host_path must be absolute', value=options.host_path,
                        fix='give the export base\'s absolute path on the nodes')
    return {'name': 'model', 'hostPath': {'path': options.host_path, 'type': 'Directory'}}, None
  uri = options.storage_uri.rstrip('/')
  command = copy_command(uri, plan.model_dir)
  image = options.copy_image or COPY_IMAGES[uri.split('://', 1)[0]]
  init = {'name': 'copy-model', 'image': image, 'command': command,
          'volumeMounts': [{'name': 'model', 'mountPath': plan.model_dir}],
          'resources': {'requests': {'cpu': '250m', 'memory': '256Mi'},
                        'limits': {'memory': '1Gi'}}}
  return {'name': 'model', 'emptyDir': {}}, init


def configmap(plan: _plan.Plan) -> dict:
  return {'apiVersion': 'v1', 'kind': 'ConfigMap',
          'metadata': metadata(plan, f'{plan.name}-config'), 'data': plan.config_files()}


def secret(plan: _plan.Plan) -> dict:
  return {'apiVersion': 'v1', 'kind': 'Secret', 'metadata': metadata(plan, f'{plan.name}-tls'),
          'type': 'Opaque', 'stringData': {_plan.SSL_CONFIG: plan.ssl_config}}


def _probes(plan: _plan.Plan) -> dict:
  period = 5
  return {
      'startupProbe': {'tcpSocket': {'port': 'grpc'}, 'periodSeconds': period,
                       'failureThreshold': -(-plan.options.startup_timeout_seconds // period)},
      'livenessProbe': {'tcpSocket': {'port': 'grpc'}, 'periodSeconds': 10, 'timeoutSeconds': 3,
                        'failureThreshold': 3},
      'readinessProbe': {'httpGet': {'path': _plan.metadata_path(plan.model_name), 'port': 'http'},
                         'periodSeconds': period, 'timeoutSeconds': 3, 'failureThreshold': 2},
  }


def deployment(plan: _plan.Plan, config_checksum: str) -> dict:
  options = plan.options
  ssl_path = f'{_plan.SSL_DIR}/{_plan.SSL_CONFIG}' if plan.ssl_config is not None else None
  model_volume, init = _model_volume(plan)
  model_mount = {'name': 'model', 'mountPath': plan.model_dir, 'readOnly': True}
  if options.pvc_sub_path:
    model_mount['subPath'] = options.pvc_sub_path
  container = {
      'name': CONTAINER, 'image': options.image, 'command': [_plan.SERVER_BINARY],
      'args': plan.server_args(ssl_path=ssl_path),
      'env': [{'name': 'MODEL_NAME', 'value': plan.model_name}],
      'ports': [{'name': 'grpc', 'containerPort': _plan.GRPC_PORT, 'protocol': 'TCP'},
                {'name': 'http', 'containerPort': _plan.REST_PORT, 'protocol': 'TCP'}],
      **_probes(plan),
      'resources': resources(options),
      'volumeMounts': [model_mount,
                       {'name': 'config', 'mountPath': _plan.CONFIG_DIR, 'readOnly': True}],
      'securityContext': {'allowPrivilegeEscalation': False},
  }
  volumes = [model_volume, {'name': 'config', 'configMap': {'name': f'{plan.name}-config'}}]
  if ssl_path:
    container['volumeMounts'].append({'name': 'tls', 'mountPath': _plan.SSL_DIR,
                                      'readOnly': True})
    volumes.append({'name': 'tls', 'secret': {'secretName': f'{plan.name}-tls'}})
  pod_spec = {}
  if options.service_account:
    pod_spec['serviceAccountName'] = options.service_account
  if init:
    pod_spec['initContainers'] = [init]
  pod_spec.update({'containers': [container], 'volumes': volumes,
                   'terminationGracePeriodSeconds': 30})
  annotations = {'prometheus.io/scrape': 'true', 'prometheus.io/port': str(_plan.REST_PORT),
                 'prometheus.io/path': _plan.METRICS_PATH,
                 # A changed config changes the pod template, so `kubectl apply` rolls the pods.
                 'estimator-export/config-checksum': config_checksum}
  selector = {'app.kubernetes.io/name': plan.name}
  # No spec.replicas: the HorizontalPodAutoscaler owns it (a re-apply would reset it).
  return {'apiVersion': 'apps/v1', 'kind': 'Deployment', 'metadata': metadata(plan, plan.name),
          'spec': {'selector': {'matchLabels': selector},
                   'strategy': {'type': 'RollingUpdate',
                                'rollingUpdate': {'maxUnavailable': 0, 'maxSurge': 1}},
                   'template': {'metadata': {'labels': labels(plan), 'annotations': annotations},
                                'spec': pod_spec}}}


def service(plan: _plan.Plan, headless: bool = False) -> dict:
  ports = [{'name': 'grpc', 'port': _plan.GRPC_PORT, 'targetPort': 'grpc', 'protocol': 'TCP',
            'appProtocol': 'grpc'}]
  if not headless:
    ports.append({'name': 'http', 'port': _plan.REST_PORT, 'targetPort': 'http',
                  'protocol': 'TCP', 'appProtocol': 'http'})
  spec = {'selector': {'app.kubernetes.io/name': plan.name}, 'ports': ports}
  spec.update({'clusterIP': 'None'} if headless else {'type': 'ClusterIP'})
  name = f'{plan.name}-headless' if headless else plan.name
  return {'apiVersion': 'v1', 'kind': 'Service', 'metadata': metadata(plan, name), 'spec': spec}


def autoscaler(plan: _plan.Plan) -> dict:
  options = plan.options
  return {'apiVersion': 'autoscaling/v2', 'kind': 'HorizontalPodAutoscaler',
          'metadata': metadata(plan, plan.name),
          'spec': {'scaleTargetRef': {'apiVersion': 'apps/v1', 'kind': 'Deployment',
                                      'name': plan.name},
                   'minReplicas': options.replicas, 'maxReplicas': options.max_replicas,
                   'metrics': [{'type': 'Resource', 'resource': {
                       'name': 'cpu', 'target': {'type': 'Utilization',
                                                 'averageUtilization':
                                                     options.target_cpu_percent}}}]}}


def check_names(plan: _plan.Plan) -> None:
  """--name (with its '-headless' suffix) and --namespace must be Kubernetes names."""
  flag = '--name' if plan.options.name else '--name (default: --model_name)'
  _plan.check_k8s_name(plan.name, flag, max_length=63 - len('-headless'))
  if plan.options.namespace is not None:
    _plan.check_k8s_name(plan.options.namespace, '--namespace', dns1035=False)


def manifests(plan: _plan.Plan) -> Dict[str, dict]:
  """File name -> Kubernetes object for `plan`.

  Raises:
    DeployError: a bad name, not exactly one model source, or a storage URI scheme
      that cannot be copied.
  """
  check_names(plan)
  config = configmap(plan)
  checksum = hashlib.sha256(json.dumps([config['data'], plan.ssl_config],
                                       sort_keys=True).encode('utf-8')).hexdigest()[:16]
  objects = {'configmap.yaml': config}
  if plan.ssl_config is not None:
    objects['secret.yaml'] = secret(plan)
  objects['deployment.yaml'] = deployment(plan, checksum)
  objects['service.yaml'] = service(plan)
  objects['service-headless.yaml'] = service(plan, headless=True)
  objects['hpa.yaml'] = autoscaler(plan)
  return objects


def kubernetes_files(plan: _plan.Plan, header: Optional[str] = None) -> _files.Files:
  """The manifests as YAML files (see `manifests`)."""
  header = header or (
      f'Model {plan.model_name!r} on TensorFlow Serving {_plan.TF_SERVING_VERSION}, written '
      f'by `estimator-export deploy kubernetes` for Kubernetes >= 1.23 (checked against '
      f'{_plan.KUBERNETES_VERSION}).\nExport: {plan.export.describe()}')
  files = {}
  for file_name, document in manifests(plan).items():
    note = header
    if document['kind'] == 'Secret':
      note += '\nHolds the TLS private key: keep this file out of version control.'
    files[file_name] = _files.dump_yaml(document, note)
  return files
