"""The wire tests' models as one directory, so an external server can serve them.

By default tests/test_serving_rest.py and tests/test_serving_grpc.py start their
own servers. With these variables set they send their requests to a server
someone else started (e.g. the real tensorflow/serving:2.15.1 in Docker, see
deploy/check_with_tf_serving.sh):

  ESTIMATOR_EXPORT_TEST_GRPC=host:port         the gRPC conformance tests
  ESTIMATOR_EXPORT_TEST_REST=http://host:port  the REST conformance tests
  ESTIMATOR_EXPORT_TEST_MODELS=DIR             the directory `build` wrote, which
      that server serves (its toy export is the reference of the exported-model
      tests; without it those tests skip)

That server must serve DIR/models.config (or the same models), with
--rest_api_enable_cors_support=true (and, for the real binary,
--allow_version_labels_for_unavailable_models=true). Tests that need to control
the server's files, flags or code skip, naming the variable.

    python -m tests.wire_models DIR [--base_path /models]

writes DIR: the fixture models, `kitchen` (tests.test_serving_rest's dtype
model), `toy` (the toy Estimator, trained for a few steps and exported by this
project) and DIR/models.config whose base paths start with --base_path (the
path DIR has inside the server, e.g. a container's mount point; default DIR).
"""
import argparse
import os
import shutil
import tempfile
import urllib.parse
from typing import List, Optional, Tuple

ENV_GRPC = 'ESTIMATOR_EXPORT_TEST_GRPC'
ENV_REST = 'ESTIMATOR_EXPORT_TEST_REST'
ENV_MODELS = 'ESTIMATOR_EXPORT_TEST_MODELS'
TWO_VERSIONS = 'saved_model_half_plus_two_2_versions'
FIXTURES = ('saved_model_half_plus_two_cpu', 'saved_model_half_plus_three', TWO_VERSIONS,
            'saved_model_half_plus_two_tf2_cpu', 'matrix_half_plus_two')
# (name, directory under DIR, policy 'all' or None, labels): what both wire test modules ask.
MODELS = (
    ('half_plus_two', 'saved_model_half_plus_two_cpu', None, {}),
    ('default', 'saved_model_half_plus_two_cpu', None, {}),
    ('half plus two', 'saved_model_half_plus_two_cpu', None, {}),
    ('half_plus_three', 'saved_model_half_plus_three', None, {}),
    (TWO_VERSIONS, TWO_VERSIONS, 'all', {'stable': 123, 'canary': 124}),
    ('saved_model_half_plus_two_tf2_cpu', 'saved_model_half_plus_two_tf2_cpu', None, {}),
    ('matrix_half_plus_two', 'matrix_half_plus_two', None, {}),
    ('kitchen', 'kitchen', None, {}),
    ('toy', 'toy', None, {}),
)
MODEL_NAMES = tuple(name for name, _, _, _ in MODELS)


def external_grpc() -> Optional[str]:
  """host:port of an external gRPC server under test, or None."""
  return os.environ.get(ENV_GRPC) or None


def external_rest() -> Optional[Tuple[str, int]]:
  """(host, port) of an external REST server under test, or None."""
  url = os.environ.get(ENV_REST)
  if not url:
    return None
  parts = urllib.parse.urlsplit(url if '://' in url else 'http://' + url)
  if parts.scheme != 'http' or not parts.port:
    raise ValueError(f'{ENV_REST} must be http://HOST:PORT: got {url!r}. Fix: e.g. '
                     f'{ENV_REST}=http://127.0.0.1:8501')
  return parts.hostname, parts.port


def needs_own_server(env: str) -> str:
  """The skip reason of a test that controls its server's files, flags or code."""
  return (f'starts and controls its own server (files, flags or code); {env}={os.environ[env]} '
          'targets an external one. Unset it to run this test')


