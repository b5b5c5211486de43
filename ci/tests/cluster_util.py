"""A Brook cluster for tests: three (or n) brokers on loopback, started as
the README shows (--node-id, --voters, --controller-listen), and the checks
the cluster tests share."""

import contextlib

import pytest
from confluent_kafka import KafkaException
from confluent_kafka.admin import NewTopic

from apache_kafka import free_port
from conftest import Broker, tail
from util import admin, wait_until

SESSION_MS = 3000


class Cluster:
    def __init__(self, root, n=3, session_ms=SESSION_MS, brokers_only=0):
        """`n` voters (nodes 1..n), then `brokers_only` nodes started with
        --voters but no --controller-listen (nodes n+1..)."""
        self.brokers = []
        ctl = [free_port() for _ in range(n)]
        voters = ",".join("%d@127.0.0.1:%d" % (i + 1, ctl[i]) for i in range(n))
        for i in range(n + brokers_only):
            b = Broker(root / ("node%d" % (i + 1)))
            cfg = b.workdir / "brook.toml"
            cfg.write_text('"broker.session.timeout.ms" = %d\n'
                           '"leader.imbalance.check.interval.seconds" = 2\n' % session_ms)
            b.extra_args = ["--node-id", str(i + 1), "--voters", voters,
                            "--config", str(cfg), "--no-pin"]
            if i < n:
                b.extra_args += ["--controller-listen", "127.0.0.1:%d" % ctl[i]]
            b.node = i + 1
            self.brokers.append(b)

    def node(self, n):
        return self.brokers[n - 1]

    def bootstrap_node(self):
        """A live broker to ask."""
        return next(b for b in self.brokers if b.alive())

    @property
    def bootstrap(self):
        return ",".join(b.bootstrap for b in self.brokers if b.alive())

    def live_brokers(self, via):
        try:
            md = admin(via.bootstrap).list_topics(timeout=10)
        except KafkaException as e:
            return "error: %s" % e
        return sorted(md.brokers)

    def wait_brokers(self, nodes, via, timeout=30):
        wait_until(lambda: self.live_brokers(via) == sorted(nodes), timeout,
                   what="brokers %r in %s's metadata" % (nodes, via.bootstrap))

    def leaders(self, topic, via):
        md = admin(via.bootstrap).list_topics(topic, timeout=10)
        t = md.topics[topic]
        return {p.id: p.leader for p in t.partitions.values()}


@contextlib.contextmanager
def cluster(tmp_path, request, **kw):
    with cluster_of(Cluster(tmp_path, **kw), request) as c:
        yield c


@contextlib.contextmanager
def cluster_of(c, request):
    """Starts the brokers of `c` (a Cluster its caller may have adjusted),
    waits for all of them, and stops them on leaving."""
    try:
        for b in c.brokers:
            b.start()
        c.wait_brokers([b.node for b in c.brokers], c.node(1))
        yield c
    except BaseException:
        for b in c.brokers:
            print("---- node %d log ----\n%s" % (b.node, tail(b.log_path, 60)))
        raise
    finally:
        errors = []
        for b in c.brokers:
            err = b.stop_for_teardown()
            if err:
                errors.append("node %d: %s" % (b.node, err))
        if errors and not request.session.testsfailed:
            pytest.fail("; ".join(errors))


def create(c, topic, partitions, via, rf=3, config=None):
    a = admin(via.bootstrap)
    fs = a.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=rf,
                                   config=config or {})],
                         operation_timeout=15, request_timeout=15)
    fs[topic].result(timeout=30)


def preferred(c, topic, via):
    """[(leader, replicas in preference order, isr)] per partition."""
    md = admin(via.bootstrap).list_topics(topic, timeout=10)
    return [(p.leader, list(p.replicas), p.isrs) for p in md.topics[topic].partitions.values()]


def partitions_of(c, topic, via):
    """{partition: (leader, replicas, isr)}."""
    md = admin(via.bootstrap).list_topics(topic, timeout=10)
    return {p.id: (p.leader, sorted(p.replicas), sorted(p.isrs))
            for p in md.topics[topic].partitions.values()}
