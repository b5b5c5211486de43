#!/usr/bin/env python3
"""Helpers for kafka-peer.sh (standard library + benchparse/perfparse from this directory).

  kafka_peer.py record PREFIX TEST BROKER KIND BROKER_PID LOAD_PID RC TIMED_OUT -> one JSON line
        KIND: bb (brook-bench JSON at PREFIX.json), pt (kafka-producer-perf-test stdout at
        PREFIX.out), rdk (rdkafka_performance stdout at PREFIX.out); CPU from PREFIX.pidstat/.mpstat
  kafka_peer.py pt FILE                     -> JSON: kafka-producer-perf-test figures
  kafka_peer.py rate RESULTS.jsonl TEST BROKER -> records/s of that run (0 if none)
  kafka_peer.py minrate RESULTS.jsonl TEST  -> lowest records/s of TEST over the brokers (0 if none)
  kafka_peer.py table RESULTS_DIR           -> prints the tables (figures, ratios, CPU)

MB/s is 10^6 bytes of record payload per second throughout.
"""
import json
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import benchparse  # noqa: E402
import perfparse  # noqa: E402

TOTAL_RE = re.compile(
    r"^(\d+)(.*?) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
    r"([\d.]+) ms max latency, (\d+) ms 50th, (\d+) ms 95th, (\d+) ms 99th, (\d+) ms 99.9th")
WINDOW_RE = re.compile(r"^(\d+) records sent, ([\d.]+) records/sec \(([\d.]+) MB/sec\), ([\d.]+) ms avg latency, "
                       r"([\d.]+) ms max latency\.")

LABEL = {"brook": "Brook (fsync before ack)", "kafka": "Kafka (default: page cache, no fsync)",
         "kafka-fsync": "Kafka (log.flush.interval.messages=1)"}
TOOL = {"bb": "brook-bench", "pt": "kafka-producer-perf-test", "rdk": "rdkafka_performance"}


def pt(path, size, warm=None, dur=None):
    """kafka-producer-perf-test, run with --reporting-interval 1000 and stopped after
    warm + dur report lines (it has no duration option): records/s over lines warm+1 ..
    warm+dur (sum of records / sum of the lines' own intervals, records / rate), the
    records-weighted mean of their avg latency, and the largest of their max latency.
    A final summary line, if the tool got that far, is kept as "summary"."""
    warm = int(os.environ.get("KP_WARM", 3)) if warm is None else warm
    dur = int(os.environ.get("KP_DUR", 10 ** 9)) if dur is None else dur
    totals, windows = [], []
    for line in open(path, errors="replace"):
        line = line.strip()
        m = TOTAL_RE.match(line)
        if m:
            totals.append(m)
            continue
        m = WINDOW_RE.match(line)
        if m:
            windows.append((int(m[1]), float(m[2]), float(m[4]), float(m[5])))
    out = {}
    if totals:
        m = totals[-1]
        out["summary"] = {"records": int(m[1]), "rps": round(float(m[3])), "avg": float(m[5]), "p50": int(m[7]),
                          "p95": int(m[8]), "p99": int(m[9]), "p999": int(m[10]), "max": float(m[6])}
    w = windows[warm:warm + dur]
    if not w:
        return out | {"error": "no perf-test report lines after the warm-up"}
    recs = sum(x[0] for x in w)
    secs = sum(x[0] / x[1] for x in w if x[1] > 0)
    rps = recs / secs if secs else 0
    return out | {"records": recs, "window_sec": round(secs, 2), "windows": len(w), "rps": round(rps),
                  "MBps": round(rps * size / 1e6, 1),
                  "lat": {"avg": round(sum(x[0] * x[2] for x in w) / recs, 1) if recs else None,
                          "max": max(x[3] for x in w)}}


