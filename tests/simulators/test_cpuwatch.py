"""The load test's CPU accounting counts a collector's child processes (its alert
dispatcher) as the collector's."""

from __future__ import annotations

import subprocess
import sys
import time

import psutil

from simulators.cpuwatch import CpuWatch

# A stand-in collector (argv holds "collect"): it starts a child that keeps a core busy.
_PARENT = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
print(child.pid, flush=True)
time.sleep(60)
"""


def test_a_collectors_child_process_is_counted_as_the_collector():
    parent = subprocess.Popen(
        [sys.executable, "-c", _PARENT, "collect"], stdout=subprocess.PIPE, text=True
    )
    try:
        child_pid = int(parent.stdout.readline())
        watch = CpuWatch()
        assert watch.find_collectors("postgresql://x/y", {parent.pid}) == 1
        assert {parent.pid, child_pid} <= set(watch.procs)
        deadline = time.monotonic() + 20  # the machine may be busy: the child gets a share
        while time.monotonic() < deadline:
            time.sleep(0.2)
            watch.sample()
            if watch.by_role()["collector"] > 0.2:
                break
        assert watch.by_role()["collector"] > 0.2  # only the child burns CPU
    finally:
        for proc in psutil.Process(parent.pid).children(recursive=True):
            proc.kill()
        parent.kill()
        parent.wait()
