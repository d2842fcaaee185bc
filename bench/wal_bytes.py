#!/usr/bin/python3
"""What a state directory's write-ahead log holds: bytes and records by column family and kind.

Usage: bench/wal_bytes.py STATE_DIR

Reads RocksDB's log files (*.log: 32 KiB blocks of records with a 7-byte header, fragments
joined) as WriteBatches and counts every Put, Delete and DeleteRange by column family: keys,
values and the per-record overhead (tag, family id, varint lengths). Column family ids are those
StateStore::Open gives a new directory (default 0, state 1, counters 2, meta 3, history 4,
changes 5, expiry 6). The WAL is what the store's writer pays for per commit (the CRC, the write()
copy, the memtable inserts), so this shows what a change of batching or record layout saves.
docs/benchmarks.md, "Session 8 writer and process costs", has examples.
"""
import collections
import glob
import os
import sys

NAMES = {0: "default", 1: "state", 2: "counters", 3: "meta", 4: "history", 5: "changes",
         6: "expiry"}
BLOCK = 32768
# WriteBatch record tags (RocksDB db/dbformat.h): default-family and column-family forms.
TWO_FIELDS = {0x1: "put", 0x5: "put", 0xE: "range", 0xF: "range"}
ONE_FIELD = {0x0: "del", 0x4: "del", 0x7: "del", 0x8: "del"}  # incl. SingleDelete
WITH_FAMILY = {0x4, 0x5, 0x8, 0xE}


def varint(b, i):
    r = s = 0
    while True:
        c = b[i]
        i += 1
        r |= (c & 0x7F) << s
        s += 7
        if c < 0x80:
            return r, i


def batches(path):
    data = open(path, "rb").read()
    i, buf = 0, b""
    while i + 7 <= len(data):
        left = BLOCK - i % BLOCK
        if left < 7:
            i += left
            continue
        length = data[i + 4] | data[i + 5] << 8
        kind = data[i + 6]
        header = 7
        if kind >= 5:  # recyclable log records carry a 4-byte log number
            header, kind = 11, kind - 4
        if kind == 0 and length == 0:
            i += left  # zero padding to the end of the block
            continue
        payload = data[i + header:i + header + length]
        i += header + length
        if kind == 1:
            yield payload
        elif kind == 2:
            buf = payload
        elif kind == 3:
            buf += payload
        elif kind == 4:
            yield buf + payload


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    stats = collections.defaultdict(lambda: [0, 0, 0, 0])  # records, key, value, overhead bytes
    files = sorted(glob.glob(os.path.join(sys.argv[1], "*.log")))
    file_bytes = sum(os.path.getsize(f) for f in files)
    count = total = 0
    for f in files:
        for rec in batches(f):
            count += 1
            total += len(rec)
            j = 12  # sequence number, record count
            while j < len(rec):
                start, tag = j, rec[j]
                j += 1
                family = 0
                if tag in WITH_FAMILY:
                    family, j = varint(rec, j)
                klen, j = varint(rec, j)
                j += klen
                vlen = 0
                if tag in TWO_FIELDS:
                    vlen, j = varint(rec, j)
                    j += vlen
                    op = TWO_FIELDS[tag]
                elif tag in ONE_FIELD:
                    op = ONE_FIELD[tag]
                else:
                    sys.exit(f"unknown WriteBatch tag {tag:#x}")
                e = stats[(NAMES.get(family, str(family)), op)]
                e[0] += 1
                e[1] += klen
                e[2] += vlen
                e[3] += j - start - klen - vlen
    print(f"{len(files)} log file(s), {file_bytes / 1e6:.1f} MB; {count} batches, "
          f"{total / 1e6:.1f} MB of WriteBatch")
    for (family, op), (n, k, v, o) in sorted(stats.items(), key=lambda kv: -sum(kv[1][1:])):
        t = k + v + o
        print(f"{family:9s} {op:5s} {n:9d} records  keys {k / 1e6:6.1f} MB  values "
              f"{v / 1e6:6.1f} MB  overhead {o / 1e6:5.1f} MB  total {t / 1e6:6.1f} MB "
              f"{100 * t / max(total, 1):5.1f}%")


if __name__ == "__main__":
    main()
