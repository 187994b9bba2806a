#!/usr/bin/env bash
# Builds weir as one static binary (glibc linked in: -C target-feature=+crt-static;
# rustls, so no OpenSSL; symbols stripped) and prints its path. The image and the
# kubectl plugin's archive both ship it.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
target=x86_64-unknown-linux-gnu
(cd "$repo" && RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" cargo build --release --locked --target "$target" --bin weir >&2)
echo "$repo/target/$target/release/weir"
