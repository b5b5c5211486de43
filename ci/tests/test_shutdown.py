"""SIGTERM: clean exit 0 within 10 s, nothing acknowledged is lost."""

import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from confluent_kafka import TopicPartition, OFFSET_BEGINNING

from conftest import STOP_TIMEOUT
from util import (check_keyed, consume_all, consumer, create_topic, produce_keyed, producer, spawn,
                  unique_topic, wait_until)
from test_crash import count_lines, read_acks, verify_log

HELPER = str(Path(__file__).resolve().parent / "crash_producer.py")


def test_sigterm_then_restart_keeps_records(broker):
    topic = unique_topic("shut")
    create_topic(broker.bootstrap, topic, 3)
    p = producer(broker.bootstrap, acks="all", **{"compression.type": "gzip"})
    dr = produce_keyed(p, topic, 5000)
    assert not dr.errors

    # an idle consumer long-polling the tail keeps a connection (and a parked fetch) open
    c = consumer(broker.bootstrap, **{"fetch.wait.max.ms": 5000, "enable.partition.eof": False})
    c.assign([TopicPartition(topic, 0, 5000)])
    stop = threading.Event()
    th = threading.Thread(target=lambda: [c.poll(0.2) for _ in iter(stop.is_set, True)], daemon=True)
    th.start()
    try:
        time.sleep(0.5)
        t0 = time.monotonic()
        rc = broker.terminate(timeout=STOP_TIMEOUT)
        took = time.monotonic() - t0
        assert rc == 0, "exit status %r after SIGTERM (%.1fs; None = still running after %ds)" % (
            rc, took, STOP_TIMEOUT)
    finally:
        stop.set()
        th.join(10)
        c.close()

    broker.start()
    check_keyed(consume_all(broker.bootstrap, topic, 3), 5000, acked=dr.acked)
    # new records continue after the old ones
    p2 = producer(broker.bootstrap, acks="all")
    dr2 = produce_keyed(p2, topic, 1000, start=5000)
    assert not dr2.errors
    acked = dict(dr.acked)
    acked.update(dr2.acked)
    check_keyed(consume_all(broker.bootstrap, topic, 3), 6000, acked=acked)


def test_sigterm_under_load_loses_no_acknowledged_record(broker, procs, tmp_path):
    topic = unique_topic("shut-load")
    create_topic(broker.bootstrap, topic, 3)
    ack_file = str(tmp_path / "acks.txt")
    out = open(tmp_path / "producer.out", "w+")
    proc = spawn(procs, [sys.executable, HELPER, broker.bootstrap, topic, ack_file, "c0", "500000", "60", "5000"],
                 stdout=out, stderr=subprocess.STDOUT)
    wait_until(lambda: count_lines(ack_file) >= 2000 or proc.poll() is not None, 30, what="acknowledgements")
    rc = broker.terminate(timeout=STOP_TIMEOUT)
    assert rc == 0, "exit status %r after SIGTERM under load" % rc
    # stop the producer while the broker is down; what it could not deliver is not acknowledged
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    acked, errors = read_acks(ack_file)
    assert acked, "nothing acknowledged"
    broker.start()
    verify_log(broker, topic, acked, ["c0"])


def test_sigterm_after_many_client_sessions(broker):
    """Clients that connected and went away must not hold up shutdown (a
    connection left in CLOSE-WAIT inside the broker delays exit by its grace
    period)."""
    from test_kcat import kcat_consume, kcat_produce, lines_for
    for n in range(4):
        topic = unique_topic("shut-kcat")
        create_topic(broker.bootstrap, topic, 4)
        kcat_produce(broker, topic, lines_for(0, 500), "-z", "gzip")
        assert len(kcat_consume(broker, topic, "-o", "beginning")) == 500
        assert len(kcat_consume(broker, topic, "-p", "0", "-o", "-10")) == 10
    conns = broker.connections()
    t0 = time.monotonic()
    rc = broker.terminate(timeout=STOP_TIMEOUT)
    assert rc == 0, "exit status %r after %.1fs (None = still running after %ds); connections before SIGTERM:\n%s" % (
        rc, time.monotonic() - t0, STOP_TIMEOUT, conns)
    broker.start()


def test_cluster_id_stable_across_connections_and_restart(broker):
    from util import admin
    ids = set()
    for _ in range(8):
        ids.add(admin(broker.bootstrap).list_topics(timeout=10).cluster_id)
    assert len(ids) == 1 and None not in ids, ids
    broker.restart()
    after = admin(broker.bootstrap).list_topics(timeout=10).cluster_id
    assert after in ids, "cluster id changed across restart: %r -> %r" % (ids, after)
