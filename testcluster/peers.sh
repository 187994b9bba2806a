#!/usr/bin/env bash
# Builds the controllers the side-by-side bench (benches/peers.rs) runs beside weir, from
# Go modules at pinned versions, into the cache that holds the control plane's binaries
# (nothing built lands in the repo). A warm cache returns at once. Prints KEY=VALUE
# lines: FLAGGER (the binary), FLAGGER_CRDS (its module's artifacts/flagger/crd.yaml),
# ARGO (Argo Rollouts' controller), ARGO_CRDS (its module's manifests/crds directory).
set -euo pipefail
cache=${WEIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}
export CGO_ENABLED=0 GOFLAGS=-mod=mod

# Pinned: the module proxy's @latest is older than the current release.
flagger=v1.44.0
bin="$cache/bin/flagger-$flagger"
mkdir -p "$bin"
exec 9>"$bin/.lock"
flock 9
if [ ! -x "$bin/flagger" ]; then
  start=$SECONDS
  echo "building Flagger $flagger into $bin ..." >&2
  GOBIN="$bin" go install -trimpath -ldflags "-s -w" "github.com/fluxcd/flagger/cmd/flagger@$flagger"
  echo "built Flagger in $((SECONDS - start))s" >&2
fi
module=$(cd "$bin" && go mod download -json "github.com/fluxcd/flagger@$flagger" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
echo "FLAGGER=$bin/flagger"
echo "FLAGGER_CRDS=$module/artifacts/flagger/crd.yaml"

# Argo Rollouts needs the replace block of its own go.mod: built from the wrapper module
# in testcluster/argo-rollouts (its go.sum pins every dependency), with the Go toolchain
# its go.mod asks for (fetched from the module proxy once).
argo=v1.10.2
bin="$cache/bin/argo-rollouts-$argo"
mkdir -p "$bin"
exec 9>"$bin/.lock"
flock 9
export GOTOOLCHAIN=go1.26.10
wrapper="$(cd "$(dirname "$0")" && pwd)/argo-rollouts"
if [ ! -x "$bin/rollouts-controller" ]; then
  start=$SECONDS
  echo "building Argo Rollouts $argo into $bin ..." >&2
  (cd "$wrapper" && GOFLAGS=-mod=readonly GOBIN="$bin" go install -trimpath -ldflags "-s -w" \
    github.com/argoproj/argo-rollouts/cmd/rollouts-controller)
  echo "built Argo Rollouts in $((SECONDS - start))s" >&2
fi
module=$(cd "$wrapper" && GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' github.com/argoproj/argo-rollouts)
echo "ARGO=$bin/rollouts-controller"
echo "ARGO_CRDS=$module/manifests/crds"
