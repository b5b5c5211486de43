# Shared helpers for perf-scripts/*.sh (sourced, not run).
# Conventions: a private broker copy named `bkd` in a private temp dir on a free port;
# only PIDs started here are ever signalled; every wait is bounded.

HERE="${HERE:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}"
ROOT="${ROOT:-$(cd "$HERE/.." && pwd)}"
BROOK_BIN="${BROOK_BIN:-$ROOT/target/release/brook}"
BENCH_BIN="${BENCH_BIN:-$ROOT/target/release/brook-bench}"
CARGO_ROOT="$HERE/.build/cargo"
export PATH="$CARGO_ROOT/bin:$PATH"

bk_apt() { # bk_apt CMD:PKG ... -> apt-get install the packages whose command is missing
  local need=() cp
  for cp in "$@"; do command -v "${cp%%:*}" >/dev/null 2>&1 || need+=("${cp#*:}"); done
  if ((${#need[@]})); then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need[@]}" >/dev/null
  fi
}

bk_build() { # build the broker and brook-bench if missing (nice: the machine is shared)
  [[ -x "$BROOK_BIN" ]] || (cd "$ROOT" && nice -n 10 cargo build --release -p brook)
  [[ -x "$BENCH_BIN" ]] || (cd "$ROOT" && nice -n 10 cargo build --release -p brook-bench)
}

bk_inferno() { # inferno-collapse-perf / inferno-flamegraph into perf-scripts/.build/cargo
  command -v inferno-flamegraph >/dev/null 2>&1 && return 0
  nice -n 10 cargo install --root "$CARGO_ROOT" --locked inferno >&2
}

bk_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

bk_wait_port() { # bk_wait_port PORT SECS PID -> 0 when listening
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    ss -ltnH "sport = :$1" 2>/dev/null | grep -q . && return 0
    [[ -n "${3:-}" ]] && ! kill -0 "$3" 2>/dev/null && return 1
    sleep 0.1
  done
  return 1
}

bk_stop_pid() { # SIGTERM, wait up to 10 s, then SIGKILL; only for PIDs we started
  local p="$1"
  [[ -n "$p" ]] || return 0
  kill -0 "$p" 2>/dev/null || return 0
  kill -TERM "$p" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$p" 2>/dev/null || return 0; sleep 0.1; done
  kill -KILL "$p" 2>/dev/null || true
}

# bk_start_broker RUNDIR LOG -> sets BROKER_PID, BROKER (HOST:PORT). A fresh data dir each call.
bk_start_broker() {
  local run="$1" log="$2"
  [[ -x "$run/bkd" ]] || cp "$BROOK_BIN" "$run/bkd"
  rm -rf "$run/data"; mkdir -p "$run/data"
  local port; port="$(bk_port)"
  BROKER="127.0.0.1:$port"
  BROKER_CMD=("$run/bkd" --data-dir "$run/data" --listen "$BROKER" --shards "${SHARDS:-2}" --default-partitions 8)
  "${BROKER_CMD[@]}" 2>"$log" &
  BROKER_PID=$!
  for _ in $(seq 300); do
    grep -q 'brook ready' "$log" && return 0
    kill -0 "$BROKER_PID" 2>/dev/null || { echo "broker died:" >&2; cat "$log" >&2; return 1; }
    sleep 0.1
  done
  echo "broker not ready in 30 s" >&2; return 1
}

# Whole-machine CPU (mpstat) and per-process CPU (pidstat, every process) while a phase runs.
bk_sample_start() { # bk_sample_start PREFIX
  mpstat 1 900 >"$1.mpstat" 2>&1 & SAMPLE_PIDS="$!"
  pidstat -u -h 1 900 >"$1.pidstat" 2>&1 & SAMPLE_PIDS+=" $!"
  cat /proc/loadavg >"$1.loadavg"
}
bk_sample_stop() { # bk_sample_stop PREFIX
  local p
  for p in ${SAMPLE_PIDS:-}; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  SAMPLE_PIDS=""
  cat /proc/loadavg >>"$1.loadavg"
}

bk_machine() { # machine facts, to stdout
  echo "date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "nproc: $(nproc); kernel: $(uname -r); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
  echo "mem: $(free -g | awk '/Mem:/{print $2" GiB"}')"
  echo "loadavg: $(cat /proc/loadavg)"
  echo "busiest processes:"; ps -eo pcpu,etime,comm --sort=-pcpu | head -6 | sed 's/^/  /'
  echo "broker: $BROOK_BIN (built $(date -u -r "$BROOK_BIN" '+%F %T UTC'); HEAD $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?'))"
  echo "brook-bench: $BENCH_BIN (built $(date -u -r "$BENCH_BIN" '+%F %T UTC'))"
}
