"""samepage.ksm.ksm_estimate and ksm_info top_groups on the real kernel, with workloads in real podman containers.

Two containers (and one host process) hold 32 MiB each of pages with a known duplicate
structure. The estimate, made with KSM off, must match that structure; then KSM really merges
them and the estimate must match what the kernel merged, and ksm_info must attribute the
merged pages to the containers by name.
"""
import os
import pathlib
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKER = ROOT / "tests" / "tools" / "estimate_worker.py"
IMAGE = "localhost/samepage-rpmbase:bookworm"
NAMES = ["estimate-it-a", "estimate-it-b"]
MIB = 32
PAGES = MIB * 1024 * 1024 // os.sysconf("SC_PAGE_SIZE")

ESTIMATE_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: estimate
      samepage.ksm.ksm_estimate:
        containers: %s
        pids: [%d]
        use_zero_pages: false
        top_groups: 5
    - name: info
      samepage.ksm.ksm_info:
        top_groups: 20
"""

BAD_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: bad
      samepage.ksm.ksm_estimate:
        sample: 3
        cgroups: [relative]
"""


def podman(*args, check=True):
    env = dict(os.environ, CONTAINERS_CONF=str(ROOT / "tests" / "podman" / "containers.conf"))
    return subprocess.run(["podman", *args], env=env, capture_output=True, text=True, check=check)


@pytest.fixture
def workload():
    """Containers a and b: 75 % pages alike in both, 25 % unique; a host worker: 50 % alike, 50 % zero pages."""
    for index, name in enumerate(NAMES):
        podman("rm", "-f", "-t", "0", name, check=False)
        podman("run", "-d", "--name", name, "-v", "%s:/worker.py:ro" % WORKER, IMAGE,
               "python3", "/worker.py", str(MIB), "0.75", "0", str(index + 1))
    host = subprocess.Popen([sys.executable, str(WORKER), str(MIB), "0.5", "0.5", "9"], stdout=subprocess.PIPE, text=True)
    try:
        assert host.stdout.readline().strip() == "ready"
        deadline = time.monotonic() + 60
        for name in NAMES:
            while "ready" not in podman("logs", name).stdout:
                assert time.monotonic() < deadline, podman("logs", name).stderr
                time.sleep(0.2)
        ids = {name: podman("inspect", "-f", "{{.Id}}", name).stdout.strip() for name in NAMES}
        yield ids, host.pid
    finally:
        host.kill()
        host.wait()
        host.stdout.close()
        for name in NAMES:
            podman("rm", "-f", "-t", "0", name, check=False)


def test_bad_options_fail_before_reading(playbook):
    rc, results, _out = playbook(BAD_PLAY, check=False)
    assert rc != 0
    msg = results["bad"]["msg"]
    assert "sample: invalid value 3; expected a power of two" in msg and "cgroups: expected absolute cgroup paths" in msg


def test_estimate_then_real_merge(real_ksm, playbook, workload):
    ids, host_pid = workload
    (real_ksm / "run").write_text("2")                  # nothing merged while we estimate
    play = ESTIMATE_PLAY % (NAMES, host_pid)
    results = playbook(play, "--check")[1]
    est = results["estimate"]["estimate"]
    assert results["estimate"]["changed"] is False
    assert est["candidates"] == 3 and est["scanned_processes"] == 3 and est["complete"] is True
    groups = {g["name"]: g for g in est["groups"] if g["kind"] == "container"}
    assert set(groups) == set(NAMES)
    for name in NAMES:
        assert groups[name]["runtime"] == "podman" and groups[name]["id"] == ids[name]
        assert groups[name]["scanned_pages"] >= PAGES
    # Known structure: page i < PAGES/2 has 3 copies (a, b, host), PAGES/2 <= i < 3/4 PAGES has 2 (a, b);
    # the host's zero pages merge into KSM pages of 256 each (use_zero_pages off); the interpreters add a little.
    zero = PAGES // 2
    expected = PAGES // 2 * 2 + PAGES // 4 + zero - -(-zero // 256)
    assert est["zero_pages"] >= zero
    assert expected <= est["saving_pages"] <= expected * 1.10, (est["saving_pages"], expected)

    # Now let KSM merge them for real and compare.
    for name, value in (("advisor_mode", "none"), ("use_zero_pages", 0), ("pages_to_scan", 5000),
                        ("sleep_millisecs", 20), ("run", 1)):
        if (real_ksm / name).exists():
            (real_ksm / name).write_text(str(value))
    deadline = time.monotonic() + 60
    last = -1
    while time.monotonic() < deadline:
        time.sleep(2)
        results = playbook(play)[1]
        merged = results["estimate"]["estimate"]["merged"]["merging_pages"]
        if merged and abs(merged - last) <= max(8, merged // 500):
            break
        last = merged
    after = results["estimate"]["estimate"]
    # Every mapping of a duplicated content is a merging page once KSM is steady.
    dup = est["duplicate_pages"] + est["zero_pages"]
    assert abs(after["merged"]["merging_pages"] - dup) <= 0.10 * dup, (after["merged"], dup)
    # The estimate still sees the same content while it is merged (KSM pages read like any other).
    assert abs(after["saving_pages"] - est["saving_pages"]) <= 0.05 * est["saving_pages"]
    info_groups = {g["name"]: g for g in results["info"]["ksm"]["top_groups"] if g["kind"] == "container"}
    for name in NAMES:
        group = info_groups[name]
        assert group["runtime"] == "podman" and group["id"] == ids[name] and group["processes"] == 1
        assert group["merging_pages"] >= PAGES * 3 // 4 * 0.9
        assert group["profit_bytes"] > 0
    assert set(results["info"]["ksm"]["top_groups"][0]) == {
        "kind", "id", "name", "runtime", "processes", "merging_pages", "profit_bytes"}
