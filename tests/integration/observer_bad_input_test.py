"""`lattice observe` against bad and hostile WebSocket clients: malformed frames, unknown types,
binary frames, a frame over the 64 KiB limit, a flood of messages, a slow reader that stops
reading while the state changes fast, 1,000 clients connecting and disconnecting (some
abruptly), and more clients than --max-clients. Each gets a clear error (or close code), the
server's memory stays bounded and it keeps serving.

    python3 observer_bad_input_test.py LATTICE_BINARY TESTS_DATA_DIR
"""
import asyncio
import glob
import json
import os
import shutil
import subprocess
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from observer_support import (Checks, Observer, http_json, metrics, recv_json, recv_until,  # noqa: E402
                              run, tmpdir)


def metric(obs, name):
    return metrics(obs).get(name)


def main():
    lattice, data = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    golden = os.path.join(data, "observer", "golden")
    work = tmpdir("observer-bad-input")
    c = Checks()
    observers = []
    writer = None
    try:
        state = os.path.join(work, "state")
        run([lattice, "replay", os.path.join(golden, "summary_state.ndjson"), "--state", state])
        big = os.path.join(work, "big.ndjson")
        run([lattice, "gen", "--shards", "30000", "--blades", "64", "--domains", "5000",
             "--start-ts", "1732350001000", "-o", big])
        obs = Observer(lattice, state, work, "--client-queue-bytes", "65536", "--max-clients", "1100")
        observers.append(obs)
        rss0 = obs.rss_kb()

        async def bad_frames():
            async with websockets.connect(obs.ws) as ws:
                await recv_json(ws)
                await recv_json(ws)
                for path in sorted(glob.glob(os.path.join(golden, "bad_*.txt"))):
                    reason, frame = open(path).read().split("\n", 1)
                    await ws.send(frame.rstrip("\n"))
                    m = await recv_json(ws)
                    c.check(m["type"] == "error" and m["payload"]["reason"] == reason and
                            len(m["payload"]["message"]) > 10,
                            f"{os.path.basename(path)} -> error {reason}: {m['payload'].get('message')}")
                await ws.send(b"\x00\x01binary")
                m = await recv_json(ws)
                c.check(m["payload"]["reason"] == "binary_frame", "binary frame -> error binary_frame")
                await ws.send(json.dumps({"type": "ping", "payload": {"t": 1}}))
                c.check((await recv_json(ws))["type"] == "pong", "the connection survives bad frames")
            # A flood: 150 messages at once -> one rate_limited error, the rest dropped.
            async with websockets.connect(obs.ws) as ws:
                await recv_json(ws)
                await recv_json(ws)
                for i in range(150):
                    await ws.send(json.dumps({"type": "ping", "payload": {"t": i}}))
                pongs = errors = 0
                try:
                    while True:
                        m = await recv_json(ws, 1.0)
                        pongs += m["type"] == "pong"
                        errors += m["type"] == "error" and m["payload"]["reason"] == "rate_limited"
                except asyncio.TimeoutError:
                    pass
                c.check(errors == 1 and pongs <= 100 and pongs >= 50,
                        f"flood: {pongs} pongs, {errors} rate_limited error")
            # A frame over the limit closes the connection with 1009.
            async with websockets.connect(obs.ws, max_size=2**24) as ws:
                await recv_json(ws)
                await recv_json(ws)
                await ws.send("x" * 70000)
                try:
                    while True:
                        await asyncio.wait_for(ws.recv(), 5)
                except websockets.exceptions.ConnectionClosed as e:
                    code = e.rcvd.code if e.rcvd else None
                c.check(code == 1009, f"70000-byte frame -> close 1009 (got {code})")

        asyncio.run(bad_frames())
        st, health = http_json(obs.url + "v1/health")
        c.check(st == 200, "serves after bad frames")

        async def slow_reader():
            nonlocal writer
            # A live client that stops reading (its library buffers one message, then TCP fills).
            import socket
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            sock.connect(("127.0.0.1", int(obs.url.rsplit(":", 1)[1].strip("/"))))
            slow = await websockets.connect(obs.ws, sock=sock, max_queue=1, read_limit=2**12,
                                            write_limit=2**12, max_size=2**26)
            await recv_json(slow)
            await recv_json(slow)
            await slow.send(json.dumps({"type": "set_mode", "payload": {"mode": "live"}}))
            await recv_until(slow, lambda m: m["type"] == "mode")
            # A healthy live client next to it.
            fast = await websockets.connect(obs.ws, max_size=2**26)
            await recv_json(fast)
            await recv_json(fast)
            await fast.send(json.dumps({"type": "set_mode", "payload": {"mode": "live"}}))
            writer = subprocess.Popen([lattice, "replay", big, "--state", state, "--batch", "500"],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            fast_changes = 0
            fast_types = {}
            peak = 0
            # Until the writer is done and the observer has caught up with its last commit (a
            # busy machine can make a catch-up take seconds).
            deadline = time.monotonic() + 120
            last_probe = 0.0
            caught_up_at = None
            last_message = 0.0
            first_commit = http_json(obs.url + "v1/health")[1]["commit"]
            while time.monotonic() < deadline:
                try:
                    m = await recv_json(fast, 0.5)
                    fast_types[m["type"]] = fast_types.get(m["type"], 0) + 1
                    last_message = time.monotonic()
                    if m["type"] == "changes":
                        fast_changes += len(m["payload"]["changes"])
                except asyncio.TimeoutError:
                    pass
                if time.monotonic() - last_probe > 0.5:
                    last_probe = time.monotonic()
                    peak = max(peak, obs.rss_kb())
                # 30000 shards in batches of 500: at least 60 commits after the first one.
                    if writer.poll() is not None and caught_up_at is None and \
                            http_json(obs.url + "v1/health")[1]["commit"] >= first_commit + 60:
                        caught_up_at = time.monotonic()
                if caught_up_at is not None and time.monotonic() - max(caught_up_at, last_message) > 2:
                    break  # caught up, and nothing more for 2 s
            writer.wait()
            c.check(writer.returncode == 0, "the writer replayed 30000 shards meanwhile")
            drops = metric(obs, "lattice_observer_slow_client_drops_total")
            c.check(drops is not None and drops >= 1, f"the slow client's queue was dropped ({drops} times)")
            c.check(fast_changes > 1000 or fast_types.get("snapshot", 0) >= 1,
                    f"the other live client got the changes or a snapshot ({fast_changes} changes; {fast_types}; "
                    f"changes read {metric(obs, 'lattice_observer_changes_total')}, "
                    f"resyncs {metric(obs, 'lattice_observer_resyncs_total')})")
            c.check(peak - rss0 < 300 * 1024, f"RSS bounded: {rss0} kB at start, peak {peak} kB")
            # The slow client reads again: it finds a snapshot (overflow) in what it gets.
            got = await recv_until(slow, lambda m: m["type"] == "snapshot" and
                                   m["payload"]["reason"] in ("overflow", "resync"), timeout=20)
            c.check(got[-1]["payload"]["summary"] is not None,
                    f"the slow client got a snapshot ({got[-1]['payload']['reason']}) after {len(got)} messages")
            # Both are live clients again: a new change reaches them.
            small = os.path.join(work, "small.ndjson")
            with open(small, "w") as f:
                f.write(json.dumps({"blade": "late", "seq": 1, "ts": 1732360000000,
                                    "shard": {"after": {"load": 1}}}) + "\n")
            run([lattice, "replay", small, "--state", state])
            for name, ws in (("slow", slow), ("other", fast)):
                got = await recv_until(ws, lambda m: m["type"] == "changes" and any(
                    ch["path"] == "after.load" for ch in m["payload"]["changes"]), timeout=60)
                c.check(True, f"the {name} client receives live changes after the load")
            await slow.close()
            await fast.close()

        asyncio.run(slow_reader())

        async def many_clients():
            async def one(i):
                try:
                    ws = await websockets.connect(obs.ws, open_timeout=30)
                    await recv_json(ws, 20)
                    if i % 3 == 0:
                        ws.transport.abort()  # vanish without a close handshake
                    else:
                        await ws.close()
                    return True
                except Exception as e:  # noqa: BLE001 - counted as a failure below
                    print("client", i, "failed:", repr(e))
                    return False
            ok = 0
            for start in range(0, 1000, 250):
                results = await asyncio.gather(*(one(i) for i in range(start, start + 250)))
                ok += sum(results)
            c.check(ok == 1000, f"1000 clients connected and left ({ok} ok)")
            # Hold 500 at once, then drop them all abruptly.
            held = []
            for _ in range(500):
                held.append(await websockets.connect(obs.ws))
            st2, health2 = http_json(obs.url + "v1/health")
            c.check(health2["clients"] >= 500, f"500 held at once: {health2['clients']} clients")
            for ws in held:
                ws.transport.abort()

        rss_before = obs.rss_kb()
        asyncio.run(many_clients())
        deadline = time.time() + 10
        while time.time() < deadline and metric(obs, "lattice_observer_clients") != 0:
            time.sleep(0.2)
        c.check(metric(obs, "lattice_observer_clients") == 0, "every connection was cleaned up")
        rss_after = obs.rss_kb()
        c.check(rss_after - rss_before < 100 * 1024,
                f"RSS bounded across 1500 connections: {rss_before} -> {rss_after} kB")
        st, _ = http_json(obs.url + "v1/summary")
        c.check(st == 200 and obs.proc.poll() is None, "still serving, no crash")

        # More clients than --max-clients: the next upgrade gets 503.
        obs3 = Observer(lattice, state, work, "--max-clients", "2")
        observers.append(obs3)

        async def cap():
            a = await websockets.connect(obs3.ws)
            b = await websockets.connect(obs3.ws)
            try:
                async with websockets.connect(obs3.ws):
                    status = 101
            except websockets.exceptions.InvalidStatusCode as e:
                status = e.status_code
            c.check(status == 503, f"third client over --max-clients 2 -> {status}")
            await a.close()
            await b.close()
        asyncio.run(cap())
        # Malformed HTTP gets 400, not a crash.
        import socket
        s = socket.create_connection(("127.0.0.1", int(obs3.url.rsplit(":", 1)[1].strip("/"))))
        s.sendall(b"GARBAGE\r\n\r\n")
        reply = s.recv(1000)
        s.close()
        c.check(reply.startswith(b"HTTP/1.1 400"), f"malformed HTTP -> 400 ({reply[:40]!r})")
        for o in observers:
            c.check(o.stop() == 0, "exits 0 on SIGTERM")
    finally:
        if writer is not None and writer.poll() is None:
            writer.kill()
        for o in observers:
            o.stop()
        shutil.rmtree(work, ignore_errors=True)
    c.done()


if __name__ == "__main__":
    main()
