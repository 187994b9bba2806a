#!/usr/bin/env bash
# Every test, as `make test` runs them: the workspace's tests, then the fuzz targets for
# a bounded time. Three builds run beside cargo test: the local control plane from Go
# modules (the end-to-end tests wait for it through build.sh's lock), Helm and the
# GitOps harness (tests/gitops/build.sh, likewise), and the fuzz targets (a separate,
# instrumented build of weir); on a fresh machine that overlaps minutes of compiling
# with downloads and with tests that mostly wait. All stop with this script, also when
# it fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p target
# Each in its own process group, so that stopping it stops every compiler it started.
setsid ./testcluster/build.sh >target/cluster-build.log 2>&1 &
cluster_build=$!
setsid ./tests/fuzz.sh build >target/fuzz-build.log 2>&1 &
fuzz_build=$!
# Helm and the Argo CD / kstatus harness (tests wait for them through build.sh's lock).
setsid ./tests/gitops/build.sh >target/gitops-build.log 2>&1 &
gitops_build=$!
trap 'kill -- -"$fuzz_build" -"$cluster_build" -"$gitops_build" 2>/dev/null || true' EXIT
cargo test --workspace --all-targets
if ! wait "$cluster_build"; then
  # The end-to-end tests would have failed first; this is for a clean exit code.
  tail -40 target/cluster-build.log >&2
  exit 1
fi
if ! wait "$gitops_build"; then
  tail -40 target/gitops-build.log >&2
  exit 1
fi
if ! wait "$fuzz_build"; then
  tail -40 target/fuzz-build.log >&2
  echo "building the fuzz targets failed (target/fuzz-build.log)" >&2
  exit 1
fi
./tests/fuzz.sh
