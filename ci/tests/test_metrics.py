"""The Prometheus endpoint (--metrics-listen) of the real binary, scraped
over HTTP as Prometheus would: `promtool check metrics` (Debian's
prometheus package, installed by ci/setup.sh) accepts the exposition, and
the values agree with what the test did — records produced per partition,
requests per API, a consumer group's lag, a malformed request, the log start
after DeleteRecords."""

import re
import shutil
import socket
import struct
import subprocess
import urllib.request

import pytest
from confluent_kafka import TopicPartition

from apache_kafka import free_port
from util import admin, consumer, create_topic, producer, unique_topic, wait_until

PROMTOOL = shutil.which("promtool")


def scrape(port):
    with urllib.request.urlopen("http://127.0.0.1:%d/metrics" % port, timeout=10) as r:
        assert r.status == 200
        assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        return r.read().decode()


def samples(text):
    """{(name, frozenset(labels)): value} of every sample line."""
    out = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = re.match(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$', line)
        assert m, "not a sample line: %r" % line
        labels = frozenset(re.findall(r'([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
        out[(m.group(1), labels)] = float(m.group(3))
    return out


def value(s, name, **labels):
    return s[(name, frozenset((k, str(v)) for k, v in labels.items()))]


@pytest.mark.skipif(PROMTOOL is None, reason="promtool missing (ci/setup.sh installs it)")
def test_scrape_passes_promtool_and_matches_what_happened(make_broker):
    port = free_port()
    b = make_broker(lambda b: ["--metrics-listen", "127.0.0.1:%d" % port])
    topic = unique_topic("metrics")
    create_topic(b.bootstrap, topic, 2)
    p = producer(b.bootstrap, acks="all")
    for i in range(30):
        p.produce(topic, key=b"k%d" % i, value=b"v%d" % i, partition=i % 2)
    assert p.flush(30) == 0
    group = unique_topic("metrics-g")
    c = consumer(b.bootstrap, **{"group.id": group})
    c.commit(offsets=[TopicPartition(topic, 0, 4), TopicPartition(topic, 1, 15)], asynchronous=False)
    c.close()
    a = admin(b.bootstrap)
    [res] = a.delete_records([TopicPartition(topic, 0, 3)]).values()
    assert res.result(timeout=30).low_watermark == 3
    # A frame with an unknown API key: the connection is closed and counted.
    with socket.create_connection(("127.0.0.1", b.port), timeout=10) as s:
        s.sendall(struct.pack(">ih h i h", 10, 999, 0, 1, -1))
        assert s.recv(10) == b""

    text = scrape(port)
    r = subprocess.run([PROMTOOL, "check", "metrics"], input=text.encode(), capture_output=True, timeout=60)
    assert r.returncode == 0, "promtool: %s %s" % (r.stdout.decode(), r.stderr.decode())

    s = samples(text)
    for q in range(2):
        assert value(s, "brook_partition_log_end_offset", topic=topic, partition=q) == 15
        assert value(s, "brook_partition_high_watermark", topic=topic, partition=q) == 15
        assert value(s, "brook_partition_size_bytes", topic=topic, partition=q) > 0
    assert value(s, "brook_partition_log_start_offset", topic=topic, partition=0) == 3
    assert value(s, "brook_partition_log_start_offset", topic=topic, partition=1) == 0
    assert value(s, "brook_consumer_group_lag", group=group, topic=topic, partition=0) == 11
    assert value(s, "brook_consumer_group_lag", group=group, topic=topic, partition=1) == 0
    assert value(s, "brook_consumer_group_committed_offset", group=group, topic=topic, partition=0) == 4
    assert value(s, "brook_consumer_group_committed_offset", group=group, topic=topic, partition=1) == 15
    assert value(s, "brook_requests_total", api="Produce") >= 1
    assert value(s, "brook_requests_total", api="DeleteRecords") == 1
    assert value(s, "brook_requests_total", api="OffsetCommit") == 1
    assert value(s, "brook_request_duration_seconds_count", api="DeleteRecords") == 1
    assert value(s, "brook_request_duration_seconds_bucket", api="DeleteRecords", le="+Inf") == 1
    assert value(s, "brook_request_bytes_total", api="Produce") > 30 * 4
    assert value(s, "brook_bad_requests_total") == 1
    assert value(s, "brook_log_flush_duration_seconds_count") >= 1
    assert value(s, "brook_under_replicated_partitions") == 0
    assert value(s, "brook_offline_partitions") == 0
    assert value(s, "brook_leader_partitions") == value(s, "brook_partitions") >= 2
    # A later scrape counts what happened since: one more client connection.
    accepted = value(s, "brook_connections_accepted_total")
    assert accepted >= 4, accepted  # producer, consumer, admin client, the raw socket
    with socket.create_connection(("127.0.0.1", b.port), timeout=10):
        wait_until(lambda: value(samples(scrape(port)), "brook_connections_accepted_total") == accepted + 1,
                   10, what="the new connection counted")
    try:
        urllib.request.urlopen("http://127.0.0.1:%d/other" % port, timeout=10)
        raise AssertionError("/other answered")
    except urllib.error.HTTPError as e:
        assert e.code == 404


def test_json_logs_one_object_per_line(make_broker):
    """--log-format json: every line the broker writes is one JSON object
    with its time, level, message and fields."""
    import json
    b = make_broker(lambda b: ["--log-format", "json"])
    create_topic(b.bootstrap, unique_topic("json-logs"), 1)
    b.terminate()
    text = b.log_text()
    own = [l for l in text.splitlines() if l and not l.startswith("==== test harness")]
    events = [json.loads(l) for l in own]
    assert events, text
    for e in events:
        assert {"timestamp", "level", "message", "target"} <= set(e), e
    ready = [e for e in events if e["message"] == "brook ready"]
    assert len(ready) == 1 and ready[0]["shards"] >= 1, ready
    assert any(e["message"] == "created topic" and e["partitions"] == 1 for e in events), own[-5:]


def test_grafana_dashboard_uses_only_exposed_metrics(make_broker):
    """net/grafana/brook-dashboard.json reads, and every metric its queries
    name is one the broker exposes (so the dashboard stays true)."""
    import json
    from pathlib import Path
    dash = json.loads((Path(__file__).resolve().parents[2] / "net" / "grafana" / "brook-dashboard.json").read_text())
    port = free_port()
    b = make_broker(lambda b: ["--metrics-listen", "127.0.0.1:%d" % port])
    families = set(re.findall(r"^# TYPE (\S+) ", scrape(port), re.M))
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert len(exprs) >= 12
    for e in exprs:
        for name in re.findall(r"\bbrook_[a-z_]+", e):
            base = re.sub(r"_(bucket|sum|count)$", "", name)
            assert name in families or base in families, (name, e)
