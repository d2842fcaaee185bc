#!/usr/bin/python3
"""Runs a command and prints, per thread name, how long its threads ran, waited for a CPU and slept.

usage: bench/thread_sched.py COMMAND [ARGS...]

Polls /proc/PID/task/*/schedstat (run time and run-queue wait, ns) every 5 ms and keeps each
thread's last values; a thread's sleep is the wall time minus both (threads of one name are
summed, so their "slept" is only meaningful for a single thread). librdkafka's threads are summed
as `rdk`. The command's output goes to /dev/null.
"""
import glob
import subprocess
import sys
import time

if len(sys.argv) < 2:
    sys.exit(__doc__)
p = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
t0 = time.monotonic()
last = {}
while p.poll() is None:
    for d in glob.glob(f'/proc/{p.pid}/task/*'):
        try:
            name = open(d + '/comm').read().strip()
            run, wait, _ = map(int, open(d + '/schedstat').read().split())
            last[d] = (name, run, wait)
        except (OSError, ValueError):
            pass
    time.sleep(0.005)
wall = time.monotonic() - t0
by_name = {}
for name, run, wait in last.values():
    key = 'rdk' if name.startswith('rdk') else name
    r, w = by_name.get(key, (0, 0))
    by_name[key] = (r + run, w + wait)
print(f'wall {wall:.3f} s, exit {p.returncode}')
for name, (r, w) in sorted(by_name.items(), key=lambda x: -x[1][0]):
    if r > 5e6:
        print(f'  {name:16s} ran {r / 1e9:.3f} s  waited for a CPU {w / 1e9:.3f} s'
              f'  slept ~{max(0.0, wall - (r + w) / 1e9):.3f} s')
