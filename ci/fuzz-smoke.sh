#!/usr/bin/env bash
# Short fuzzing smoke run: builds every cargo-fuzz target of engine/fuzz and
# net/fuzz and runs each for FUZZ_SECONDS (default 20) from its seed corpus
# (<crate>/fuzz/seeds/<target>, real clients' traffic plus crash-* regression
# inputs). Exits non-zero if any target crashes, panics, leaks or runs out of
# memory; prints each target's executions.
#
# Only the stable toolchain is needed: cargo-fuzz's nightly flags (-Zsanitizer,
# coverage instrumentation) are allowed by RUSTC_BOOTSTRAP=1. libFuzzer itself
# is compiled by libfuzzer-sys with the system C++ compiler (g++ is enough).
#
# Settings (environment): FUZZ_SECONDS per target; FUZZ_TARGETS, a space-separated
# subset such as "batch_header request_frame"; FUZZ_TARGET_DIR, the cargo target
# dir. It defaults to ~/.cache/brook-fuzz-target, outside the checkout, so that CI
# (a fresh clone each run) rebuilds only Brook's crates: a cold build of both
# fuzz crates (ASan, coverage instrumentation, one codegen unit) takes about
# 4 CPU-minutes, a warm one well under one.
# A crash leaves its input in <crate>/fuzz/artifacts/<target>/; reproduce with
#   cd engine/fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run <target> <input>
# and, once fixed, keep the input as <crate>/fuzz/seeds/<target>/crash-<what>.bin.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
FUZZ_SECONDS="${FUZZ_SECONDS:-20}"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/brook-fuzz-target}"

ENGINE_TARGETS="batch_header records index_decode recovery_scan group_log quorum_message"
NET_TARGETS="request_frame sasl"
WANT="${FUZZ_TARGETS:-$ENGINE_TARGETS $NET_TARGETS}"

step() { echo; echo "=== fuzz: $* ($(date -u +%H:%M:%S)) ==="; }

if ! command -v c++ >/dev/null 2>&1; then
    step "installing g++ (libfuzzer-sys compiles libFuzzer)"
    SUDO=""; [ "$(id -u)" != "0" ] && SUDO="sudo"
    $SUDO apt-get update -q && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q g++
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    step "cargo install cargo-fuzz"
    cargo install cargo-fuzz --locked
fi

wanted() { case " $WANT " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }

SUMMARY=()
FAILED=0
LOGS="$(mktemp -d)"
trap 'rm -rf "$LOGS"' EXIT

run_crate() {
    local dir="$1"; shift
    local targets=()
    for t in "$@"; do wanted "$t" && targets+=("$t"); done
    [ "${#targets[@]}" -gt 0 ] || return 0
    step "build $dir/fuzz (${targets[*]})"
    (cd "$dir/fuzz" && cargo fuzz build)
    for t in "${targets[@]}"; do
        step "run $t for ${FUZZ_SECONDS}s"
        local corpus="$LOGS/corpus-$t" log="$LOGS/$t.log" rc=0
        mkdir -p "$corpus"
        # New inputs go to a scratch corpus; the checked-in seeds stay as they are.
        (cd "$dir/fuzz" && cargo fuzz run "$t" "$corpus" "seeds/$t" -- \
            -max_total_time="$FUZZ_SECONDS" -timeout=10 -rss_limit_mb=2048 \
            -print_final_stats=1) >"$log" 2>&1 || rc=$?
        local execs
        execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
        local seeds
        seeds="$(find "$dir/fuzz/seeds/$t" -type f | wc -l)"
        if [ "$rc" -eq 0 ]; then
            SUMMARY+=("$(printf '%-15s ok     %10s execs  %3s seeds' "$t" "${execs:-?}" "$seeds")")
        else
            FAILED=1
            SUMMARY+=("$(printf '%-15s FAILED (exit %s) after %s execs' "$t" "$rc" "${execs:-?}")")
            echo "--- $t failed; end of its log:"
            grep -v '^#[0-9]' "$log" | tail -60
            ls "$dir/fuzz/artifacts/$t/" 2>/dev/null | sed "s|^|artifact: $dir/fuzz/artifacts/$t/|" || true
        fi
        grep -E '^#[0-9]+ +DONE' "$log" | tail -1 || true
    done
}

run_crate engine $ENGINE_TARGETS
run_crate net $NET_TARGETS

step "summary"
printf '%s\n' "${SUMMARY[@]}"
exit "$FAILED"
