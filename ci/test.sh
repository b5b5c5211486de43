#!/usr/bin/env bash
# The single test command: installs the real clients, builds Brook, runs the
# Rust unit/property tests, a short run of every fuzz target, and then the
# real-client suite against the binary.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
unset CARGO_TARGET_DIR

step() { echo; echo "=== $* ($(date -u +%H:%M:%S)) ==="; }

step "ci/setup.sh"
ci/setup.sh

step "cargo build --release"
cargo build --release

step "cargo test --workspace --release"
cargo test --workspace --release

step "ci/fuzz-smoke.sh (every fuzz target from its seeds and past findings)"
ci/fuzz-smoke.sh

step "pytest ci/tests (real clients against target/release/brook)"
export BROOK_BIN="$ROOT/target/release/brook"
# pytest exit 5 (no tests collected) is a failure here too.
ci/.venv/bin/pytest -v -ra --durations=15 -p no:cacheprovider ci/tests "$@"
