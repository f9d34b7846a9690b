#!/usr/bin/env python
"""A process with a known duplicate structure, for the KSM estimate's tests and benchmark.

    estimate_worker.py [--no-merge] MIB SHARED ZERO SEED

Opts in to KSM as a whole (prctl(PR_SET_MEMORY_MERGE); not with --no-merge, for a workload that
KSM must leave alone, as the estimator's cost benchmark wants), maps MIB MiB of private anonymous memory
and fills it: the first SHARED fraction of the pages with contents that every worker has alike
(page i: "shared:i"), the next ZERO fraction with written zeros, the rest with contents unique to
SEED. Prints "ready" and sleeps until killed. Runs on the host or in a container (python3 only).
"""
import ctypes
import mmap
import sys
import time


def main(argv):
    merge = argv[:1] != ["--no-merge"]
    if not merge:
        argv = argv[1:]
    mib, shared, zero, seed = int(argv[0]), float(argv[1]), float(argv[2]), int(argv[3])
    libc = ctypes.CDLL(None, use_errno=True)
    if merge and libc.prctl(67, 1, 0, 0, 0) != 0:
        sys.exit("prctl(PR_SET_MEMORY_MERGE) failed: errno %d" % ctypes.get_errno())
    page = mmap.PAGESIZE
    pages = (mib << 20) // page
    # MAP_PRIVATE: Python's default for mmap(-1, n) is MAP_SHARED (shmem), which KSM never merges.
    area = mmap.mmap(-1, pages * page, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    n_shared, n_zero = int(pages * shared), int(pages * zero)
    for i in range(pages):
        if i < n_shared:
            word = b"shared:%08d" % i
        elif i < n_shared + n_zero:
            area[i * page:(i + 1) * page] = bytes(page)
            continue
        else:
            word = b"unique:%06d:%08d" % (seed, i)
        area[i * page:(i + 1) * page] = (word.ljust(31) + b"|") * (page // 32)
    print("ready", flush=True)
    while True:
        time.sleep(60)


if __name__ == "__main__":
    main(sys.argv[1:])
