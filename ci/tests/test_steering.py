"""Connections go to the shard on the CPU that received them (a reuseport CBPF
program: socket index = cpu % shards, shard i pinned on core i). On loopback the
receiving CPU is the client's, so a client pinned to CPU c must land on shard c;
with --no-steer the kernel's 4-tuple hash decides instead."""

import os
import re
import socket
import subprocess
import sys
import time

import pytest

from util import wait_until

CONNECT = ("import socket, sys, time\n"
           "s = socket.create_connection(('127.0.0.1', int(sys.argv[1])))\n"
           "time.sleep(0.2)\n")


def accepted_shards(broker, n):
    def lines():
        return re.findall(r"accepted.*?shard.*?=.*?(\d+)", re.sub(r"\x1b\[[0-9;]*m", "", broker.log_text()))
    return wait_until(lambda: len(lines()) >= n and lines(), 10, what="%d accepted connections" % n)


def connect_from(cpu, port):
    subprocess.run(["taskset", "-c", str(cpu), sys.executable, "-c", CONNECT, str(port)],
                   check=True, timeout=30)


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="needs two CPUs")
def test_connection_lands_on_the_shard_of_its_cpu(make_broker, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "info,brook_net::listener=debug")
    b = make_broker(lambda b: ["--shards", "2"])
    assert "connections steered to the shard on their receiving CPU" in b.log_text()
    cpus = [0, 1, 1, 0, 0, 1, 1, 0]
    for cpu in cpus:
        connect_from(cpu, b.port)
    got = [int(s) for s in accepted_shards(b, len(cpus))]
    assert got == cpus, "shards %r for connections from CPUs %r" % (got, cpus)


def test_no_steer_and_too_many_shards_fall_back_to_hashing(make_broker, monkeypatch):
    monkeypatch.setenv("RUST_LOG", "info,brook_net::listener=debug")
    cores = os.cpu_count()
    b = make_broker(lambda b: ["--shards", str(cores + 1)])
    assert "steered" not in b.log_text(), "steering with more shards than cores strands some shards"
    b2 = make_broker(lambda b: ["--shards", "2", "--no-steer"])
    assert "steered" not in b2.log_text()
    for i in range(4):
        with socket.create_connection(("127.0.0.1", b2.port)):
            pass
    assert len(accepted_shards(b2, 4)) >= 4
