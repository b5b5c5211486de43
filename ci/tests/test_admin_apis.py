"""CreatePartitions, DescribeConfigs and DescribeCluster through confluent-kafka's
AdminClient (librdkafka) against the real binary. The Java admin client and
Kafka's own tools cover the same APIs in test_java_client.py and
test_kafka_tools.py."""

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import ConfigResource, NewPartitions, NewTopic, ResourceType

from util import admin, check_keyed, consume_all, create_topic, produce_keyed, producer, topic_partitions
from util import unique_topic, wait_until


def test_create_partitions_grows_a_topic_and_survives_restart(broker):
    topic = unique_topic("grow")
    create_topic(broker.bootstrap, topic, 2)
    p = producer(broker.bootstrap)
    first = produce_keyed(p, topic, 300)
    a = admin(broker.bootstrap)
    a.create_partitions([NewPartitions(topic, 5)], request_timeout=15)[topic].result(30)
    wait_until(lambda: topic_partitions(broker.bootstrap, topic) == 5, 15, what="5 partitions")
    # Not an increase: Kafka's INVALID_PARTITIONS, and nothing changes.
    for count in (5, 3):
        f = a.create_partitions([NewPartitions(topic, count)], request_timeout=15)[topic]
        try:
            f.result(30)
            raise AssertionError("create_partitions(%d) succeeded" % count)
        except KafkaException as e:
            assert e.args[0].code() == KafkaError.INVALID_PARTITIONS, e
    # validate_only changes nothing either.
    a.create_partitions([NewPartitions(topic, 9)], validate_only=True, request_timeout=15)[topic].result(30)
    assert topic_partitions(broker.bootstrap, topic) == 5
    p = producer(broker.bootstrap)
    second = produce_keyed(p, topic, 700, start=300)
    assert {part for part, _ in second.acked.values()} == set(range(5)), "new partitions unused"
    broker.restart()
    assert topic_partitions(broker.bootstrap, topic) == 5
    acked = dict(first.acked)
    acked.update(second.acked)
    check_keyed(consume_all(broker.bootstrap, topic, 5), 1000, acked=acked)


def test_create_partitions_unknown_topic(module_broker):
    a = admin(module_broker.bootstrap)
    f = a.create_partitions([NewPartitions(unique_topic("nope"), 4)], request_timeout=15)
    try:
        list(f.values())[0].result(30)
        raise AssertionError("create_partitions of an unknown topic succeeded")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, e


def test_describe_configs_topic_and_broker(module_broker):
    topic = unique_topic("cfg")
    a = admin(module_broker.bootstrap)
    a.create_topics([NewTopic(topic, 1, 1, config={"retention.ms": "123456"})])[topic].result(30)
    res = ConfigResource(ResourceType.TOPIC, topic)
    configs = a.describe_configs([res], request_timeout=15)[res].result(30)
    assert configs["retention.ms"].value == "123456"
    assert configs["retention.ms"].source == 1, configs["retention.ms"]  # DYNAMIC_TOPIC_CONFIG
    assert configs["segment.bytes"].value == str(1 << 30)
    assert configs["segment.bytes"].source == 5  # DEFAULT_CONFIG
    assert configs["cleanup.policy"].value == "delete"
    missing = ConfigResource(ResourceType.TOPIC, unique_topic("missing"))
    try:
        a.describe_configs([missing], request_timeout=15)[missing].result(30)
        raise AssertionError("describe_configs of a missing topic succeeded")
    except KafkaException as e:
        assert e.args[0].code() == KafkaError.UNKNOWN_TOPIC_OR_PART, e
    b = ConfigResource(ResourceType.BROKER, "1")
    broker_cfg = a.describe_configs([b], request_timeout=15)[b].result(30)
    assert broker_cfg["node.id"].value == "1"
    assert broker_cfg["advertised.listeners"].value == "PLAINTEXT://%s" % module_broker.bootstrap
    assert broker_cfg["num.partitions"].value == "3"


def test_describe_cluster(module_broker):
    a = admin(module_broker.bootstrap)
    desc = a.describe_cluster(request_timeout=15).result(30)
    assert [(n.id, n.host, n.port) for n in desc.nodes] == [(1, module_broker.host, module_broker.port)]
    assert desc.controller.id == 1
    assert desc.cluster_id and len(desc.cluster_id) >= 16, desc.cluster_id


def test_list_offsets_max_timestamp_is_the_record_not_the_batch(module_broker):
    """ListOffsets -3 (KIP-734): the first record carrying the partition's max
    timestamp, inside a batch of many records, and that record's timestamp."""
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec
    topic = unique_topic("maxts")
    create_topic(module_broker.bootstrap, topic, 2)
    base = 1_700_000_000_000
    # One batch per partition (long linger); the max timestamp sits at offset 37
    # and again at 80, earlier and later records are older.
    stamps = [base + i for i in range(100)]
    stamps[37] = stamps[80] = base + 10_000
    p = producer(module_broker.bootstrap, **{"linger.ms": 200})
    for i, ts in enumerate(stamps):
        p.produce(topic, partition=0, key=b"k%d" % i, value=b"v", timestamp=ts)
    assert p.flush(30) == 0
    a = admin(module_broker.bootstrap)
    asks = {TopicPartition(topic, 0): OffsetSpec.max_timestamp(), TopicPartition(topic, 1): OffsetSpec.max_timestamp()}
    got = {tp.partition: f.result(30) for tp, f in a.list_offsets(asks, request_timeout=15).items()}
    assert (got[0].offset, got[0].timestamp) == (37, base + 10_000), got[0]
    assert (got[1].offset, got[1].timestamp) == (-1, -1), got[1]


