"""End-to-end live latency of the observer: a shard produced -> its change at a WebSocket client.

Path measured (default, --path kafka, the product's live path):

    paced writer (own process) -> lattice emit (stdin) -> lattice broker (librdkafka mock)
      -> lattice aggregate (state + change log, one WriteBatch per batch)
      -> lattice observe (RocksDB secondary, --poll) -> live WebSocket clients

(--path replay replaces emit/broker/aggregate by `lattice replay -` reading the writer's lines.)

Each shard's `ts` is the wall time (ms) at which the writer produced it, so a change's latency is
(arrival wall time - stamp.ts). Stages, from the same changes:
  - produced -> observer read: `observed_at` (the observer's wall time after the catch-up that
    read it) - stamp.ts; this is producer + broker + aggregator + the observer's poll/catch-up;
  - of which aggregator: the aggregator's own event-time lag figures (`lag_ms` in its progress
    log: shard ts -> merged, and -> published), when the aggregator prints them;
  - observer read -> client: arrival - observed_at (encoding, fan-out, socket, client).
One measuring client (its own process, a raw socket that only timestamps each read while the run
lasts and decodes afterwards) records every change. The other live clients run in separate
processes (raw sockets, read and discard, no decoding). Prints
p50/p90/p99/max, the stage breakdown, and CPU (user+sys, /proc) of the observer and the others.

    /usr/bin/python3 bench/observer_latency.py build/cli/lattice [--rate 50000] [--seconds 10]
        [--clients 200] [--keys 100] [--path kafka|replay] [--poll 10ms]
"""
import argparse
import asyncio
import base64
import json
import os
import re
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from observer_support import Observer  # noqa: E402

# The paced writer, run as its own process: NDJSON envelopes on stdout at --rate, each stamped
# with the wall time it was produced. Pacing in 2 ms ticks.
WRITER = r"""
import sys, time
rate, seconds, keys, blades = float(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
out = sys.stdout.buffer
tick = 0.002
start = time.monotonic()
sent = 0
k = 0
while True:
    now = time.monotonic()
    if now - start >= seconds:
        break
    due = int((now - start) * rate)
    if due > sent:
        ts = int(time.time() * 1000)
        parts = []
        for i in range(sent, due):
            parts.append('{"blade":"b%d","seq":%d,"ts":%d,"shard":{"bench":{"k%d":{"$inc":1}}}}\n'
                         % (i % blades, i // blades + 1, ts, i % keys))
        out.write("".join(parts).encode())
        out.flush()
        sent = due
    k += 1
    time.sleep(max(0.0, start + k * tick - time.monotonic()))
sys.stderr.write("%d %.3f\n" % (sent, time.monotonic() - start))
"""


def passive_clients(url, n, seconds):
    """Runs n live WebSocket clients on raw sockets: handshake, set_mode live, then read and
    discard everything. Prints the bytes each received."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    sel = selectors.DefaultSelector()
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(4096)
        assert b" 101 " in head.split(b"\r\n")[0], head[:200]
        s.sendall(frame(b'{"type":"set_mode","payload":{"mode":"live"}}', 1))
        s.setblocking(False)
        sel.register(s, selectors.EVENT_READ, [0])
        socks.append(s)
    print("ready", flush=True)
    end = time.monotonic() + seconds
    next_pong = time.monotonic() + 5
    buf = bytearray(1 << 20)
    while time.monotonic() < end:
        for key, _ in sel.select(0.2):
            try:
                got = key.fileobj.recv_into(buf)
            except BlockingIOError:
                continue
            key.data[0] += got
        if time.monotonic() >= next_pong:  # unsolicited pongs keep the connections alive
            for s in socks:
                try:
                    s.send(frame(b"", 0xA))
                except BlockingIOError:
                    pass
            next_pong = time.monotonic() + 5
    print(" ".join(str(k.data[0]) for k in sel.get_map().values()), flush=True)


def measuring_client(url, seconds, out_path):
    """The measuring client, in its own process: a raw socket that only timestamps what it reads
    (one wall-clock reading per recv) while the run lasts; frames and JSON are decoded after the
    run, each frame getting the time of the read that completed it. So the client's own decoding
    never delays an arrival time. Writes `stamp.ts observed_at arrival` per bench change, and
    the snapshot reasons it saw, to out_path."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests",
                                    "integration"))
    from observer_support import RawWs
    ws = RawWs(url)
    ws.recv_json()  # hello
    ws.recv_json()  # snapshot (connect)
    ws.send_json({"type": "set_mode", "payload": {"mode": "live"}})
    reads = [(time.time() * 1000, bytes(ws.buf))]  # what the handshake reads left over
    ws.sock.settimeout(0.2)
    print("ready", flush=True)
    end = time.monotonic() + seconds
    buf = bytearray(1 << 20)
    while time.monotonic() < end:
        try:
            n = ws.sock.recv_into(buf)
        except TimeoutError:
            continue
        if n == 0:
            break
        reads.append((time.time() * 1000, bytes(buf[:n])))
    ws.close()
    data = b"".join(chunk for _, chunk in reads)
    ends, at = [], 0  # the stream offset at which each read ended
    for t, chunk in reads:
        at += len(chunk)
        ends.append((at, t))
    samples, snapshots = [], []
    pos, ri, parts = 0, 0, []
    while pos + 2 <= len(data):
        b0, b1 = data[pos], data[pos + 1]
        n, hl = b1 & 0x7F, 2
        if n == 126:
            n, hl = int.from_bytes(data[pos + 2:pos + 4], "big"), 4
        elif n == 127:
            n, hl = int.from_bytes(data[pos + 2:pos + 10], "big"), 10
        if pos + hl + n > len(data):
            break
        parts.append(data[pos + hl:pos + hl + n])
        pos += hl + n
        if not b0 & 0x80 or (b0 & 0x0F) >= 0x8:  # a fragment, or a control frame
            if (b0 & 0x0F) >= 0x8:
                parts.pop()
            continue
        while ends[ri][0] < pos:
            ri += 1
        arrival = ends[ri][1]
        m = json.loads(b"".join(parts))
        parts = []
        if m["type"] == "changes":
            observed = m["payload"]["observed_at"]
            for ch in m["payload"]["changes"]:
                if ch["path"].startswith("bench.k"):
                    samples.append(f'{ch["stamp"]["ts"]} {observed} {arrival:.1f}')
        elif m["type"] == "snapshot":
            snapshots.append(m["payload"]["reason"])
    with open(out_path, "w") as f:
        f.write(" ".join(snapshots) + "\n")
        f.write("\n".join(samples) + "\n")


