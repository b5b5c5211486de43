"""A tiny hand-written Kafka wire-protocol client for the raw-socket tests.

Only non-flexible (pre-KIP-482) request versions are encoded here, which is
enough for ApiVersions v0, InitProducerId v0-1, Produce v3-8 and Fetch v4-11.
RecordBatch v2 is encoded by hand with a CRC-32C computed by the `crc32c`
package, so tests can also send deliberately broken batches.
"""

import socket
import struct
import time

import crc32c as _crc32c

# API keys
PRODUCE = 0
FETCH = 1
LIST_OFFSETS = 2
METADATA = 3
API_VERSIONS = 18
INIT_PRODUCER_ID = 22
OFFSET_FOR_LEADER_EPOCH = 23

# Error codes
NONE = 0
CORRUPT_MESSAGE = 2
UNKNOWN_TOPIC_OR_PARTITION = 3
UNSUPPORTED_VERSION = 35
INVALID_RECORD = 87
OUT_OF_ORDER_SEQUENCE_NUMBER = 45
DUPLICATE_SEQUENCE_NUMBER = 46
NOT_LEADER_OR_FOLLOWER = 6
FENCED_LEADER_EPOCH = 74
UNKNOWN_LEADER_EPOCH = 75


# ---------------------------------------------------------------- encoding

def i8(v):
    return struct.pack(">b", v)


def i16(v):
    return struct.pack(">h", v)


def i32(v):
    return struct.pack(">i", v)


def u32(v):
    return struct.pack(">I", v)


def i64(v):
    return struct.pack(">q", v)


def string(s):
    if s is None:
        return i16(-1)
    b = s.encode() if isinstance(s, str) else s
    return i16(len(b)) + b


def bytes_(b):
    if b is None:
        return i32(-1)
    return i32(len(b)) + b


def array(items):
    items = list(items)
    return i32(len(items)) + b"".join(items)


def uvarint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(v):
    # zigzag, 64-bit
    return uvarint((v << 1) ^ (v >> 63))


def crc32c(data):
    return _crc32c.crc32c(data)


def encode_record(offset_delta, timestamp_delta, key, value, headers=()):
    body = bytearray()
    body += i8(0)  # record attributes
    body += varint(timestamp_delta)
    body += varint(offset_delta)
    if key is None:
        body += varint(-1)
    else:
        body += varint(len(key)) + key
    if value is None:
        body += varint(-1)
    else:
        body += varint(len(value)) + value
    body += varint(len(headers))
    for hk, hv in headers:
        hk = hk.encode() if isinstance(hk, str) else hk
        body += varint(len(hk)) + hk
        if hv is None:
            body += varint(-1)
        else:
            body += varint(len(hv)) + hv
    return varint(len(body)) + bytes(body)


def encode_batch(records, base_offset=0, base_timestamp=None, producer_id=-1,
                 producer_epoch=-1, base_sequence=-1, attributes=0,
                 partition_leader_epoch=-1, corrupt_crc=False):
    """records: list of (key: bytes|None, value: bytes|None). Uncompressed."""
    if base_timestamp is None:
        base_timestamp = int(time.time() * 1000)
    recs = b"".join(encode_record(i, 0, k, v) for i, (k, v) in enumerate(records))
    n = len(records)
    after_crc = (
        i16(attributes)
        + i32(n - 1)  # lastOffsetDelta
        + i64(base_timestamp)
        + i64(base_timestamp)  # maxTimestamp
        + i64(producer_id)
        + i16(producer_epoch)
        + i32(base_sequence)
        + i32(n)
        + recs
    )
    crc = crc32c(after_crc)
    if corrupt_crc:
        crc ^= 0xDEADBEEF
    after_len = i32(partition_leader_epoch) + i8(2) + u32(crc) + after_crc
    return i64(base_offset) + i32(len(after_len)) + after_len


# ---------------------------------------------------------------- decoding

