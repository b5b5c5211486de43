"""Security with real clients: TLS (rustls) listeners, mTLS principals, SASL
PLAIN and SCRAM-SHA-256/512 on SASL_PLAINTEXT and SASL_SSL, SCRAM credentials
managed with AlterUserScramCredentials and kept across a restart, KIP-368
re-authentication, certificate reload, and what an attacker gets: the same
answer, late, for every wrong credential, and nothing served before
authentication.

One broker runs five listeners at once (Kafka's `listeners` with
`listener.security.protocol.map`); certificates are made with openssl for
each test module. Every record produced is read back and checked one by one.
"""

import base64
import hashlib
import hmac
import os
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from confluent_kafka.admin import (AdminClient, ScramCredentialInfo, ScramMechanism,
                                   UserScramCredentialUpsertion)

import kproto as kp
from apache_kafka import free_port
from util import (check_keyed, consume_all, produce_keyed, producer, unique_topic,
                  wait_until)

ADMIN_PW = "admin-secret"
ALICE_PW = "alice-pw-%s" % os.getpid()

SASL_HANDSHAKE = 17
SASL_AUTHENTICATE = 36
SASL_AUTHENTICATION_FAILED = 58
ILLEGAL_SASL_STATE = 34


def openssl(*args, cwd):
    r = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, timeout=60)
    assert r.returncode == 0, "openssl %s: %s" % (" ".join(args), r.stderr.decode()[-2000:])


def make_cert(d, name, subject, ca=True, san=None):
    """A key (PKCS#8) and a certificate signed by the CA in `d` (or a
    self-signed CA when ca=True); returns (key, cert) paths."""
    key, cert = d / ("%s.key" % name), d / ("%s.pem" % name)
    openssl("genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", str(key), cwd=d)
    if ca:
        openssl("req", "-x509", "-new", "-key", str(key), "-subj", subject, "-days", "2",
                "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign",
                "-out", str(cert), cwd=d)
        return key, cert
    csr = d / ("%s.csr" % name)
    openssl("req", "-new", "-key", str(key), "-subj", subject, "-out", str(csr), cwd=d)
    ext = d / ("%s.ext" % name)
    lines = ["basicConstraints=CA:FALSE", "keyUsage=critical,digitalSignature"]
    if san:
        lines += ["subjectAltName=%s" % san, "extendedKeyUsage=serverAuth"]
    else:
        lines += ["extendedKeyUsage=clientAuth"]
    ext.write_text("\n".join(lines) + "\n")
    openssl("x509", "-req", "-in", str(csr), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
            "-CAcreateserial", "-days", "2", "-extfile", str(ext), "-out", str(cert), cwd=d)
    return key, cert


def server_keystore(d, name, subject):
    key, cert = make_cert(d, name, subject, ca=False, san="IP:127.0.0.1,DNS:localhost")
    ks = d / ("%s-keystore.pem" % name)
    ks.write_text(key.read_text() + cert.read_text())
    return ks


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    d = tmp_path_factory.mktemp("certs")
    make_cert(d, "ca", "/CN=Brook Test CA/O=Brook")
    keystore = server_keystore(d, "server", "/CN=localhost/O=Brook")
    ckey, ccert = make_cert(d, "client", "/C=US/O=Brook/OU=ingest/CN=alice-client", ca=False)
    client_pem = d / "client-keystore.pem"
    client_pem.write_text(ckey.read_text() + ccert.read_text())
    return {"dir": d, "ca": d / "ca.pem", "keystore": keystore, "client_key": ckey,
            "client_cert": ccert, "client_pem": client_pem}


class SecureBroker:
    """Ports and client settings of the five listeners of one broker."""

    def __init__(self, b, ports):
        self.b = b
        self.ports = ports

    def addr(self, name):
        return "127.0.0.1:%d" % self.ports[name]


