"""Deployment files for one export on TensorFlow Serving 2.15.1: compose, Kubernetes, KServe, image.

    from estimator_export import deploy
    plan = deploy.plan('exports/classifier', deploy.DeployOptions(
        model_name='classifier', storage_uri='gs://bucket/exports/classifier'))
    files = deploy.render('kubernetes', plan)      # relative path -> text
    deploy.write_files(files, 'deploy/k8s')         # or print(deploy.stream(files))

`plan` reads the export base once (versions, the newest served version's signatures,
its warmup file) and checks the options; each target renders the same server
configuration (models.config, batching.config, monitoring.config and the flags
naming them) for its platform:

* compose: docker-compose.yml with TF Serving and Prometheus (`compose.py`).
* kubernetes: ConfigMap, Deployment, Service, headless Service, HPA (`kubernetes.py`).
* kserve: an InferenceService pinned to TF Serving 2.15.1, and its ConfigMap (`kserve.py`).
* dockerfile: an image with the export baked in, for platforms without volumes
  (`dockerfile.py`).

deploy/README.md has the walkthrough. Errors are DeployError (an ExportError): they
name the bad value and the fix.
"""
from estimator_export.deploy._files import CopyTree, Files, dump_yaml, stream, write_files
from estimator_export.deploy._plan import (
    CONFIG_DIR, GRPC_PORT, KUBERNETES_VERSION, METRICS_PATH, MODELS_ROOT, REST_PORT,
    TF_SERVING_IMAGE, TF_SERVING_VERSION, DeployError, DeployOptions, ExportInfo, Plan,
    metadata_path, plan, read_export)

TARGETS = ('compose', 'kubernetes', 'kserve', 'dockerfile')
# Targets whose files are all YAML documents, so they can go to stdout as one stream.
STREAMABLE = ('kubernetes', 'kserve')


def render(target: str, deploy_plan: Plan) -> Files:
  """The files of `target` for `deploy_plan` (relative path -> text or CopyTree).

  Raises:
    DeployError: an unknown target, or what the target cannot deploy (see its module).
  """
  # pylint: disable=g-import-not-at-top
  if target == 'compose':
    from estimator_export.deploy import compose
    return compose.compose_files(deploy_plan)
  if target == 'kubernetes':
    from estimator_export.deploy import kubernetes
    return kubernetes.kubernetes_files(deploy_plan)
  if target == 'kserve':
    from estimator_export.deploy import kserve
    return kserve.kserve_files(deploy_plan)
  if target == 'dockerfile':
    from estimator_export.deploy import dockerfile
    return dockerfile.dockerfile_files(deploy_plan)
  raise DeployError('unknown deploy target', value=target, fix=f'use one of {", ".join(TARGETS)}')


__all__ = ['CONFIG_DIR', 'CopyTree', 'DeployError', 'DeployOptions', 'ExportInfo', 'Files',
           'GRPC_PORT', 'KUBERNETES_VERSION', 'METRICS_PATH', 'MODELS_ROOT', 'Plan', 'REST_PORT',
           'STREAMABLE', 'TARGETS', 'TF_SERVING_IMAGE', 'TF_SERVING_VERSION', 'dump_yaml',
           'metadata_path', 'plan', 'read_export', 'render', 'stream', 'write_files']
