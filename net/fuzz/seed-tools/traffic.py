"""Real-client traffic against a running Brook, to be captured as fuzz seeds.

Run with ci/.venv/bin/python traffic.py HOST:PORT (capture.sh does it). Each
client produces, consumes with a group (JoinGroup/SyncGroup/Heartbeat/
OffsetCommit/OffsetFetch/LeaveGroup) and uses the admin APIs, so the capture
holds requests of every API Brook serves, at the versions real clients pick.
"""

import asyncio
import subprocess
import sys
import time
import uuid

BOOT = sys.argv[1]


def tname(prefix):
    return "%s-%s" % (prefix, uuid.uuid4().hex[:6])


def kcat(*args, data=None):
    cmd = ["kcat", "-b", BOOT, "-X", "socket.timeout.ms=10000"] + list(args)
    subprocess.run(cmd, input=data, capture_output=True, timeout=60)


def kcat_traffic():
    kcat("-L", "-J")
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"]:
        t = tname("kcat-" + codec)
        lines = "".join("k%d:value-%d-%s\n" % (i, i, "x" * (i % 17)) for i in range(40))
        kcat("-P", "-t", t, "-K:", "-z", codec, "-X", "acks=all", data=lines.encode())
        kcat("-C", "-t", t, "-e", "-q", "-o", "beginning")
    t = tname("kcat-group")
    kcat("-P", "-t", t, "-K:", data=b"a:1\nb:2\nc:3\n")
    kcat("-G", "kcat-grp-" + t, t, "-e", "-q", "-X", "auto.offset.reset=earliest")


def confluent_traffic():
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic

    a = AdminClient({"bootstrap.servers": BOOT})
    t = tname("ck")
    a.create_topics([NewTopic(t, num_partitions=3, replication_factor=1)])[t].result(30)
    p = Producer({"bootstrap.servers": BOOT, "enable.idempotence": True, "linger.ms": 5,
                  "compression.type": "lz4"})
    for i in range(60):
        p.produce(t, key=b"k%d" % i, value=b"v%d" % i, headers=[("h", b"x")])
    p.flush(30)
    g = "ck-grp-" + t
    c = Consumer({"bootstrap.servers": BOOT, "group.id": g, "auto.offset.reset": "earliest",
                  "enable.auto.commit": False})
    c.subscribe([t])
    n, deadline = 0, time.time() + 30
    while n < 60 and time.time() < deadline:
        m = c.poll(1.0)
        if m is not None and m.error() is None:
            n += 1
            if n % 20 == 0:
                c.commit(m, asynchronous=False)
    c.committed([TopicPartition(t, 0), TopicPartition(t, 1)], timeout=10)
    c.offsets_for_times([TopicPartition(t, 0, 0)], timeout=10)
    c.get_watermark_offsets(TopicPartition(t, 0), timeout=10)
    c.close()
    try:
        a.list_consumer_groups().result(10)
        a.describe_consumer_groups([g])[g].result(10)
        a.delete_consumer_groups([g])[g].result(10)
    except Exception as e:  # only the requests matter
        print("confluent admin:", e)
    a.delete_topics([t])[t].result(30)


def kafka_python_traffic():
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.admin import NewTopic

    a = KafkaAdminClient(bootstrap_servers=BOOT, request_timeout_ms=15000)
    t = tname("kp")
    a.create_topics([NewTopic(t, num_partitions=2, replication_factor=1)])
    p = KafkaProducer(bootstrap_servers=BOOT, compression_type="gzip", acks="all")
    for i in range(30):
        p.send(t, key=b"k%d" % i, value=b"v%d" % i)
    p.flush()
    p.close()
    g = "kp-grp-" + t
    c = KafkaConsumer(t, bootstrap_servers=BOOT, group_id=g, auto_offset_reset="earliest",
                      consumer_timeout_ms=5000)
    for _ in c:
        pass
    c.commit()
    c.close()
    c = KafkaConsumer(bootstrap_servers=BOOT)
    tp = TopicPartition(t, 0)
    c.offsets_for_times({tp: 0})
    c.beginning_offsets([tp])
    c.end_offsets([tp])
    c.close()
    try:
        a.list_consumer_groups()
        a.describe_consumer_groups([g])
        a.list_consumer_group_offsets(g)
        a.delete_consumer_groups([g])
    except Exception as e:
        print("kafka-python admin:", e)
    a.delete_topics([t])
    a.close()


async def aiokafka_traffic():
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    a = AIOKafkaAdminClient(bootstrap_servers=BOOT)
    await a.start()
    t = tname("aio")
    await a.create_topics([NewTopic(t, num_partitions=2, replication_factor=1)])
    p = AIOKafkaProducer(bootstrap_servers=BOOT, enable_idempotence=True, compression_type="gzip")
    await p.start()
    for i in range(30):
        await p.send(t, key=b"k%d" % i, value=b"v%d" % i)
    await p.flush()
    await p.stop()
    g = "aio-grp-" + t
    c = AIOKafkaConsumer(t, bootstrap_servers=BOOT, group_id=g, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    try:
        got = 0
        while got < 30:
            batch = await asyncio.wait_for(c.getmany(timeout_ms=1000), 20)
            got += sum(len(v) for v in batch.values())
        await c.commit()
    finally:
        await c.stop()
    try:
        await a.list_consumer_groups()
        await a.describe_consumer_groups([g])
        await a.delete_topics([t])
    except Exception as e:
        print("aiokafka admin:", e)
    await a.close()


if __name__ == "__main__":
    for name, fn in [("kcat", kcat_traffic), ("confluent-kafka", confluent_traffic),
                     ("kafka-python", kafka_python_traffic),
                     ("aiokafka", lambda: asyncio.run(aiokafka_traffic()))]:
        try:
            fn()
            print("traffic: %s done" % name)
        except Exception as e:
            print("traffic: %s failed: %r" % (name, e))
