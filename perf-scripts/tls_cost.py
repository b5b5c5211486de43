#!/usr/bin/env python3
"""What TLS costs: 1 KiB records through the same broker over its PLAINTEXT
and its SSL listener, in one run.

Makes a throwaway CA and server certificate (openssl), starts a fresh Brook
(release binary, defaults: fsync before ack) with two listeners, PLAINTEXT
and SSL (rustls), and runs brook-bench against each in turn, --rounds times
(plain, tls, plain, tls, ...), on a fresh topic per run:

  max:  --mode produce, 1 KiB, acks=all, 8 partitions, closed loop;
  both: --mode both at --rate records/s (publish and end-to-end latency).

For each run: records/s, MB/s, publish and end-to-end p50/p99, and the
broker's CPU (utime+stime from /proc over the run). Bounded: every load has
a fixed duration; the broker and its data are removed at the end.

    ci/.venv/bin/python perf-scripts/tls_cost.py --duration 15 --rounds 2
"""

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(REPO, "target", "release", "brook")
BENCH = os.path.join(REPO, "target", "release", "brook-bench")
TICKS = os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def openssl(*args, cwd):
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_certs(d):
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "ca.key", cwd=d)
    openssl("req", "-x509", "-new", "-key", "ca.key", "-subj", "/CN=bench CA", "-days", "1",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
            "-out", "ca.pem", cwd=d)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", "server.key", cwd=d)
    openssl("req", "-new", "-key", "server.key", "-subj", "/CN=localhost", "-out", "server.csr", cwd=d)
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-days", "1", "-extfile", "ext", "-out", "server.pem", cwd=d)
    ks = os.path.join(d, "keystore.pem")
    with open(ks, "w") as f:
        f.write(open(os.path.join(d, "server.key")).read() + open(os.path.join(d, "server.pem")).read())
    return os.path.join(d, "ca.pem"), ks


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--duration", type=int, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--rate", type=int, default=100000, help="1 KiB records/s of the fixed-rate runs")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="tls-cost-", dir=os.path.expanduser("~"))
    proc = None
    try:
        ca, keystore = make_certs(root)
        plain, tls = free_port(), free_port()
        cfg = os.path.join(root, "brook.toml")
        with open(cfg, "w") as f:
            f.write('"listeners" = "PLAINTEXT://127.0.0.1:%d,SSL://127.0.0.1:%d"\n' % (plain, tls))
            f.write('"ssl.keystore.location" = "%s"\n' % keystore)
        log_path = os.path.join(root, "brook.log")
        log = open(log_path, "ab")
        proc = subprocess.Popen([BIN, "--data-dir", os.path.join(root, "data"), "--config", cfg],
                                stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 60
        while b"brook ready" not in open(log_path, "rb").read():
            if time.time() > deadline or proc.poll() is not None:
                raise SystemExit("brook did not start:\n" + open(log_path).read()[-2000:])
            time.sleep(0.05)
        n = 0
        for r in range(a.rounds):
            for mode in ("max", "both"):
                for name, port, extra in (("plain", plain, []), ("tls", tls, ["--tls-ca", ca])):
                    n += 1
                    out = os.path.join(root, "run%d.json" % n)
                    load = ["--mode", "produce"] if mode == "max" else ["--mode", "both", "--rate", str(a.rate)]
                    cmd = [BENCH, "--bootstrap", "127.0.0.1:%d" % port, "--json", out, *extra, *load,
                           "--topic", "tls-%d" % n, "--partitions", "8", "--record-size", "1024",
                           "--acks", "all", "--warmup", "3s", "--duration", "%ds" % a.duration]
                    c0, t0 = cpu_seconds(proc.pid), time.time()
                    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   timeout=a.duration + 120)
                    cpu = (cpu_seconds(proc.pid) - c0) / (time.time() - t0) * 100
                    res = json.load(open(out))
                    p, pub = res["produce"], res["publish"]["latency_ms"]
                    e2e = (res.get("end_to_end") or {}).get("latency_ms") if mode == "both" else None
                    print("round %d %-4s %-5s %9.0f rec/s %7.1f MB/s  publish p50 %6.2f p99 %7.2f ms"
                          "  e2e p50 %6s p99 %7s ms  broker CPU %4.0f%%" % (
                              r, mode, name, p["records_per_sec"], p["records_per_sec"] * 1024 / 1e6,
                              pub["p50"], pub["p99"], "%.2f" % e2e["p50"] if e2e else "-",
                              "%.2f" % e2e["p99"] if e2e else "-", cpu), flush=True)
    finally:
        if proc and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(60)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
