#!/usr/bin/env bash
# Builds the test cluster's binaries from Go modules into a cache outside the repo,
# keyed by version: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl (k8s.io/kubernetes),
# etcd (go.etcd.io/etcd/server/v3) and kwok (sigs.k8s.io/kwok). A warm cache returns at once.
# Prints the directory holding the binaries.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cache=${WEIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}
version_of() { awk -v m="$1" '$1 == m || ($1 == "require" && $2 == m) { print ($1 == "require" ? $3 : $2); exit }' "$2"; }
k8s=$(version_of k8s.io/kubernetes "$here/kubernetes/go.mod")
etcd=$(version_of go.etcd.io/etcd/server/v3 "$here/etcd/go.mod")
kwok=$(version_of sigs.k8s.io/kwok "$here/kwok/go.mod")
bin="$cache/bin/k8s-$k8s.etcd-$etcd.kwok-$kwok"
mkdir -p "$bin"
# Two builds at once (a test run and the demo, say) take turns: the second finds the
# binaries the first built.
exec 9>"$bin/.lock"
flock 9
export CGO_ENABLED=0 GOFLAGS=-mod=mod

build() { # name, module dir, package, extra ldflags
  local name=$1 dir=$2 pkg=$3 ldflags=${4:-}
  if [ -x "$bin/$name" ]; then return; fi
  local start=$SECONDS
  echo "building $name ($pkg) into $bin ..." >&2
  (cd "$here/$dir" && go build -trimpath -ldflags "-s -w $ldflags" -o "$bin/$name.tmp.$$" "$pkg")
  mv "$bin/$name.tmp.$$" "$bin/$name"
  echo "built $name in $((SECONDS - start))s" >&2
}

minor=${k8s#v1.}; minor=${minor%%.*}
stamp=""
for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
  stamp="$stamp -X $p.gitVersion=$k8s -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean"
done
build etcd etcd .
build kwok kwok sigs.k8s.io/kwok/cmd/kwok
# kubectl: the tests render config/'s kustomizations with it and run weir as its plugin.
for c in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
  build "$c" kubernetes "k8s.io/kubernetes/cmd/$c" "$stamp"
done
echo "$bin"
