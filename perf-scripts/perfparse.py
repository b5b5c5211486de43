#!/usr/bin/env python3
"""Parsing helpers for produce-bench.sh (standard library only).

  perfparse.py summary LOG            -> JSON: rdkafka_performance producer summary
  perfparse.py lat FILE               -> JSON: percentiles of an -A latency file (us)
  perfparse.py pidstat FILE           -> JSON: average %CPU per process / broker thread
  perfparse.py table RESULTS.jsonl CEILINGS.json  -> prints the result table
"""
import json
import os
import re
import sys
from collections import defaultdict

SUMMARY_RE = re.compile(
    r"% (\d+) messages produced \((\d+) bytes\), (\d+) delivered "
    r"\(offset (-?\d+), (\d+) failed\) in (\d+)ms: (\d+) msgs/s and "
    r"([\d.]+) MB/s, (\d+) produce failures, (\d+) in queue, (\S+) compression")


def summary(path):
    last = None
    with open(path, errors="replace") as f:
        for line in f:
            m = SUMMARY_RE.search(line)
            if m:
                last = m
    if not last:
        return {"error": "no summary line"}
    g = last.groups()
    produced, nbytes, delivered = int(g[0]), int(g[1]), int(g[2])
    ms = int(g[5])
    return {
        "produced": produced, "bytes": nbytes, "delivered": delivered,
        "dr_failed": int(g[4]), "ms": ms, "msgs_per_s": int(g[6]),
        # rdkafka_performance's "MB/s" is bytes per microsecond = 10^6 B/s
        "MB_per_s": float(g[7]),
        # "produce failures" counts local queue-full (backpressure) retries
        "queue_full_retries": int(g[8]), "in_queue": int(g[9]),
        "compression": g[10],
    }


def pct(sorted_vals, q):
    if not sorted_vals:
        return None
    i = min(len(sorted_vals) - 1, max(0, int(round(q / 100.0 * len(sorted_vals))) - 1))
    return sorted_vals[i]


def lat(path):
    vals = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                vals.append(int(line))
    vals.sort()
    out = {"n": len(vals)}
    for q in (50, 75, 95, 99, 99.9):
        v = pct(vals, q)
        out[f"p{q:g}_ms"] = None if v is None else round(v / 1000.0, 2)
    out["max_ms"] = round(vals[-1] / 1000.0, 2) if vals else None
    out["avg_ms"] = round(sum(vals) / len(vals) / 1000.0, 2) if vals else None
    return out


def pidstat(path, broker_pid=None):
    """pidstat -u -t -h -C REGEX output. Rows are attributed by TGID: the broker under
    test (broker_pid), the load tool (command rdkafka_perform), or 'other' (e.g. other
    brokers/clients on the machine). Averages are over the intervals where present."""
    empty = {"samples": 0, "proc_avg_cpu": {}, "thread_avg_cpu": {}}
    if not os.path.exists(path):
        return empty
    hdr = None
    stamps = set()
    proc = defaultdict(lambda: defaultdict(float))   # role -> stamp -> cpu
    thr = defaultdict(lambda: defaultdict(float))    # role/thread -> stamp -> cpu
    role = None
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
            t = row["Time"]
            stamps.add(t)
            cmd = row.get("Command", "?")
            tgid, tid = row.get("TGID", "-"), row.get("TID", "-")
            if tgid != "-" and tid == "-":          # a process row
                if broker_pid and tgid == str(broker_pid):
                    role = "brook"
                elif cmd.startswith("rdkafka_perf"):
                    role = "rdkafka_perform"
                else:
                    role = "other"
                proc[role][t] += cpu
            elif tgid == "-" and role in ("brook", "rdkafka_perform"):   # its thread
                thr[role + "/" + cmd.lstrip("|_")][t] += cpu
            # rows with both TGID and TID: threads of non-matching processes; ignore

    def avg(d):
        return round(sum(d.values()) / len(d), 1) if d else None
    return {
        "samples": len(stamps),
        "proc_avg_cpu": {k: avg(v) for k, v in proc.items()},
        "thread_avg_cpu": {k: avg(v) for k, v in sorted(thr.items(), key=lambda kv: -sum(kv[1].values()))
                           if (avg(v) or 0) >= 1.0},
    }


def fmt(v, nd=0):
    if v is None:
        return "-"
    if isinstance(v, float) and nd:
        return f"{v:,.{nd}f}"
    return f"{v:,.0f}" if isinstance(v, (int, float)) else str(v)


def others(r):
    """%CPU (of one core) used by everything except the broker and the load tool:
    machine busy from mpstat times the core count, minus the two from pidstat."""
    m = r.get("mpstat") or {}
    p = r.get("pidstat", {}).get("proc_avg_cpu", {})
    if "idle" not in m:
        return None
    return max(0.0, (100.0 - m["idle"]) * os.cpu_count() - (p.get("brook") or 0) - (p.get("rdkafka_perform") or 0))


