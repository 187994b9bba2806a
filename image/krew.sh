#!/usr/bin/env bash
# `make krew`: the kubectl plugin's release archive and krew manifest, in target/krew/:
# weir-v<version>-linux-amd64.tar.gz (the static weir) and weir.yaml (image/krew.yaml
# with the version, the archive's address and its sha256). Publish the archive at that
# address, then `kubectl krew install --manifest=target/krew/weir.yaml` (or add the
# manifest to a krew index). Prints the manifest's path.
#   WEIR_BINARY=path   use that binary instead of building one (the test does)
#   RELEASE_URL=url    the directory the archive is downloaded from
#   WEIR_KREW_OUT=dir  where to write both
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
version=$(awk -F'"' '/^version = / { print $2; exit }' "$repo/Cargo.toml")
binary=${WEIR_BINARY:-$("$repo/image/static-binary.sh")}
out=${WEIR_KREW_OUT:-$repo/target/krew}
mkdir -p "$out"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
install -m 0755 "$binary" "$stage/weir"
name="weir-v$version-linux-amd64.tar.gz"
tar -C "$stage" --owner=0 --group=0 --numeric-owner --mtime=@0 -czf "$out/$name" weir
sha=$(sha256sum "$out/$name" | cut -d' ' -f1)
url="${RELEASE_URL:-https://github.com/weir-dev/weir/releases/download/v$version}/$name"
sed -e "s|@VERSION@|v$version|" -e "s|@URI@|$url|" -e "s|@SHA256@|$sha|" "$repo/image/krew.yaml" >"$out/weir.yaml"
echo "krew: $out/weir.yaml for $out/$name ($(du -h "$out/$name" | cut -f1))" >&2
echo "$out/weir.yaml"
