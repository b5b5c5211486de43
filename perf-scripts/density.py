#!/usr/bin/env python3
"""The Python half of perf-scripts/density.sh (partition density and restart time).

Subcommands (each prints one JSON line and, with --log FILE, appends it there with
the --tag key=value pairs; exit 0 = ok, 1 = failed (the "error" field says why),
3 = the broker's RSS passed --max-rss-mib):

  create    CreateTopics (confluent-kafka AdminClient): --total N partitions as topics
            of --per-topic partitions named PREFIX0000, PREFIX0001, ...
  meta      poll Metadata (and ListOffsets) every --interval s until complete; the
            elapsed time is measured from --since (a Unix time, e.g. bash's
            $EPOCHREALTIME taken just before the broker was exec'd)
  produce   --records records of --size bytes to every partition, explicit partition
            numbers, acks=all, every delivery report checked (confluent-kafka)
  offsets   ListOffsets(latest) of every partition of one topic
  loadrate  what brook-bench wrote before the broker was SIGKILLed under load: acked
            bytes (its --json, else its per-second lines) / seconds until the kill
  procstat  RSS, peak RSS, open fds and /proc/PID/io of a process
  evict     posix_fadvise(DONTNEED) every file under a directory (drops its pages
            from the page cache; no root needed), with page-cache bytes before/after
  cache     page-cache bytes of the files under a directory (util-linux fincore)
  note      append free-form fields (the --tag pairs) to --log
  report    render results.jsonl as markdown tables

Metadata and ListOffsets are spoken directly (Metadata v1, ListOffsets v1 over a
plain socket, standard library only) so that polling a restarting broker has no
client reconnect back-off in it and the poller starts in milliseconds.
"""

import argparse
import json
import os
import re
import socket
import struct
import sys
import time

EXIT_OK, EXIT_FAIL, EXIT_RSS = 0, 1, 3


# ---------------------------------------------------------------- /proc helpers

def proc_status(pid):
    """VmRSS and VmHWM in MiB, or None if the process is gone."""
    out = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("VmRSS", "VmHWM"):
                    out[k] = round(int(v.split()[0]) / 1024, 1)
    except (FileNotFoundError, ProcessLookupError):
        return None
    return out


def proc_fds(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, ProcessLookupError):
        return None


def proc_io(pid):
    out = {}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = int(v)
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    return out


class RssExceeded(Exception):
    pass


def check_rss(args):
    if not getattr(args, "pid", None) or not getattr(args, "max_rss_mib", None):
        return
    st = proc_status(args.pid)
    if st and st.get("VmRSS", 0) > args.max_rss_mib:
        raise RssExceeded(f"stopped: RSS over {args.max_rss_mib:g} MiB ({st['VmRSS']:.0f} MiB)")


# ---------------------------------------------------------------- raw Kafka protocol

class Reader:
    def __init__(self, b):
        self.b, self.i = b, 0

    def take(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.i)
        self.i += struct.calcsize(fmt)
        return v[0] if len(v) == 1 else v

    def i8(self):
        return self.take(">b")

    def i16(self):
        return self.take(">h")

    def i32(self):
        return self.take(">i")

    def i64(self):
        return self.take(">q")

    def string(self):
        n = self.i16()
        if n < 0:
            return None
        s = self.b[self.i:self.i + n].decode("utf-8", "replace")
        self.i += n
        return s

    def array(self, item):
        n = self.i32()
        return [] if n < 0 else [item() for _ in range(n)]


def enc_str(s):
    b = s.encode()
    return struct.pack(">h", len(b)) + b


