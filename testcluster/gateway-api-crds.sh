#!/usr/bin/env bash
# Prints the directory of Gateway API's standard-channel CRDs, from the module pinned
# in testcluster/gateway-api/go.mod, downloaded into the Go module cache (verified
# against the checksum database like every module) on first use.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
version=$(awk '$1 == "require" && $2 == "sigs.k8s.io/gateway-api" { print $3 }' "$here/gateway-api/go.mod")
dir=$(cd "$here/gateway-api" && GOFLAGS=-mod=mod go mod download -json "sigs.k8s.io/gateway-api@$version" |
  awk -F'"' '$2 == "Dir" { print $4 }')
echo "$dir/config/crd/standard"
