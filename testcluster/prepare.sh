#!/usr/bin/env bash
# Installs what the tests and the demo need on a fresh machine: Prometheus, openssl and
# Chromium from Debian, and the local control plane built from Go modules (cached outside the
# repo; see build.sh). Idempotent: a prepared machine passes through in seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
need=()
command -v prometheus >/dev/null 2>&1 || need+=(prometheus)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
# The dashboard's browser test: Chromium, headless, and a font for its screenshot.
command -v chromium >/dev/null 2>&1 || need+=(chromium fonts-dejavu-core)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -ne 0 ] && sudo=sudo
  echo "installing ${need[*]} with apt-get ..." >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
command -v go >/dev/null 2>&1 || { echo "Go is needed to build the local control plane" >&2; exit 1; }
# `make test` builds the control plane itself, beside cargo (tests/all.sh).
[ "${1:-}" = --no-build ] && exit 0
"$here/build.sh" >/dev/null