class Conn:
    """One blocking connection; request() returns the response body or raises OSError."""

    CLIENT_ID = "density-probe"

    def __init__(self, host, port, timeout):
        self.sock = socket.create_connection((host, port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.corr = 0

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def _recv_exact(self, n):
        chunks, got = [], 0
        while got < n:
            c = self.sock.recv(min(n - got, 1 << 20))
            if not c:
                raise ConnectionError("connection closed by the broker")
            chunks.append(c)
            got += len(c)
        return b"".join(chunks)

    def request(self, api_key, version, body, timeout):
        self.corr += 1
        hdr = struct.pack(">hhi", api_key, version, self.corr) + enc_str(self.CLIENT_ID)
        msg = hdr + body
        self.sock.settimeout(timeout)
        self.sock.sendall(struct.pack(">i", len(msg)) + msg)
        (size,) = struct.unpack(">i", self._recv_exact(4))
        resp = self._recv_exact(size)
        (corr,) = struct.unpack_from(">i", resp)
        if corr != self.corr:
            raise ConnectionError(f"correlation id {corr}, expected {self.corr}")
        return resp[4:]


def metadata_v1(conn, timeout):
    """All topics: {name: {"error": code, "internal": bool, "parts": {p: (err, leader)}}}."""
    r = Reader(conn.request(3, 1, struct.pack(">i", -1), timeout))
    r.array(lambda: (r.i32(), r.string(), r.i32(), r.string()))  # brokers
    r.i32()  # controller

    def partition():
        err, p, leader = r.i16(), r.i32(), r.i32()
        r.array(r.i32)
        r.array(r.i32)
        return p, (err, leader)

    def topic():
        err, name, internal = r.i16(), r.string(), r.i8()
        return name, {"error": err, "internal": bool(internal), "parts": dict(r.array(partition))}

    return dict(r.array(topic))


def list_offsets_v1(conn, topic, partitions, timeout, ts=-1):
    """{partition: (error_code, offset)} for ListOffsets(ts) (-1 = latest)."""
    body = struct.pack(">i", -1) + struct.pack(">i", 1) + enc_str(topic)
    body += struct.pack(">i", len(partitions))
    for p in partitions:
        body += struct.pack(">iq", p, ts)
    r = Reader(conn.request(2, 1, body, timeout))
    out = {}
    for _ in range(r.i32()):
        r.string()
        for _ in range(r.i32()):
            p, err, _ts, off = r.i32(), r.i16(), r.i64(), r.i64()
            out[p] = (err, off)
    return out


def split_addr(a):
    h, _, p = a.rpartition(":")
    return h, int(p)


# ---------------------------------------------------------------- subcommands

def topic_names(prefix, total, per_topic):
    out, left, i = [], total, 0
    while left > 0:
        n = min(per_topic, left)
        out.append((f"{prefix}{i:04d}", n))
        left -= n
        i += 1
    return out


def broker_alive(pid):
    """False once the process is gone or a zombie."""
    if not pid:
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def cmd_create(args):
    import concurrent.futures as cf
    from confluent_kafka.admin import AdminClient, NewTopic

    check_rss(args)
    admin = AdminClient({"bootstrap.servers": args.bootstrap, "socket.timeout.ms": 60000})
    topics = topic_names(args.prefix, args.total, args.per_topic)
    t0 = time.monotonic()
    created, errors = 0, []
    for i in range(0, len(topics), args.chunk):
        chunk = topics[i:i + args.chunk]
        futs = admin.create_topics([NewTopic(n, p, 1) for n, p in chunk],
                                   operation_timeout=60, request_timeout=120)
        deadline = time.monotonic() + 180
        pending = set(futs.values())
        while pending and time.monotonic() < deadline:
            _, pending = cf.wait(pending, timeout=0.5)
            check_rss(args)
            if not broker_alive(args.pid):
                errors.append("broker exited during CreateTopics")
                break
        for name, fut in futs.items():
            if not fut.done():
                if not errors:
                    errors.append(f"{name}: no CreateTopics answer in 180 s")
                continue
            try:
                fut.result()
                created += 1
            except Exception as e:  # KafkaException carrying the broker's error
                errors.append(f"{name}: {e}")
        if errors:
            break
    res = {"ok": not errors, "topics_created": created, "topics_wanted": len(topics),
           "create_s": round(time.monotonic() - t0, 3)}
    if errors:
        res["error"] = errors[0]
        res["errors"] = len(errors)
    return res


def cmd_meta(args):
    host, port = split_addr(args.bootstrap)
    since = float(args.since) if args.since else time.time()
    deadline = time.monotonic() + args.timeout
    want_offsets = min_offsets = None
    if args.expect_offsets:
        with open(args.expect_offsets) as f:
            want_offsets = {int(k): v for k, v in json.load(f)["offsets"].items()}
    if args.min_offsets:
        with open(args.min_offsets) as f:
            min_offsets = {int(k): v for k, v in json.load(f)["offsets"].items()}
    conn, polls, last, meta_done_s = None, 0, "no answer yet", None
    res = {}
    while True:
        check_rss(args)
        if not broker_alive(args.pid):
            res = {"ok": False, "error": "broker exited"}
            break
        now = time.monotonic()
        if now >= deadline:
            res = {"ok": False, "error": f"timeout after {args.timeout:g} s ({last})"}
            break
        polls += 1
        try:
            if conn is None:
                conn = Conn(host, port, timeout=min(2.0, deadline - now))
            topics = metadata_v1(conn, timeout=max(0.1, min(10.0, deadline - time.monotonic())))
            ours = {n: t for n, t in topics.items() if n.startswith(args.prefix) and not t["internal"]}
            with_leader = sum(1 for t in ours.values() if t["error"] == 0
                              for err, leader in t["parts"].values() if err == 0 and leader >= 0)
            if with_leader != args.expect:
                last = f"{with_leader}/{args.expect} partitions with a leader"
            else:
                if meta_done_s is None:
                    meta_done_s = time.time() - since
                if not args.offsets_topic:
                    break
                parts = sorted(ours[args.offsets_topic]["parts"])
                offs = list_offsets_v1(conn, args.offsets_topic, parts,
                                       timeout=max(0.1, min(10.0, deadline - time.monotonic())))
                bad = {p: e for p, (e, _) in offs.items() if e != 0}
                if len(offs) == len(parts) and not bad:
                    res["offsets"] = {p: o for p, (_, o) in sorted(offs.items())}
                    break
                last = f"ListOffsets errors {bad}" if bad else "ListOffsets incomplete"
        except (OSError, struct.error, ConnectionError, KeyError) as e:
            last = f"{type(e).__name__}: {e}"
            if conn:
                conn.close()
            conn = None
        time.sleep(args.interval)
    done = time.time()
    io = proc_io(args.pid) if args.pid else None
    st = proc_status(args.pid) if args.pid else None
    if conn:
        conn.close()
    if "ok" not in res:
        res["ok"] = True
        res["elapsed_s"] = round(done - since, 3)
        if meta_done_s is not None:
            res["metadata_s"] = round(meta_done_s, 3)
    res["polls"] = polls
    if io:
        res["read_bytes"] = io.get("read_bytes")
        res["rchar"] = io.get("rchar")
    if st:
        res["rss_mib"] = st.get("VmRSS")
    if res["ok"] and want_offsets is not None:
        got = res["offsets"]
        res["offsets_match"] = got == want_offsets
        if not res["offsets_match"]:
            diff = {p: (want_offsets.get(p), got.get(p)) for p in set(got) | set(want_offsets)
                    if want_offsets.get(p) != got.get(p)}
            res["offsets_mismatch"] = {str(p): {"before": b, "after": a} for p, (b, a) in diff.items()}
            print(f"!!! LOG END MISMATCH after restart: {res['offsets_mismatch']}", file=sys.stderr)
    if res["ok"] and min_offsets is not None:
        got = res["offsets"]
        short = {str(p): {"before": b, "after": got.get(p)} for p, b in min_offsets.items()
                 if got.get(p) is None or got[p] < b}
        res["offsets_ge"] = not short and set(got) == set(min_offsets)
        res["log_end_before_total"] = sum(min_offsets.values())
        if short:
            res["offsets_short"] = short
            print(f"!!! LOG END BELOW THE ONE BEFORE THE LOAD after restart: {short}", file=sys.stderr)
    if "offsets" in res:
        res["log_end_total"] = sum(res["offsets"].values())
        res["offsets"] = {str(p): o for p, o in res["offsets"].items()}
    if not res["ok"]:
        res["last_state"] = last
    if args.ready_log and res["ok"]:
        ready = ready_time(args.ready_log, deadline)
        if ready is not None:
            res["ready_s"] = round(ready - since, 3)
            opened = opened_read_bytes(args.ready_log)
            if opened is not None:
                res["log_read_bytes"], res["opened_lines"] = opened
    return res


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def ready_time(path, deadline):
    """Unix time of the broker's `brook ready` log line (its own UTC timestamp), waiting
    for the line until the deadline; None if it never came."""
    from datetime import datetime
    while True:
        try:
            with open(path, errors="replace") as f:
                for line in f:
                    if "brook ready" in line:
                        ts = ANSI.sub("", line).split()[0].replace("Z", "+00:00")
                        return datetime.fromisoformat(ts).timestamp()
        except (OSError, ValueError):
            return None
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.02)


OPENED_READ = re.compile(r"\bread_bytes=(\d+)")


def opened_read_bytes(path):
    """(sum of read_bytes=N, number of lines) over the broker's `opened partitions` log
    lines (one a shard, before `brook ready`): the log bytes it read to open its
    partitions, by its own count. None if the log cannot be read."""
    total = lines = 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = ANSI.sub("", line)
                if "opened partitions" not in line:
                    continue
                m = OPENED_READ.search(line)
                if m:
                    total += int(m.group(1))
                    lines += 1
    except OSError:
        return None
    return total, lines


def cmd_produce(args):
    from confluent_kafka import Producer

    check_rss(args)
    topics = topic_names(args.prefix, args.total, args.per_topic)
    p = Producer({
        "bootstrap.servers": args.bootstrap,
        "acks": "all",
        "linger.ms": 200,
        "batch.size": 1 << 20,
        "queue.buffering.max.messages": 2_000_000,
        "queue.buffering.max.kbytes": 1 << 21,
        "message.timeout.ms": int(args.timeout * 1000),
        "enable.idempotence": False,
    })
    state = {"acked": 0, "failed": 0, "first_error": None}

    def on_delivery(err, msg):
        if err is None:
            state["acked"] += 1
        else:
            state["failed"] += 1
            if state["first_error"] is None:
                state["first_error"] = f"{msg.topic()}[{msg.partition()}]: {err}"

    value = b"v" * args.size
    want = sum(n for _, n in topics) * args.records
    t0 = time.monotonic()
    for name, n in topics:
        for part in range(n):
            for _ in range(args.records):
                while True:
                    try:
                        p.produce(name, value=value, partition=part, on_delivery=on_delivery)
                        break
                    except BufferError:
                        p.poll(0.05)
        p.poll(0)
    deadline = t0 + args.timeout + 30
    while state["acked"] + state["failed"] < want and time.monotonic() < deadline:
        p.flush(0.5)
        check_rss(args)
        if not broker_alive(args.pid):
            state["first_error"] = state["first_error"] or "broker exited during produce"
            break
    res = {"records_wanted": want, "acked": state["acked"], "failed": state["failed"],
           "produce_s": round(time.monotonic() - t0, 3)}
    res["ok"] = state["acked"] == want
    if not res["ok"]:
        res["error"] = state["first_error"] or (
            f"only {state['acked'] + state['failed']}/{want} delivery reports in {args.timeout:g} s")
    return res


def cmd_offsets(args):
    host, port = split_addr(args.bootstrap)
    conn = Conn(host, port, timeout=10)
    try:
        offs = list_offsets_v1(conn, args.topic, list(range(args.partitions)), timeout=30)
    finally:
        conn.close()
    bad = {p: e for p, (e, _) in offs.items() if e != 0}
    res = {"ok": not bad and len(offs) == args.partitions,
           "offsets": {str(p): o for p, (_, o) in sorted(offs.items())},
           "log_end_total": sum(o for _, o in offs.values())}
    if not res["ok"]:
        res["error"] = f"ListOffsets errors {bad}"
    if args.out:
        with open(args.out, "w") as f:
            json.dump(res, f)
    return res


PROGRESS = re.compile(r"^\[\s*([0-9.]+)s\s+\w+\s*\]\s+produce\s+([0-9.]+) msg/s")


def cmd_loadrate(args):
    """Acked bytes of the bench until the kill / (kill - start of writing)."""
    dur = float(args.kill) - float(args.start)
    res = {"ok": True, "load_s": round(dur, 3)}
    try:
        with open(args.bench_json) as f:
            p = json.load(f)["produce"]
        res["acked_bytes"], res["acked_records"] = p["payload_bytes_total"], p["records_total"]
        res["acked_from"] = "brook-bench --json"
    except (OSError, ValueError, KeyError):
        # No report (the bench was killed): its per-second lines, each the records acked
        # in that second; the part of a second before the kill is missing.
        recs = 0.0
        try:
            with open(args.bench_out, errors="replace") as f:
                for line in f:
                    m = PROGRESS.match(line)
                    if m:
                        recs += float(m.group(2))
        except OSError:
            pass
        res["acked_records"] = int(recs)
        res["acked_bytes"] = int(recs) * args.record_size
        res["acked_from"] = "brook-bench per-second lines (no --json report)"
    res["write_bytes_per_s"] = round(res["acked_bytes"] / max(dur, 1e-3))
    try:
        wb0, wb1 = (int(x) for x in args.broker_write_bytes)
        res["broker_disk_write_bytes"] = wb1 - wb0
        res["broker_disk_write_bytes_per_s"] = round((wb1 - wb0) / max(dur, 1e-3))
    except (TypeError, ValueError):
        pass
    try:
        with open(args.bench_out, errors="replace") as f:
            errs = [ln.strip() for ln in f if ln.startswith("brook-bench: producer")
                    or ln.startswith("errors ")]
        if errs:
            res["bench_errors"] = " / ".join(errs)[:400]
    except OSError:
        pass
    return res


def cmd_procstat(args):
    st = proc_status(args.pid)
    if st is None or not broker_alive(args.pid) or "VmRSS" not in st:
        return {"ok": False, "error": "process gone"}
    res = {"ok": True, "rss_mib": st.get("VmRSS"), "hwm_mib": st.get("VmHWM"), "fds": proc_fds(args.pid)}
    io = proc_io(args.pid)
    if io:
        res["read_bytes"], res["write_bytes"] = io.get("read_bytes"), io.get("write_bytes")
    return res


def cached_bytes(paths):
    """Page-cache bytes of these files (mincore via util-linux fincore), or None."""
    import subprocess
    if not paths:
        return 0
    total = 0
    try:
        for i in range(0, len(paths), 500):
            out = subprocess.run(["fincore", "--bytes", "--noheadings", "--raw", "--output", "RES"]
                                 + paths[i:i + 500], capture_output=True, text=True, timeout=60)
            total += sum(int(x) for x in out.stdout.split())
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return total


def cmd_evict(args):
    paths = []
    for d, _, files in os.walk(args.dir):
        paths += [os.path.join(d, f) for f in files]
    before = cached_bytes(paths)
    n = 0
    for path in paths:
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return {"ok": True, "files": n, "cached_before": before, "cached_after": cached_bytes(paths)}


def cmd_cache(args):
    """Prints the page-cache bytes of the files under --dir (a bare number, for the shell)."""
    paths = [os.path.join(d, f) for d, _, files in os.walk(args.dir) for f in files]
    n = cached_bytes(paths)
    print(-1 if n is None else n)
    return None


def cmd_note(args):
    return {"ok": True}


# ---------------------------------------------------------------- report

def mib(x):
    return "–" if x is None else f"{x:,.0f} MiB"


def secs(r):
    if r is None:
        return "–"
    if not r.get("ok"):
        return r.get("error", "failed")
    return f"{r['elapsed_s']:.2f} s"


def human_bytes(n):
    if n is None:
        return "–"
    for unit, k in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= k:
            return f"{n / k:,.2f} {unit}"
    return f"{n} B"


def cmd_report(args):
    recs = []
    with open(args.results) as f:
        for line in f:
            line = line.strip()
            if line:
                recs.append(json.loads(line))
    out = []
    rows = {}
    for r in recs:
        if r.get("part") == "density":
            rows.setdefault(int(r["n"]), {})[r["step"]] = r
    if rows:
        out.append("## Partition density\n")
        out.append("Topics of 100 partitions (`dens-0000`, ...), `--shards 2`; `__consumer_offsets` "
                   "(50 partitions) not counted. RSS = VmRSS 2 s after the step; restart = wall time "
                   "from exec until Metadata lists all N partitions with a leader (polled every 50 ms).\n")
        out.append("| partitions | idle RSS | RSS after one write to each | fds (idle / after writes) "
                   "| restart after SIGTERM | restart after SIGKILL |")
        out.append("|---:|---:|---:|---:|---:|---:|")
        details = []
        step_order = ["create", "create_visible", "idle", "produce", "written", "stop_term",
                      "restart_term", "restart_kill"]
        for n in sorted(rows):
            s = rows[n]
            good = {k: v for k, v in s.items() if v.get("ok")}
            err = s.get("row_error", {}).get("error")
            if err is None:
                err = next((s[k]["error"] for k in step_order if k in s and not s[k].get("ok")), None)
            idle, wr = good.get("idle"), good.get("written")
            cells = [f"{n:,}", mib((idle or {}).get("rss_mib")), mib((wr or {}).get("rss_mib")),
                     f"{(idle or {}).get('fds', '–')} / {(wr or {}).get('fds', '–')}",
                     secs(good.get("restart_term")), secs(good.get("restart_kill"))]
            if err:
                at = good.get("at_error")
                if at:
                    err += f" (then: RSS {mib(at.get('rss_mib'))}, {at.get('fds')} fds)"
                have = [idle, wr, idle, good.get("restart_term"), good.get("restart_kill")]
                for i, v in enumerate(have, start=1):
                    if v is None:
                        cells[i] = f"**{err}**"
                        for j in range(i + 1, len(cells)):
                            cells[j] = "–"
                        break
                else:
                    cells[-1] += f" (**{err}**)"
            out.append("| " + " | ".join(cells) + " |")
            c, m, pr = s.get("create"), good.get("create_visible"), s.get("produce")
            st = good.get("stop_term")
            hwm = [x["hwm_mib"] for x in (idle, wr, good.get("final"), good.get("at_error"))
                   if x and x.get("hwm_mib") is not None]
            ready = [f"{k} {v['ready_s']:.2f} s" for k, v in
                     (("TERM", good.get("restart_term")), ("KILL", good.get("restart_kill")))
                     if v and v.get("ready_s") is not None]
            reads = [f"{k}: {v['read_bytes'] / 1e6:,.1f} / {v['rchar'] / 1e6:,.1f} MB"
                     + (f" / {v['log_read_bytes'] / 1e6:,.1f} MB" if v.get("opened_lines") else " / –")
                     for k, v in
                     (("TERM", good.get("restart_term")), ("KILL", good.get("restart_kill")))
                     if v and v.get("read_bytes") is not None and v.get("rchar") is not None]
            details.append("| " + " | ".join([
                f"{n:,}",
                (f"{c['create_s']:.1f} s" if c and "create_s" in c else "–")
                + (f" ({c['topics_created']}/{c['topics_wanted']} topics)"
                   if c and not c.get("ok") and "topics_created" in c else ""),
                f"{m['elapsed_s']:.2f} s" if m else "–",
                (f"{pr['produce_s']:.1f} s, {pr['acked']:,}/{pr['records_wanted']:,} acked" if pr and "acked" in pr else "–"),
                (f"{st['stop_s']:.2f} s, exit {st['exit']}" if st else "–"),
                mib(max(hwm) if hwm else None),
                ", ".join(ready) or "–",
                ", ".join(reads) or "–",
            ]) + " |")
        out.append("")
        out.append("Details: create = CreateTopics time (10 topics a request); visible = from the end of "
                   "CreateTopics until Metadata lists every partition; produce = 20 x 100 B to every "
                   "partition, acks=all, one batch per partition; stop = SIGTERM until exit; peak RSS = "
                   "VmHWM; `brook ready` = when the restarted broker logged it (all shards open), "
                   "from exec; reads = /proc/PID/io read_bytes / rchar of the restarted broker when "
                   "Metadata was complete / log bytes read to open (broker: the sum of `read_bytes=` "
                   "over its `opened partitions` log lines).\n")
        out.append("| partitions | create | visible | produce | stop (SIGTERM) | peak RSS "
                   "| `brook ready` after restart | reads during restart (disk / syscalls / log bytes read to open, broker) |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        out += details
        out.append("")

    log = [r for r in recs if r.get("part") == "log"]
    if log:
        by = {}
        for r in log:
            by.setdefault(r["step"], []).append(r)
        out.append("## Restart time against log size\n")
        w = by.get("written", [{}])[-1]
        wr = by.get("write", [])
        if w:
            out.append(f"One topic `big`, 8 partitions, 1 KiB records (brook-bench, acks=all). Data dir: "
                       f"{human_bytes(w.get('du_bytes'))} (`du -sb`, {w.get('du_bytes', 0):,} B; "
                       f"preallocated tails included), {w.get('log_end_total', 0):,} records "
                       f"(= {human_bytes((w.get('log_end_total') or 0) * 1024)} of values); written in "
                       f"{w.get('write_s', 0):.0f} s of wall time over {len(wr)} brook-bench run(s), start-ups included"
                       f" (~{(w.get('du_bytes', 0) / 1e6) / max(w.get('write_s', 1), 1e-9):.0f} MB/s).\n")
        out.append("Restart = wall time from exec until Metadata lists the 8 partitions with a leader "
                   "and ListOffsets(latest) answers for each; disk reads = /proc/PID/io of the new "
                   "process at that moment (read_bytes: from the block device; rchar: read syscalls). "
                   "Warm = page cache as the old broker (and the restarts before) left it; the broker "
                   "writes with O_DIRECT, so its writes never fill it; cold = the data dir's pages "
                   "evicted (posix_fadvise DONTNEED) before the start. `brook ready` = when the broker "
                   "logged that every shard had opened its partitions.\n")
        out.append("Log bytes read to open (broker) = the sum of `read_bytes=` over the restarted "
                   "broker's `opened partitions` log lines (one a shard): what it read of the logs "
                   "after the last recovery checkpoints, by its own count. SIGKILL under load = "
                   "killed while brook-bench was writing (below); its log end after the restart is "
                   "checked to be at least the one before the bench started.\n")
        out.append("| restart after | page cache | data dir in page cache at exec | until Metadata "
                   "| until Metadata + ListOffsets | `brook ready` logged | log end after restart "
                   "| disk reads (read_bytes) | rchar | log bytes read to open (broker) |")
        out.append("|---|---|---:|---:|---:|---:|---|---:|---:|---:|")
        for r in by.get("restart", []):
            if r.get("ok"):
                if "offsets_ge" in r:
                    after, before = r.get("log_end_total", 0), r.get("log_end_before_total", 0)
                    match = (f"{after:,} ≥ before the load ({before:,}): "
                             + ("yes" if r["offsets_ge"] else f"**NO** {r.get('offsets_short')}")
                             + f" (+{after - before:,})")
                else:
                    match = (f"= before ({r.get('log_end_total', 0):,}): yes" if r.get("offsets_match")
                             else f"**MISMATCH** {r.get('offsets_mismatch')}")
                cached = r.get("cached_bytes")
                opened = (human_bytes(r["log_read_bytes"]) + f" ({r.get('opened_lines')} lines)"
                          if r.get("opened_lines") else "– (no `opened partitions` line)")
                out.append("| " + " | ".join([
                    r["how"], r["cache"], human_bytes(cached) if isinstance(cached, int) and cached >= 0 else "?",
                    f"{r.get('metadata_s', 0):.2f} s", f"{r['elapsed_s']:.2f} s",
                    f"{r['ready_s']:.2f} s" if r.get("ready_s") is not None else "–",
                    match, human_bytes(r.get("read_bytes")), human_bytes(r.get("rchar")), opened]) + " |")
            else:
                out.append(f"| {r['how']} | {r['cache']} | – | **{r.get('error')}** | – | – | – | – | – | – |")
        cfg = by.get("config", [{}])[-1]
        ld = next((r for r in by.get("load", []) if r.get("phase") == "load"), None)
        lr = next((r for r in by.get("restart", []) if r.get("how") == "SIGKILL under load"), None)
        ms = cfg.get("checkpoint_ms")
        if ms is not None:
            out.append("")
            out.append(f"`log.flush.offset.checkpoint.interval.ms` in force: **{ms} ms** "
                       f"({cfg.get('checkpoint_src')}).")
        if ld:
            rate = ld.get("write_bytes_per_s", 0)
            text = (f"\nSIGKILL under load: brook-bench (8 partitions, 1 KiB records, acks=all, no rate "
                    f"limit) had {human_bytes(ld.get('acked_bytes'))} acked ({ld.get('acked_records', 0):,} "
                    f"records; {ld.get('acked_from')}) in the {ld.get('load_s', 0):.1f} s from its start of "
                    f"writing to the SIGKILL: write rate **{rate / (1 << 20):,.0f} MiB/s**")
            if ld.get("broker_disk_write_bytes_per_s") is not None:
                text += (f" (the broker's disk writes, /proc/PID/io write_bytes, meanwhile: "
                         f"{ld['broker_disk_write_bytes_per_s'] / (1 << 20):,.0f} MiB/s)")
            text += f". The bench then: {ld.get('bench_stopped')}"
            if ld.get("bench_errors"):
                text += f" (its output: `{ld['bench_errors']}`)"
            text += "."
            if ms is not None:
                text += (f" Write rate × checkpoint interval = {human_bytes(int(rate * ms / 1000))}")
                if lr and lr.get("ok") and lr.get("opened_lines"):
                    text += (f"; log bytes read to open after the kill (broker): "
                             f"**{human_bytes(lr.get('log_read_bytes'))}**"
                             f" ({lr['log_read_bytes'] / max(rate * ms / 1000, 1):.2f} × that)")
                text += "."
            if lr and lr.get("ok") and "log_end_before_total" in lr:
                kept = lr.get("log_end_total", 0) - lr["log_end_before_total"]
                acked = ld.get("acked_records", 0)
                text += (f" Records added by the load and present after the restart: {kept:,}; acked "
                         f"to the bench: {acked:,} (every acked record kept: "
                         + ("yes" if kept >= acked else "**NO**") + ").")
            out.append(text)
        for r in by.get("row_error", []):
            out.append(f"\n**log-size run stopped: {r.get('error')}**")
        out.append("")
    text = "\n".join(out)
    if args.out:
        with open(args.out, "a") as f:
            f.write(text + "\n")
    print(text)
    return None


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, broker=True):
        p.add_argument("--log", help="append the JSON result to this file")
        p.add_argument("--tag", action="append", default=[], help="key=value added to the result")
        if broker:
            p.add_argument("--bootstrap", required=True)
        p.add_argument("--pid", type=int, help="the broker's PID (RSS guard, /proc/PID/io)")
        p.add_argument("--max-rss-mib", type=float)
        return p

    p = common(sub.add_parser("create"))
    p.add_argument("--prefix", default="dens-")
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--per-topic", type=int, default=100)
    p.add_argument("--chunk", type=int, default=10, help="topics per CreateTopics request")

    p = common(sub.add_parser("meta"))
    p.add_argument("--prefix", default="dens-")
    p.add_argument("--expect", type=int, required=True, help="partitions that must have a leader")
    p.add_argument("--since", help="Unix time the clock starts at (default: now)")
    p.add_argument("--timeout", type=float, default=120)
    p.add_argument("--interval", type=float, default=0.05)
    p.add_argument("--offsets-topic", help="also require ListOffsets(latest) of this topic")
    p.add_argument("--expect-offsets", help="JSON from `offsets --out`: the log ends must match")
    p.add_argument("--min-offsets", help="JSON from `offsets --out`: the log ends must be >= these")
    p.add_argument("--ready-log", help="the broker's log: also report when it printed `brook ready`")

    p = common(sub.add_parser("produce"))
    p.add_argument("--prefix", default="dens-")
    p.add_argument("--total", type=int, required=True)
    p.add_argument("--per-topic", type=int, default=100)
    p.add_argument("--records", type=int, default=20)
    p.add_argument("--size", type=int, default=100)
    p.add_argument("--timeout", type=float, default=300)

    p = common(sub.add_parser("offsets"))
    p.add_argument("--topic", required=True)
    p.add_argument("--partitions", type=int, required=True)
    p.add_argument("--out")

    p = common(sub.add_parser("loadrate"), broker=False)
    p.add_argument("--bench-json", required=True)
    p.add_argument("--bench-out", required=True)
    p.add_argument("--record-size", type=int, default=1024)
    p.add_argument("--start", required=True, help="Unix time the bench started writing")
    p.add_argument("--kill", required=True, help="Unix time of the SIGKILL")
    p.add_argument("--broker-write-bytes", nargs=2, metavar=("AT_START", "AT_KILL"),
                   help="the broker's /proc/PID/io write_bytes at both times")
    common(sub.add_parser("procstat"), broker=False)
    p = common(sub.add_parser("evict"), broker=False)
    p.add_argument("--dir", required=True)
    p = sub.add_parser("cache")
    p.add_argument("--dir", required=True)
    common(sub.add_parser("note"), broker=False)

    p = sub.add_parser("report")
    p.add_argument("--results", required=True)
    p.add_argument("--out")

    args = ap.parse_args()
    fn = globals()["cmd_" + args.cmd]
    try:
        res = fn(args)
        code = EXIT_OK if res is None or res.get("ok") else EXIT_FAIL
    except RssExceeded as e:
        res, code = {"ok": False, "error": str(e), "rss_stop": True}, EXIT_RSS
    except Exception as e:  # report, never hang: the shell decides what to do
        res, code = {"ok": False, "error": f"{type(e).__name__}: {e}"}, EXIT_FAIL
    if res is None:
        return code
    for kv in args.tag:
        k, _, v = kv.partition("=")
        try:
            res[k] = json.loads(v)
        except ValueError:
            res[k] = v
    line = json.dumps(res, sort_keys=True)
    print(line)
    if args.log:
        with open(args.log, "a") as f:
            f.write(line + "\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
