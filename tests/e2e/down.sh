#!/usr/bin/env bash
# make e2e-down: delete the e2e kind cluster (nothing else was created outside it).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
export PATH="$ROOT/.tools/bin:$PATH"
if ! command -v kind >/dev/null 2>&1; then
  echo "e2e-down: kind is not on PATH, so there is no e2e cluster to delete (tests/e2e/install-tools.sh installs kind)" >&2
  exit 0
fi
if kind get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER_NAME"; then
  kind delete cluster --name "$KIND_CLUSTER_NAME"
else
  echo "e2e-down: no kind cluster named $KIND_CLUSTER_NAME"
fi
