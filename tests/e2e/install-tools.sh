#!/usr/bin/env bash
# Installs the pinned kind, kubectl and helm (versions from tests/e2e/versions.env) into DEST_DIR
# (default .tools/bin), checking each download against the checksum its project publishes beside it.
# Fast and silent for a tool already at its pinned version. Docker is not installed here: see docs/e2e.md.
#
# Usage: tests/e2e/install-tools.sh [DEST_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
DEST="${1:-$ROOT/.tools/bin}"

die() { echo "install-tools: $*" >&2; exit 1; }

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) die "unsupported OS $(uname -s): install kind $KIND_VERSION, kubectl $KUBECTL_VERSION and helm $HELM_VERSION yourself" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "unsupported CPU $(uname -m)" ;;
esac
command -v curl >/dev/null 2>&1 || die "curl is needed to download the tools"
command -v sha256sum >/dev/null 2>&1 || die "sha256sum is needed to check the downloads"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$DEST"

fetch() { # URL FILE
  curl --fail --silent --show-error --location --retry 3 --output "$2" "$1" || die "download failed: $1"
}
check() { # FILE EXPECTED_SHA256
  echo "$2  $1" | sha256sum --check --quiet - || die "sha256 of $(basename "$1") does not match the published checksum"
}
put() { # FILE NAME
  install -m 0755 "$1" "$DEST/.$2.tmp"
  mv -f "$DEST/.$2.tmp" "$DEST/$2"
}

if [ "$("$DEST/kind" version 2>/dev/null | awk '{print $2}')" != "$KIND_VERSION" ]; then
  base="https://github.com/kubernetes-sigs/kind/releases/download/$KIND_VERSION/kind-$os-$arch"
  fetch "$base" "$WORK/kind"
  fetch "$base.sha256sum" "$WORK/kind.sha256sum"
  check "$WORK/kind" "$(awk '{print $1}' "$WORK/kind.sha256sum")"
  put "$WORK/kind" kind
  echo "install-tools: kind $KIND_VERSION -> $DEST/kind"
fi

kubectl_version() {
  "$DEST/kubectl" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p' | head -1
}
if [ "$(kubectl_version || true)" != "$KUBECTL_VERSION" ]; then
  base="https://dl.k8s.io/release/$KUBECTL_VERSION/bin/$os/$arch/kubectl"
  fetch "$base" "$WORK/kubectl"
  fetch "$base.sha256" "$WORK/kubectl.sha256"
  check "$WORK/kubectl" "$(tr -d '[:space:]' <"$WORK/kubectl.sha256")"
  put "$WORK/kubectl" kubectl
  echo "install-tools: kubectl $KUBECTL_VERSION -> $DEST/kubectl"
fi

if [ "$("$DEST/helm" version --template '{{.Version}}' 2>/dev/null || true)" != "$HELM_VERSION" ]; then
  tarball="helm-$HELM_VERSION-$os-$arch.tar.gz"
  fetch "https://get.helm.sh/$tarball" "$WORK/$tarball"
  fetch "https://get.helm.sh/$tarball.sha256sum" "$WORK/$tarball.sha256sum"
  check "$WORK/$tarball" "$(awk '{print $1}' "$WORK/$tarball.sha256sum")"
  tar -xzf "$WORK/$tarball" -C "$WORK" "$os-$arch/helm"
  put "$WORK/$os-$arch/helm" helm
  echo "install-tools: helm $HELM_VERSION -> $DEST/helm"
fi
