"""End-to-end live latency of the observer: a shard produced -> its change at a WebSocket client.

Path measured: this script writes shards at a paced rate into `lattice replay - --state DIR`
(stdin, committing every --batch shards), whose StateStore writes the change log; `lattice
observe` follows the directory as a RocksDB secondary (--poll) and pushes `changes` to live
WebSocket clients. Each shard's `ts` is the wall time (ms) when it was written to the pipe, so a
change's latency is (arrival wall time - stamp.ts). One measuring client records every change; the
other clients are live too (all unfiltered, or --subscribe PREFIX) and just read. Prints p50/p90/
p99/max latency, changes received, and the observer's CPU (user+sys) per second of the run.

    /usr/bin/python3 bench/observer_latency.py build/cli/lattice [--rate 50000] [--seconds 10]
        [--clients 200] [--keys 100] [--batch 500] [--poll 10ms]
"""
import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import websockets

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "integration"))
from observer_support import Observer  # noqa: E402


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lattice")
    ap.add_argument("--rate", type=int, default=50000)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--keys", type=int, default=100, help="distinct counters the shards increment")
    ap.add_argument("--batch", type=int, default=500, help="replay --batch (shards per commit)")
    ap.add_argument("--poll", default="10ms")
    ap.add_argument("--subscribe", default=None, help="prefix the extra clients subscribe to")
    a = ap.parse_args()
    work = tempfile.mkdtemp(prefix="lattice-observer-bench.")
    state = os.path.join(work, "state")
    seed = os.path.join(work, "seed.ndjson")
    with open(seed, "w") as f:
        f.write(json.dumps({"blade": "seed", "seq": 1, "ts": int(time.time() * 1000),
                            "shard": {"bench": {"started": True}}}) + "\n")
    subprocess.run([a.lattice, "replay", seed, "--state", state], check=True, capture_output=True)
    obs = Observer(a.lattice, state, work, "--poll", a.poll, "--max-clients", str(a.clients + 10))
    latencies = []
    received = 0
    stop = asyncio.Event()

    async def measuring():
        nonlocal received
        async with websockets.connect(obs.ws, max_size=2**28) as ws:
            await ws.recv()
            await ws.recv()
            await ws.send(json.dumps({"type": "set_mode", "payload": {"mode": "live"}}))
            ready.set()
            while not stop.is_set():
                try:
                    raw = await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    continue
                now = time.time() * 1000
                m = json.loads(raw)
                if m["type"] == "changes":
                    for ch in m["payload"]["changes"]:
                        if ch["path"].startswith("bench.k"):
                            latencies.append(now - ch["stamp"]["ts"])
                            received += 1

    async def passive():
        async with websockets.connect(obs.ws, max_size=2**28) as ws:
            await ws.recv()
            await ws.recv()
            if a.subscribe:
                await ws.send(json.dumps({"type": "subscribe", "payload": {"prefixes": [a.subscribe]}}))
            await ws.send(json.dumps({"type": "set_mode", "payload": {"mode": "live"}}))
            while not stop.is_set():
                try:
                    await asyncio.wait_for(ws.recv(), 0.5)
                except asyncio.TimeoutError:
                    pass

    ready = asyncio.Event()
    tasks = [asyncio.create_task(measuring())]
    await ready.wait()
    for _ in range(a.clients - 1):
        tasks.append(asyncio.create_task(passive()))
    await asyncio.sleep(1.0)
    writer = subprocess.Popen([a.lattice, "replay", "-", "--state", state, "--batch", str(a.batch)],
                              stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cpu0, t0 = cpu_seconds(obs.proc.pid), time.monotonic()
    sent = 0
    tick = 0.01
    per_tick = max(1, int(a.rate * tick))
    start = time.monotonic()
    while time.monotonic() - start < a.seconds:
        ts = int(time.time() * 1000)
        lines = []
        for _ in range(per_tick):
            sent += 1
            lines.append('{"blade":"b%d","seq":%d,"ts":%d,"shard":{"bench":{"k%d":{"$inc":1}}}}\n'
                         % (sent % 16, sent // 16 + 1, ts, sent % a.keys))
        writer.stdin.write("".join(lines).encode())
        writer.stdin.flush()
        next_at = start + (sent / per_tick) * tick
        await asyncio.sleep(max(0, next_at - time.monotonic()))
    produce_s = time.monotonic() - start
    writer.stdin.close()
    await asyncio.sleep(2.0)
    cpu = cpu_seconds(obs.proc.pid) - cpu0
    wall = time.monotonic() - t0
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    writer.wait()
    obs.stop()
    shutil.rmtree(work, ignore_errors=True)
    latencies.sort()

    def pct(p):
        return latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))] if latencies else float("nan")
    print(f"path: paced writer -> lattice replay - (stdin, --batch {a.batch}) -> change log -> "
          f"lattice observe (secondary, --poll {a.poll}) -> live WebSocket")
    print(f"produced {sent} shards in {produce_s:.1f} s ({sent / produce_s:.0f} shards/s) over {a.keys} counters; "
          f"{a.clients} live clients{' subscribed to ' + a.subscribe if a.subscribe else ''}")
    print(f"changes received by the measuring client: {received} (coalesced per path per catch-up)")
    print(f"latency ms: p50 {pct(50):.1f}  p90 {pct(90):.1f}  p99 {pct(99):.1f}  max {latencies[-1] if latencies else float('nan'):.1f}")
    print(f"observer CPU: {cpu:.2f} s over {wall:.1f} s = {cpu / wall:.2f} cores")


if __name__ == "__main__":
    asyncio.run(main())