def record(prefix, test, broker, kind, bpid, lpid, rc, timed_out):
    size = int(test.rsplit("-", 1)[1])
    r = {"test": test, "broker": broker, "tool": TOOL[kind], "size": size, "rc": int(rc),
         "timed_out": timed_out == "1",
         "stopped_as_planned": timed_out == "2", "cpu": benchparse.cpu(prefix, bpid, lpid)}
    try:
        if kind == "bb":
            b = benchparse.bb(prefix + ".json")
            r.update({"rps": b.get("produce_rps"), "MBps": b.get("produce_MBps"), "errors": b.get("errors"),
                      "lat": b.get("publish"), "e2e": b.get("end_to_end"), "delay": b.get("publish_delay"),
                      "consume_rps": b.get("consume_rps"), "unconsumed": b.get("unconsumed")})
            j = json.load(open(prefix + ".json"))
            r["rate_target"] = (j.get("config") or {}).get("rate")
        elif kind == "pt":
            r.update(pt(prefix + ".out", size))
        elif kind == "rdk":
            s = perfparse.summary(prefix + ".out")
            r.update({"rps": s.get("msgs_per_s"), "MBps": s.get("MB_per_s"), "delivered": s.get("delivered"),
                      "dr_failed": s.get("dr_failed"), "errors": s.get("dr_failed"), "rdk": s})
    except Exception as e:  # noqa: BLE001
        r["error"] = repr(e)
    return r


def rows_of(path):
    return [json.loads(l) for l in open(path) if l.strip()] if os.path.exists(path) else []


def f(v, nd=0):
    if v is None or v == "":
        return "-"
    if isinstance(v, (int, float)):
        return f"{v:,.{nd}f}"
    return str(v)


def lat4(l):
    if not l:
        return "-"

    def one(v):
        if v is None:
            return "-"
        if isinstance(v, int):
            return f"{v:,}"
        return f"{v:.2f}" if v < 10 else f"{v:,.1f}"
    return "/".join(one(l.get(q)) for q in ("p50", "p99", "p999", "max"))


def ratio(a, b, nd=2):
    return f"{a / b:.{nd}f}" if a and b else "-"


