#!/usr/bin/env bash
# Runs weir's fuzz targets (fuzz) for a bounded time each: what weir reads from
# outside must never make it panic, hang (an input taking over 10 s fails) or balloon (a
# single allocation over 256 MiB, or 1 GiB in all, fails); the engine target drives the
# decision engine through arbitrary specs and sequences of worlds (structure-aware).
# Seeds: the malformed corpus, the examples and a few Prometheus answers; what the
# fuzzer finds goes to a temp dir, never into the repository. A crash leaves its input
# in fuzz/artifacts/. Each target prints its executions per second.
# FUZZ_SECONDS per target (default 20; `make fuzz` for long runs). Installs cargo-fuzz
# if missing.
# `tests/fuzz.sh build` only builds the targets (make test does that beside cargo test).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
seconds=${FUZZ_SECONDS:-20}
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
# cargo-fuzz needs nightly's -Z flags; a machine without the nightly toolchain builds
# with stable, told to accept them.
toolchain=+nightly
rustup toolchain list 2>/dev/null | grep -q '^nightly' || { toolchain=""; export RUSTC_BOOTSTRAP=1; }
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/answers"
printf '%s' '{"status":"success","data":{"resultType":"vector","result":[{"metric":{"destination_workload":"backend","weir_class":"error"},"value":[1700000000.1,"3"]}]}}' >"$work/answers/vector"
printf '%s' '{"status":"success","data":{"resultType":"scalar","result":[1700000000,"NaN"]}}' >"$work/answers/scalar"
printf '%s' '{"status":"error","errorType":"bad_data","error":"parse error"}' >"$work/answers/error"
mkdir -p "$work/providers"
printf 'providers:\n  - {name: main, address: "http://127.0.0.1:9090", timeout: 5s, default: true}\n' >"$work/providers/one"
cp "$repo/config/base/15-providers.yaml" "$work/providers/configmap"
run() { # target, seed dirs...
  local target=$1; shift
  mkdir -p "$work/corpus-$target"
  echo "fuzzing $target for ${seconds}s ..." >&2
  # No sanitizer: weir has no unsafe code of its own, and without ASan the targets run
  # several times faster in a quarter of the memory. An optimised build with debug
  # assertions (fuzz's release profile: opt-level 1, assertions and overflow
  # checks on): the debug build ran ~40 Rollouts a second.
  if ! cargo $toolchain fuzz run $profile --sanitizer none --fuzz-dir "$repo/fuzz" "$target" "$work/corpus-$target" "$@" -- \
    -max_total_time="$seconds" -timeout=10 -malloc_limit_mb=256 -rss_limit_mb=1024 -print_final_stats=1 \
    >"$work/$target.log" 2>&1; then
    tail -60 "$work/$target.log" >&2
    echo "fuzz target $target failed; its input is in fuzz/artifacts/$target/" >&2
    return 1
  fi
  local runs rss
  runs=$(grep -E '^stat::number_of_executed_units' "$work/$target.log" | awk '{print $2}')
  rss=$(grep -E '^stat::peak_rss_mb' "$work/$target.log" | awk '{print $2}')
  echo "  $target: ${runs:-?} executions in ${seconds}s ($(( ${runs:-0} / seconds ))/s), peak RSS ${rss:-?} MiB" >&2
}
profile="-O --debug-assertions"
cd "$repo"
if [ "${1:-}" = build ]; then
  exec cargo $toolchain fuzz build $profile --sanitizer none --fuzz-dir "$repo/fuzz"
fi
run rollout "$repo/tests/malformed" "$repo/examples/dev"
run prometheus_answer "$work/answers"
run providers "$work/providers"
run engine
