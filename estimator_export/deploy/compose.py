"""`deploy compose`: TF Serving 2.15.1 and Prometheus under Docker Compose, from one export.

Files (relative to the output directory, which docker-compose.yml resolves `./` against):

    docker-compose.yml       tf-serving (the export bind-mounted read-only at
                             /models/NAME, ./config at /config) and prometheus
    config/models.config     the model, its base path /models/NAME and version policy
    config/batching.config   when batching is on (--enable_batching)
    config/monitoring.config Prometheus metrics on the REST port at METRICS_PATH
    prometheus.yml           scrapes tf-serving:8501 at METRICS_PATH

The healthcheck asks for the model's metadata, which answers 200 only once a version
is AVAILABLE (the status URL answers 200 while LOADING too); it uses bash's /dev/tcp
because the image has neither curl nor wget.
"""
import os

from estimator_export import _saved_model as saved_model_lib
from estimator_export.deploy import _files
from estimator_export.deploy import _plan
from estimator_export.deploy._plan import DeployError

SERVICE = 'tf-serving'
PROMETHEUS_SERVICE = 'prometheus'
COMPOSE_FILE = 'docker-compose.yml'
PROMETHEUS_FILE = 'prometheus.yml'
SSL_SECRET = 'ssl_config'



def healthcheck_command(model_name: str, port: int = _plan.REST_PORT) -> str:
  """A bash command exiting 0 iff GET metadata_path answers 200 (no curl in the image)."""
  return (f'exec 3<>/dev/tcp/127.0.0.1/{port} && printf \'GET %s HTTP/1.0\\r\\n\\r\\n\' '
          f'\'{_plan.metadata_path(model_name)}\' >&3 && head -n 1 <&3 | grep -q " 200 "')


def prometheus_config(targets, model_name: str) -> dict:
  return {'global': {'scrape_interval': '15s'},
          'scrape_configs': [{'job_name': 'tf-serving', 'metrics_path': _plan.METRICS_PATH,
                              'static_configs': [{'targets': list(targets),
                                                  'labels': {'model': model_name}}]}]}


def compose_document(plan: _plan.Plan) -> dict:
  """The docker-compose.yml document (Compose specification)."""
  export_base = plan.export.base
  ssl_path = f'/run/secrets/{_plan.SSL_CONFIG}' if plan.ssl_config is not None else None
  server = {
      'image': plan.options.image,
      'entrypoint': [_plan.SERVER_BINARY],
      'command': plan.server_args(ssl_path=ssl_path),
      'environment': {'MODEL_NAME': plan.model_name},
      'ports': [f'{_plan.GRPC_PORT}:{_plan.GRPC_PORT}', f'{_plan.REST_PORT}:{_plan.REST_PORT}'],
      'volumes': [
          {'type': 'bind', 'source': f'${{MODEL_DIR:-{export_base}}}', 'target': plan.model_dir,
           'read_only': True},
          {'type': 'bind', 'source': './config', 'target': _plan.CONFIG_DIR, 'read_only': True},
      ],
      'healthcheck': {'test': ['CMD', 'bash', '-c', healthcheck_command(plan.model_name)],
                      'interval': '5s', 'timeout': '3s', 'retries': 3,
                      'start_period': f'{plan.options.startup_timeout_seconds}s'},
      'restart': 'unless-stopped',
  }
  document = {'services': {SERVICE: server}}
  if ssl_path:
    server['secrets'] = [{'source': SSL_SECRET, 'target': _plan.SSL_CONFIG}]
    document['secrets'] = {SSL_SECRET: {'file': os.path.abspath(plan.options.ssl_config_file)}}
  document['services'][PROMETHEUS_SERVICE] = {
      'image': plan.options.prometheus_image,
      'command': ['--config.file=/etc/prometheus/prometheus.yml'],
      'ports': ['9090:9090'],
      'volumes': [{'type': 'bind', 'source': f'./{PROMETHEUS_FILE}',
                   'target': '/etc/prometheus/prometheus.yml', 'read_only': True}],
      'depends_on': [SERVICE],
      'restart': 'unless-stopped',
  }
  return document


def compose_files(plan: _plan.Plan) -> _files.Files:
  """docker-compose.yml, config/*.config and prometheus.yml for `plan`.

  Raises:
    DeployError: the export base is not local (compose bind-mounts it).
  """
  if not saved_model_lib.is_local_path(plan.export.base):
    raise DeployError('compose bind-mounts the export base, so it must be a local directory',
                      value=plan.export.base,
                      fix='copy the export to this machine, or use the kubernetes or kserve '
                          'target with --storage_uri')
  name = plan.model_name
  header = (f'TensorFlow Serving {_plan.TF_SERVING_VERSION} serving model {name!r}, written by '
            f'`estimator-export deploy compose`.\n'
            f'Export: {plan.export.describe()}\n\n'
            f'  docker compose -f {COMPOSE_FILE} up -d\n'
            f'  curl localhost:{_plan.REST_PORT}{_plan.metadata_path(name)}  # 200 once AVAILABLE\n'
            f'  gRPC localhost:{_plan.GRPC_PORT}; Prometheus http://localhost:9090 '
            f'(scrapes {SERVICE}:{_plan.REST_PORT}{_plan.METRICS_PATH})\n\n'
            'MODEL_DIR=/other/base overrides the mounted export base. New versions written '
            'there\n(atomically, as export_for_serving does) are picked up within a second.')
  files = {COMPOSE_FILE: _files.dump_yaml(compose_document(plan), header)}
  for file_name, text in plan.config_files().items():
    files[f'config/{file_name}'] = text
  files[PROMETHEUS_FILE] = _files.dump_yaml(
      prometheus_config([f'{SERVICE}:{_plan.REST_PORT}'], name),
      f'Prometheus scraping TF Serving\'s metrics (monitoring.config enables them on the REST '
      f'port).')
  return files
