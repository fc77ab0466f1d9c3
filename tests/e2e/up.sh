#!/usr/bin/env bash
# make e2e-up: a kind cluster with everything the e2e tests need, built from this checkout.
#   1. kind cluster from kind-config.yaml (node image pinned in versions.env); reused if it exists
#   2. operator and model server images built from their Dockerfiles, loaded into kind
#   3. Prometheus from prometheus.yaml (pod discovery, RBAC)
#   4. the CRD (kubectl apply -f crds/), then the chart (helm upgrade --install) with the local image
#   5. namespace $E2E_NAMESPACE and the InferenceService in inferenceservice.yaml
# Without Docker, kind, kubectl or helm it names what is missing and exits 1 before touching anything.
# Safe to run again: every step is idempotent.
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
cd "$ROOT"
# shellcheck source=versions.env
source "$HERE/versions.env"
export PATH="$ROOT/.tools/bin:$PATH"
CONTEXT="kind-$KIND_CLUSTER_NAME"
ARTIFACTS="$ROOT/build/e2e-artifacts/up"

log() { echo "e2e-up [$(date -u +%H:%M:%S)] $*"; }

# On a failure after the cluster exists: what the cluster looked like, for CI's artifact upload.
dump_on_failure() {
  local rc=$?
  trap - ERR
  echo "e2e-up: failed (exit $rc); writing diagnostics to $ARTIFACTS" >&2
  mkdir -p "$ARTIFACTS"
  {
    kubectl --context "$CONTEXT" get all,events -A -o wide || true
  } >"$ARTIFACTS/cluster.txt" 2>&1
  kubectl --context "$CONTEXT" describe pods -A >"$ARTIFACTS/pods-describe.txt" 2>&1 || true
  kubectl --context "$CONTEXT" -n "$OPERATOR_NAMESPACE" logs --all-containers --prefix --tail=-1 \
    --selector "app.kubernetes.io/instance=$HELM_RELEASE" >"$ARTIFACTS/operator.log" 2>&1 || true
  kind export logs "$ARTIFACTS/kind-logs" --name "$KIND_CLUSTER_NAME" >/dev/null 2>&1 || true
  exit "$rc"
}

# --- 0. prerequisites: say exactly what is missing ------------------------------------------------
missing=()
if ! command -v docker >/dev/null 2>&1; then
  missing+=("docker: no 'docker' command on PATH (install Docker Engine or Docker Desktop: https://docs.docker.com/engine/install/)")
elif ! docker info >/dev/null 2>&1; then
  missing+=("docker: the 'docker' command cannot reach a Docker daemon (start it, or check DOCKER_HOST and your permission on the socket)")
