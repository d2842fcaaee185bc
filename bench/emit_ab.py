#!/usr/bin/python3
"""Interleaved A/B of `lattice emit` builds against `kcat -P`, with CPU time per thread.

usage: bench/emit_ab.py ROUNDS NAME=SPEC [NAME=SPEC ...]

A NAME starting with `kcat` runs `kcat -P -K '|'` (SPEC: extra kcat arguments, may be empty) on
the recording's bodies keyed by blade (the same input as bench/kafka.sh gives it); any other SPEC
is `BINARY[|EXTRA EMIT ARGS[|RECORDING]]`, run as `BINARY emit -f RECORDING`. Each round starts a
new dev broker (`lattice broker`, from the first lattice BINARY) with one 128-partition topic per
run, runs every variant once (the order reversed every other round), polls
/proc/PID/task/*/stat every 10 ms and keeps each thread's last utime+stime. Prints one line per
run (wall, process CPU, the broker's CPU, CPU by thread name) and the medians.

Environment: REC (default /tmp/rec2m.ndjson, e.g. `lattice gen --shards 2000000 --blades 64
--seed 7 -o /tmp/rec2m.ndjson`).
"""
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

HZ = os.sysconf('SC_CLK_TCK')


def tstat(path):
    with open(path) as f:
        s = f.read()
    r = s.rfind(')')
    fields = s[r + 2:].split()
    return s[s.find('(') + 1:r], (int(fields[11]) + int(fields[12])) / HZ


def run(cmd, stdin=None):
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdin=stdin, stdout=subprocess.DEVNULL)
    threads = {}
    while p.poll() is None:
        try:
            for tid in os.listdir(f'/proc/{p.pid}/task'):
                try:
                    threads[tid] = tstat(f'/proc/{p.pid}/task/{tid}/stat')
                except OSError:
                    pass
        except OSError:
            pass
        time.sleep(0.01)
    return time.monotonic() - t0, p.returncode, threads


def main():
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    rounds = int(sys.argv[1])
    variants = [a.split('=', 1) for a in sys.argv[2:]]
    rec = os.environ.get('REC', '/tmp/rec2m.ndjson')
    lattices = [s.split('|')[0] for n, s in variants if not n.startswith('kcat')]
    if not lattices:
        sys.exit('emit_ab.py: needs at least one lattice binary (for the dev broker)')
    tmp = tempfile.mkdtemp(prefix='emitab.')
    kcat_input = os.path.join(tmp, 'kcat.txt')
    with open(rec) as src, open(kcat_input, 'w') as out:
        for line in src:  # blade|body, the bodies byte for byte (as bench/kafka.sh's sed)
            env = json.loads(line)
            body = line[line.index('"shard":') + len('"shard":'):line.rstrip().rindex('}')]
            out.write(f"{env['blade']}|{body}\n")
    res = {n: [] for n, _ in variants}
    for r in range(rounds):
        topics = []
        for n, _ in variants:
            topics += ['--topic', f'{n}.{r}:128']
        bs = os.path.join(tmp, f'bs.{r}')
        br = subprocess.Popen([lattices[0], 'broker', '--no-stdin', '--no-default-topics'] +
                              topics + ['--bootstrap-file', bs],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(100):
            if os.path.exists(bs) and os.path.getsize(bs) > 0:
                break
            time.sleep(0.1)
        brokers = open(bs).read().strip()
        for n, spec in (variants if r % 2 == 0 else variants[::-1]):
            b0 = tstat(f'/proc/{br.pid}/stat')[1]
            load = open('/proc/loadavg').read().split()[0]
            if n.startswith('kcat'):
                with open(kcat_input) as f:
                    wall, rc, th = run(['kcat', '-P', '-b', brokers, '-t', f'{n}.{r}', '-K', '|'] +
                                       spec.split(), stdin=f)
            else:
                parts = spec.split('|')
                extra = parts[1].split() if len(parts) > 1 else []
                wall, rc, th = run([parts[0], 'emit', '-b', brokers, '-t', f'{n}.{r}', '-f',
                                    parts[2] if len(parts) > 2 else rec] + extra)
            b1 = tstat(f'/proc/{br.pid}/stat')[1]
            bycomm = {}
            for name, cpu in th.values():
                bycomm[name] = bycomm.get(name, 0) + cpu
            res[n].append((wall, sum(bycomm.values()), bycomm, b1 - b0))
            shown = {k: round(v, 2) for k, v in sorted(bycomm.items(), key=lambda kv: -kv[1])
                     if v >= 0.02}
            print(f'r{r} {n:8s} rc={rc} wall {wall:.3f} cpu {sum(bycomm.values()):.2f} '
                  f'broker {b1 - b0:.2f} load {load} {shown}', flush=True)
        br.terminate()
        br.wait()
    print('--- medians')
    for n, _ in variants:
        runs = res[n]
        comms = {}
        for _, _, bc, _ in runs:
            for k, v in bc.items():
                comms.setdefault(k, []).append(v)
        cm = {k: round(statistics.median(v), 2) for k, v in comms.items()
              if statistics.median(v) >= 0.02}
        print(f'{n:8s} wall {statistics.median([x[0] for x in runs]):.3f} '
              f'cpu {statistics.median([x[1] for x in runs]):.2f} '
              f'broker {statistics.median([x[3] for x in runs]):.2f} {cm}')
    subprocess.run(['rm', '-rf', tmp], check=False)


if __name__ == '__main__':
    main()
