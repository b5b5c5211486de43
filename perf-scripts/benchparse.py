#!/usr/bin/env python3
"""Parsing helpers for flamegraph.sh, brook-bench-suite.sh and peers.sh (stdlib only).

  benchparse.py cpu PREFIX BROKER_PID LOAD_PIDS      -> JSON: CPU of broker / load tool / others
        (PREFIX.mpstat, PREFIX.pidstat from lib.sh bk_sample_*; LOAD_PIDS comma-separated,
         a PID's children are not followed, so pass the PID that does the work)
  benchparse.py bb RESULT.json                        -> JSON: brook-bench key figures
  benchparse.py collapsed FILE [N]                    -> prints top N self symbols and where the
                                                         time goes, from inferno collapsed stacks
"""
import json
import os
import re
import sys
from collections import Counter, defaultdict

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def pidstat_all(path, broker_pids, load_pids):
    """pidstat -u -h 1 (all processes): average %CPU (of one core) per role per second."""
    hdr = None
    per = defaultdict(lambda: defaultdict(float))
    stamps = set()
    if not os.path.exists(path):
        return {}
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == "#":
                hdr = parts[1:]
                continue
            if hdr is None or len(parts) < len(hdr):
                continue
            row = dict(zip(hdr, parts[:len(hdr)]))
            try:
                cpu = float(row["%CPU"])
            except (KeyError, ValueError):
                continue
            t = row.get("Time")
            stamps.add(t)
            pid = row.get("PID")
            role = "broker" if pid in broker_pids else "load" if pid in load_pids else "pidstat_other"
            per[role][t] += cpu
    n = max(1, len(stamps))
    return {k: round(sum(v.values()) / n, 1) for k, v in per.items()} | {"samples": len(stamps)}


def mpstat(path):
    """mpstat 1 N: average of the per-second 'all' rows, with %nice (niced builds) kept apart."""
    hdr, acc = None, defaultdict(list)
    if not os.path.exists(path):
        return {}
    for line in open(path, errors="replace"):
        parts = line.split()
        if "%usr" in parts:
            hdr = parts
            continue
        if hdr is None or len(parts) != len(hdr) or parts[0].startswith("Average"):
            continue
        row = dict(zip(hdr, parts))
        if row.get("CPU") != "all":
            continue
        for k in ("%usr", "%nice", "%sys", "%iowait", "%soft", "%steal", "%idle"):
            try:
                acc[k].append(float(row[k]))
            except (KeyError, ValueError):
                pass
    return {k.lstrip("%"): round(sum(v) / len(v), 1) for k, v in acc.items() if v}


def cpu(prefix, broker_pid, load_pids):
    m = mpstat(prefix + ".mpstat")
    p = pidstat_all(prefix + ".pidstat", {broker_pid}, set(load_pids.split(",")) if load_pids else set())
    la = []
    if os.path.exists(prefix + ".loadavg"):
        la = [l.split()[0] for l in open(prefix + ".loadavg") if l.strip()]
    out = {"mpstat": m, "broker_cpu": p.get("broker"), "load_cpu": p.get("load"),
           "loadavg_1m": la}
    if "idle" in m:
        ncpu = os.cpu_count() or 1
        niced = m.get("nice", 0.0) * ncpu
        busy = (100.0 - m["idle"]) * ncpu - niced
        # others = everything but broker, load tool and niced (nice > 0) work, % of one core
        out["others_cpu"] = round(max(0.0, busy - (p.get("broker") or 0) - (p.get("load") or 0)), 1)
        out["niced_cpu"] = round(niced, 1)
        out["idle_pct"] = m["idle"]
    return out


def bb(path):
    """Key figures of a brook-bench JSON report. MB/s here are 10^6 B/s (brook-bench's
    mb_per_sec is MiB/s), so they compare with fio's and rdkafka_performance's MB/s."""
    j = json.load(open(path))
    out = {"window_sec": j.get("window_sec"), "errors": (j.get("errors") or {}).get("total"),
           "unconsumed": j.get("unconsumed_records")}
    for side in ("produce", "consume"):
        s = j.get(side) or {}
        if s.get("records_per_sec") is not None:
            out[side + "_rps"] = round(s["records_per_sec"])
            out[side + "_MBps"] = round(s.get("mb_per_sec", 0) * 1.048576, 1)
            out[side + "_records"] = s.get("records")
    if (j.get("consume") or {}).get("elapsed_sec") is not None:
        out["consume_elapsed_sec"] = j["consume"]["elapsed_sec"]
    for k in ("publish", "end_to_end", "publish_delay"):
        l = ((j.get(k) or {}).get("latency_ms")) or {}
        if l.get("count"):
            out[k] = {q: l.get(q) for q in ("p50", "p99", "p999", "max", "count")}
    return out


