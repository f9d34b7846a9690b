#!/usr/bin/env python
"""Start processes that hold identical, mergeable memory, for tests and benchmarks on the real kernel.

    ksm_workload.py --mib 64 --procs 2 [--opt-in madvise|prctl|none] [--seconds 60]

Each process maps MIB MiB of anonymous memory, fills it with one repeated pattern (every page
identical), opts in to KSM (madvise(MADV_MERGEABLE) or prctl(PR_SET_MEMORY_MERGE)) and sleeps.
Used as a library: ``with Workload(mib=64, procs=2) as w: ...`` (processes end on exit).
"""
import argparse
import ctypes
import mmap
import os
import signal
import subprocess
import sys
import time

PR_SET_MEMORY_MERGE = 67
PAGE = mmap.PAGESIZE


def hold(mib, opt_in, seconds):
    if opt_in == "prctl":
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_MEMORY_MERGE, 1, 0, 0, 0) != 0:
            sys.exit("prctl(PR_SET_MEMORY_MERGE) failed: errno %d" % ctypes.get_errno())
    area = mmap.mmap(-1, mib * 1024 * 1024, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    if opt_in == "madvise":
        area.madvise(mmap.MADV_MERGEABLE)
    page = (b"samepage" * (PAGE // 8))[:PAGE]
    for offset in range(0, len(area), PAGE):
        area[offset:offset + PAGE] = page
    sys.stdout.write("ready %d\n" % os.getpid())
    sys.stdout.flush()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.5)


class Workload:
    """N processes holding MIB MiB each of identical pages; stopped on exit."""

    def __init__(self, mib=32, procs=2, opt_in="madvise", seconds=600):
        self.mib, self.procs, self.opt_in, self.seconds = mib, procs, opt_in, seconds
        self.children = []

    @property
    def pids(self):
        return [c.pid for c in self.children]

    def __enter__(self):
        for _index in range(self.procs):
            child = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), "--child", "--mib", str(self.mib),
                 "--opt-in", self.opt_in, "--seconds", str(self.seconds)],
                stdout=subprocess.PIPE, text=True)
            self.children.append(child)
        for child in self.children:
            line = child.stdout.readline()
            if not line.startswith("ready"):
                self.__exit__(None, None, None)
                raise RuntimeError("workload process %d did not start" % child.pid)
        return self

    def __exit__(self, *exc):
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
            child.stdout.close()
        self.children = []
        return False


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=32)
    parser.add_argument("--procs", type=int, default=2)
    parser.add_argument("--opt-in", choices=("madvise", "prctl", "none"), default="madvise")
    parser.add_argument("--seconds", type=float, default=600)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        hold(args.mib, args.opt_in, args.seconds)
        return 0
    with Workload(args.mib, args.procs, args.opt_in, args.seconds) as work:
        print("pids", " ".join(map(str, work.pids)), flush=True)
        try:
            while all(c.poll() is None for c in work.children):
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