def write_config(path, certs, ports, extra=""):
    jaas = ('org.apache.kafka.common.security.plain.PlainLoginModule required '
            'username="admin" password="%s" user_admin="%s";' % (ADMIN_PW, ADMIN_PW))
    path.write_text("\n".join([
        '"listeners" = "PLAINTEXT://127.0.0.1:%(PLAINTEXT)d,SSL://127.0.0.1:%(SSL)d,'
        'MTLS://127.0.0.1:%(MTLS)d,SASL_SSL://127.0.0.1:%(SASL_SSL)d,'
        'SASL_PLAINTEXT://127.0.0.1:%(SASL_PLAINTEXT)d"' % ports,
        '"listener.security.protocol.map" = "PLAINTEXT:PLAINTEXT,SSL:SSL,MTLS:SSL,'
        'SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT"',
        '"ssl.keystore.type" = "PEM"',
        '"ssl.keystore.location" = "%s"' % certs["keystore"],
        '"ssl.truststore.location" = "%s"' % certs["ca"],
        '"listener.name.mtls.ssl.client.auth" = "required"',
        '"sasl.enabled.mechanisms" = "PLAIN,SCRAM-SHA-256,SCRAM-SHA-512"',
        "'listener.name.sasl_ssl.plain.sasl.jaas.config' = '%s'" % jaas,
        "'listener.name.sasl_plaintext.plain.sasl.jaas.config' = '%s'" % jaas,
        extra,
    ]) + "\n")


@pytest.fixture(scope="module")
def secure(request, tmp_path_factory, certs):
    from conftest import Broker, running
    b = Broker(tmp_path_factory.mktemp("brook-sec"))
    ports = {"PLAINTEXT": b.port}
    for name in ("SSL", "MTLS", "SASL_SSL", "SASL_PLAINTEXT"):
        ports[name] = free_port()
    cfg = b.workdir / "brook.toml"
    write_config(cfg, certs, ports)
    b.extra_args = ["--config", str(cfg)]
    # --listen (set by the harness) names the first listener's address: the same.
    yield from (SecureBroker(x, ports) for x in running(request, b, request.module))


def conf(sb, certs, listener, mechanism=None, user=None, password=None, client_cert=False):
    c = {"bootstrap.servers": sb.addr(listener), "security.protocol": {
        "SSL": "SSL", "MTLS": "SSL", "SASL_SSL": "SASL_SSL",
        "SASL_PLAINTEXT": "SASL_PLAINTEXT", "PLAINTEXT": "PLAINTEXT"}[listener]}
    if listener in ("SSL", "MTLS", "SASL_SSL"):
        c["ssl.ca.location"] = str(certs["ca"])
    if client_cert:
        c["ssl.certificate.location"] = str(certs["client_cert"])
        c["ssl.key.location"] = str(certs["client_key"])
    if mechanism:
        c.update({"sasl.mechanism": mechanism, "sasl.username": user, "sasl.password": password})
    return c


def add_scram_users(sb, certs):
    """alice with both SCRAM mechanisms, set by admin (PLAIN) over SASL_SSL."""
    c = conf(sb, certs, "SASL_SSL", "PLAIN", "admin", ADMIN_PW)
    from confluent_kafka.admin import AdminClient
    a = AdminClient(dict(c, **{"socket.timeout.ms": 10000}))
    ups = [UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_256, 4096),
                                        ALICE_PW.encode()),
           UserScramCredentialUpsertion("alice", ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
                                        ALICE_PW.encode())]
    for f in a.alter_user_scram_credentials(ups).values():
        f.result(30)
    desc = a.describe_user_scram_credentials(["alice"])["alice"].result(30)
    infos = sorted((i.mechanism, i.iterations) for i in desc.scram_credential_infos)
    assert infos == [(ScramMechanism.SCRAM_SHA_256, 4096), (ScramMechanism.SCRAM_SHA_512, 8192)], infos
    return a


CASES = [
    ("SSL", {}),
    ("MTLS", {"client_cert": True}),
    ("SASL_SSL", {"mechanism": "PLAIN", "user": "admin", "password": ADMIN_PW}),
    ("SASL_SSL", {"mechanism": "SCRAM-SHA-256", "user": "alice", "password": ALICE_PW}),
    ("SASL_SSL", {"mechanism": "SCRAM-SHA-512", "user": "alice", "password": ALICE_PW}),
    ("SASL_PLAINTEXT", {"mechanism": "SCRAM-SHA-512", "user": "alice", "password": ALICE_PW}),
]