def table(results_path, ceilings_path):
    rows = [json.loads(l) for l in open(results_path) if l.strip()]
    try:
        c = json.load(open(ceilings_path))
        print("Ceilings (same run): O_DIRECT seq write 1M %s MB/s, 64k %s MB/s; "
              "4k write+fdatasync p50/p99 %s/%s us (O_DIRECT), %s/%s us (buffered); "
              "loopback TCP %s Gbit/s" % (
                  c["seq_write_1m_MBps"], c["seq_write_64k_MBps"],
                  c["fdatasync_4k_direct"]["p50_us"], c["fdatasync_4k_direct"]["p99_us"],
                  c["fdatasync_4k_buffered"]["p50_us"], c["fdatasync_4k_buffered"]["p99_us"],
                  c["loopback_tcp_Gbps"]))
    except Exception as e:  # noqa: BLE001
        print(f"Ceilings: unavailable ({e})")
    print()
    hdr = ("run", "size", "records", "msgs/s", "MB/s", "p50ms", "p99ms", "p99.9ms", "maxms",
           "brook%CPU", "perf%CPU", "others%", "idle%", "qfull", "rc")
    print("%-15s %5s %10s %11s %8s %7s %7s %8s %7s %9s %8s %6s %5s %6s %3s" % hdr)
    for r in rows:
        s = r.get("summary", {})
        l = r.get("latency") or {}
        p = r.get("pidstat", {}).get("proc_avg_cpu", {})
        print("%-15s %5s %10s %11s %8s %7s %7s %8s %7s %9s %8s %6s %5s %6s %3s" % (
            r["run"], r["size"], fmt(s.get("delivered")), fmt(s.get("msgs_per_s")),
            fmt(s.get("MB_per_s"), 1), fmt(l.get("p50_ms"), 1), fmt(l.get("p99_ms"), 1),
            fmt(l.get("p99.9_ms"), 1), fmt(l.get("max_ms"), 1),
            fmt(p.get("brook")), fmt(p.get("rdkafka_perform")), fmt(others(r)),
            fmt((r.get("mpstat") or {}).get("idle")), fmt(s.get("queue_full_retries")), r.get("rc")))
    print()
    print("CPU by thread (avg %CPU of one core, while present; 200 = both cores):")
    for r in rows:
        th = r.get("pidstat", {}).get("thread_avg_cpu", {})
        print(f"  {r['run']:<15} " + ", ".join(f"{k} {v:g}" for k, v in th.items()))
    print("qfull = rd_kafka_produce() calls refused with QUEUE_FULL (client-side backpressure, retried);")
    print("rc = rdkafka_performance exit status (it exits 1 when its produced and delivered counters differ at exit)")
    # medians of the max-throughput repeats
    print()
    by = defaultdict(list)
    for r in rows:
        if r["run"].startswith("max-") and "msgs_per_s" in r.get("summary", {}):
            by[r["size"]].append(r["summary"])
    for size, ss in sorted(by.items()):
        ss = sorted(ss, key=lambda s: s["msgs_per_s"])
        m = ss[len(ss) // 2]
        print(f"median of {len(ss)} max-throughput runs, {size} B: "
              f"{m['msgs_per_s']:,} msgs/s, {m['MB_per_s']:.1f} MB/s "
              f"(min {ss[0]['msgs_per_s']:,}, max {ss[-1]['msgs_per_s']:,})")


def mpstat(path):
    """mpstat 1 N: average of the per-second 'all' rows (whole machine)."""
    hdr = None
    acc = defaultdict(list)
    with open(path, errors="replace") as f:
        for line in f:
            parts = line.split()
            if "%usr" in parts:
                hdr = parts
                continue
            if hdr is None or len(parts) != len(hdr) or parts[0].startswith("Average"):
                continue
            row = dict(zip(hdr, parts))
            if row.get("CPU") != "all":
                continue
            for k in ("%usr", "%sys", "%iowait", "%soft", "%steal", "%idle"):
                try:
                    acc[k].append(float(row[k]))
                except (KeyError, ValueError):
                    pass
    return {k.lstrip("%"): round(sum(v) / len(v), 1) for k, v in acc.items() if v}


def main():
    cmd = sys.argv[1]
    if cmd == "summary":
        print(json.dumps(summary(sys.argv[2])))
    elif cmd == "lat":
        print(json.dumps(lat(sys.argv[2])))
    elif cmd == "pidstat":
        print(json.dumps(pidstat(sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)))
    elif cmd == "mpstat":
        print(json.dumps(mpstat(sys.argv[2])))
    elif cmd == "table":
        table(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
