"""`deploy dockerfile`: an image FROM tensorflow/serving:2.15.1 with the export baked in.

For platforms without volumes (Cloud Run, a plain `docker run`, ...). The output
directory is the whole build context:

    Dockerfile     COPY model/ /models/NAME/, COPY config/ /config/, ENV MODEL_NAME
    model/VERSION  a copy of each version the policy serves (and only those)
    config/*       models.config, batching.config, monitoring.config

    docker build -t IMAGE OUTPUT_DIR && docker run -p 8500:8500 -p 8501:8501 IMAGE

Extra `docker run IMAGE --flag=value` arguments are appended to the server's flags.
A TLS config (private key) is never baked in: mount it at run time and pass
--ssl_config_file.
"""
from estimator_export.deploy import _files
from estimator_export.deploy import _plan
from estimator_export.deploy import compose
from estimator_export.deploy._plan import DeployError


def dockerfile_text(plan: _plan.Plan) -> str:
  args = [_plan.SERVER_BINARY] + plan.server_args()
  entrypoint = ', '.join(f'"{a}"' for a in args)
  versions = ', '.join(plan.export.served)
  return (f'# TensorFlow Serving {_plan.TF_SERVING_VERSION} with model {plan.model_name!r} '
          f'(versions {versions}) baked in,\n'
          f'# written by `estimator-export deploy dockerfile`. Build from this directory:\n'
          f'#   docker build -t IMAGE . && docker run -p 8500:8500 -p 8501:8501 IMAGE\n'
          f'# Export: {plan.export.describe()}\n'
          f'FROM {plan.options.image}\n'
          f'ENV MODEL_NAME={plan.model_name}\n'
          f'COPY model/ {plan.model_dir}/\n'
          f'COPY config/ {_plan.CONFIG_DIR}/\n'
          f'EXPOSE {_plan.GRPC_PORT} {_plan.REST_PORT}\n'
          f'HEALTHCHECK --interval=5s --timeout=3s --start-period='
          f'{plan.options.startup_timeout_seconds}s --retries=3 \\\n'
          f'  CMD ["bash", "-c", {_json_string(compose.healthcheck_command(plan.model_name))}]\n'
          f'ENTRYPOINT [{entrypoint}]\n')


def _json_string(text: str) -> str:
  import json  # pylint: disable=g-import-not-at-top
  return json.dumps(text)


def dockerfile_files(plan: _plan.Plan) -> _files.Files:
  """Dockerfile, .dockerignore, config/* and model/VERSION (copies) for `plan`.

  Raises:
    DeployError: --ssl_config_file (a private key must not be baked into an image).
  """
  if plan.ssl_config is not None:
    raise DeployError('the dockerfile target does not bake a TLS config (it holds a private '
                      'key) into the image', value=plan.options.ssl_config_file,
                      fix='drop --ssl_config_file and mount it at run time: docker run -v '
                          '/path/ssl.config:/secrets/tls/ssl.config:ro IMAGE '
                          '--ssl_config_file=/secrets/tls/ssl.config')
  if any(c in plan.model_name for c in ' "\\$\n'):
    raise DeployError('--model_name has characters a Dockerfile ENV line cannot hold as is',
                      value=plan.model_name, fix='use letters, digits, "-", "_" and "."')
  files = {'Dockerfile': dockerfile_text(plan),
           '.dockerignore': '# Everything here is the build context on purpose.\n'}
  for file_name, text in plan.config_files().items():
    files[f'config/{file_name}'] = text
  files['model'] = _files.CopyTree(plan.export.base, include=plan.export.served)
  return files