def table(res):
    rows = rows_of(os.path.join(res, "results.jsonl"))
    try:
        c = json.load(open(os.path.join(res, "ceilings.json")))
        print(f"Ceilings (same run, {c.get('fs')}): O_DIRECT seq write bs=1M {c['seq_write_1m_MBps']} MB/s, "
              f"bs=64k {c['seq_write_64k_MBps']} MB/s; 4k write+fdatasync p50/p99 "
              f"{c['fdatasync_4k_direct']['p50_us']}/{c['fdatasync_4k_direct']['p99_us']} us (O_DIRECT), "
              f"{c['fdatasync_4k_buffered']['p50_us']}/{c['fdatasync_4k_buffered']['p99_us']} us (buffered); "
              f"paced8 write p99/max {c['paced8_write'].get('p99_ms')}/{c['paced8_write'].get('max_ms')} ms; "
              f"loopback TCP {c.get('loopback_tcp_Gbps')} Gbit/s")
    except Exception as e:  # noqa: BLE001
        print(f"Ceilings: not measured in this run ({e.__class__.__name__})")
    try:
        print(f"e2e rate: {int(open(os.path.join(res, 'e2e-rate.txt')).read()):,} records/s of 100 B, all brokers")
    except Exception:  # noqa: BLE001
        pass
    print()
    print("Runs (latency ms: brook-bench publish (e2e for the e2e test); perf-test's send->callback avg/max in notes; "
          "CPU in % of one core, 200 = the machine):")
    hdr = ("test", "broker", "tool", "rec/s", "MB/s", "lat p50/p99/p99.9/max ms", "broker %CPU", "load %CPU",
           "others %CPU", "idle %", "broker CPU µs/rec", "notes")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        cpu = r.get("cpu") or {}
        notes = []
        if r.get("error"):
            notes.append("ERROR " + str(r["error"])[:160])
        if r.get("errors"):
            notes.append(f"errors {r['errors']}")
        if r.get("rc") and not (r.get("stopped_as_planned") and r["rc"] == 143):
            notes.append(f"rc {r['rc']}")
        if r.get("timed_out"):
            notes.append("stopped at time limit")
        if r.get("unconsumed"):
            notes.append(f"unconsumed {r['unconsumed']}")
        if r.get("windows") is not None:
            notes.append(f"{r['windows']} 1-s report lines, {r.get('window_sec')} s")
        if r["test"].startswith("e2e") and r.get("delay"):
            notes.append("publish delay p99/max " + "/".join(f(r["delay"].get(q), 2) for q in ("p99", "max")) + " ms")
        lat = r.get("e2e") if r["test"].startswith("e2e") else r.get("lat")
        if r.get("tool") == TOOL["pt"] and lat:
            lat = None
            notes.append(f"latency avg {f(r['lat'].get('avg'), 1)} ms, max {f(r['lat'].get('max'), 0)} ms")
        bc, rps = cpu.get("broker_cpu"), r.get("rps")
        us = bc / 100 / rps * 1e6 if bc and rps else None
        print(f"| {r['test']} | {r['broker']} | {r.get('tool', '-')} | {f(rps)} | {f(r.get('MBps'), 1)} | "
              f"{lat4(lat)} | {f(bc)} | {f(cpu.get('load_cpu'))} | {f(cpu.get('others_cpu'))} | "
              f"{f(cpu.get('idle_pct'))} | {f(us, 2)} | {'; '.join(notes)} |")
    print()
    by = {(r["test"], r["broker"]): r for r in rows}
    tests = list(dict.fromkeys(r["test"] for r in rows))
    print("Brook against Kafka, same test, same tool (rec/s; ratio > 1: Brook higher). "
          "Kafka = defaults (page cache, no fsync); Kafka-fsync = log.flush.interval.messages=1:")
    hdr = ("test", "tool", "Brook rec/s", "Kafka rec/s", "Kafka-fsync rec/s", "Brook/Kafka", "Brook/Kafka-fsync")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for t in tests:
        if t.startswith("e2e"):
            continue
        g = {b: (by.get((t, b)) or {}).get("rps") for b in ("brook", "kafka", "kafka-fsync")}
        tool = next((by[(t, b)].get("tool") for b in ("brook", "kafka", "kafka-fsync") if (t, b) in by), "-")
        print(f"| {t} | {tool} | {f(g['brook'])} | {f(g['kafka'])} | {f(g['kafka-fsync'])} | "
              f"{ratio(g['brook'], g['kafka'])} | {ratio(g['brook'], g['kafka-fsync'])} |")
    for t in tests:
        if not t.startswith("e2e"):
            continue
        print()
        print(f"{t}: end-to-end latency (ms) at the same fixed rate; ratio < 1: Brook lower")
        hdr = ("quantile", "Brook", "Kafka", "Kafka-fsync", "Brook/Kafka", "Brook/Kafka-fsync")
        print("| " + " | ".join(hdr) + " |")
        print("|" + "---|" * len(hdr))
        for q, name in (("p50", "p50"), ("p99", "p99"), ("p999", "p99.9"), ("max", "max")):
            g = {b: ((by.get((t, b)) or {}).get("e2e") or {}).get(q) for b in ("brook", "kafka", "kafka-fsync")}
            print(f"| {name} | {f(g['brook'], 2)} | {f(g['kafka'], 2)} | {f(g['kafka-fsync'], 2)} | "
                  f"{ratio(g['brook'], g['kafka'])} | {ratio(g['brook'], g['kafka-fsync'])} |")
        g = {b: (by.get((t, b)) or {}).get("rps") for b in ("brook", "kafka", "kafka-fsync")}
        print(f"| achieved rec/s | {f(g['brook'])} | {f(g['kafka'])} | {f(g['kafka-fsync'])} | | |")
    print()
    print("CPU per process (% of one core, pidstat averages): broker / load tool")
    hdr = ("test", "Brook", "Kafka", "Kafka-fsync")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for t in tests:
        cells = []
        for b in ("brook", "kafka", "kafka-fsync"):
            c = (by.get((t, b)) or {}).get("cpu") or {}
            cells.append(f"{f(c.get('broker_cpu'))} / {f(c.get('load_cpu'))}" if c else "-")
        print(f"| {t} | " + " | ".join(cells) + " |")


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ""
    if cmd == "record":
        print(json.dumps(record(*sys.argv[2:10])))
    elif cmd == "pt":
        print(json.dumps(pt(sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 100)))
    elif cmd == "rate":
        v = [r.get("rps") for r in rows_of(sys.argv[2]) if r.get("test") == sys.argv[3] and r.get("broker") == sys.argv[4]]
        print(int(v[-1] or 0) if v else 0)
    elif cmd == "minrate":
        v = [r.get("rps") for r in rows_of(sys.argv[2]) if r.get("test") == sys.argv[3] and r.get("rps")]
        print(int(min(v)) if v else 0)
    elif cmd == "table":
        table(sys.argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
