#!/usr/bin/python3
"""Interleaved A/B of `lattice aggregate --assign all --exit-at-end` with CPU time per thread.

usage: bench/aggregate_ab.py BROKERS ROUNDS NAME=BINARY [NAME=BINARY ...]

BROKERS is a dev broker already holding the shards (e.g. `lattice broker --no-default-topics
--topic lattice.shards:128 --topic lattice.dead:1 --topic lattice.changes:1` and `lattice emit
-f /tmp/rec2m.ndjson`). Each round runs every binary once (the order reversed every other round)
with a new state directory and group, polls /proc/PID/task/*/stat every 5 ms and keeps each
thread's last utime+stime. Prints one line per run and the medians: fd = lattice-fetch +
lattice-decode (the aggregator's fetch thread and decode helper), the merge thread (`lattice`,
named after the binary's file), the writer, librdkafka's broker threads, the process total, wall.
A BINARY may be a script that execs lattice with extra settings (e.g. `-X name=value`).
"""
import glob
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TICK = os.sysconf('SC_CLK_TCK')
KEYS = ['fd', 'lattice-fetch', 'lattice-decode', 'merge', 'lattice-writer', 'rdk:broker', 'total',
        'wall']


def run(binary, brokers, tag):
    d = tempfile.mkdtemp(prefix='aggab.')
    cmd = [binary, 'aggregate', '-b', brokers, '--state', d + '/st', '--group', 'g' + tag,
           '--assign', 'all', '--exit-at-end', '--changes-topic', '', '--json', '--log-interval',
           '0']
    t0 = time.time()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    last = {}
    while True:
        for t in glob.glob('/proc/%d/task/*' % p.pid):
            try:
                s = open(t + '/stat').read()
            except OSError:
                continue
            r = s.rfind(')')
            f = s[r + 2:].split()
            last[t] = (s[s.find('(') + 1:r], (int(f[11]) + int(f[12])) / TICK)
        if p.poll() is not None:
            break
        time.sleep(0.005)
    wall = time.time() - t0
    shutil.rmtree(d, ignore_errors=True)
    per = {}
    for name, cpu in last.values():
        if name.startswith('rdk:broker'):
            key = 'rdk:broker'
        elif name in ('lattice-fetch', 'lattice-decode', 'lattice-writer'):
            key = name
        elif name.startswith('rdk:') or name.startswith('rocksdb'):
            key = 'other'
        else:
            key = 'merge'  # the main thread, named after the executable
        per[key] = per.get(key, 0) + cpu
    per['total'] = sum(cpu for _, cpu in last.values())
    per['wall'] = wall
    per['fd'] = per.get('lattice-fetch', 0) + per.get('lattice-decode', 0)
    return per


def main():
    brokers, rounds = sys.argv[1], int(sys.argv[2])
    bins = [a.split('=', 1) for a in sys.argv[3:]]
    results = {name: [] for name, _ in bins}
    for r in range(rounds):
        for name, binary in (bins if r % 2 == 0 else bins[::-1]):
            per = run(binary, brokers, '%s%d_%d' % (name, r, os.getpid()))
            results[name].append(per)
            print('r%d %-8s load %.2f ' % (r, name, os.getloadavg()[0]) +
                  ' '.join('%s=%.2f' % (k, per.get(k, 0)) for k in KEYS), flush=True)
    print('medians:')
    for name, _ in bins:
        print('%-8s ' % name + ' '.join(
            '%s=%.3f' % (k, statistics.median(x.get(k, 0) for x in results[name])) for k in KEYS))


if __name__ == '__main__':
    main()
