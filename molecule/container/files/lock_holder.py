#!/usr/bin/env python
"""Say whether an ancestor of this process holds a flock(1) lock on FILE.

    lock_holder.py FILE   ->  {"holders": [pid, ...], "ours": true|false}

The measurement writes the real kernel's KSM knobs: it may only run inside
"flock FILE molecule ...", never next to another test that holds the lock.
"""
import json
import os
import sys


def ancestors():
    pid, seen = os.getpid(), []
    while pid > 1:
        seen.append(pid)
        with open("/proc/%d/stat" % pid) as handle:
            # the command name may hold spaces and parentheses: split after the last ')'
            pid = int(handle.read().rsplit(")", 1)[1].split()[1])
    return set(seen)


def holders(path):
    inode = os.stat(path).st_ino
    found = []
    with open("/proc/locks") as handle:
        for line in handle:
            fields = line.split()
            if "->" in fields:  # a waiter, not a holder
                continue
            if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
                found.append(int(fields[4]))
    return found


def main(path):
    if not os.path.exists(path):
        print(json.dumps({"holders": [], "ours": False}))
        return 0
    pids = holders(path)
    print(json.dumps({"holders": pids, "ours": bool(set(pids) & ancestors())}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
