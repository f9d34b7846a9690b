#!/usr/bin/env python
"""Convergence cost: the node role vs the seed done by hand, on the same SSH fleet, in one run.

    .venv/bin/python benchmarks/converge_cost.py [--hosts 20]

For each side, fresh hosts (tests/fleet/fleet.py, every host a ksm_nodes host with its own fake
KSM directory; the real kernel is not touched), then a first run and a re-run of the playbook.
Prints wall seconds, the ratios role/naive, and tasks per host (ok + changed + failed, from the
recap of one host). Targets: role <= 0.5x naive first run, <= 0.3x naive re-run.
"""
import argparse
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLEET = [sys.executable, str(ROOT / "tests" / "fleet" / "fleet.py")]
STATE = pathlib.Path("/var/tmp/samepage-bench-fleet")
# Its own loopback network (127.0.2.11-...): the benchmark can run beside the fleet scenario.
NETWORK = "127.0.2"
ENV = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
           ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"), ANSIBLE_FORCE_COLOR="0")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.M)


def playbook(path, inventory, forks):
    started = time.monotonic()
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", str(inventory), "-f", str(forks),
         "-e", "ksm_node_profile=balanced", str(path)],
        cwd=ROOT, env=ENV, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        sys.exit("%s failed:\n%s" % (path, proc.stdout[-4000:] + proc.stderr[-2000:]))
    recap = RECAP.findall(proc.stdout)
    host = recap[0]
    tasks = int(host[1]) + int(host[4])  # ok already counts changed tasks
    changed = sum(int(r[2]) for r in recap)
    return seconds, tasks, changed


def side(name, path, hosts):
    subprocess.run(FLEET + ["down", "--state", str(STATE)], check=False, capture_output=True)
    up = subprocess.run(FLEET + ["up", "--count", str(hosts), "--nodes", str(hosts), "--network", NETWORK,
                                 "--state", str(STATE)],
                        check=False, capture_output=True, text=True)
    if up.returncode != 0:
        sys.exit("fleet up failed:\n" + up.stderr[-4000:])
    try:
        inventory = STATE / "inventory.yml"
        first = playbook(path, inventory, hosts)
        rerun = playbook(path, inventory, hosts)
    finally:
        subprocess.run(FLEET + ["down", "--state", str(STATE)], check=False, capture_output=True)
    print("%-6s first %6.1fs (%2d tasks/host, %3d changed)   re-run %6.1fs (%2d tasks/host, %3d changed)"
          % (name, first[0], first[1], first[2], rerun[0], rerun[1], rerun[2]), flush=True)
    return first, rerun


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n", maxsplit=1)[0])
    parser.add_argument("--hosts", type=int, default=20)
    args = parser.parse_args()
    print("converge_cost: %d SSH hosts, %s, %d cores, %s" % (
        args.hosts, platform.platform(), os.cpu_count(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())))
    naive = side("naive", ROOT / "benchmarks" / "naive_seed.yml", args.hosts)
    role = side("role", ROOT / "playbooks" / "node.yml", args.hosts)
    print()
    print("| run | naive seed (s) | node role (s) | role / naive | target | tasks/host naive | tasks/host role |")
    print("|---|--:|--:|--:|--:|--:|--:|")
    for label, index, target in (("first run", 0, 0.5), ("re-run", 1, 0.3)):
        ratio = role[index][0] / naive[index][0]
        print("| %s | %.1f | %.1f | %.2f | <= %.1f %s | %d | %d |" % (
            label, naive[index][0], role[index][0], ratio, target, "met" if ratio <= target else "NOT met",
            naive[index][1], role[index][1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
