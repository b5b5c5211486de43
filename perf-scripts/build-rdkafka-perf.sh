#!/usr/bin/env bash
# Build librdkafka's rdkafka_performance load tool from the librdkafka source
# bundled in the rdkafka-sys crate (fetched from crates.io with cargo).
# Output: perf-scripts/.build/rdkafka_performance. Idempotent: exits early if built.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
BUILD="$HERE/.build"
OUT="$BUILD/rdkafka_performance"
RDKAFKA_SYS_VERSION="${RDKAFKA_SYS_VERSION:-4.8.0+2.3.0}"   # bundles librdkafka 2.3.0
mkdir -p "$BUILD"

if [[ -x "$OUT" && "${1:-}" != "--force" ]]; then
  echo "already built: $OUT"; exit 0
fi

# Build deps (idempotent).
need=()
for p in build-essential pkg-config zlib1g-dev libzstd-dev liblz4-dev python3; do
  dpkg -s "$p" >/dev/null 2>&1 || need+=("$p")
done
if ((${#need[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need[@]}"
fi

# Fetch rdkafka-sys via a throwaway cargo project.
TMP="$(mktemp -d)"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/src"
echo 'fn main() {}' > "$TMP/src/main.rs"
cat > "$TMP/Cargo.toml" <<TOML
[package]
name = "fetch-rdkafka-sys"
version = "0.0.0"
edition = "2021"
[dependencies]
rdkafka-sys = "=${RDKAFKA_SYS_VERSION}"
TOML
(cd "$TMP" && cargo fetch -q)
SRC="$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/rdkafka-sys-"${RDKAFKA_SYS_VERSION}"/librdkafka | head -1)"
[[ -d "$SRC" ]] || { echo "librdkafka source not found in cargo registry" >&2; exit 1; }
echo "librdkafka source: $SRC"

rm -rf "$BUILD/librdkafka"
cp -r "$SRC" "$BUILD/librdkafka"
cd "$BUILD/librdkafka"
chmod +x configure lds-gen.py 2>/dev/null || true
# Keep it simple: no TLS/SASL/curl; keep zlib, zstd, lz4 so all codecs work.
nice -n 10 ./configure --disable-ssl --disable-gssapi --disable-sasl --disable-curl \
  --enable-zlib --enable-zstd --enable-lz4-ext >"$BUILD/configure.log" 2>&1 \
  || { tail -30 "$BUILD/configure.log"; exit 1; }
nice -n 10 make -j2 -C src librdkafka.a >"$BUILD/make-src.log" 2>&1 || { tail -30 "$BUILD/make-src.log"; exit 1; }
# Link the example statically against librdkafka.a so it needs no LD_LIBRARY_PATH.
nice -n 10 make -C examples rdkafka_performance >"$BUILD/make-examples.log" 2>&1 \
  || { tail -30 "$BUILD/make-examples.log"; exit 1; }
cp examples/rdkafka_performance "$OUT"
"$OUT" 2>&1 | grep -m1 "librdkafka version" || true
echo "built: $OUT"
