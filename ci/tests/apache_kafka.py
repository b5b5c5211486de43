"""A real Apache Kafka 4.4 broker beside Brook: KRaft, one node that is both
broker and controller, started from the Maven jars in ci/.lab/jars.

Used by the differential suite (as the `apache_kafka` fixture in conftest.py)
and by perf-scripts (run this file: `python3 ci/tests/apache_kafka.py --help`).

What it does, as Kafka's own scripts would:
1. writes <workdir>/server.properties (PLAINTEXT on a free 127.0.0.1 port,
   CONTROLLER on another, log.dirs under <workdir>, replication factors 1);
2. formats the storage (`kafka-storage format -t <cluster id> -c ...`);
3. starts `kafka.Kafka server.properties` with the JVM flags of
   kafka-server-start.sh / kafka-run-class.sh, output to <workdir>/kafka.log;
4. waits until the PLAINTEXT port answers and the log says the server started.
"""

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
import base64
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
JARS = REPO / "ci" / ".lab" / "jars"
LOG4J = REPO / "ci" / "java" / "log4j2-broker.properties"
JAVA = os.environ.get("JAVA", "java")

# kafka-run-class.sh's KAFKA_JVM_PERFORMANCE_OPTS and kafka-server-start.sh's heap.
JVM_PERFORMANCE_OPTS = [
    "-server", "-XX:+UseG1GC", "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35", "-XX:+ExplicitGCInvokesConcurrent",
    "-XX:MaxInlineLevel=15", "-Djava.awt.headless=true",
]
DEFAULT_HEAP = "1G"
READY_TIMEOUT = 90.0
STOP_TIMEOUT = 30.0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kafka_cluster_id():
    """A random cluster id in Kafka's form (base64url of 16 bytes, no padding).
    One that starts with '-' would read as an option to kafka-storage: draw again."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


class ApacheKafka:
    """One Apache Kafka process on a fixed port and data dir.

    `props` overrides or adds server properties (Kafka's names, string values).
    """

    def __init__(self, workdir, port=None, heap=DEFAULT_HEAP, props=None):
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "kafka-logs"
        self.port = port or free_port()
        self.controller_port = free_port()
        self.host = "127.0.0.1"
        self.bootstrap = "%s:%d" % (self.host, self.port)
        self.heap = heap
        self.log_path = self.workdir / "kafka.log"
        self.props_path = self.workdir / "server.properties"
        self.proc = None
        self.props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": "1@127.0.0.1:%d" % self.controller_port,
            "listeners": "PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d"
                         % (self.port, self.controller_port),
            "advertised.listeners": "PLAINTEXT://127.0.0.1:%d" % self.port,
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(self.data_dir),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "log.retention.check.interval.ms": "300000",
        }
        self.props.update({k: str(v) for k, v in (props or {}).items()})

    # -- lifecycle ---------------------------------------------------------

    def _jvm(self, heap):
        return [JAVA, "-Xmx%s" % heap, "-Xms%s" % heap] + JVM_PERFORMANCE_OPTS + [
            "-Dlog4j2.configurationFile=%s" % LOG4J, "-cp", "%s/*" % JARS]

    def format(self):
        if not JARS.is_dir():
            raise RuntimeError("%s is missing: run ci/setup.sh" % JARS)
        with open(self.props_path, "w") as f:
            for k, v in self.props.items():
                f.write("%s=%s\n" % (k, v))
        cmd = self._jvm("256M") + ["kafka.tools.StorageTool", "format", "-t", kafka_cluster_id(),
                                   "-c", str(self.props_path)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError("kafka-storage format failed (%d):\n%s\n%s"
                               % (out.returncode, out.stdout, out.stderr))

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "kafka already running"
        if not self.props_path.exists():
            self.format()
        log = open(self.log_path, "ab")
        start_pos = log.tell()
        self.proc = subprocess.Popen(self._jvm(self.heap) + ["kafka.Kafka", str(self.props_path)],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(start_pos)
                text = f.read()
            if b"Kafka Server started" in text or b"] Kafka Server started" in text:
                if self._port_open():
                    return self
            rc = self.proc.poll()
            if rc is not None:
                raise RuntimeError("Apache Kafka exited with %s before it started. Log tail:\n%s"
                                   % (rc, self.tail()))
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("Apache Kafka not started within %.0fs. Log tail:\n%s"
                                   % (READY_TIMEOUT, self.tail()))
            time.sleep(0.2)

    def _port_open(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=1):
                return True
        except OSError:
            return False

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (Kafka's controlled shutdown), SIGKILL after timeout.
        Returns the exit status."""
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self):
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        return self.proc.wait(30)

    def tail(self, n=60):
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
            return "\n".join(lines[-n:])
        except OSError as e:
            return "<no log: %s>" % e


def main():
    ap = argparse.ArgumentParser(description="Run Apache Kafka 4.4 (KRaft, one node) from ci/.lab/jars "
                                             "in the foreground until SIGTERM/SIGINT.")
    ap.add_argument("--dir", required=True, help="work dir (server.properties, kafka-logs, kafka.log)")
    ap.add_argument("--port", type=int, default=None, help="PLAINTEXT port (default: a free one)")
    ap.add_argument("--heap", default=DEFAULT_HEAP, help="JVM -Xmx/-Xms (default %s)" % DEFAULT_HEAP)
    ap.add_argument("--prop", action="append", default=[], metavar="KEY=VALUE",
                    help="extra server property (repeatable), e.g. log.flush.interval.messages=1")
    args = ap.parse_args()
    props = dict(p.split("=", 1) for p in args.prop)
    k = ApacheKafka(args.dir, port=args.port, heap=args.heap, props=props)
    k.start()
    print("apache-kafka ready %s pid %d" % (k.bootstrap, k.pid), flush=True)

    def stop(*_):
        k.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while k.alive():
        time.sleep(0.5)
    sys.exit("apache kafka exited with %s" % k.proc.returncode)


if __name__ == "__main__":
    main()