# Where the time goes: the first category whose pattern matches any frame of a stack
# (checked leaf-first) takes that stack's samples. Order matters: most specific first.
CATEGORIES = [
    ("fdatasync / fs / block (ext4, jbd2, blk, virtio)",
     re.compile(r"ext4_|jbd2|blk_|bio_|submit_bio|virtblk|virtqueue|iomap_|file_write_iter|"
                r"filemap_|generic_perform_write|vfs_fsync|__x64_sys_fdatasync|fdatasync")),
    ("TCP receive (copy from socket)", re.compile(r"tcp_recvmsg|tcp_rcv|skb_copy_datagram|sock_recvmsg|recvmsg")),
    ("TCP send / loopback", re.compile(r"tcp_sendmsg|tcp_write_xmit|__dev_queue_xmit|loopback_xmit|"
                                       r"net_rx_action|__netif_receive|ip_rcv|tcp_v4_rcv|sendmsg|sock_sendmsg")),
    ("crc32c", re.compile(r"crc32", re.I)),
    ("memcpy / memmove (user)", re.compile(r"^(__)?mem(cpy|move)|memcpy|memmove")),
    ("page faults / mm", re.compile(r"page_fault|handle_mm_fault|do_anonymous_page|clear_page|"
                                    r"alloc_pages|folio_alloc|__mmap|munmap")),
    ("io_uring machinery (incl. io-wq workers)", re.compile(r"io_uring|io_submit_sqes|io_issue_sqe|io_cqring|io_wq|io_worker")),
    ("scheduler / context switch / futex", re.compile(r"schedule|futex|finish_task_switch|pick_next|do_idle|cpuidle|"
                                                      r"try_to_wake_up|ttwu|wake_up")),
    ("malloc / free", re.compile(r"malloc|free|realloc|_int_|mi_|jemalloc|je_", re.I)),
]


def collapsed(path, n=15):
    """Collapsed stacks from inferno-collapse-perf --all; weights are cpu-clock ns when perf
    sampled the cpu-clock software event (no PMU), so totals read as CPU seconds."""
    self_c = Counter()
    excl = Counter()     # leaf-first: the category of the frame nearest the leaf that matches
    incl = Counter()     # a stack counts in every category any of its frames matches
    by_comm = Counter()
    total = 0
    kernel = 0
    for line in open(path, errors="replace"):
        line = line.rstrip("\n")
        if not line:
            continue
        stack, _, cnt = line.rpartition(" ")
        try:
            c = int(cnt)
        except ValueError:
            continue
        frames = stack.split(";")
        total += c
        by_comm[re.sub(r"-\d+$", "-N", frames[0])] += c
        leaf = frames[-1]
        self_c[leaf] += c
        if leaf.endswith("_[k]"):
            kernel += c
        hit = None
        seen = set()
        for f in reversed(frames[1:]):
            for name, rx in CATEGORIES:
                if rx.search(f):
                    hit = hit or name
                    seen.add(name)
        excl[hit or "other (user code, unmatched kernel)"] += c
        for name in seen:
            incl[name] += c
    if not total:
        print("no samples")
        return
    unit = f"{total / 1e9:.2f} CPU-s" if total > 1e7 else f"{total} samples"
    print(f"sampled: {unit}; leaf in kernel: {100.0 * kernel / total:.1f}%")
    print("by thread: " + ", ".join(f"{k} {100.0 * v / total:.1f}%" for k, v in by_comm.most_common(8)))
    print(f"top {n} symbols by self time (leaf frames):")
    for sym, c in self_c.most_common(n):
        print(f"  {100.0 * c / total:5.1f}%  {sym[:140]}")
    print("where the time goes: exclusive (category of the frame nearest the leaf) | inclusive (any frame)")
    for name, _ in CATEGORIES + [("other (user code, unmatched kernel)", None)]:
        print(f"  {100.0 * excl[name] / total:5.1f}% | {100.0 * incl[name] / total:5.1f}%  {name}")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "cpu":
        print(json.dumps(cpu(sys.argv[2], sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")))
    elif cmd == "bb":
        print(json.dumps(bb(sys.argv[2])))
    elif cmd == "collapsed":
        collapsed(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 15)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