def external_toy_path() -> Tuple[Optional[str], str]:
  """(the newest toy version under $ESTIMATOR_EXPORT_TEST_MODELS or None, why not)."""
  root = os.environ.get(ENV_MODELS)
  if not root:
    return None, (f'the exported-model tests need {ENV_MODELS}=DIR, the directory of models '
                  'the external server serves (python -m tests.wire_models DIR)')
  base = os.path.join(root, 'toy')
  versions = sorted(int(v) for v in os.listdir(base) if v.isdigit()) if os.path.isdir(base) else []
  if not versions:
    return None, f'{ENV_MODELS}={root} has no toy/<version> (python -m tests.wire_models DIR)'
  return os.path.join(base, str(versions[-1])), ''


def _copy_tree(source: str, target: str) -> None:
  """Copies files (not their read-only modes, so the copy can be deleted)."""
  for directory, _, files in os.walk(source):
    into = os.path.join(target, os.path.relpath(directory, source))
    os.makedirs(into, exist_ok=True)
    for name in files:
      shutil.copyfile(os.path.join(directory, name), os.path.join(into, name))


def write_config(out_dir: str, base_path: Optional[str] = None) -> str:
  """Writes out_dir/models.config (base paths under base_path, default out_dir)."""
  # pylint: disable=g-import-not-at-top
  from google.protobuf import text_format
  from tensorflow_serving.config import model_server_config_pb2
  # pylint: enable=g-import-not-at-top
  base_path = (base_path or os.path.abspath(out_dir)).rstrip('/')
  config = model_server_config_pb2.ModelServerConfig()
  for name, directory, policy, labels in MODELS:
    entry = config.model_config_list.config.add(name=name, base_path=f'{base_path}/{directory}',
                                                model_platform='tensorflow')
    if policy == 'all':
      entry.model_version_policy.all.SetInParent()
    for label, version in labels.items():
      entry.version_labels[label] = version
  path = os.path.join(out_dir, 'models.config')
  with open(path, 'w') as f:
    f.write(text_format.MessageToString(config))
  return path


def build(out_dir: str, testdata: str, base_path: Optional[str] = None) -> str:
  """Writes the models and models.config into out_dir; returns the config's path."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  from tests import toy  # pylint: disable=g-import-not-at-top
  from tests.serving_util import save_tf1_model  # pylint: disable=g-import-not-at-top
  from tests.test_serving_rest import kitchen_signatures  # pylint: disable=g-import-not-at-top
  for name in FIXTURES:
    _copy_tree(os.path.join(testdata, name), os.path.join(out_dir, name))
  save_tf1_model(os.path.join(out_dir, 'kitchen', '1'), kitchen_signatures)
  model = toy.ToyClassifier()
  with tempfile.TemporaryDirectory() as model_dir:
    estimator = model.make_estimator(model_dir, params={'learning_rate': 0.05})
    estimator.train(toy.train_input_fn, max_steps=20)
    model.export_for_serving(estimator, os.path.join(out_dir, 'toy'), samples=toy.SAMPLES)
  tf.compat.v1.reset_default_graph()
  return write_config(out_dir, base_path)


def main(argv: Optional[List[str]] = None) -> int:
  from tests.conftest import TESTDATA  # pylint: disable=g-import-not-at-top
  parser = argparse.ArgumentParser(prog='python -m tests.wire_models', description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument('out_dir', help='the directory to write (created; must be empty)')
  parser.add_argument('--base_path', default=None,
                      help='the path out_dir has inside the server (default: out_dir)')
  parser.add_argument('--testdata', default=TESTDATA, help='the TF Serving fixtures')
  args = parser.parse_args(argv)
  os.makedirs(args.out_dir, exist_ok=True)
  if os.listdir(args.out_dir):
    parser.error(f'{args.out_dir} is not empty. Fix: give a new or empty directory')
  print(build(args.out_dir, args.testdata, args.base_path))
  return 0


if __name__ == '__main__':
  raise SystemExit(main())
