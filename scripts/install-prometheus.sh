#!/usr/bin/env bash
# Installs Debian's prometheus server when it is missing. Tests and the demo start it
# themselves on a loopback port; no service is enabled here.
set -euo pipefail
if command -v prometheus >/dev/null 2>&1; then
  exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-prometheus: no 'prometheus' binary and no apt-get to install it." >&2
  echo "  Install Prometheus 2.x so that 'prometheus' is on PATH, then run make install again." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "install-prometheus: not root and no sudo: run 'apt-get install -y prometheus' as root." >&2
    exit 1
  fi
fi
echo "install-prometheus: installing Debian's prometheus package (no service is started)"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null
# The package may start a service where an init system runs; the tests start their own.
if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet prometheus 2>/dev/null; then
  $SUDO systemctl stop prometheus || true
fi
command -v prometheus >/dev/null 2>&1 || { echo "install-prometheus: apt-get ran but 'prometheus' is not on PATH" >&2; exit 1; }
prometheus --version 2>&1 | head -1
