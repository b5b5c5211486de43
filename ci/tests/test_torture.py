"""The short version of the torture test (ci/torture.py): five cycles of
acks=all producers (confluent-kafka idempotent and not, kafka-python) and a
consumer group against the real binary, SIGKILL at a random moment, restart,
and the verifier after every cycle. The long version is

    ci/.venv/bin/python ci/torture.py --cycles 50

Seed: $BROOK_TORTURE_SEED, else random (printed; re-run with --seed to
reproduce the same kill/replace decisions).
"""

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

from conftest import BROOK_BIN

TORTURE = Path(__file__).resolve().parents[1] / "torture.py"
CYCLES = 5
HARD_TIMEOUT = 150  # the run takes ~40 s; this only bounds a hang


def test_torture_short(tmp_path):
    seed = int(os.environ.get("BROOK_TORTURE_SEED") or random.SystemRandom().randrange(1 << 31))
    results = tmp_path / "torture"
    args = [sys.executable, str(TORTURE), "--cycles", str(CYCLES), "--seconds-per-cycle", "3",
            "--partitions", "6", "--producers", "3", "--seed", str(seed), "--results-dir", str(results),
            "--broker", str(BROOK_BIN)]
    out_path = tmp_path / "torture.out"
    with open(out_path, "wb") as out:
        # its own process group: the broker and the clients it starts share it,
        # so a hang is cleaned up with one killpg of processes this test started
        p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             start_new_session=True)
        try:
            rc = p.wait(HARD_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(10)
            rc = "timeout after %d s" % HARD_TIMEOUT
    output = out_path.read_text(errors="replace")
    assert rc == 0, "ci/torture.py --seed %d exited %s; output:\n%s" % (seed, rc, output[-12000:])
    summary = json.loads((results / "summary.json").read_text())
    assert summary["cycles_run"] == CYCLES, summary
    assert summary["violations"] == 0 and not summary["aborted"], output[-12000:]
    per_cycle = summary["per_cycle_verified"]
    assert len(per_cycle) == CYCLES and all(n > 0 for n in per_cycle), (
        "a cycle verified no records: %r\n%s" % (per_cycle, output[-6000:]))
    assert summary["records_acknowledged"] > 0
    assert summary["records_verified_final"] == summary["records_acknowledged"], summary
    assert summary["group_resumes_checked"] > 0, "the group consumer never resumed after a restart:\n%s" % output
