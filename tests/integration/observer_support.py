"""Helpers shared by the observer's integration tests: temp dirs, starting `lattice observe` on a
free port, HTTP and WebSocket clients (Debian's python3-websockets), checks that print ok/FAIL."""
import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websockets


class Checks:
    def __init__(self):
        self.failures = 0

    def check(self, cond, what):
        print(("ok   - " if cond else "FAIL - ") + what, flush=True)
        if not cond:
            self.failures += 1
        return cond

    def done(self):
        print(f"{self.failures} failure(s)")
        sys.exit(1 if self.failures else 0)


def run(args, **kw):
    return subprocess.run(args, check=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def tree_hash(root):
    """Names, sizes and contents of every file under root."""
    h = hashlib.sha256()
    for dirpath, dirnames, filenames in sorted(os.walk(root)):
        dirnames.sort()
        for f in sorted(filenames):
            p = os.path.join(dirpath, f)
            h.update(os.path.relpath(p, root).encode() + b"\0")
            with open(p, "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


class Observer:
    """`lattice observe` on 127.0.0.1 with a free port, stopped at exit."""

    def __init__(self, lattice, state, workdir, *extra, env=None):
        self.url_file = os.path.join(workdir, f"url.{time.monotonic_ns()}")
        self.log = open(os.path.join(workdir, "observe.log"), "ab")
        self.proc = subprocess.Popen(
            [lattice, "observe", "--state", state, "--listen", "127.0.0.1:0",
             "--url-file", self.url_file, *extra],
            stdout=subprocess.PIPE, stderr=self.log, env=env)
        first = self.proc.stdout.readline().decode().strip()
        deadline = time.time() + 20
        while not os.path.exists(self.url_file):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("lattice observe did not start")
            time.sleep(0.02)
        self.url = open(self.url_file).read().strip()
        assert first == self.url, (first, self.url)
        self.ws = self.url.replace("http://", "ws://") + "v1/stream"

    def rss_kb(self):
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                return -9
        return self.proc.returncode


def http(url, method="GET", headers=None):
    """(status, headers, body bytes) without raising on 4xx/5xx."""
    req = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def metrics(obs):
    """The observer's /metrics samples: {"name" or "name{labels}": value}."""
    _, _, body = http(obs.url + "metrics")
    out = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def http_json(url, **kw):
    status, headers, body = http(url, **kw)
    return status, json.loads(body) if body else None


async def recv_json(ws, timeout=5.0):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


async def recv_until(ws, pred, timeout=5.0):
    """Messages until one satisfies pred (returned last); raises on timeout."""
    got = []
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise asyncio.TimeoutError()
        m = await recv_json(ws, left)
        got.append(m)
        if pred(m):
            return got


async def nothing_within(ws, seconds):
    try:
        m = await asyncio.wait_for(ws.recv(), seconds)
        return json.loads(m)
    except asyncio.TimeoutError:
        return None


def envelope(blade, seq, ts, body):
    return json.dumps({"blade": blade, "seq": seq, "ts": ts, "shard": body}, separators=(",", ":"))


def write_lines(path, lines):
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")


def tmpdir(name):
    return tempfile.mkdtemp(prefix=f"lattice-{name}.")


class RawWs:
    """A minimal blocking WebSocket client on a plain socket, for tests that must control exactly
    when the client reads (a slow or stalled reader) or that read without decoding. Server frames
    are unmasked; pings are answered with pongs while reading."""

    def __init__(self, ws_url, rcvbuf=None, timeout=10.0):
        import base64
        import socket
        host, port = ws_url.split("//")[1].split("/")[0].rsplit(":", 1)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.sock.settimeout(timeout)
        self.sock.connect((host, int(port)))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /v1/stream HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError("closed during the handshake")
            head += chunk
        head, self.buf = head.split(b"\r\n\r\n", 1)
        if b" 101 " not in head.split(b"\r\n")[0]:
            raise ConnectionError(head.decode(errors="replace"))
        self.received = 0  # bytes read from the socket since the handshake

    @staticmethod
    def frame(payload, opcode=1):
        mask = os.urandom(4)
        head = bytes([0x80 | opcode])
        if len(payload) < 126:
            head += bytes([0x80 | len(payload)])
        elif len(payload) < 65536:
            head += bytes([0x80 | 126]) + len(payload).to_bytes(2, "big")
        else:
            head += bytes([0x80 | 127]) + len(payload).to_bytes(8, "big")
        return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))

    def send_json(self, obj):
        self.sock.sendall(self.frame(json.dumps(obj).encode()))

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(1 << 16)
            if not chunk:
                raise ConnectionError("closed")
            self.received += len(chunk)
            self.buf += chunk

    def recv_frame(self):
        """(opcode, payload bytes) of the next data message (continuation frames joined); answers
        pings on the way. Raises socket.timeout."""
        opcode, payload = self._frame()
        parts = [payload[1]]
        while not payload[0]:  # FIN not set: continuation frames follow
            _, payload = self._frame()
            parts.append(payload[1])
        return opcode, b"".join(parts)

    def _frame(self):
        while True:
            self._need(2)
            b0, b1 = self.buf[0], self.buf[1]
            n, at = b1 & 0x7F, 2
            if n == 126:
                self._need(4)
                n, at = int.from_bytes(self.buf[2:4], "big"), 4
            elif n == 127:
                self._need(10)
                n, at = int.from_bytes(self.buf[2:10], "big"), 10
            self._need(at + n)
            payload, self.buf = bytes(self.buf[at:at + n]), self.buf[at + n:]
            opcode = b0 & 0x0F
            if opcode == 0x9:
                self.sock.sendall(self.frame(payload, 0xA))
                continue
            if opcode == 0xA:
                continue
            return opcode, (bool(b0 & 0x80), payload)

    def recv_json(self):
        opcode, payload = self.recv_frame()
        if opcode == 0x8:
            raise ConnectionError("closed by the server")
        return json.loads(payload)

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass
