"""Command-line flags of the broker: --advertise, --default-partitions."""

from util import admin, check_keyed, consume_all, create_topic, produce_keyed, producer, unique_topic


def test_advertise_address(make_broker):
    b = make_broker(lambda b: ["--advertise", "localhost:%d" % b.port])
    md = admin(b.bootstrap).list_topics(timeout=10)
    assert {k: (v.host, v.port) for k, v in md.brokers.items()} == {1: ("localhost", b.port)}
    # clients follow the advertised address and still work
    topic = unique_topic("adv")
    create_topic(b.bootstrap, topic, 2)
    dr = produce_keyed(producer(b.bootstrap, acks="all"), topic, 100)
    check_keyed(consume_all(b.bootstrap, topic, 2), 100, acked=dr.acked)


def test_default_partitions_flag(make_broker):
    b = make_broker(lambda b: ["--default-partitions", "7"])
    topic = unique_topic("defparts")
    p = producer(b.bootstrap, acks="all")
    p.produce(topic, key=b"k0", value=b"v")  # auto-creates the topic via Metadata
    assert p.flush(30) == 0
    md = admin(b.bootstrap).list_topics(timeout=10)
    assert len(md.topics[topic].partitions) == 7, md.topics[topic].partitions


def test_ready_line_means_serving(broker):
    """`brook ready` is the contract for "serving": a connection made right
    after it must be accepted and answered, on every (re)start."""
    import kproto as kp
    for i in range(10):
        if i:
            broker.restart(kill=(i % 2 == 1))
        with kp.Conn(broker.bootstrap) as c:
            err, _ = c.api_versions()
            assert err == 0


def test_second_broker_on_the_same_data_dir_is_refused(broker, tmp_path):
    """The data directory is locked: a second broker on it (another port) exits
    with a clear error instead of writing the same log, and the first serves on."""
    import subprocess
    from conftest import BROOK_BIN, free_port
    out = subprocess.run([str(BROOK_BIN), "--data-dir", str(broker.data_dir), "--listen",
                          "127.0.0.1:%d" % free_port(), "--shards", "1"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "in use by another broker" in out.stderr, out.stderr[-2000:]
    topic = unique_topic("locked")
    create_topic(broker.bootstrap, topic, 1)
    dr = produce_keyed(producer(broker.bootstrap, acks="all"), topic, 50)
    check_keyed(consume_all(broker.bootstrap, topic, 1), 50, acked=dr.acked)
