"""Differential suite: the same scenario against a real Apache Kafka 4.4 and
against Brook, comparing what a client can observe.

Scenarios live in diff_scenarios.py (requests encoded by kafka-python's
low-level protocol classes, see diff_wire.py). Every difference must be listed
in COMPATIBILITY.md's table, with Kafka's and Brook's values; a difference not
listed fails its test, and so does a listed one that no longer occurs. Run:

    ci/.venv/bin/python -m pytest ci/tests/test_differential.py

(Apache Kafka comes from ci/.lab/jars: run ci/setup.sh once if missing.)
"""

import re
import time
import uuid
from pathlib import Path

import pytest

import diff_scenarios as ds
import diff_wire as dw

REPO = Path(__file__).resolve().parents[2]
TABLE = REPO / "COMPATIBILITY.md"
ROW_RE = re.compile(r"^\|\s*`([a-z0-9_.]+)`\s*\|(.*)\|\s*$")
ITEM_RE = re.compile(r"`([^`=]+)=([^`]*)`")


# ---------------------------------------------------------------- the table

def parse_table(text):
    """{scenario: {key: (kafka_value_text, brook_value_text, kind)}} from the
    markdown table rows whose first cell is a backticked scenario id."""
    known = {}
    for line in text.splitlines():
        m = ROW_RE.match(line.strip())
        if not m:
            continue
        sid = m.group(1)
        cells = [c.strip() for c in m.group(2).split(" | ")]
        assert len(cells) >= 4, "COMPATIBILITY.md row for %s needs Kafka, Brook, kind, reason: %r" % (sid, line)
        kafka = dict(ITEM_RE.findall(cells[0]))
        brook = dict(ITEM_RE.findall(cells[1]))
        kind = cells[2]
        assert kafka.keys() == brook.keys(), "row %s: Kafka and Brook cells name different keys" % sid
        assert kind in ("deliberate", "bug, to fix"), "row %s: kind %r" % (sid, kind)
        rows = known.setdefault(sid, {})
        for k in kafka:
            assert k not in rows, "key %s of %s listed twice" % (k, sid)
            rows[k] = (kafka[k], brook[k], kind)
    return known


KNOWN = parse_table(TABLE.read_text()) if TABLE.exists() else {}


def suggested_row(sid, diff):
    items = sorted(diff.items())
    k = " ".join("`%s=%s`" % (key, ds.render(a)) for key, (a, _) in items)
    b = " ".join("`%s=%s`" % (key, ds.render(x)) for key, (_, x) in items)
    return "| `%s` | %s | %s | deliberate or bug, to fix | why |" % (sid, k, b)


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def diff_brook(request, tmp_path_factory):
    """Brook configured like the Kafka beside it: num.partitions 1 (the
    module_broker fixture uses 3), two shards."""
    from conftest import Broker, running
    b = Broker(tmp_path_factory.mktemp("brook-diff"), extra_args=["--default-partitions", "1"])
    yield from running(request, b, request.module)


def warm_up(bootstrap):
    """Kafka creates __consumer_offsets on the first FindCoordinator and loads its
    producer-id manager lazily; a client retries through both. Done once, before
    any scenario, so that no scenario sees the start-up window (bounded)."""
    with dw.Conn(bootstrap) as c:
        for _ in range(300):
            r = c.call(dw.FindCoordinatorRequest, 1, key="diff-warm-up", key_type=0)
            if r.error_code == 0:
                break
            time.sleep(0.1)
        assert r.error_code == 0, "FindCoordinator never succeeded on %s: %r" % (bootstrap, r)
        for _ in range(300):
            r = c.call(dw.InitProducerIdRequest, 0, transactional_id=None, transaction_timeout_ms=60000)
            if r.error_code == 0:
                break
            time.sleep(0.1)
        assert r.error_code == 0, "InitProducerId never succeeded on %s: %r" % (bootstrap, r)


@pytest.fixture(scope="module")
def pair(apache_kafka, diff_brook):
    warm_up(apache_kafka.bootstrap)
    warm_up(diff_brook.bootstrap)
    return dict(kafka=apache_kafka.bootstrap, brook=diff_brook.bootstrap,
                tables=ds.tables(apache_kafka.bootstrap, diff_brook.bootstrap),
                run_id=uuid.uuid4().hex[:8])


# ---------------------------------------------------------------- tests

@pytest.mark.parametrize("sid", list(ds.SCENARIOS))
def test_scenario(pair, diff_brook, sid):
    kobs, bobs = ds.run_pair(sid, pair["kafka"], pair["brook"], pair["run_id"], pair["tables"])
    assert kobs.get("aborted") is None, "scenario %s aborted on Apache Kafka: %r" % (sid, kobs)
    assert diff_brook.alive(), "brook died during %s" % sid
    diff = ds.diff(kobs, bobs)
    listed = KNOWN.get(sid, {})
    problems = []
    for key, (k, b) in sorted(diff.items()):
        if key not in listed:
            problems.append("NEW difference %s: Kafka %s, Brook %s" % (key, ds.render(k), ds.render(b)))
        elif (listed[key][0], listed[key][1]) != (ds.render(k), ds.render(b)):
            problems.append("CHANGED difference %s: Kafka %s, Brook %s; COMPATIBILITY.md says Kafka %s, Brook %s"
                            % (key, ds.render(k), ds.render(b), listed[key][0], listed[key][1]))
    for key in sorted(set(listed) - set(diff)):
        problems.append("GONE: COMPATIBILITY.md lists %s for %s but both now give %s (remove it from the table)"
                        % (key, sid, ds.render(kobs.get(key, ds.MISSING))))
    if problems:
        pytest.fail("scenario %s:\n  %s\nrow for the observed differences:\n%s"
                    % (sid, "\n  ".join(problems), suggested_row(sid, diff) if diff else "(none)"))


def test_table_names_real_scenarios():
    assert TABLE.exists(), "COMPATIBILITY.md missing"
    unknown = sorted(set(KNOWN) - set(ds.SCENARIOS))
    assert not unknown, "COMPATIBILITY.md lists scenarios that do not exist: %s" % unknown


def test_unlisted_apis_absent_not_broken(pair, diff_brook):
    """Every API Kafka lists but Brook does not is absent from Brook's table, and a
    request for it is treated as Kafka treats an API key it does not know: the
    connection is closed, nothing is answered, and the broker carries on."""
    kv, bv, _ = pair["tables"]
    unlisted = sorted(set(kv) - set(bv))
    assert unlisted, "expected Kafka to list APIs Brook does not"
    answered = []
    for key in unlisted:
        with dw.Conn(pair["brook"], timeout=10) as c:
            lo = kv[key][0]
            hdr = dw.kp.i16(key) + dw.kp.i16(lo) + dw.kp.i32(7) + dw.kp.string("brook-diff")
            c.send_frame(hdr + b"\x00" * 8)
            try:
                c.recv_frame(timeout=10)
                answered.append(dw.api_name(key))
            except dw.Closed:
                pass
        assert diff_brook.alive(), "brook died on api key %d" % key
    assert not answered, "Brook answered APIs it does not list: %s" % answered
    with dw.Conn(pair["brook"]) as c:
        assert c.api_versions() == bv