class Reader:
    def __init__(self, data, pos=0):
        self.data = data
        self.pos = pos

    def _take(self, fmt, size):
        if self.pos + size > len(self.data):
            raise ValueError("short read at %d (+%d of %d)" % (self.pos, size, len(self.data)))
        (v,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += size
        return v

    def i8(self):
        return self._take(">b", 1)

    def i16(self):
        return self._take(">h", 2)

    def i32(self):
        return self._take(">i", 4)

    def u32(self):
        return self._take(">I", 4)

    def i64(self):
        return self._take(">q", 8)

    def raw(self, n):
        if self.pos + n > len(self.data):
            raise ValueError("short read")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def string(self):
        n = self.i16()
        return None if n < 0 else self.raw(n).decode()

    def bytes_(self):
        n = self.i32()
        return None if n < 0 else self.raw(n)

    def array(self, fn):
        n = self.i32()
        return None if n < 0 else [fn(self) for _ in range(n)]

    def uvarint(self):
        shift = 0
        v = 0
        while True:
            b = self.raw(1)[0]
            v |= (b & 0x7F) << shift
            if not b & 0x80:
                return v
            shift += 7

    def varint(self):
        v = self.uvarint()
        return (v >> 1) ^ -(v & 1)

    def remaining(self):
        return len(self.data) - self.pos


def decode_batches(data):
    """Decode uncompressed RecordBatch v2 bytes (as returned by Fetch).

    Returns a list of dicts with batch header fields and `records`, a list of
    (offset, timestamp, key, value). A trailing partial batch is ignored, as
    Kafka clients do. Raises on a bad CRC."""
    out = []
    pos = 0
    while pos + 12 <= len(data):
        base_offset, batch_len = struct.unpack_from(">qi", data, pos)
        if pos + 12 + batch_len > len(data):
            break
        r = Reader(data[pos + 12:pos + 12 + batch_len])
        leader_epoch = r.i32()
        magic = r.i8()
        assert magic == 2, "magic %d" % magic
        crc = r.u32()
        body = r.data[r.pos:]
        assert crc32c(body) == crc, "bad CRC in fetched batch at offset %d" % base_offset
        attributes = r.i16()
        last_offset_delta = r.i32()
        base_ts = r.i64()
        max_ts = r.i64()
        pid = r.i64()
        epoch = r.i16()
        base_seq = r.i32()
        n = r.i32()
        records = []
        if attributes & 0x07 == 0:
            for _ in range(n):
                _len = r.varint()
                r.i8()
                ts_delta = r.varint()
                off_delta = r.varint()
                kl = r.varint()
                key = None if kl < 0 else r.raw(kl)
                vl = r.varint()
                value = None if vl < 0 else r.raw(vl)
                for _h in range(r.varint()):
                    hkl = r.varint()
                    r.raw(hkl)
                    hvl = r.varint()
                    if hvl >= 0:
                        r.raw(hvl)
                records.append((base_offset + off_delta, base_ts + ts_delta, key, value))
        out.append(dict(base_offset=base_offset, last_offset_delta=last_offset_delta,
                        attributes=attributes, producer_id=pid, producer_epoch=epoch,
                        base_sequence=base_seq, count=n, max_timestamp=max_ts,
                        leader_epoch=leader_epoch, records=records))
        pos += 12 + batch_len
    return out


# ---------------------------------------------------------------- connection

class ConnectionClosed(Exception):
    pass


class Conn:
    def __init__(self, bootstrap, timeout=10.0, client_id="brook-raw-test"):
        host, port = bootstrap.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.timeout = timeout
        self.client_id = client_id
        self.corr = 0
        self._versions = None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self):
        return self

    def __exit__(self, *a):
        self.close()

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, api_key, api_version, body, flexible_header=False):
        self.corr += 1
        hdr = i16(api_key) + i16(api_version) + i32(self.corr) + string(self.client_id)
        if flexible_header:
            hdr += uvarint(0)  # empty tagged fields
        payload = hdr + body
        self.sock.sendall(i32(len(payload)) + payload)
        return self.corr

    def recv_exact(self, n, timeout=None):
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        buf = bytearray()
        while len(buf) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise socket.timeout("timed out after %d of %d bytes" % (len(buf), n))
            self.sock.settimeout(left)
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionClosed("connection closed after %d of %d bytes" % (len(buf), n))
            buf += chunk
        return bytes(buf)

    def recv(self, timeout=None):
        """Returns (correlation_id, rest-of-response bytes)."""
        (n,) = struct.unpack(">i", self.recv_exact(4, timeout))
        assert 4 <= n < 256 * 1024 * 1024, "bad response length %d" % n
        data = self.recv_exact(n, timeout)
        (corr,) = struct.unpack_from(">i", data, 0)
        return corr, data[4:]

    def request(self, api_key, api_version, body, timeout=None):
        corr = self.send(api_key, api_version, body)
        rc, data = self.recv(timeout)
        assert rc == corr, "correlation id %d != %d" % (rc, corr)
        return Reader(data)

    def wait_closed(self, timeout):
        """True if the peer closes (EOF or reset) within timeout; data received
        meanwhile is discarded."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                chunk = self.sock.recv(65536)
            except socket.timeout:
                return False
            except (ConnectionResetError, BrokenPipeError):
                return True
            if not chunk:
                return True

    # ------------------------------------------------------------ APIs

    def api_versions(self):
        """ApiVersions v0. Returns (error_code, {api_key: (min, max)})."""
        r = self.request(API_VERSIONS, 0, b"")
        err = r.i16()
        vers = dict((k, (lo, hi)) for k, lo, hi in r.array(lambda r: (r.i16(), r.i16(), r.i16())))
        self._versions = vers
        return err, vers

    def pick_version(self, api_key, lo, hi):
        if self._versions is None:
            err, _ = self.api_versions()
            assert err == 0, "ApiVersions v0 error %d" % err
        if api_key not in self._versions:
            raise AssertionError("broker does not advertise api key %d" % api_key)
        blo, bhi = self._versions[api_key]
        v = min(hi, bhi)
        if v < max(lo, blo):
            raise AssertionError("no common version for api %d: broker %d-%d, test %d-%d"
                                 % (api_key, blo, bhi, lo, hi))
        return v

    def init_producer_id(self, transactional_id=None, timeout_ms=60000):
        v = self.pick_version(INIT_PRODUCER_ID, 0, 1)
        r = self.request(INIT_PRODUCER_ID, v, string(transactional_id) + i32(timeout_ms))
        r.i32()  # throttle
        err = r.i16()
        pid = r.i64()
        epoch = r.i16()
        return err, pid, epoch

    def offsets_for_leader_epoch(self, topic, partition, leader_epoch, current_leader_epoch=-1):
        """OffsetForLeaderEpoch v3 (a consumer's: replica id -1) for one
        partition. Returns (error_code, leader_epoch, end_offset)."""
        body = i32(-1) + array([string(topic) + array([
            i32(partition) + i32(current_leader_epoch) + i32(leader_epoch)])])
        r = self.request(OFFSET_FOR_LEADER_EPOCH, 3, body)
        r.i32()  # throttle
        out = {}
        for _ in range(r.i32()):
            name = r.string()
            for _ in range(r.i32()):
                err, idx, epoch, end = r.i16(), r.i32(), r.i32(), r.i64()
                out[(name, idx)] = (err, epoch, end)
        return out[(topic, partition)]

    def produce(self, topic, partition, records_bytes, acks=-1, timeout_ms=10000, version=None,
                transactional_id=None):
        """Produce one partition's records. Returns (error_code, base_offset)."""
        v = version if version is not None else self.pick_version(PRODUCE, 3, 8)
        body = (string(transactional_id) + i16(acks) + i32(timeout_ms)
                + array([string(topic) + array([i32(partition) + bytes_(records_bytes)])]))
        if acks == 0:
            self.send(PRODUCE, v, body)
            return None, None
        r = self.request(PRODUCE, v, body)
        results = {}
        for _ in range(r.i32()):
            name = r.string()
            for _ in range(r.i32()):
                idx = r.i32()
                err = r.i16()
                base = r.i64()
                if v >= 2:
                    r.i64()  # log_append_time
                if v >= 5:
                    r.i64()  # log_start_offset
                if v >= 8:
                    r.array(lambda r: (r.i32(), r.string()))  # record_errors
                    r.string()  # error_message
                results[(name, idx)] = (err, base)
        assert (topic, partition) in results, "no response for %s-%d: %r" % (topic, partition, results)
        return results[(topic, partition)]

    def fetch_body(self, v, topic, partition, offset, max_wait_ms=500, min_bytes=1,
                   max_bytes=1 << 20, isolation_level=0):
        """A Fetch v`v` request body for one partition (max_bytes also per partition)."""
        part = i32(partition)
        if v >= 9:
            part += i32(-1)  # current_leader_epoch
        part += i64(offset)
        if v >= 5:
            part += i64(-1)  # log_start_offset
        part += i32(max_bytes)
        body = i32(-1) + i32(max_wait_ms) + i32(min_bytes) + i32(max_bytes) + i8(isolation_level)
        if v >= 7:
            body += i32(0) + i32(-1)  # session id, session epoch (-1 = full fetch, no session)
        body += array([string(topic) + array([part])])
        if v >= 7:
            body += array([])  # forgotten topics
        if v >= 11:
            body += string("")  # rack id
        return body

    def fetch(self, topic, partition, offset, max_wait_ms=500, min_bytes=1,
              max_bytes=1 << 20, isolation_level=0, timeout=None, version=None):
        """Returns dict(error, high_watermark, last_stable_offset, records)."""
        v = version if version is not None else self.pick_version(FETCH, 4, 11)
        body = self.fetch_body(v, topic, partition, offset, max_wait_ms, min_bytes, max_bytes,
                               isolation_level)
        if timeout is None:
            timeout = max_wait_ms / 1000.0 + self.timeout
        r = self.request(FETCH, v, body, timeout=timeout)
        r.i32()  # throttle
        if v >= 7:
            top_err = r.i16()
            r.i32()  # session id
            assert top_err == 0, "fetch top-level error %d" % top_err
        result = None
        for _ in range(r.i32()):
            name = r.string()
            for _ in range(r.i32()):
                idx = r.i32()
                err = r.i16()
                hw = r.i64()
                lso = r.i64()
                if v >= 5:
                    r.i64()  # log start
                r.array(lambda r: (r.i64(), r.i64()))  # aborted txns
                if v >= 11:
                    r.i32()  # preferred read replica
                recs = r.bytes_()
                if name == topic and idx == partition:
                    result = dict(error=err, high_watermark=hw, last_stable_offset=lso,
                                  records=recs or b"")
        assert result is not None, "no fetch response for %s-%d" % (topic, partition)
        return result
