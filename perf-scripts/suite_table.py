#!/usr/bin/env python3
"""Print brook-bench-suite.sh's table: figures, ratios to the ceilings, CPU shares.
Usage: suite_table.py RESULTS_DIR"""
import json
import os
import sys


def load(p):
    try:
        return json.load(open(p))
    except Exception:  # noqa: BLE001
        return {}


def f(v, nd=0):
    if v is None or v == "":
        return "-"
    if isinstance(v, (int, float)):
        return f"{v:,.{nd}f}"
    return str(v)


def main():
    res = sys.argv[1]
    c = load(os.path.join(res, "ceilings.json"))
    rc = load(os.path.join(res, "read-ceiling.json"))
    wbw = c.get("seq_write_1m_MBps")
    lb = c.get("loopback_tcp_Gbps")
    lb_MBps = lb * 125 if lb else None
    rd, rb = rc.get("seq_read_1m_direct_MBps"), rc.get("seq_read_1m_buffered_MBps")
    print("Ceilings (same run, same fs):")
    if c:
        print(f"  O_DIRECT seq write bs=1M {wbw} MB/s, bs=64k {c.get('seq_write_64k_MBps')} MB/s; "
              f"4k write+fdatasync p50/p99 {c['fdatasync_4k_direct']['p50_us']}/{c['fdatasync_4k_direct']['p99_us']} us (O_DIRECT); "
              f"loopback TCP {lb} Gbit/s")
    if rc:
        print(f"  seq read bs=1M cold cache: O_DIRECT {rd} MB/s, buffered {rb} MB/s ({rc.get('size')})")
    rows = [json.loads(l) for l in open(os.path.join(res, "results.jsonl")) if l.strip()]
    print()
    hdr = ("test", "rec/s", "MB/s", "%wr-ceil", "%rd-ceil", "cons rec/s", "pub p50/p99/p99.9/max ms",
           "e2e p50/p99/p99.9/max ms", "brk%", "load%", "oth%", "nice%", "idle%", "load1m")
    print("| " + " | ".join(hdr) + " |")
    print("|" + "---|" * len(hdr))
    for r in rows:
        cpu = r.get("cpu", {})
        t = r["test"]
        b = r.get("bb")
        if b is not None:
            if t.startswith("d-catchup"):
                rps, mbs = b.get("consume_rps"), b.get("consume_MBps")
                wr = None
                rdr = f"{100 * mbs / rd:.0f}% / {100 * mbs / rb:.0f}%" if (rd and rb and mbs) else None
                cons = b.get("consume_records")
            else:
                rps, mbs = b.get("produce_rps"), b.get("produce_MBps")
                wr = f"{100 * mbs / wbw:.0f}%" if (wbw and mbs) else None
                rdr = None
                cons = b.get("consume_rps")

            def lat(k):
                l = b.get(k)
                return "/".join(f(l.get(q), 2) for q in ("p50", "p99", "p999", "max")) if l else "-"
            pub, e2e = lat("publish"), lat("end_to_end")
        else:
            s = r.get("rdk", {})
            rps, mbs = s.get("msgs_per_s"), s.get("MB_per_s")
            wr = f"{100 * mbs / wbw:.0f}%" if (wbw and mbs) else None
            rdr, cons, pub, e2e = None, None, "-", "-"
        la = cpu.get("loadavg_1m") or []
        print("| " + " | ".join([t, f(rps), f(mbs, 1), f(wr), f(rdr), f(cons), pub, e2e,
                                 f(cpu.get("broker_cpu")), f(cpu.get("load_cpu")), f(cpu.get("others_cpu")), f(cpu.get("niced_cpu")),
                                 f(cpu.get("idle_pct")), "→".join(la)]) + " |")
    print()
    print("MB/s = 10^6 B of record payload per second. %wr-ceil = MB/s / O_DIRECT 1M write ceiling;")
    print("%rd-ceil = catch-up MB/s / (O_DIRECT read, buffered read) ceilings. CPU columns: average % of one")
    print("core over the test (200 = whole machine); oth% = mpstat busy minus broker, load tool and niced work;\n"
          "nice% = niced work (e.g. nice -n 15 builds: they yield the CPU to the benchmark).")
    if lb_MBps:
        print(f"Loopback TCP ceiling = {lb_MBps:.0f} MB/s.")
    for r in rows:
        b = r.get("bb") or {}
        if b.get("errors") or b.get("unconsumed") or r.get("rc"):
            print(f"note {r['test']}: rc {r.get('rc')}, errors {b.get('errors')}, unconsumed {b.get('unconsumed')}")
    for r in rows:
        bb = next((x for x in rows if x["test"] == "e-bb-produce-" + r["test"].rsplit("-", 1)[-1]), None)
        if r["test"].startswith("e-rdkafka") and bb and r.get("rdk", {}).get("msgs_per_s"):
            print(f"harness check: brook-bench {bb['bb'].get('produce_rps'):,} rec/s vs {r['test']} "
                  f"{r['rdk']['msgs_per_s']:,} rec/s -> ratio {bb['bb']['produce_rps'] / r['rdk']['msgs_per_s']:.2f}; "
                  f"load tool CPU {bb['cpu'].get('load_cpu')}% vs {r['cpu'].get('load_cpu')}%")


if __name__ == "__main__":
    main()