def test_every_protocol_carries_records_with_librdkafka(secure, certs):
    sb = secure
    add_scram_users(sb, certs)
    n = 3000
    for listener, kw in CASES:
        c = conf(sb, certs, listener, **kw)
        topic = unique_topic("sec-%s" % listener.lower())
        a = AdminClient(
            dict(c, **{"socket.timeout.ms": 10000}))
        md = a.list_topics(timeout=20)
        # Metadata names this broker at the listener the client came in on.
        assert [(b.host, b.port) for b in md.brokers.values()] == [("127.0.0.1", sb.ports[listener])], md.brokers
        from confluent_kafka.admin import NewTopic
        a.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
        p = producer(c["bootstrap.servers"], **{k: v for k, v in c.items() if k != "bootstrap.servers"})
        dr = produce_keyed(p, topic, n)
        assert not dr.errors, (listener, kw, dr.errors[:3])
        got = consume_all(c["bootstrap.servers"], topic, 2,
                          **{k: v for k, v in c.items() if k != "bootstrap.servers"})
        check_keyed(got, n, acked=dr.acked)
    # The credentials are stored: after a restart alice still gets in, and
    # a wrong password still does not.
    sb.b.restart()
    c = conf(sb, certs, "SASL_SSL", "SCRAM-SHA-512", "alice", ALICE_PW)
    topic = unique_topic("sec-after-restart")
    p = producer(c["bootstrap.servers"], **{k: v for k, v in c.items() if k != "bootstrap.servers"})
    dr = produce_keyed(p, topic, 500)
    got = consume_all(c["bootstrap.servers"], topic, 3, **{k: v for k, v in c.items() if k != "bootstrap.servers"})
    check_keyed(got, 500, acked=dr.acked)


def auth_error(c):
    """The error a librdkafka client gets when it cannot authenticate."""
    errs = []
    c = dict(c, **{"error_cb": lambda e: errs.append(e), "socket.timeout.ms": 5000,
                   "message.timeout.ms": 5000})
    from confluent_kafka import Producer
    p = Producer(c)
    deadline = time.monotonic() + 20
    while not errs and time.monotonic() < deadline:
        p.poll(0.2)
    assert errs, "no error for a bad login within 20 s"
    return errs[0]


def test_wrong_credentials_are_refused(secure, certs):
    sb = secure
    add_scram_users(sb, certs)
    for listener, mech, user, pw in [
        ("SASL_SSL", "PLAIN", "admin", "wrong"),
        ("SASL_SSL", "PLAIN", "nobody", ADMIN_PW),
        ("SASL_SSL", "SCRAM-SHA-256", "alice", "wrong"),
        ("SASL_PLAINTEXT", "SCRAM-SHA-512", "nobody", "x"),
    ]:
        e = auth_error(conf(sb, certs, listener, mech, user, pw))
        assert "Authentication failed" in e.str() and mech in e.str(), (listener, mech, user, e)
    # mTLS without a client certificate: the handshake fails.
    auth_error(conf(sb, certs, "MTLS"))
    wait_until(lambda: "TLS handshake failed" in sb.b.log_text(), 10, what="the refused handshake logged")
    # No password reaches the log.
    log = sb.b.log_text()
    assert ALICE_PW not in log and ADMIN_PW not in log
    assert log.count("failed authentication") >= 4


# ------------------------------------------------------------ raw exchanges

def sasl_handshake(c, mechanism):
    r = c.request(SASL_HANDSHAKE, 1, kp.string(mechanism))
    err = r.i16()
    mechs = r.array(lambda r: r.string())
    return err, mechs