def test_segments_roll_seal_and_recover(broker):
    """Small segments roll dozens of times under load; each sealed segment gets
    its index files (written off the shard's thread), and after a restart every
    record is there, in order, once."""
    import os
    topic = unique_topic("roll")
    a = admin(broker.bootstrap)
    a.create_topics([NewTopic(topic, 2, 1, config={"segment.bytes": "16384"})])[topic].result(30)
    p = producer(broker.bootstrap, **{"linger.ms": 1, "batch.size": 4096})
    dr = produce_keyed(p, topic, 6000)
    assert not dr.errors, dr.errors[:5]
    for part in range(2):
        d = os.path.join(broker.data_dir, "%s-%d" % (topic, part))
        logs = sorted(f for f in os.listdir(d) if f.endswith(".log"))
        assert len(logs) >= 5, "expected many segments in %s: %r" % (d, logs)
        sealed = logs[:-1]
        wait_until(lambda: all(os.path.exists(os.path.join(d, f[:-4] + ".index")) for f in sealed), 30,
                   what="index files of the sealed segments of %s" % d)
    broker.restart()
    check_keyed(consume_all(broker.bootstrap, topic, 2), 6000, acked=dr.acked)


def test_dynamic_broker_configs_apply_at_once_and_survive_a_restart(broker):
    """kafka-configs changes broker settings at run time, as a cluster-wide
    default and for this broker (Kafka's precedence: the broker's own value
    over the default over the static one). A topic without overrides takes
    them at once (its next segment rolls at the new size; DescribeConfigs
    names the dynamic source), the values are stored and come back after a
    restart, deleting one restores the static value, and a static setting
    is refused with Kafka's error."""
    from test_kafka_tools import tool
    bs = broker.bootstrap
    configs = ("kafka-configs", "--bootstrap-server", bs)
    r = tool(*configs, "--alter", "--entity-type", "brokers", "--entity-default",
             "--add-config", "log.retention.ms=3600000,log.segment.bytes=4194304")
    assert "Completed updating default config for brokers in the cluster." in r.out, r
    r = tool(*configs, "--alter", "--entity-type", "brokers", "--entity-name", "1",
             "--add-config", "log.segment.bytes=65536,follower.replication.throttled.rate=5000000")
    assert "Completed updating config for broker 1." in r.out, r
    r = tool(*configs, "--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert "Dynamic configs for broker 1 are:" in r.out, r
    assert ("log.segment.bytes=65536 sensitive=false synonyms={DYNAMIC_BROKER_CONFIG:log.segment.bytes=65536, "
            "DYNAMIC_DEFAULT_BROKER_CONFIG:log.segment.bytes=4194304, "
            "STATIC_BROKER_CONFIG:log.segment.bytes=1073741824}") in r.out, r
    assert "follower.replication.throttled.rate=5000000" in r.out, r
    r = tool(*configs, "--describe", "--entity-type", "brokers", "--entity-default")
    assert "log.retention.ms=3600000 sensitive=false synonyms={DYNAMIC_DEFAULT_BROKER_CONFIG:log.retention.ms=3600000}" in r.out, r

    # A static setting: Kafka's answer, nothing stored.
    r = tool(*configs, "--alter", "--entity-type", "brokers", "--entity-name", "1",
             "--add-config", "log.dirs=/elsewhere", check=False)
    assert r.rc != 0 and "Cannot update these configs dynamically: Set(log.dirs)" in r.out + r.err, r
    r = tool(*configs, "--alter", "--entity-type", "brokers", "--entity-name", "1",
             "--add-config", "log.segment.bytes=lots", check=False)
    assert r.rc != 0 and "InvalidConfigurationException" in r.out + r.err, r

    def topic_configs(topic):
        a = admin(bs)
        res = ConfigResource(ResourceType.TOPIC, topic)
        return a.describe_configs([res], request_timeout=15)[res].result(30)

    topic = unique_topic("dyn")
    create_topic(bs, topic, 1)
    c = topic_configs(topic)
    assert (c["segment.bytes"].value, c["segment.bytes"].source) == ("65536", 2), c["segment.bytes"]
    assert (c["retention.ms"].value, c["retention.ms"].source) == ("3600000", 3), c["retention.ms"]
    p = producer(bs, **{"linger.ms": 1, "batch.size": 8192})
    dr = produce_keyed(p, topic, 6000)
    assert not dr.errors, dr.errors[:5]
    import os
    d = os.path.join(broker.data_dir, "%s-0" % topic)
    logs = [f for f in os.listdir(d) if f.endswith(".log")]
    assert len(logs) >= 4, "64 KiB segments expected from the dynamic log.segment.bytes: %r" % logs

    broker.restart()
    r = tool(*configs, "--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert "log.segment.bytes=65536" in r.out and "follower.replication.throttled.rate=5000000" in r.out, r
    check_keyed(consume_all(bs, topic, 1), 6000, acked=dr.acked)

    # Deleting the broker's own values: the default applies again, then the static one.
    r = tool(*configs, "--alter", "--entity-type", "brokers", "--entity-name", "1",
             "--delete-config", "log.segment.bytes,follower.replication.throttled.rate")
    assert "Completed updating config for broker 1." in r.out, r
    c = topic_configs(topic)
    assert (c["segment.bytes"].value, c["segment.bytes"].source) == ("4194304", 3), c["segment.bytes"]
    tool(*configs, "--alter", "--entity-type", "brokers", "--entity-default",
         "--delete-config", "log.retention.ms,log.segment.bytes")
    c = topic_configs(topic)
    assert (c["segment.bytes"].value, c["segment.bytes"].source) == (str(1 << 30), 5), c["segment.bytes"]
    r = tool(*configs, "--describe", "--entity-type", "brokers", "--entity-name", "1")
    assert "Dynamic configs for broker 1 are:" in r.out and "synonyms" not in r.out, r
