#!/usr/bin/env bash
# Checks this project against the real TF Serving: tensorflow/serving:2.15.1 in Docker.
#
#   deploy/check_with_tf_serving.sh                  # the gRPC and REST wire tests against it
#   deploy/check_with_tf_serving.sh -- -k Predict    # the same, with extra pytest arguments
#   deploy/check_with_tf_serving.sh --export DIR --model_name NAME [--inputs JSON]
#                                                    # load your export, send a smoke request
#
# Wire tests: writes the models the tests expect (python -m tests.wire_models), serves them in
# the container from a models.config, waits until every model's metadata answers, then runs
# tests/test_serving_rest.py and tests/test_serving_grpc.py with ESTIMATOR_EXPORT_TEST_GRPC,
# _REST and _MODELS set (tests that need a server of their own skip).
# Export: serves DIR (a base directory with numeric versions) as NAME, then replays the newest
# version's warmup requests over gRPC (every export of this project has them), or sends
# --inputs JSON as a Predict over gRPC and REST with `estimator-export query`.
#
# The container publishes gRPC and REST on 127.0.0.1 only, mounts the models read-only, and is
# removed (by its id) when the script exits, also on failure or Ctrl-C.
# Environment: IMAGE (tensorflow/serving:2.15.1), GRPC_PORT (8500), REST_PORT (8501),
# PYTHON (.venv/bin/python; `make venv` makes it when missing), WAIT_SECONDS (180).
set -euo pipefail

IMAGE=${IMAGE:-tensorflow/serving:2.15.1}
GRPC_PORT=${GRPC_PORT:-8500}
REST_PORT=${REST_PORT:-8501}
WAIT_SECONDS=${WAIT_SECONDS:-180}
PROG=check_with_tf_serving.sh
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '/^set -euo/d' -e 's/^# \{0,1\}//'; }
die() { echo "$PROG: error: $*" >&2; exit 2; }
say() { echo "$PROG: $*" >&2; }

export_dir=''
model_name=''
inputs=''
pytest_args=()
while [ $# -gt 0 ]; do
  case $1 in
    --export) [ $# -ge 2 ] || die '--export needs a directory'; export_dir=$2; shift 2 ;;
    --export=*) export_dir=${1#*=}; shift ;;
    --model_name) [ $# -ge 2 ] || die '--model_name needs a name'; model_name=$2; shift 2 ;;
    --model_name=*) model_name=${1#*=}; shift ;;
    --inputs) [ $# -ge 2 ] || die '--inputs needs JSON'; inputs=$2; shift 2 ;;
    --inputs=*) inputs=${1#*=}; shift ;;
    -h|--help) usage; exit 0 ;;
    --) shift; pytest_args=("$@"); break ;;
    *) die "unknown argument '$1'. Fix: see $PROG --help (pytest arguments go after --)" ;;
  esac
done

for port in "$GRPC_PORT" "$REST_PORT"; do
  if ! [[ $port =~ ^[0-9]+$ ]] || [ "$port" -lt 1 ] || [ "$port" -gt 65535 ]; then
    die "GRPC_PORT/REST_PORT must be a port number: got '$port'. Fix: e.g. GRPC_PORT=9500"
  fi
done
[ "$GRPC_PORT" != "$REST_PORT" ] ||
  die "GRPC_PORT and REST_PORT are both $GRPC_PORT. Fix: give two different ports"
