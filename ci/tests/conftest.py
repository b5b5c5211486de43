"""Fixtures that run the real `brook` binary for the real-client tests.

`broker` starts target/release/brook (or $BROOK_BIN) on a free 127.0.0.1 port
with a fresh data dir and `--shards 2 --default-partitions 3`, waits for the
`brook ready` log line, and on teardown sends SIGTERM and requires exit 0.
When a test fails, the tail of the broker's log is attached to its report.
"""

import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

REPO = Path(__file__).resolve().parents[2]
BROOK_BIN = Path(os.environ.get("BROOK_BIN", REPO / "target" / "release" / "brook"))
READY_TIMEOUT = 30.0
STOP_TIMEOUT = 10.0
TEARDOWN_STOP_TIMEOUT = 30.0
DEFAULT_PARTITIONS = 3
SHARDS = 2

from apache_kafka import free_port  # noqa: E402  (one definition for both brokers)


def tail(path, n=80):
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 256 * 1024))
            lines = f.read().decode(errors="replace").splitlines()
        return "\n".join(lines[-n:])
    except OSError as e:
        return "<no log: %s>" % e


class Broker:
    """One brook process (and its restarts) on a fixed port and data dir."""

    def __init__(self, workdir, extra_args=()):
        self.workdir = Path(workdir)
        self.data_dir = self.workdir / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.workdir / "brook.log"
        self.port = free_port()
        self.host = "127.0.0.1"
        self.bootstrap = "%s:%d" % (self.host, self.port)
        self.extra_args = list(extra_args)
        self.proc = None
        self.start_failed = False
        self.starts = 0
        self._log = None

    # -- lifecycle --------------------------------------------------------

    def args(self):
        args = [str(BROOK_BIN), "--data-dir", str(self.data_dir), "--listen", self.bootstrap]
        for flag, value in (("--shards", SHARDS), ("--default-partitions", DEFAULT_PARTITIONS)):
            if flag not in self.extra_args:
                args += [flag, str(value)]
        return args + self.extra_args

    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "broker already running"
        self.start_failed = False
        if not BROOK_BIN.exists():
            pytest.fail("broker binary %s does not exist (cargo build --release)" % BROOK_BIN)
        self.starts += 1
        log = open(self.log_path, "ab")
        log.write(("\n==== test harness: start #%d: %s\n" % (self.starts, " ".join(self.args()))).encode())
        log.flush()
        start_pos = log.tell()
        env = dict(os.environ)
        env.setdefault("RUST_BACKTRACE", "1")
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        deadline = time.monotonic() + READY_TIMEOUT
        while True:
            with open(self.log_path, "rb") as f:
                f.seek(start_pos)
                if b"brook ready" in f.read():
                    return self
            rc = self.proc.poll()
            if rc is not None:
                self.start_failed = True
                pytest.fail("brook exited with %s before 'brook ready'. Log tail:\n%s"
                            % (rc, tail(self.log_path)))
            if time.monotonic() > deadline:
                self.start_failed = True
                self.proc.kill()
                self.proc.wait(10)
                pytest.fail("brook not ready within %.0fs. Log tail:\n%s"
                            % (READY_TIMEOUT, tail(self.log_path)))
            time.sleep(0.05)

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def kill(self):
        """SIGKILL and reap. Returns the exit status."""
        assert self.alive(), "broker not running (exit %s)" % (self.proc and self.proc.poll())
        self.proc.send_signal(signal.SIGKILL)
        return self.proc.wait(STOP_TIMEOUT)

    def terminate(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait; returns the exit code, or None if it did not exit
        within timeout (the process is then SIGKILLed)."""
        assert self.alive(), "broker not running (exit %s)" % (self.proc and self.proc.poll())
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(STOP_TIMEOUT)
            return None

    def restart(self, kill=False):
        """Stop (SIGTERM, or SIGKILL with kill=True) if running, then start again
        on the same port and data dir."""
        if self.alive():
            if kill:
                self.kill()
            else:
                rc = self.terminate()
                assert rc == 0, "brook exit code on SIGTERM: %r\n%s" % (rc, tail(self.log_path))
        return self.start()

    def rss_kib(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def log_text(self):
        return self.log_path.read_text(errors="replace")

    def tail(self, n=80):
        return tail(self.log_path, n)

    # -- teardown ---------------------------------------------------------

    def stop_for_teardown(self):
        """Returns an error message, or None if the broker stopped cleanly."""
        if self.proc is None or self.start_failed:
            return None  # the failed start already failed the test
        rc = self.proc.poll()
        if rc is not None:
            # Only an intentional kill leaves it dead; an unexpected exit is a failure.
            if rc == -signal.SIGKILL or rc == 0:
                return None
            return "brook had exited on its own with status %s" % rc
        conns = self.connections()
        t0 = time.monotonic()
        rc = self.terminate(timeout=TEARDOWN_STOP_TIMEOUT)
        took = time.monotonic() - t0
        if rc == 0 and took > STOP_TIMEOUT:
            # test_shutdown.py enforces the 10 s bound; here a slow stop is only reported
            warnings.warn("brook took %.1fs to stop on SIGTERM at teardown; connections before SIGTERM:\n%s"
                          % (took, conns))
        if rc != 0:
            return ("brook exit status on SIGTERM at teardown: %r (expected 0 within %.0fs; None = still running)."
                    " TCP connections to the broker port just before SIGTERM:\n%s" % (rc, TEARDOWN_STOP_TIMEOUT, conns))
        return None

    def connections(self):
        """`ss` lines for TCP connections involving the broker port (diagnostics)."""
        try:
            out = subprocess.run(["ss", "-tanp"], capture_output=True, timeout=10, text=True).stdout
        except (OSError, subprocess.TimeoutExpired) as e:
            return "<ss failed: %s>" % e
        return "\n".join(l for l in out.splitlines() if ":%d " % self.port in l) or "<none>"


def _discard_data_if_passed(request, failed_before, brokers):
    """Preallocated segments make every data dir hundreds of MB: keep them only
    for a failure to look at (the logs are always kept)."""
    if request.session.testsfailed != failed_before:
        return
    for b in brokers:
        if b.proc is not None and b.proc.poll() is not None:
            shutil.rmtree(b.data_dir, ignore_errors=True)


def running(request, b, owner):
    """The body of a broker fixture: starts `b`, yields it, and at teardown stops
    it, failing the test if it did not stop cleanly; its data dir is dropped when
    everything passed. `owner` (the test node or module) gets `_brook`, so a
    failure report carries the broker's log tail."""
    failed_before = request.session.testsfailed
    owner._brook = b
    b.start()
    yield b
    err = b.stop_for_teardown()
    if err:
        pytest.fail("%s. Log tail:\n%s" % (err, b.tail()))
    _discard_data_if_passed(request, failed_before, [b])


@pytest.fixture
def broker(request, tmp_path_factory):
    yield from running(request, Broker(tmp_path_factory.mktemp("brook")), request.node)


@pytest.fixture(scope="module")
def module_broker(request, tmp_path_factory):
    """One broker shared by a module's tests (tests must use unique topics)."""
    yield from running(request, Broker(tmp_path_factory.mktemp("brook-mod")), request.module)


@pytest.fixture
def make_broker(request, tmp_path_factory):
    """Factory for brokers with extra command-line arguments:
    make_broker(lambda b: ["--advertise", "localhost:%d" % b.port])."""
    failed_before = request.session.testsfailed
    made = []

    def factory(extra_args=lambda b: []):
        b = Broker(tmp_path_factory.mktemp("brook-x"))
        b.extra_args = list(extra_args(b))
        made.append(b)
        request.node._brook = b
        return b.start()

    yield factory
    errs = [(b, b.stop_for_teardown()) for b in made]
    errs = [(b, e) for b, e in errs if e]
    if errs:
        pytest.fail("; ".join("%s. Log tail:\n%s" % (e, b.tail()) for b, e in errs))
    _discard_data_if_passed(request, failed_before, made)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        b = getattr(item, "_brook", None) or getattr(item.module, "_brook", None)
        if b is not None:
            rep.sections.append(("brook log tail (%s)" % b.log_path, b.tail(80)))


@pytest.fixture
def procs():
    """Helper subprocesses started by a test; all are killed at teardown."""
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                p.kill()
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                pass


@pytest.fixture(scope="session")
def apache_kafka(tmp_path_factory):
    """One real Apache Kafka 4.4 broker (KRaft, one node) for the whole session,
    for differential tests: same scenario against Kafka and Brook."""
    from apache_kafka import ApacheKafka
    k = ApacheKafka(tmp_path_factory.mktemp("apache-kafka"), heap="512M",
                    props={"group.initial.rebalance.delay.ms": "3000"})
    k.start()
    yield k
    k.stop()
    shutil.rmtree(k.data_dir, ignore_errors=True)
