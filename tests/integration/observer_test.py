"""`lattice observe` end to end: REST answers, the three update modes of /v1/stream and their
batching rules (driven by a Python client, Debian's python3-websockets), the bearer token, static
files, /metrics through promtool, and read-only by construction: no write route, the state
directory is byte-identical after the observer ran, and the observer follows a writer that holds
the primary open (`lattice replay`) and keeps serving after it exits.

    python3 observer_test.py LATTICE_BINARY TESTS_DATA_DIR
"""
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time

import websockets

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from observer_support import (Checks, Observer, envelope, http, http_json, nothing_within,  # noqa: E402
                              recv_json, recv_until, run, tmpdir, tree_hash, write_lines)

T = 1732350000000


def main():
    lattice, data = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    golden = os.path.join(data, "observer", "golden")
    work = tmpdir("observer-test")
    c = Checks()
    observers = []
    try:
        state = os.path.join(work, "state")
        run([lattice, "replay", os.path.join(golden, "summary_state.ndjson"), "--state", state])
        before = tree_hash(state)
        web = os.path.join(work, "web")
        os.makedirs(os.path.join(web, "js"))
        write_lines(os.path.join(web, "index.html"), ["<!doctype html><title>t</title>"])
        write_lines(os.path.join(web, "js", "app.js"), ["export const x = 1;"])
        write_lines(os.path.join(work, "secret.txt"), ["secret"])
        obs = Observer(lattice, state, work, "--web", web, "--poll", "10ms")
        observers.append(obs)
        u = obs.url

        # --- REST -------------------------------------------------------------------------------
        st, health = http_json(u + "v1/health")
        c.check(st == 200 and health["status"] == "ok" and health["commit"] == 1 and
                health["follows"] == "secondary" and health["change_log"] is True,
                f"/v1/health: {health}")
        st, summary = http_json(u + "v1/summary")
        want = json.load(open(os.path.join(golden, "summary.json")))["payload"]["summary"]
        for counter in summary["counters"]:
            counter["rate"] = None if counter["rate"] in (None, 0) else counter["rate"]
        c.check(st == 200 and summary == want, "/v1/summary is the golden summary")
        st, _, body = http(u + "v1/state/nodes.w1.status")
        c.check(st == 200 and body == b'"working"', f"/v1/state/nodes.w1.status -> {body!r}")
        st, _, body = http(u + "v1/state/jobs.14")
        c.check(st == 200 and json.loads(body)["node"] == "w3", "/v1/state/jobs.14 is the subtree")
        st, err = http_json(u + "v1/state/nodes.w9")
        c.check(st == 404 and "nodes.w9" in err["error"], f"missing path -> 404 {err}")
        st, err = http_json(u + "v1/state/a%5Cx")
        c.check(st == 400 and "bad path" in err["error"], f"bad path -> 400 {err}")
        st, scan = http_json(u + "v1/state?prefix=nodes.w1&limit=2")
        c.check(st == 200 and len(scan["leaves"]) == 2 and scan["truncated"] and
                scan["leaves"][0]["path"] == "nodes.w1.heartbeat" and
                scan["leaves"][0]["kind"] == "max" and scan["leaves"][0]["stamp"]["blade"] == "w1",
                f"/v1/state?prefix= with limit and stamps: {scan}")
        st, err = http_json(u + "v1/state?prefix=x&limit=0")
        c.check(st == 400, "limit out of range -> 400")
        st, blame = http_json(u + "v1/blame/nodes.w1.status")
        c.check(st == 200 and blame["value"] == "working" and blame["writer"]["blade"] == "w1" and
                blame["writer"]["seq"] == 2 and blame["writer"]["line"] >= 1 and
                blame["writer"]["source"].endswith("summary_state.ndjson"),
                f"/v1/blame names the shard and its source line: {blame}")
        st, blame = http_json(u + "v1/blame/scrape.example%5C.com.item_collected")
        c.check(st == 200 and blame["kind"] == "counter" and blame["shares"][0]["blade"] == "scraper-1",
                f"/v1/blame of a counter lists its shares: {blame}")
        st, err = http_json(u + "v1/blame/nodes.w9")
        c.check(st == 404, "/v1/blame of a missing path -> 404")
        for method in ("POST", "PUT", "DELETE", "PATCH"):
            st, hdrs, _ = http(u + "v1/state/nodes.w1.status", method=method)
            c.check(st == 405 and hdrs.get("Allow") == "GET, HEAD", f"{method} -> 405 (no write route)")
        st, hdrs, body = http(u + "metrics")
        c.check(st == 200 and hdrs["Content-Type"].startswith("text/plain; version=0.0.4"),
                "/metrics content type")
        prom = subprocess.run(["promtool", "check", "metrics"], input=body, capture_output=True)
        c.check(prom.returncode == 0, f"promtool check metrics: {prom.stdout!r} {prom.stderr!r}")
        c.check(b'lattice_observer_nodes{status="dead"} 1' in body, "/metrics has derived node gauges")

        # --- static files -----------------------------------------------------------------------
        st, hdrs, body = http(u)
        c.check(st == 200 and hdrs["Content-Type"].startswith("text/html") and b"doctype" in body,
                "/ serves index.html as text/html")
        st, hdrs, _ = http(u + "js/app.js")
        c.check(st == 200 and hdrs["Content-Type"].startswith("text/javascript"), "js MIME type")
        for bad in ("../secret.txt", "%2e%2e/secret.txt", "js/..%2f..%2fsecret.txt",
                    "js/%2e%2e/%2e%2e/secret.txt", "nope.html"):
            st, _, body = http(u + bad)
            c.check(st == 404 and b"error" in body and body != b"secret\n", f"/{bad} -> 404")

        async def protocol():
            # --- periodic (default) ---------------------------------------------------------------
            async with websockets.connect(obs.ws, max_size=2**24) as ws:
                hello = await recv_json(ws)
                c.check(hello["type"] == "hello" and hello["payload"]["mode"] == "periodic",
                        "hello says periodic")
                snap = await recv_json(ws)
                c.check(snap["type"] == "snapshot" and snap["payload"]["reason"] == "connect" and
                        snap["payload"]["summary"]["nodes"]["count"] == 3, "snapshot on connect")
                # A writer opens the primary while the observer follows it.
                more = os.path.join(work, "more.ndjson")
                write_lines(more, [
                    envelope("w3", 100, T + 1000, {"nodes": {"w3": {"status": "waiting",
                             "heartbeat": {"$max": T + 1000}}}}),
                    envelope("scraper-1", 100, T + 1001,
                             {"scrape": {"example.com": {"item_collected": {"$inc": 5}}}}),
                    envelope("w1", 100, T + 1002, {"jobs": {"17": {"progress": 0.75}}}),
                    envelope("w1", 101, T + 1003, {"jobs": {"17": {"progress": 0.8}}}),
                ])
                run([lattice, "replay", more, "--state", state, "--batch", "2"])
                pushed = await nothing_within(ws, 0.6)
                c.check(pushed is None, f"periodic: nothing is pushed before update_request ({pushed})")
                await ws.send(json.dumps({"type": "update_request",
                                          "payload": {"update_type": "periodic"}}))
                b = await recv_json(ws)
                msgs = b["payload"]["messages"] if b["type"] == "batched_update_response" else []
                types = [m["type"] for m in msgs]
                c.check(b["type"] == "batched_update_response" and
                        b["payload"]["update_type"] == "periodic" and b["payload"]["commit"] >= 3,
                        f"batched_update_response after the writer's commits: {types}")
                status = [m["payload"] for m in msgs if m["type"] == "worker_node_status_change"]
                c.check(status == [{"workerNodeId": "w3", "oldStatus": "dead",
                                    "newStatus": "waiting", "updatedAt": T + 1000}],
                        f"worker_node_status_change w3 dead -> waiting: {status}")
                changes = [ch for m in msgs if m["type"] == "changes" for ch in m["payload"]["changes"]]
                by_path = {ch["path"]: ch for ch in changes}
                c.check(types[-1] == "summary" and types.count("changes") == 1, "one changes, summary last")
                c.check(by_path.get("jobs.17.progress", {}).get("new") == 0.8 and
                        by_path["jobs.17.progress"]["stamp"] == {"blade": "w1", "seq": 101, "ts": T + 1003},
                        "two commits to one path are coalesced (last new, last stamp)")
                c.check(by_path.get("scrape.example\\.com.item_collected", {}).get("new") == 5125 and
                        by_path["scrape.example\\.com.item_collected"]["cause"] == "counter",
                        "counter change")
                c.check(msgs[-1]["payload"]["summary"]["nodes"]["live"] == 3, "summary: w3 is live again")
                await ws.send(json.dumps({"type": "update_request", "payload": {"update_type": "manual"}}))
                b = await recv_json(ws)
                c.check(b["payload"]["update_type"] == "manual" and
                        [m["type"] for m in b["payload"]["messages"]] == ["summary"],
                        "manual works in periodic mode; nothing new -> summary only")

                # --- manual ---------------------------------------------------------------------
                await ws.send(json.dumps({"type": "set_mode", "payload": {"mode": "manual"}}))
                m = await recv_json(ws)
                c.check(m["type"] == "mode" and m["payload"]["mode"] == "manual", "set_mode manual")
                more = os.path.join(work, "more2.ndjson")
                write_lines(more, [envelope("w2", 100, T + 2000, {"nodes": {"w2": {"msg": "busy"}}})])
                run([lattice, "replay", more, "--state", state])
                c.check(await nothing_within(ws, 0.5) is None, "manual: nothing pushed")
                await ws.send(json.dumps({"type": "update_request", "payload": {"update_type": "manual"}}))
                b = await recv_json(ws)
                paths = [ch["path"] for m in b["payload"]["messages"] if m["type"] == "changes"
                         for ch in m["payload"]["changes"]]
                c.check(paths == ["nodes.w2.msg"], f"manual refresh brings the change: {paths}")

                # --- live -----------------------------------------------------------------------
                await ws.send(json.dumps({"type": "set_mode", "payload": {"mode": "live"}}))
                got = await recv_until(ws, lambda m: m["type"] == "mode")
                c.check(got[0]["type"] == "batched_update_response" and
                        got[0]["payload"]["update_type"] == "mode_change", "switch to live flushes the batch")
                more = os.path.join(work, "more3.ndjson")
                write_lines(more, [envelope("w2", 101, T + 3000, {"nodes": {"w2": {"status": "paused"}}})])
                t0 = time.monotonic()
                run([lattice, "replay", more, "--state", state])
                got = await recv_until(ws, lambda m: m["type"] == "changes", timeout=3)
                elapsed = time.monotonic() - t0
                ch = got[-1]["payload"]["changes"]
                c.check(ch[0]["path"] == "nodes.w2.status" and ch[0]["new"] == "paused" and
                        ch[0]["old"] is None and ch[0]["stamp"]["ts"] == T + 3000 and
                        isinstance(got[-1]["payload"]["observed_at"], int),
                        f"live: change pushed with its event time ({elapsed:.2f} s incl. replay)")
                sc = [m["payload"] for m in got if m["type"] == "worker_node_status_change"]
                c.check(sc == [{"workerNodeId": "w2", "oldStatus": "waiting", "newStatus": "paused",
                                "updatedAt": T + 3000}], f"live: status change pushed first: {sc}")
                await ws.send(json.dumps({"type": "update_request", "payload": {"update_type": "periodic"}}))
                m = await recv_until(ws, lambda m: m["type"] == "error")
                c.check(m[-1]["payload"]["reason"] == "not_in_live_mode", "live refuses update_request")
                await ws.send(json.dumps({"type": "subscribe", "payload": {"prefixes": ["jobs"]}}))
                await recv_until(ws, lambda m: m["type"] == "mode")
                more = os.path.join(work, "more4.ndjson")
                write_lines(more, [envelope("w2", 102, T + 4000, {"nodes": {"w2": {"msg": "x"}},
                                                                  "jobs": {"15": {"progress": 0.1}}})])
                run([lattice, "replay", more, "--state", state])
                got = await recv_until(ws, lambda m: m["type"] == "changes", timeout=3)
                c.check([x["path"] for x in got[-1]["payload"]["changes"]] == ["jobs.15.progress"],
                        "subscribe filters live changes by prefix")
                await ws.send(json.dumps({"type": "ping", "payload": {"t": "abc"}}))
                m = await recv_until(ws, lambda m: m["type"] == "pong")
                c.check(m[-1]["payload"]["t"] == "abc", "ping -> pong")

        asyncio.run(protocol())
        # The writer has exited: the observer still serves and has caught up.
        st, health = http_json(u + "v1/health")
        c.check(st == 200 and health["commit"] >= 6, f"serves after the writer exited: {health}")
        mid = tree_hash(state)
        time.sleep(0.3)
        rc = obs.stop()
        c.check(rc == 0, f"SIGTERM stops it with 0 (got {rc})")
        c.check(tree_hash(state) == mid, "the state directory is byte-identical after the observer ran")
        c.check(before != mid, "(sanity: the writer did change it)")

        # --- bearer token -----------------------------------------------------------------------
        env = dict(os.environ, LATTICE_OBSERVER_TOKEN="s3cret")
        obs2 = Observer(lattice, state, work, "--web", web, env=env)
        observers.append(obs2)
        st, _, _ = http(obs2.url + "v1/summary")
        c.check(st == 401, "token: /v1/summary without it -> 401")
        st, _, _ = http(obs2.url + "metrics", headers={"Authorization": "Bearer nope"})
        c.check(st == 401, "token: wrong token -> 401")
        st, _, _ = http(obs2.url + "v1/summary", headers={"Authorization": "Bearer s3cret"})
        c.check(st == 200, "token: right bearer -> 200")
        st, _, _ = http(obs2.url)
        c.check(st == 200, "token: static page needs none")

        async def ws_token():
            try:
                async with websockets.connect(obs2.ws) as ws:
                    await ws.recv()
                refused = False
            except websockets.exceptions.InvalidStatusCode as e:
                refused = e.status_code == 401
            c.check(refused, "token: WebSocket without it -> 401")
            async with websockets.connect(obs2.ws + "?token=s3cret") as ws:
                c.check((await recv_json(ws))["type"] == "hello", "token: WebSocket ?token= accepted")
            async with websockets.connect(obs2.ws, extra_headers={"Authorization": "Bearer s3cret"}) as ws:
                c.check((await recv_json(ws))["type"] == "hello", "token: WebSocket header accepted")
        asyncio.run(ws_token())
        obs2.stop()

        # --- errors on start ----------------------------------------------------------------------
        r = subprocess.run([lattice, "observe", "--state", os.path.join(work, "nope")], capture_output=True)
        c.check(r.returncode != 0 and b"lattice: error:" in r.stderr and b"no Lattice state" in r.stderr,
                f"missing state -> clear error: {r.stderr!r}")
        r = subprocess.run([lattice, "observe", "--state", state, "--listen", "nohost"], capture_output=True)
        c.check(r.returncode != 0 and b"--listen" in r.stderr, "bad --listen -> clear error")
    finally:
        for o in observers:
            o.stop()
        shutil.rmtree(work, ignore_errors=True)
    c.done()


if __name__ == "__main__":
    main()
