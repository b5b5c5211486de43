"""Cuts a loopback capture of real clients talking to Brook into fuzz seeds.

usage: split_seeds.py CAPTURE.pcap BROKER_PORT DATA_DIR REPO_ROOT

- net/fuzz/seeds/request_frame: client->broker request frames, the 4-byte
  length stripped, at most PER_API_VERSION per (api key, version).
- engine/fuzz/seeds/batch_header, records: RecordBatch v2 bytes found in the
  Produce requests (and __consumer_offsets batches for records), with each
  target's input prefix (see the target's doc comment).
- engine/fuzz/seeds/recovery_scan: segment files written by the broker,
  truncated to 64 KiB (the zero tail is the preallocated space).
- engine/fuzz/seeds/index_decode: offset and time indexes derived from those
  segments the way IndexBuilder does (the broker writes index files only
  when it seals a segment, which a short run never does).
- engine/fuzz/seeds/group_log: key/value pairs of __consumer_offsets records,
  and whole __consumer_offsets segments for the replay mode.
Existing seed-*.bin files are replaced; regression inputs (crash-*, regress-*) are kept.
"""

import hashlib
import os
import struct
import sys
from collections import defaultdict

import crc32c

PER_API_VERSION = 3
MAX_FRAME = 64 << 10
MAX_SEGMENT = 64 << 10


def pcap_streams(path, port):
    """Client->broker TCP payloads per client port, in sequence order."""
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    assert linktype == 1, "expected an Ethernet capture of lo, got linktype %d" % linktype
    pos = 24
    segs = defaultdict(dict)
    while pos + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[pos:pos + 16])
        pkt = data[pos + 16:pos + 16 + incl]
        pos += 16 + incl
        if len(pkt) < 14 or struct.unpack(">H", pkt[12:14])[0] != 0x0800:
            continue
        ip = pkt[14:]
        ihl = (ip[0] & 0x0F) * 4
        if ip[9] != 6:
            continue
        total = struct.unpack(">H", ip[2:4])[0]
        tcp = ip[ihl:total]
        sport, dport, seq = struct.unpack(">HHI", tcp[:8])
        doff = (tcp[12] >> 4) * 4
        payload = tcp[doff:]
        if dport == port and payload:
            segs[sport].setdefault(seq, payload)
    for sport in sorted(segs):
        by_seq = segs[sport]
        yield b"".join(by_seq[s] for s in sorted(by_seq))


def frames(stream):
    pos = 0
    while pos + 4 <= len(stream):
        (n,) = struct.unpack(">i", stream[pos:pos + 4])
        if n < 0 or pos + 4 + n > len(stream):
            return
        yield stream[pos + 4:pos + 4 + n]
        pos += 4 + n


def batches_in(buf):
    """Every well-formed, CRC-correct v2 batch inside `buf` (any position)."""
    out, i = [], 0
    while i + 61 <= len(buf):
        if buf[i + 16] == 2:
            (length,) = struct.unpack(">i", buf[i + 8:i + 12])
            end = i + 12 + length
            if length >= 49 and end <= len(buf):
                (stored,) = struct.unpack(">I", buf[i + 17:i + 21])
                if crc32c.crc32c(buf[i + 21:end]) == stored:
                    out.append(buf[i:end])
                    i = end
                    continue
        i += 1
    return out


def segment_batches(seg):
    pos, out = 0, []
    while pos + 61 <= len(seg):
        (length,) = struct.unpack(">i", seg[pos + 8:pos + 12])
        if length < 49 or pos + 12 + length > len(seg):
            break
        out.append((pos, seg[pos:pos + 12 + length]))
        pos += 12 + length
    return out


def varlong(buf, pos):
    z, shift = 0, 0
    while True:
        b = buf[pos]
        pos += 1
        z |= (b & 0x7F) << shift
        if b < 0x80:
            return (z >> 1) ^ -(z & 1), pos
        shift += 7


def records_of(batch):
    """(key, value) of each record of an uncompressed batch."""
    pos, out = 61, []
    while pos < len(batch):
        length, pos = varlong(batch, pos)
        end = pos + length
        p = pos + 1
        _, p = varlong(batch, p)
        _, p = varlong(batch, p)
        fields = []
        for _ in range(2):
            n, p = varlong(batch, p)
            fields.append(None if n < 0 else batch[p:p + n])
            p += max(n, 0)
        out.append(tuple(fields))
        pos = end
    return out