if [ -n "$export_dir$model_name$inputs" ]; then
  if [ -z "$export_dir" ] || [ -z "$model_name" ]; then
    die '--export and --model_name go together. Fix: --export DIR --model_name NAME'
  fi
  [ -d "$export_dir" ] ||
    die "--export: no directory '$export_dir'. Fix: give the export's base directory"
  [[ $model_name =~ ^[A-Za-z0-9_.-]+$ ]] ||
    die "--model_name may hold letters, digits, _ . - only: got '$model_name'"
  export_dir=$(cd "$export_dir" && pwd -P)
  versions=$(find "$export_dir" -mindepth 1 -maxdepth 1 -type d -regex '.*/[0-9]+' | wc -l)
  [ "$versions" -gt 0 ] || die "--export: '$export_dir' has no numeric version directory. \
Fix: give the base directory (the one holding 1/, 2/ ...), not a version"
  [ ${#pytest_args[@]} -eq 0 ] || die 'pytest arguments apply to the wire tests, not to --export'
fi

command -v docker >/dev/null ||
  die 'docker not found. Fix: install Docker (docs.docker.com/get-docker)'
command -v curl >/dev/null || die 'curl not found. Fix: install curl'
docker info >/dev/null 2>&1 || die 'cannot reach the Docker daemon. Fix: start Docker, or add \
yourself to the docker group'
PYTHON=${PYTHON:-.venv/bin/python}
if [ ! -x "$PYTHON" ]; then
  say "no $PYTHON: making the project's venv (make venv)"
  make venv
  PYTHON=.venv/bin/python
fi

cid=''
workdir=$(mktemp -d "${TMPDIR:-/tmp}/check_with_tf_serving.XXXXXX")
cleanup() {
  local status=$?
  if [ -n "$cid" ]; then
    docker rm -f "$cid" >/dev/null 2>&1 || say "could not remove container $cid: docker rm -f $cid"
  fi
  rm -rf "$workdir"
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# docker run -d, ports on 127.0.0.1 only; "$@": the mount and the server's arguments.
start_container() {
  cid=$(docker run -d -p "127.0.0.1:$GRPC_PORT:8500" -p "127.0.0.1:$REST_PORT:8501" "$@")
  say "started $IMAGE as container ${cid:0:12}" \
    "(gRPC 127.0.0.1:$GRPC_PORT, REST 127.0.0.1:$REST_PORT)"
}

# Polls GET /v1/models/NAME/metadata until it answers 200, for each (URL-encoded) name.
wait_for_models() {
  local deadline=$((SECONDS + WAIT_SECONDS)) name code
  for name in "$@"; do
    while true; do
      code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 5 \
        "http://127.0.0.1:$REST_PORT/v1/models/$name/metadata" || true)
      [ "$code" = 200 ] && break
      if [ "$(docker inspect -f '{{.State.Running}}' "$cid" 2>/dev/null)" != true ]; then
        docker logs --tail 40 "$cid" >&2 || true
        die "the container stopped before serving model '$name' (its log is above)"
      fi
      if [ $SECONDS -ge $deadline ]; then
        docker logs --tail 40 "$cid" >&2 || true
        die "model '$name' not served after $WAIT_SECONDS s (last HTTP status $code; log above). \
Fix: read the log; WAIT_SECONDS=600 on a slow machine"
      fi
      sleep 1
    done
  done
  say "serving: $*"
}

if [ -z "$export_dir" ]; then
  "$PYTHON" -m tests.wire_models "$workdir/models" --base_path /models >/dev/null
  mapfile -t names < <("$PYTHON" -c 'import urllib.parse
from tests.wire_models import MODEL_NAMES
print("\n".join(urllib.parse.quote(n) for n in MODEL_NAMES))')
  start_container -v "$workdir/models:/models:ro" "$IMAGE" \
    --model_config_file=/models/models.config --rest_api_enable_cors_support=true \
    --allow_version_labels_for_unavailable_models=true
  wait_for_models "${names[@]}"
  status=0
  ESTIMATOR_EXPORT_TEST_GRPC=127.0.0.1:$GRPC_PORT \
  ESTIMATOR_EXPORT_TEST_REST=http://127.0.0.1:$REST_PORT \
  ESTIMATOR_EXPORT_TEST_MODELS=$workdir/models \
    "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/test_serving_rest.py \
    tests/test_serving_grpc.py ${pytest_args[@]+"${pytest_args[@]}"} || status=$?
  if [ "$status" -eq 0 ]; then say "PASS: the wire tests agree with $IMAGE"; else
    say "FAIL: the wire tests disagree with $IMAGE (pytest exit $status)"; fi
  exit "$status"
fi

start_container -v "$export_dir:/models/$model_name:ro" -e "MODEL_NAME=$model_name" "$IMAGE"
wait_for_models "$model_name"
if [ -n "$inputs" ]; then
  for protocol in grpc rest; do
    server=127.0.0.1:$GRPC_PORT
    [ $protocol = grpc ] || server=http://127.0.0.1:$REST_PORT
    say "Predict over $protocol:"
    "$PYTHON" -m estimator_export.cli query --protocol "$protocol" --server "$server" \
      --model_name "$model_name" --inputs "$inputs"
  done
else
  # Replays the newest version's assets.extra/tf_serving_warmup_requests over gRPC.
  "$PYTHON" - "$export_dir" "$model_name" "127.0.0.1:$GRPC_PORT" <<'EOF'
import os, sys
import grpc
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2, prediction_service_pb2_grpc

export_dir, model, target = sys.argv[1:]
version = max((d for d in os.listdir(export_dir) if d.isdigit()), key=int)
path = os.path.join(export_dir, version, 'assets.extra', 'tf_serving_warmup_requests')
if not os.path.exists(path):
  sys.exit(f'check_with_tf_serving.sh: error: no warmup requests at {path}. Fix: pass '
           "--inputs '{\"alias\": value}' to send a Predict")
stub = prediction_service_pb2_grpc.PredictionServiceStub(
    grpc.insecure_channel(target, options=[('grpc.max_receive_message_length', 2**31 - 1)]))
calls = {'predict_log': stub.Predict, 'classify_log': stub.Classify,
         'regress_log': stub.Regress, 'multi_inference_log': stub.MultiInference}
sent = 0
for record in tf.data.TFRecordDataset(path).take(100):
  log = prediction_log_pb2.PredictionLog.FromString(record.numpy())
  kind = log.WhichOneof('log_type')
  if kind not in calls:
    continue
  request = getattr(log, kind).request
  specs = [t.model_spec for t in request.tasks] if kind == 'multi_inference_log' else [
      request.model_spec]
  for spec in specs:
    spec.name = model
    spec.ClearField('version')
  try:
    calls[kind](request, timeout=60)
  except grpc.RpcError as e:
    sys.exit(f'check_with_tf_serving.sh: FAIL: {kind[:-4]} on signature '
             f'{specs[0].signature_name or "serving_default"!r}: {e.code().name}: {e.details()}')
  print(f'{kind[:-4]} {specs[0].signature_name or "serving_default"}: OK')
  sent += 1
if not sent:
  sys.exit(f'check_with_tf_serving.sh: error: {path} holds no request to replay')
print(f'check_with_tf_serving.sh: PASS: TF Serving answered {sent} warmup requests of '
      f'{model} version {version}')
EOF
fi