def sasl_authenticate(c, token, version=1):
    r = c.request(SASL_AUTHENTICATE, version, kp.bytes_(token))
    err = r.i16()
    msg = r.string()
    data = r.bytes_()
    lifetime = r.i64() if version >= 1 else None
    return err, msg, data, lifetime


def scram_login(c, mech, user, password, nonce="fyko+d2lbbFgONRv9qkxdawL"):
    """A SCRAM client written from RFC 5802. Returns the final
    SaslAuthenticate answer (error, message, data, lifetime)."""
    h = {"SCRAM-SHA-256": hashlib.sha256, "SCRAM-SHA-512": hashlib.sha512}[mech]
    err, _ = sasl_handshake(c, mech)
    assert err == 0
    first_bare = "n=%s,r=%s" % (user, nonce)
    err, msg, server_first, _ = sasl_authenticate(c, ("n,," + first_bare).encode())
    if err:
        return err, msg, server_first, None
    attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
    assert attrs["r"].startswith(nonce) and len(attrs["r"]) > len(nonce)
    salted = hashlib.pbkdf2_hmac(h().name, password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", h).digest()
    stored = h(client_key).digest()
    without_proof = "c=biws,r=%s" % attrs["r"]
    auth = ",".join([first_bare, server_first.decode(), without_proof]).encode()
    sig = hmac.new(stored, auth, h).digest()
    proof = bytes(a ^ b for a, b in zip(client_key, sig))
    final = "%s,p=%s" % (without_proof, base64.b64encode(proof).decode())
    out = sasl_authenticate(c, final.encode())
    if out[0] == 0:
        server_key = hmac.new(salted, b"Server Key", h).digest()
        expect = b"v=" + base64.b64encode(hmac.new(server_key, auth, h).digest())
        assert out[2] == expect, "the broker's server signature does not verify"
    return out


def timed_failure(sb, listener, login):
    with kp.Conn(sb.addr(listener)) as c:
        t0 = time.monotonic()
        err, msg, _, _ = login(c)
        took = time.monotonic() - t0
        closed = c.wait_closed(5)
    return err, msg, took, closed


def test_failures_look_alike_and_nothing_is_served_before_authentication(secure, certs):
    sb = secure
    add_scram_users(sb, certs)
    plain = lambda u, p: (lambda c: (sasl_handshake(c, "PLAIN"), sasl_authenticate(c, b"\0%s\0%s" % (u.encode(), p.encode())))[1])
    outcomes = [
        timed_failure(sb, "SASL_PLAINTEXT", plain("admin", "nope")),
        timed_failure(sb, "SASL_PLAINTEXT", plain("nobody", "nope")),
        timed_failure(sb, "SASL_PLAINTEXT", lambda c: scram_login(c, "SCRAM-SHA-256", "alice", "nope")),
        timed_failure(sb, "SASL_PLAINTEXT", lambda c: scram_login(c, "SCRAM-SHA-256", "nobody", "nope")),
    ]
    for err, msg, took, closed in outcomes:
        assert err == SASL_AUTHENTICATION_FAILED, outcomes
        assert took >= 0.09, "failure answered after %.3f s, not after the delay" % took
        assert closed, "connection not closed after a failed authentication"
    # One message per mechanism, whatever was wrong.
    assert outcomes[0][1] == outcomes[1][1] and outcomes[2][1] == outcomes[3][1], outcomes
    # The right password works, and its server signature verifies.
    with kp.Conn(sb.addr("SASL_PLAINTEXT")) as c:
        assert scram_login(c, "SCRAM-SHA-512", "alice", ALICE_PW)[0] == 0
        assert c.api_versions()[0] == 0
        # A second handshake while authenticated starts a re-authentication.
        assert scram_login(c, "SCRAM-SHA-256", "alice", ALICE_PW)[0] == 0
        assert c.api_versions()[0] == 0
    # Before authenticating, ApiVersions is answered and anything else closes.
    with kp.Conn(sb.addr("SASL_PLAINTEXT")) as c:
        assert c.api_versions()[0] == 0
        c.send(kp.METADATA, 1, kp.array([]))
        assert c.wait_closed(5), "Metadata before authentication was served"
    # An unsupported mechanism gets the list of enabled ones, then a close.
    with kp.Conn(sb.addr("SASL_PLAINTEXT")) as c:
        err, mechs = sasl_handshake(c, "GSSAPI")
        assert err == 33 and sorted(mechs) == ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"], (err, mechs)
        assert c.wait_closed(5)
    # SaslAuthenticate without a handshake is ILLEGAL_SASL_STATE and a close.
    with kp.Conn(sb.addr("SASL_PLAINTEXT")) as c:
        assert sasl_authenticate(c, b"x")[0] == ILLEGAL_SASL_STATE
        assert c.wait_closed(5)
    # An oversized frame before authentication closes the connection.
    with kp.Conn(sb.addr("SASL_PLAINTEXT")) as c:
        c.send_raw(kp.i32(1 << 20) + b"\0" * 1024)
        assert c.wait_closed(5)
    # A connection that never authenticates is closed (10 s).
    with kp.Conn(sb.addr("SASL_PLAINTEXT"), timeout=20) as c:
        assert c.api_versions()[0] == 0
        t0 = time.monotonic()
        assert c.wait_closed(15), "unauthenticated connection kept open"
        assert time.monotonic() - t0 < 14
    # The broker served everyone else meanwhile.
    with kp.Conn(sb.addr("PLAINTEXT")) as c:
        assert c.api_versions()[0] == 0


def test_reauthentication_and_session_expiry(make_broker, certs, tmp_path):
    """connections.max.reauth.ms=3000: librdkafka re-authenticates and keeps
    producing past several lifetimes; a raw client that does not is closed
    at its first request after expiry."""
    ports = {"PLAINTEXT": 0}
    names = ("SSL", "MTLS", "SASL_SSL", "SASL_PLAINTEXT")

    def args(b):
        ports["PLAINTEXT"] = b.port
        for name in names:
            ports[name] = free_port()
        cfg = tmp_path / "reauth.toml"
        write_config(cfg, certs, ports, extra='"connections.max.reauth.ms" = 3000')
        return ["--config", str(cfg)]

    b = make_broker(args)
    sb = SecureBroker(b, ports)
    with kp.Conn(sb.addr("SASL_PLAINTEXT")) as c:
        sasl_handshake(c, "PLAIN")
        err, _, _, lifetime = sasl_authenticate(c, b"\0admin\0" + ADMIN_PW.encode())
        assert err == 0 and lifetime == 3000, (err, lifetime)
        assert c.api_versions()[0] == 0
        time.sleep(3.3)
        c.send(kp.METADATA, 1, kp.array([]))
        assert c.wait_closed(5), "a request after the session expired was served"
    c = conf(sb, certs, "SASL_SSL", "PLAIN", "admin", ADMIN_PW)
    topic = unique_topic("reauth")
    extra = {k: v for k, v in c.items() if k != "bootstrap.servers"}
    p = producer(c["bootstrap.servers"], **extra)
    dr = None
    total = 0
    t_end = time.monotonic() + 8
    while time.monotonic() < t_end:
        dr = produce_keyed(p, topic, 200, start=total, dr=dr)
        total += 200
        time.sleep(0.5)
    assert not dr.errors, dr.errors[:3]
    got = consume_all(c["bootstrap.servers"], topic, 3, **extra)
    check_keyed(got, total, acked=dr.acked)
    assert "SASL session expired" in b.log_text()


def peer_cert(addr, ca):
    ctx = ssl.create_default_context(cafile=str(ca))
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        with ctx.wrap_socket(s, server_hostname="localhost") as t:
            return dict(x[0] for x in t.getpeercert()["subject"]), t.version()


def test_certificates_reload_without_restart(secure, certs):
    sb = secure
    subject, version = peer_cert(sb.addr("SSL"), certs["ca"])
    assert subject["commonName"] == "localhost" and version in ("TLSv1.3", "TLSv1.2")
    d = certs["dir"]
    new = server_keystore(d, "renewed", "/CN=localhost/O=Brook Renewed")
    tmp = certs["keystore"].with_suffix(".tmp")
    tmp.write_text(new.read_text())
    os.replace(tmp, certs["keystore"])
    wait_until(lambda: peer_cert(sb.addr("SSL"), certs["ca"])[0].get("organizationName") == "Brook Renewed",
               10, what="the renewed certificate served")
    # A keystore that no longer reads keeps the last good one.
    certs["keystore"].write_text("not a pem file\n")
    time.sleep(1.2)
    assert peer_cert(sb.addr("SSL"), certs["ca"])[0]["organizationName"] == "Brook Renewed"
    assert "do not load" in sb.b.log_text()
    certs["keystore"].write_text(new.read_text())


def test_bad_security_settings_fail_fast(tmp_path, certs):
    from conftest import BROOK_BIN
    for extra, says in [
        ('"listeners" = "SSL://127.0.0.1:%d"' % free_port(), "ssl.keystore.location"),
        ('"listeners" = "SSL://127.0.0.1:%d"\n"ssl.keystore.location" = "%s"' % (free_port(), certs["ca"]),
         "private key"),
        ('"listeners" = "SASL_PLAINTEXT://127.0.0.1:%d"\n"sasl.enabled.mechanisms" = "OAUTHBEARER"' % free_port(),
         "OAUTHBEARER is not supported"),
    ]:
        cfg = tmp_path / "bad.toml"
        cfg.write_text(extra + "\n")
        r = subprocess.run([str(BROOK_BIN), "--config", str(cfg), "--data-dir", str(tmp_path / "d")],
                           capture_output=True, timeout=30)
        assert r.returncode == 2 and says in r.stderr.decode(), (extra, r.returncode, r.stderr.decode()[-500:])


# ------------------------------------------------------------ other clients

def test_kafka_python_over_sasl_ssl_scram_and_mtls(secure, certs):
    from kafka import KafkaConsumer, KafkaProducer, TopicPartition
    sb = secure
    add_scram_users(sb, certs)
    settings = [
        ("SSL", dict(security_protocol="SSL", ssl_cafile=str(certs["ca"]))),
        ("SASL_SSL", dict(security_protocol="SASL_SSL", ssl_cafile=str(certs["ca"]),
                          sasl_mechanism="PLAIN", sasl_plain_username="admin",
                          sasl_plain_password=ADMIN_PW)),
        ("SASL_SSL", dict(security_protocol="SASL_SSL", ssl_cafile=str(certs["ca"]),
                          sasl_mechanism="SCRAM-SHA-256", sasl_plain_username="alice",
                          sasl_plain_password=ALICE_PW)),
        ("SASL_PLAINTEXT", dict(security_protocol="SASL_PLAINTEXT", sasl_mechanism="SCRAM-SHA-512",
                                sasl_plain_username="alice", sasl_plain_password=ALICE_PW)),
        ("MTLS", dict(security_protocol="SSL", ssl_cafile=str(certs["ca"]),
                      ssl_certfile=str(certs["client_cert"]), ssl_keyfile=str(certs["client_key"]))),
    ]
    for listener, kw in settings:
        topic = unique_topic("kp-sec")
        p = KafkaProducer(bootstrap_servers=sb.addr(listener), request_timeout_ms=15000, acks="all", **kw)
        futures = [p.send(topic, key=b"k%d" % i, value=b"v%d" % i, partition=0) for i in range(500)]
        p.flush(60)
        offsets = [f.get(30).offset for f in futures]
        assert offsets == list(range(500)), offsets[:10]
        p.close()
        c = KafkaConsumer(bootstrap_servers=sb.addr(listener), group_id=None, enable_auto_commit=False,
                          consumer_timeout_ms=15000, **kw)
        c.assign([TopicPartition(topic, 0)])
        c.seek_to_beginning()
        got = []
        for m in c:
            got.append((m.offset, m.key, m.value))
            if len(got) == 500:
                break
        c.close()
        assert got == [(i, b"k%d" % i, b"v%d" % i) for i in range(500)], (listener, got[:5])


def properties(path, **kv):
    path.write_text("".join("%s=%s\n" % (k.replace("_", "."), v) for k, v in kv.items()))
    return path


def test_kafka_tools_manage_scram_users_and_use_them(secure, certs, tmp_path):
    """`kafka-configs --entity-type users` adds and deletes SCRAM credentials
    over SASL_SSL as the PLAIN admin; the console tools then produce and
    consume as the new user with SCRAM-SHA-512, and over mTLS with a PEM
    keystore."""
    from test_kafka_tools import JARS, tool
    if not (JARS / "kafka-tools-4.4.0.jar").exists():
        pytest.skip("Kafka's tools are not installed (ci/setup.sh)")
    sb = secure
    trust = {"ssl_truststore_type": "PEM", "ssl_truststore_location": certs["ca"]}
    admin_cfg = properties(tmp_path / "admin.properties", security_protocol="SASL_SSL", sasl_mechanism="PLAIN",
                           sasl_jaas_config='org.apache.kafka.common.security.plain.PlainLoginModule required '
                                            'username="admin" password="%s";' % ADMIN_PW, **trust)
    bs = sb.addr("SASL_SSL")
    r = tool("kafka-configs", "--bootstrap-server", bs, "--command-config", admin_cfg, "--alter",
             "--add-config", "SCRAM-SHA-512=[iterations=8192,password=bob-pw],SCRAM-SHA-256=[password=bob-pw]",
             "--entity-type", "users", "--entity-name", "bob")
    assert "Completed updating config for user bob" in r.out, r
    r = tool("kafka-configs", "--bootstrap-server", bs, "--command-config", admin_cfg, "--describe",
             "--entity-type", "users", "--entity-name", "bob")
    assert "SCRAM-SHA-256=iterations=4096" in r.out and "SCRAM-SHA-512=iterations=8192" in r.out, r
    bob = properties(tmp_path / "bob.properties", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512",
                     sasl_jaas_config='org.apache.kafka.common.security.scram.ScramLoginModule required '
                                      'username="bob" password="bob-pw";', **trust)
    mtls = properties(tmp_path / "mtls.properties", security_protocol="SSL", ssl_keystore_type="PEM",
                      ssl_keystore_location=certs["client_pem"], **trust)
    tls = properties(tmp_path / "ssl.properties", security_protocol="SSL", **trust)
    bob256 = properties(tmp_path / "bob256.properties", security_protocol="SASL_SSL",
                        sasl_mechanism="SCRAM-SHA-256",
                        sasl_jaas_config='org.apache.kafka.common.security.scram.ScramLoginModule required '
                                         'username="bob" password="bob-pw";', **trust)
    for cfg, addr in [(bob, bs), (bob256, bs), (mtls, sb.addr("MTLS")), (tls, sb.addr("SSL"))]:
        topic = unique_topic("tools-sec")
        n = 200
        data = "".join("k%d\tv%d\n" % (i, i) for i in range(n)).encode()
        r = tool("kafka-console-producer", "--bootstrap-server", addr, "--topic", topic,
                 "--command-config", cfg, "--reader-property", "parse.key=true",
                 "--reader-property", "key.separator=\t", "--command-property", "acks=all", input=data)
        assert "ERROR" not in r.err and "Exception" not in r.err, r
        r = tool("kafka-console-consumer", "--bootstrap-server", addr, "--topic", topic, "--from-beginning",
                 "--command-config", cfg, "--max-messages", n, "--timeout-ms", 60000,
                 "--formatter-property", "print.key=true", "--formatter-property", "print.partition=true",
                 "--formatter-property", "print.offset=true")
        # Partition:P<TAB>Offset:O<TAB>key<TAB>value
        rows = [l.split("\t") for l in r.out.splitlines() if l.strip()]
        by_p = {}
        for part, off, key, value in rows:
            by_p.setdefault(part, []).append((int(off.split(":")[1]), int(key[1:]), value))
        for recs in by_p.values():
            assert [o for o, _, _ in recs] == list(range(len(recs))), recs[:5]
            assert [i for _, i, _ in recs] == sorted(i for _, i, _ in recs), "order broken"
            assert all(v == "v%d" % i for _, i, v in recs)
        assert sorted(i for recs in by_p.values() for _, i, _ in recs) == list(range(n)), r
    # A wrong password: the tool reports Kafka's authentication error.
    wrong = properties(tmp_path / "wrong.properties", security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-256",
                       sasl_jaas_config='org.apache.kafka.common.security.scram.ScramLoginModule required '
                                        'username="bob" password="not-it";', **trust)
    r = tool("kafka-topics", "--bootstrap-server", bs, "--command-config", wrong, "--list", check=False)
    assert r.rc != 0 and "SaslAuthenticationException" in r.out + r.err, r
    # Deleting one mechanism leaves the other.
    tool("kafka-configs", "--bootstrap-server", bs, "--command-config", admin_cfg, "--alter",
         "--delete-config", "SCRAM-SHA-256", "--entity-type", "users", "--entity-name", "bob")
    r = tool("kafka-configs", "--bootstrap-server", bs, "--command-config", admin_cfg, "--describe",
             "--entity-type", "users", "--entity-name", "bob")
    assert "SCRAM-SHA-256" not in r.out and "SCRAM-SHA-512=iterations=8192" in r.out, r


def throttles_of(c, topic, client_id, n=2000):
    from test_quotas import produce_and_collect_throttles
    extra = {k: v for k, v in c.items() if k != "bootstrap.servers"}
    return produce_and_collect_throttles(c["bootstrap.servers"], topic, client_id, n, **extra)


def test_user_quotas_follow_the_principal(secure, certs):
    """producer_byte_rate on user alice (set with kafka-configs' wire request,
    AlterClientQuotas) throttles alice whatever her client id, and not admin."""
    sb = secure
    add_scram_users(sb, certs)
    import struct
    # AlterClientQuotas v0 over the PLAINTEXT listener: entity user=alice.
    body = kp.array([kp.array([kp.string("user") + kp.string("alice")]) +
                     kp.array([kp.string("producer_byte_rate") + struct.pack(">d", 200000.0) + kp.i8(0)])]) + kp.i8(0)
    with kp.Conn(sb.addr("PLAINTEXT")) as c:
        r = c.request(49, 0, body)
        r.i32()
        entries = r.array(lambda r: (r.i16(), r.string(), r.array(lambda r: (r.string(), r.string()))))
        assert [(e[0], e[2]) for e in entries] == [(0, [("user", "alice")])], entries
        # DescribeClientQuotas v0, strict, user=alice.
        r = c.request(48, 0, kp.array([kp.string("user") + kp.i8(0) + kp.string("alice")]) + kp.i8(1))
        r.i32()
        assert r.i16() == 0
    topic = unique_topic("user-quota")
    alice = conf(sb, certs, "SASL_SSL", "SCRAM-SHA-256", "alice", ALICE_PW)
    admin_c = conf(sb, certs, "SASL_SSL", "PLAIN", "admin", ADMIN_PW)
    assert any(t > 0 for t in throttles_of(alice, topic, "one")), "alice over her quota was not throttled"
    assert any(t > 0 for t in throttles_of(alice, topic, "another-id")), "alice's quota must follow her, not her client id"
    assert not any(t > 0 for t in throttles_of(admin_c, topic, "one")), "admin has no quota but was throttled"


def test_acl_apis_without_an_authorizer_say_security_disabled(secure):
    """No authorizer.class.name: every request is allowed, and the ACL APIs
    answer SECURITY_DISABLED (54) at once, as Kafka does."""
    import diff_wire
    from kafka.protocol.admin.acl import DescribeAclsRequest
    with diff_wire.Conn(secure.addr("PLAINTEXT")) as c:
        r = c.call(DescribeAclsRequest, 1, resource_type_filter=1, resource_name_filter=None, pattern_type_filter=1,
                   principal_filter=None, host_filter=None, operation=1, permission_type=1)
        assert r.error_code == 54, r
