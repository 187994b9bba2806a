#!/usr/bin/env bash
# Builds the tests' GitOps tools into weir's cache outside the repository, keyed by what
# they are built from, and prints their directory:
#   weir-gitops  this module: Argo CD's Lua engine (gopher-lua) and kstatus (cli-utils)
#   helm         helm.sh/helm/v4, pinned by helm/go.mod
# A warm cache returns at once; two runs at once take turns.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${WEIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}
key=$(cat "$here"/go.mod "$here"/go.sum "$here"/*.go | sha256sum | cut -c1-16)
helm_version=$(awk '$1 == "require" && $2 == "helm.sh/helm/v4" { print $3 }' "$here/helm/go.mod")
bin="$cache/bin/gitops-$key"
helm_bin="$cache/bin/helm-$helm_version"
mkdir -p "$bin" "$helm_bin"
exec 9>"$cache/bin/.gitops.lock"
flock 9
export CGO_ENABLED=0 GOFLAGS=-mod=mod
build() { # directory, name, module dir, package
  if [ -x "$1/$2" ]; then return; fi
  local start=$SECONDS
  echo "building $2 ($4) into $1 ..." >&2
  (cd "$3" && go build -trimpath -ldflags "-s -w" -o "$1/$2.tmp.$$" "$4")
  mv "$1/$2.tmp.$$" "$1/$2"
  echo "built $2 in $((SECONDS - start))s" >&2
}
build "$bin" weir-gitops "$here" .
# Helm is keyed by its version alone: a change of the harness does not rebuild it.
build "$helm_bin" helm "$here/helm" helm.sh/helm/v4/cmd/helm
ln -sf "$helm_bin/helm" "$bin/helm"
echo "$bin"
