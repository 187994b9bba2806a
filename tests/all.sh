#!/usr/bin/env bash
# Every test, as `make test` runs them: the workspace's tests, then the fuzz targets for
# a bounded time. The fuzz targets (a separate, instrumented build of weir) compile
# beside cargo test, whose end-to-end tests mostly wait on clusters; the build stops
# with this script, also when it fails.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo"
mkdir -p target
# Its own process group, so that stopping it stops every compiler it started.
setsid ./tests/fuzz.sh build >target/fuzz-build.log 2>&1 &
fuzz_build=$!
trap 'kill -- -"$fuzz_build" 2>/dev/null || true' EXIT
cargo test --workspace --all-targets
if ! wait "$fuzz_build"; then
  tail -40 target/fuzz-build.log >&2
  echo "building the fuzz targets failed (target/fuzz-build.log)" >&2
  exit 1
fi
./tests/fuzz.sh