def indexes_of(seg_batches, interval):
    """Offset and time index bytes as IndexBuilder would derive them."""
    offsets, times = b"", b""
    since, max_ts, last_t = None, None, None
    for pos, b in seg_batches:
        (base,) = struct.unpack(">q", b[:8])
        (max_t,) = struct.unpack(">q", b[35:43])
        if since is None or since >= interval:
            offsets += struct.pack(">II", base, pos)
            since = 0
            if max_ts is not None and (last_t is None or max_ts > last_t):
                times += struct.pack(">qI", *max_ts)
                last_t = max_ts
        since += len(b)
        if max_ts is None or max_t > max_ts[0]:
            max_ts = (max_t, base)
    if max_ts is not None and (last_t is None or max_ts[0] > last_t[0]):
        times += struct.pack(">qI", *max_ts)
    return offsets, times


class Seeds:
    def __init__(self, root, target, fuzz_dir):
        self.dir = os.path.join(root, fuzz_dir, "fuzz", "seeds", target)
        os.makedirs(self.dir, exist_ok=True)
        for f in os.listdir(self.dir):
            if f.startswith("seed-"):
                os.remove(os.path.join(self.dir, f))
        self.seen = set()

    def add(self, name, data):
        h = hashlib.sha1(data).hexdigest()[:10]
        if h in self.seen:
            return
        self.seen.add(h)
        with open(os.path.join(self.dir, "seed-%s-%s.bin" % (name, h)), "wb") as f:
            f.write(data)


def main():
    pcap, port, data_dir, root = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    req = Seeds(root, "request_frame", "net")
    header = Seeds(root, "batch_header", "engine")
    records = Seeds(root, "records", "engine")
    recovery = Seeds(root, "recovery_scan", "engine")
    index = Seeds(root, "index_decode", "engine")
    group = Seeds(root, "group_log", "engine")

    per_kv = defaultdict(list)
    produced = []
    for stream in pcap_streams(pcap, port):
        for f in frames(stream):
            if len(f) < 8:
                continue
            key, ver = struct.unpack(">hh", f[:4])
            per_kv[(key, ver)].append(f)
            if key == 0:
                produced.extend(batches_in(f))
    for (key, ver), fs in sorted(per_kv.items()):
        fs = sorted(set(fs), key=len)
        picks = {fs[0], fs[len(fs) // 2], fs[-1]}
        for f in sorted(picks, key=len)[:PER_API_VERSION]:
            if len(f) <= MAX_FRAME:
                req.add("api%d-v%d" % (key, ver), f)

    max_bytes = struct.pack(">I", 1 << 20)
    by_codec = defaultdict(list)
    for b in produced:
        by_codec[b[22] & 7].append(b)
    for codec, bs in sorted(by_codec.items()):
        for b in bs[:6]:
            header.add("produce-c%d" % codec, b"\x00" + max_bytes + b)
        header.add("produce-c%d-multi" % codec, b"\x00" + max_bytes + b"".join(bs[:3]))
        if codec == 0:
            for b in bs[:10]:
                records.add("produce", b"\x00" + b)

    for topic_dir in sorted(os.listdir(data_dir)):
        seg_path = os.path.join(data_dir, topic_dir, "00000000000000000000.log")
        if not os.path.exists(seg_path):
            continue
        seg = open(seg_path, "rb").read(MAX_SEGMENT)
        sb = segment_batches(seg)
        if not sb:
            continue
        used = sb[-1][0] + len(sb[-1][1])
        kind = "offsets" if topic_dir.startswith("__consumer_offsets") else "topic"
        # The used part plus some of the preallocated zero tail.
        recovery.add(kind, b"\x00" + seg[:min(len(seg), used + 256)])
        for interval in (1, 4096):
            o, t = indexes_of(sb, interval)
            index.add("offset-i%d" % interval, b"\x00" + o)
            index.add("time-i%d" % interval, b"\x00" + t)
        if kind == "offsets":
            group.add("replay", b"\x02\x00\x00" + seg[:used])
            for _, b in sb[:4]:
                records.add("offsets", b"\x00" + b)
                for k, v in records_of(b)[:4]:
                    if v is None:
                        group.add("tombstone", b"\x01" + struct.pack(">H", len(k)) + k)
                    else:
                        group.add("commit", b"\x00" + struct.pack(">H", len(k)) + k + v)
        else:
            for _, b in sb[:2]:
                header.add("stored", b"\x00" + max_bytes + b)
    for name, s in [("request_frame", req), ("batch_header", header), ("records", records),
                    ("recovery_scan", recovery), ("index_decode", index), ("group_log", group)]:
        print("%-14s %3d seeds in %s" % (name, len(s.seen), s.dir))


if __name__ == "__main__":
    main()
