"""Hostile array counts under a hard address-space limit.

Production hosts with `vm.overcommit_memory=2` refuse any allocation that is
not backed, so a codec that reserves `count off the wire` elements before
reading them stops the broker with a 14-byte frame. A limit on the running
broker's address space (RLIMIT_AS, set with prlimit: the effect of `ulimit -v`)
refuses such a reservation the same way. Brook's codec bounds every capacity by
the bytes left in the frame (vendor/kafka-protocol/PATCHED.md), so under the
limit each fuzz finding is refused and the broker goes on serving.
"""

import os
import resource
import socket
import struct
import subprocess

import pytest

from util import check_keyed, consume_all, create_topic, produce_keyed, producer, unique_topic

SEEDS = os.path.join(os.path.dirname(__file__), "..", "..", "net", "fuzz", "seeds", "request_frame")
OOM_FRAMES = sorted(f for f in os.listdir(SEEDS) if f.startswith("crash-oom"))
# Head room above what the broker has mapped at start-up: enough for requests,
# partitions and their buffers in this test, far less than one hostile
# reservation (the smallest of them asks for tens of GB).
HEADROOM_BYTES = 3 << 30


def vm_size_bytes(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmSize for pid %d" % pid)


def limit_address_space(pid, limit):
    if hasattr(resource, "prlimit"):
        resource.prlimit(pid, resource.RLIMIT_AS, (limit, limit))
    else:
        subprocess.run(["prlimit", "--pid", str(pid), "--as=%d:%d" % (limit, limit)], check=True)
    assert resource.prlimit(pid, resource.RLIMIT_AS) == (limit, limit)


def send_frame(broker, body):
    """Sends one frame; returns once the broker answers or closes."""
    s = socket.create_connection((broker.host, broker.port), timeout=10)
    try:
        s.sendall(struct.pack(">i", len(body)) + body)
        s.settimeout(5)
        try:
            s.recv(65536)
        except (socket.timeout, ConnectionResetError):
            pass
    finally:
        s.close()


def test_hostile_counts_under_an_address_space_limit(broker):
    assert OOM_FRAMES, "no crash-oom seeds in %s" % SEEDS
    topic = unique_topic("strict")
    create_topic(broker.bootstrap, topic, 2)
    limit = vm_size_bytes(broker.pid) + HEADROOM_BYTES
    limit_address_space(broker.pid, limit)
    for name in OOM_FRAMES:
        with open(os.path.join(SEEDS, name), "rb") as f:
            send_frame(broker, f.read())
        assert broker.alive(), "brook died on %s under RLIMIT_AS=%d:\n%s" % (name, limit, broker.tail())
    # Still serving, under the same limit: records round-trip one by one.
    dr = produce_keyed(producer(broker.bootstrap), topic, 2000)
    assert not dr.errors, dr.errors[:5]
    check_keyed(consume_all(broker.bootstrap, topic, 2), 2000, acked=dr.acked)
    assert broker.alive()
