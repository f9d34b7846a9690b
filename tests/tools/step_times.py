#!/usr/bin/env python
"""Pass molecule's output through, then print how long each scenario step took.

    molecule test -s node 2>&1 | python tests/tools/step_times.py

Steps are the "SCENARIO ➜ ACTION: Executing" ... "Executed: ..." lines molecule prints; the
summary lists them in order with wall seconds, and the total. The exit status of molecule is
the pipeline's (run under `set -o pipefail`).
"""
import re
import sys
import time

ANSI = re.compile(r"\x1b\[[0-9;]*m")
STEP = re.compile(r"^INFO\s+(\S+) \u279c (.+?): (Executing|Executed: .*)$")


def main():
    started = time.monotonic()
    opened = {}
    steps = []
    # bytes in, bytes out: whatever the locale, the output passes through unchanged
    for raw in sys.stdin.buffer:
        sys.stdout.buffer.write(raw)
        sys.stdout.buffer.flush()
        match = STEP.match(ANSI.sub("", raw.decode("utf-8", "replace")).rstrip("\n"))
        if not match:
            continue
        scenario, action, event = match.groups()
        if event == "Executing":
            opened[(scenario, action)] = time.monotonic()
        elif (scenario, action) in opened:
            steps.append((scenario, action, time.monotonic() - opened.pop((scenario, action)), event[len("Executed: "):]))
    if steps:
        print("\nstep times (wall seconds):")
        for scenario, action, seconds, outcome in steps:
            print("  %-10s %-28s %7.1f  %s" % (scenario, action, seconds, outcome))
        print("  %-10s %-28s %7.1f" % (steps[0][0], "total", time.monotonic() - started))
    return 0


if __name__ == "__main__":
    sys.exit(main())