fi
command -v kind >/dev/null 2>&1 || missing+=("kind $KIND_VERSION: not on PATH (tests/e2e/install-tools.sh installs it into .tools/bin)")
command -v kubectl >/dev/null 2>&1 || missing+=("kubectl $KUBECTL_VERSION: not on PATH (make install or tests/e2e/install-tools.sh installs it into .tools/bin)")
command -v helm >/dev/null 2>&1 || missing+=("helm $HELM_VERSION: not on PATH (make install or tests/e2e/install-tools.sh installs it into .tools/bin)")
if [ ${#missing[@]} -gt 0 ]; then
  echo "e2e-up: cannot create the e2e cluster; missing:" >&2
  for m in "${missing[@]}"; do echo "  - $m" >&2; done
  echo "  (see docs/e2e.md; 'make test' needs none of these)" >&2
  exit 1
fi
have_kind="$(kind version | awk '{print $2}')"
[ "$have_kind" = "$KIND_VERSION" ] || log "warning: kind is $have_kind, versions.env pins $KIND_VERSION (tests/e2e/install-tools.sh)"
have_helm="$(helm version --template '{{.Version}}' 2>/dev/null || true)"
[ "$have_helm" = "$HELM_VERSION" ] || log "warning: helm is $have_helm, versions.env pins $HELM_VERSION"

# --- 1. cluster -------------------------------------------------------------------------------------
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  log "reusing kind cluster $KIND_CLUSTER_NAME"
else
  log "creating kind cluster $KIND_CLUSTER_NAME ($KIND_NODE_IMAGE)"
  kind create cluster --name "$KIND_CLUSTER_NAME" --image "$KIND_NODE_IMAGE" \
    --config "$HERE/kind-config.yaml" --wait 180s
fi
kubectl config use-context "$CONTEXT" >/dev/null
trap dump_on_failure ERR
K=(kubectl --context "$CONTEXT")

# --- 2. images ----------------------------------------------------------------------------------------
log "building $OPERATOR_IMAGE from operator/Dockerfile"
docker build --quiet -f operator/Dockerfile -t "$OPERATOR_IMAGE" . >/dev/null
log "building $MODEL_SERVER_IMAGE from model_server/Dockerfile"
docker build --quiet -f model_server/Dockerfile -t "$MODEL_SERVER_IMAGE" . >/dev/null
log "loading the images into kind"
kind load docker-image --name "$KIND_CLUSTER_NAME" "$OPERATOR_IMAGE" "$MODEL_SERVER_IMAGE"

# --- 3. Prometheus ------------------------------------------------------------------------------------
log "installing Prometheus ($PROMETHEUS_IMAGE) in namespace $MONITORING_NAMESPACE"
sed "s|\${PROMETHEUS_IMAGE}|$PROMETHEUS_IMAGE|g" "$HERE/prometheus.yaml" | "${K[@]}" apply -f -
"${K[@]}" -n "$MONITORING_NAMESPACE" rollout status deployment/prometheus --timeout=180s

# --- 4. CRD and chart -----------------------------------------------------------------------------
log "applying the CRD from crds/"
"${K[@]}" apply --server-side --force-conflicts -f crds/
"${K[@]}" wait --for condition=established --timeout=60s crd/inferenceservices.slo-autoscaler.io
"${K[@]}" create namespace "$E2E_NAMESPACE" --dry-run=client -o yaml | "${K[@]}" apply -f -
log "installing the chart as release $HELM_RELEASE in $OPERATOR_NAMESPACE"
upgrading=false
helm status "$HELM_RELEASE" --kube-context "$CONTEXT" --namespace "$OPERATOR_NAMESPACE" >/dev/null 2>&1 && upgrading=true
helm upgrade --install "$HELM_RELEASE" charts/slo-autoscaler \
  --kube-context "$CONTEXT" --namespace "$OPERATOR_NAMESPACE" --create-namespace \
  -f "$HERE/values-e2e.yaml" \
  --set "image.repository=${OPERATOR_IMAGE%:*}" --set "image.tag=${OPERATOR_IMAGE##*:}" \
  --wait --timeout 180s
if $upgrading; then
  # A rebuilt image under the same tag is only picked up by new pods.
  "${K[@]}" -n "$OPERATOR_NAMESPACE" rollout restart deployment --selector "app.kubernetes.io/instance=$HELM_RELEASE"
  "${K[@]}" -n "$OPERATOR_NAMESPACE" rollout status deployment --selector "app.kubernetes.io/instance=$HELM_RELEASE" --timeout=180s
fi

# --- 5. the InferenceService ------------------------------------------------------------------------
# Objects left by an earlier run would keep pods of an older model server image: start clean.
"${K[@]}" -n "$E2E_NAMESPACE" delete inferenceservices --all --ignore-not-found --wait=true --timeout=180s
"${K[@]}" -n "$E2E_NAMESPACE" delete jobs --all --ignore-not-found --wait=true --timeout=60s
log "applying tests/e2e/inferenceservice.yaml in $E2E_NAMESPACE"
"${K[@]}" apply -n "$E2E_NAMESPACE" -f "$HERE/inferenceservice.yaml"
log "ready: kubectl --context $CONTEXT get sloisvc -n $E2E_NAMESPACE; now make e2e-test"