def frame(payload, opcode):
    mask = os.urandom(4)
    head = bytes([0x80 | opcode])
    if len(payload) < 126:
        head += bytes([0x80 | len(payload)])
    else:
        head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def cpu_seconds(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def pct(values, p):
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


def summary_line(name, values):
    values = sorted(values)
    if not values:
        return f"  {name:<34} (none)"
    return (f"  {name:<34} p50 {pct(values, 50):7.1f}  p90 {pct(values, 90):7.1f}  "
            f"p99 {pct(values, 99):7.1f}  max {values[-1]:7.1f}")


def wait_file(path, proc, what, timeout=30):
    deadline = time.time() + timeout
    while not (os.path.exists(path) and os.path.getsize(path) > 0):
        if proc.poll() is not None or time.time() > deadline:
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)
    return open(path).read().strip()


async def main():
    procs = {}
    try:
        await run(procs)
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
                p.wait()


async def run(procs):
    ap = argparse.ArgumentParser()
    ap.add_argument("lattice")
    ap.add_argument("--rate", type=int, default=50000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--client-procs", type=int, default=2, help="processes running the extra clients")
    ap.add_argument("--keys", type=int, default=100, help="distinct counters the shards increment")
    ap.add_argument("--blades", type=int, default=64)
    ap.add_argument("--path", choices=["kafka", "replay"], default="kafka")
    ap.add_argument("--partitions", type=int, default=16)
    ap.add_argument("--batch", type=int, default=500, help="replay path: replay --batch")
    ap.add_argument("--poll", default="10ms")
    ap.add_argument("--observe-arg", action="append", default=[], help="extra lattice observe argument")
    ap.add_argument("--aggregate-arg", action="append", default=[], help="extra lattice aggregate argument")
    ap.add_argument("--emit-arg", action="append", default=[], help="extra lattice emit argument")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    ap.add_argument("--group-mode", action="store_true",
                    help="aggregate as a consumer-group member (default: standalone, --assign all)")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lattice-observer-bench.")
    state = os.path.join(work, "state")
    logs = {}

    def start(name, args, **kw):
        logs[name] = open(os.path.join(work, name + ".log"), "wb")
        kw.setdefault("stderr", logs[name])
        kw.setdefault("stdout", subprocess.DEVNULL)
        procs[name] = subprocess.Popen(args, **kw)
        return procs[name]

    seed = json.dumps({"blade": "seed", "seq": 1, "ts": int(time.time() * 1000),
                       "shard": {"bench": {"started": True}}}) + "\n"
    if a.path == "kafka":
        bs_file = os.path.join(work, "bs.txt")
        start("broker", [a.lattice, "broker", "--no-stdin", "--no-default-topics",
                         "--topic", f"lattice.shards:{a.partitions}", "--topic", "lattice.dead:1",
                         "--topic", "lattice.changes:1", "--bootstrap-file", bs_file])
        bootstrap = wait_file(bs_file, procs["broker"], "lattice broker")
        mode = (["-X", "session.timeout.ms=6000", "-X", "heartbeat.interval.ms=500"] if a.group_mode
                else ["--assign", "all"])
        start("aggregate", [a.lattice, "aggregate", "-b", bootstrap, "--state", state, *mode,
                            "--log-interval", "1s", *a.aggregate_arg])
        subprocess.run([a.lattice, "emit", "-b", bootstrap], input=seed.encode(), check=True,
                       capture_output=True)
        deadline = time.time() + 60
        while b"consuming " not in open(os.path.join(work, "aggregate.log"), "rb").read():
            if procs["aggregate"].poll() is not None or time.time() > deadline:
                raise RuntimeError("lattice aggregate did not start: see " + work)
            await asyncio.sleep(0.1)
    else:
        seed_file = os.path.join(work, "seed.ndjson")
        with open(seed_file, "w") as f:
            f.write(seed)
        subprocess.run([a.lattice, "replay", seed_file, "--state", state], check=True, capture_output=True)
    obs = Observer(a.lattice, state, work, "--poll", a.poll, "--max-clients", str(a.clients + 10),
                   *a.observe_arg)
    procs["observe"] = obs.proc
    # The seed must have reached the observer (the aggregator's group is formed and committing).
    deadline = time.time() + 60
    while True:
        with urllib.request.urlopen(obs.url + "v1/health", timeout=5) as r:
            if json.loads(r.read())["commit"] > 0:
                break
        if time.time() > deadline:
            raise RuntimeError("the seed shard never reached the observer: see " + work)
        await asyncio.sleep(0.1)

    samples_file = os.path.join(work, "measured.txt")
    run_for = a.seconds + 6
    measure = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--measure", obs.ws,
                                str(run_for), samples_file], stdout=subprocess.PIPE, text=True)
    procs["measure"] = measure
    if measure.stdout.readline().strip() != "ready":
        raise RuntimeError("the measuring client failed")
    extra = a.clients - 1
    passive = []
    for i in range(min(a.client_procs, extra)):
        n = extra // a.client_procs + (1 if i < extra % a.client_procs else 0)
        if n == 0:
            continue
        p = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--passive", obs.ws, str(n),
                              str(run_for)], stdout=subprocess.PIPE, text=True)
        passive.append(p)
        procs[f"clients{i}"] = p
    for p in passive:
        if p.stdout.readline().strip() != "ready":
            raise RuntimeError("a passive client process failed")
    await asyncio.sleep(1.0)

    if a.path == "kafka":
        sink = start("emit", [a.lattice, "emit", "-b", bootstrap, *a.emit_arg], stdin=subprocess.PIPE)
    else:
        sink = start("replay", [a.lattice, "replay", "-", "--state", state, "--batch", str(a.batch)],
                     stdin=subprocess.PIPE)
    watch = ["observe"] + [n for n in ("broker", "aggregate", "emit", "replay") if n in procs]
    pids = {n: (obs.proc.pid if n == "observe" else procs[n].pid) for n in watch}
    watch.append("clients")  # the measuring client and the other clients' processes together
    client_pids = [measure.pid] + [p.pid for p in passive]
    load_start = os.getloadavg()[0]
    cpu0 = {n: cpu_seconds(pid) for n, pid in pids.items()}
    cpu0["clients"] = sum(cpu_seconds(pid) for pid in client_pids)
    t0 = time.monotonic()
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(a.rate), str(a.seconds), str(a.keys),
                               str(a.blades)], stdout=sink.stdin, stderr=subprocess.PIPE, text=True)
    procs["writer"] = writer
    while writer.poll() is None:
        await asyncio.sleep(0.1)
    sent, produce_s = writer.stderr.read().split()
    sent, produce_s = int(sent), float(produce_s)
    cpu_mid = {n: cpu_seconds(pid) - cpu0[n] for n, pid in pids.items()}
    cpu_mid["clients"] = sum(cpu_seconds(pid) for pid in client_pids) - cpu0["clients"]
    load_end = os.getloadavg()[0]
    wall_mid = time.monotonic() - t0
    sink.stdin.close()
    await asyncio.sleep(2.0)
    drops = "?"
    try:
        with urllib.request.urlopen(obs.url + "metrics", timeout=5) as r:
            text = r.read()
        m = re.search(rb"^lattice_observer_slow_client_drops_total (\d+)", text, re.M)
        drops = m.group(1).decode() if m else "?"
        by = re.findall(rb'^lattice_observer_slow_client_drop_reasons_total\{reason="(\w+)"\} (\d+)',
                        text, re.M)
        if by:
            drops += " (" + ", ".join(f"{k.decode()} {v.decode()}" for k, v in by) + ")"
    except OSError:
        pass
    measure.wait(timeout=run_for + 60)
    with open(samples_file) as f:
        measured_snapshots = f.readline().split()
        samples = [tuple(float(x) for x in line.split()) for line in f if line.strip()]
    received_bytes = []
    for p in passive:
        out = p.communicate(timeout=run_for + 30)[0].split("\n")
        received_bytes += [int(x) for x in out[-2].split()] if len(out) >= 2 and out[-2] else []
    sink.wait()
    if "aggregate" in procs:
        procs["aggregate"].send_signal(signal.SIGTERM)
        procs["aggregate"].wait(timeout=60)
    obs.stop()
    for name in ("broker",):
        if name in procs:
            procs[name].send_signal(signal.SIGTERM)
            procs[name].wait(timeout=30)
    # The aggregator's progress lines (one a second) while the rate was steady (>= 80 % of it):
    # its event-time lag when messages were merged and when their changes were published.
    agg = []
    if "aggregate" in logs:
        with open(os.path.join(work, "aggregate.log")) as f:
            for line in f:
                m = re.search(r"(\d+) msg/s.*merged (\d+)/(\d+), published (\d+)/(\d+); "
                              r"batch ms avg: wait ([\d.]+), fill ([\d.]+), commit ([\d.]+)", line)
                if m and int(m.group(1)) >= 0.8 * a.rate:
                    agg.append([float(x) for x in m.groups()])

    e2e = [arr - ts for ts, _, arr in samples]
    to_obs = [obs_at - ts for ts, obs_at, _ in samples]
    fan = [arr - obs_at for _, obs_at, arr in samples]
    if a.path == "kafka":
        print("path: paced writer -> lattice emit -> lattice broker (mock) -> lattice aggregate -> "
              f"state + change log -> lattice observe (secondary, --poll {a.poll}) -> live WebSocket")
    else:
        print(f"path: paced writer -> lattice replay - (stdin, --batch {a.batch}) -> change log -> "
              f"lattice observe (secondary, --poll {a.poll}) -> live WebSocket")
    print(f"produced {sent} shards in {produce_s:.1f} s ({sent / produce_s:.0f} shards/s) over {a.keys} "
          f"counters; {a.clients} live clients ({extra} in {len(passive)} other process(es))")
    print(f"changes received by the measuring client: {len(samples)} (coalesced per path per catch-up); "
          f"snapshots it got: {' '.join(measured_snapshots) or 'none'}")
    print(f"load average (1 min) at the start / end of writing: {load_start:.1f} / {load_end:.1f} "
          f"on {os.cpu_count()} cores")
    print("latency ms (stamp.ts = produce time):")
    print(summary_line("end to end (produced -> client)", e2e))
    print(summary_line("produced -> observer read", to_obs))
    print(summary_line("observer read -> client", fan))
    if agg:
        def med(i):
            return sorted(r[i] for r in agg)[len(agg) // 2]
        print(f"  of which produced -> aggregator merged    p50 {med(1):5.0f}  p99 {med(2):5.0f}   "
              f"(aggregator's log, median of {len(agg)} steady seconds)")
        print(f"  of which produced -> aggregator published p50 {med(3):5.0f}  p99 {med(4):5.0f}   "
              f"(batch durable: in-process subscribers, lattice.changes)")
        print(f"  aggregator batch: {med(0):.0f} msg/s, per batch "
              f"avg ms: waiting for the first message {med(5):.1f}, filling {med(6):.1f}, committing {med(7):.1f}")
    print(f"slow-client drops (/metrics): {drops}")
    if received_bytes:
        print(f"other clients received {min(received_bytes) / 1e6:.1f} .. {max(received_bytes) / 1e6:.1f} MB each")
    print("CPU while writing (user+sys, cores): " +
          ", ".join(f"{n} {cpu_mid[n] / wall_mid:.2f}" for n in watch))
    if a.keep:
        with open(os.path.join(work, "samples.txt"), "w") as f:
            for ts, obs_at, arr in samples:
                f.write(f"{ts} {obs_at} {arr:.1f}\n")
        print("work directory:", work, "(samples.txt: stamp.ts observed_at arrival per change)")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--measure":
        measuring_client(sys.argv[2], float(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) > 1 and sys.argv[1] == "--passive":
        passive_clients(sys.argv[2], int(sys.argv[3]), float(sys.argv[4]))
    else:
        asyncio.run(main())
