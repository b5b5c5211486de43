"""A partition that cannot be opened or created: creating a topic is all or
nothing, a broker always starts on the data it wrote (a partition it cannot open
stays offline and the others serve), and a low file-descriptor limit costs
errors on the partitions it cannot write, never a broker that will not start."""

import pytest

import kproto as kp
from conftest import Broker, running
from util import admin, consume_all, create_topic, produce_keyed, producer, unique_topic

KAFKA_STORAGE_ERROR = 56
LEADER_NOT_AVAILABLE = 5


def partition_dir(broker, topic, p):
    return broker.data_dir / ("%s-%d" % (topic, p))


def one_record(i):
    return kp.encode_batch([(b"k%d" % i, b"v%d" % i)])


def test_create_topics_is_all_or_nothing(broker):
    topic = unique_topic("allornothing")
    # partition 2's directory cannot be made: a file sits where it would go
    blocker = partition_dir(broker, topic, 2)
    blocker.write_bytes(b"in the way")
    a = admin(broker.bootstrap)
    from confluent_kafka.admin import NewTopic
    fut = a.create_topics([NewTopic(topic, 4, 1)], operation_timeout=30)[topic]
    with pytest.raises(Exception) as failed:
        fut.result(60)
    assert "storage" in str(failed.value).lower() or "File exists" in str(failed.value), failed.value
    # nothing half-done: not in the catalog, no directory of its other partitions
    assert topic not in a.list_topics(timeout=10).topics
    for p in (0, 1, 3):
        assert not partition_dir(broker, topic, p).exists(), "partition %d left behind" % p
    broker.restart()
    assert topic not in admin(broker.bootstrap).list_topics(timeout=10).topics
    # with the obstacle gone the same topic is created and works
    blocker.unlink()
    create_topic(broker.bootstrap, topic, 4)
    dr = produce_keyed(producer(broker.bootstrap, acks="all"), topic, 400)
    assert not dr.errors and len(dr.acked) == 400
    got = consume_all(broker.bootstrap, topic, 4)
    assert sorted(k for recs in got.values() for _, k, _, _ in recs) == sorted(b"k%d" % i for i in range(400))


def test_unopenable_partition_stays_offline_and_the_rest_serve(broker):
    topic = unique_topic("offline")
    create_topic(broker.bootstrap, topic, 3)
    dr = produce_keyed(producer(broker.bootstrap, acks="all"), topic, 300)
    assert not dr.errors
    acked = dict(dr.acked)
    assert broker.terminate() == 0
    # partition 1 becomes impossible to open: its directory is now a file
    d = partition_dir(broker, topic, 1)
    for f in d.iterdir():
        f.unlink()
    d.rmdir()
    d.write_bytes(b"not a directory")
    broker.start()
    assert "cannot open partition" in broker.log_text()

    md = admin(broker.bootstrap).list_topics(topic, timeout=10).topics[topic].partitions
    assert md[1].leader == -1 and md[1].error is not None and md[1].error.code() == LEADER_NOT_AVAILABLE, md[1]
    assert md[0].leader >= 0 and md[2].leader >= 0 and md[0].error is None and md[2].error is None
    with kp.Conn(broker.bootstrap) as c:
        assert c.produce(topic, 1, one_record(0))[0] == KAFKA_STORAGE_ERROR
        assert c.produce(topic, 0, one_record(1))[0] == kp.NONE
        assert c.produce(topic, 2, one_record(2))[0] == kp.NONE
    # every record acknowledged on the healthy partitions is there, in order
    for p in (0, 2):
        with kp.Conn(broker.bootstrap) as c:
            f = c.fetch(topic, p, 0, max_wait_ms=100, max_bytes=10 << 20)
            assert f["error"] == 0, f
            recs = [(o, k) for b in kp.decode_batches(f["records"]) for (o, _ts, k, _v) in b["records"]]
        want = sorted((o, k) for k, (pp, o) in acked.items() if pp == p)
        assert recs[:len(want)] == want, "partition %d lost records" % p
        assert recs[len(want):] == [(len(want), b"k%d" % (1 if p == 0 else 2))]


def test_a_low_fd_limit_refuses_writes_not_restarts(request, tmp_path_factory):
    b = Broker(tmp_path_factory.mktemp("brook-fds"))
    plain = b.args

    def limited():
        return ["prlimit", "--nofile=200:200", "--"] + plain()

    b.args = limited
    gen = running(request, b, request.node)
    broker = next(gen)
    try:
        topics = [unique_topic("fds%d" % i) for i in range(3)]
        for t in topics:
            create_topic(broker.bootstrap, t, 100)  # 300 partitions, under 200 descriptors
        acked, refused = [], 0
        with kp.Conn(broker.bootstrap) as c:
            for t in topics:
                for p in range(100):
                    err, base = c.produce(t, p, one_record(p))
                    if err == kp.NONE:
                        acked.append((t, p, base))
                    else:
                        assert err == KAFKA_STORAGE_ERROR, (t, p, err)
                        refused += 1
        assert acked, "no partition could be written"
        assert refused, "300 partitions written under 200 descriptors: the limit was never reached"
        broker.restart()
        md = admin(broker.bootstrap).list_topics(timeout=10).topics
        for t in topics:
            assert len(md[t].partitions) == 100
        with kp.Conn(broker.bootstrap) as c:
            # each partition read from disk holds a descriptor: read back 60
            for t, p, base in acked[:30] + acked[-30:]:
                f = c.fetch(t, p, 0, max_wait_ms=50)
                assert f["error"] == 0, (t, p, f["error"])
                recs = [(o, k) for bt in kp.decode_batches(f["records"]) for (o, _ts, k, _v) in bt["records"]]
                assert recs == [(base, b"k%d" % p)], (t, p, recs)
        assert "file descriptor limit" in broker.log_text()
    finally:
        for _ in gen:
            pass
