#!/usr/bin/env bash
# `make image`: weir's container image as an OCI image archive, with no container
# engine. Builds the static binary (image/static-binary.sh), the image tool
# `image/mkimage` (a Go module pinned by its go.mod, built into the cache outside the
# repo like the test cluster), and writes
# target/image/weir-<version>.oci.tar. Prints the archive's path.
#   WEIR_BINARY=path   use that binary instead of building one (the test does)
#   WEIR_IMAGE_OUT=path  where to write the archive
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${WEIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}
src="$repo/image/mkimage"
key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
tool="$cache/bin/mkimage-$key"
if [ ! -x "$tool" ]; then
  mkdir -p "$cache/bin"
  echo "building image/mkimage into $tool ..." >&2
  (cd "$src" && CGO_ENABLED=0 GOFLAGS=-mod=mod go build -trimpath -o "$tool.tmp.$$" .)
  mv "$tool.tmp.$$" "$tool"
fi
version=$(awk -F'"' '/^version = / { print $2; exit }' "$repo/Cargo.toml")
binary=${WEIR_BINARY:-}
flags=()
if [ -z "$binary" ]; then
  binary=$("$repo/image/static-binary.sh")
else
  # A test's debug binary: dynamically linked, enough to check the image's assembly.
  flags+=(-allow-dynamic)
fi
out=${WEIR_IMAGE_OUT:-$repo/target/image/weir-$version.oci.tar}
mkdir -p "$(dirname "$out")"
"$tool" -binary "$binary" -version "$version" -out "$out" "${flags[@]}"
echo "image: $out ($(du -h "$out" | cut -f1), binary $(du -h "$binary" | cut -f1))" >&2
echo "$out"
