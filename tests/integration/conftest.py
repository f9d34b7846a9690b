"""Fixtures for tests that drive ansible-playbook against this machine's real KSM sysfs.

Every test here holds the machine-wide kernel lock and gets the knobs restored afterwards:
KSM state is global to the kernel, so such tests never overlap and never leave it changed.
"""
import fcntl
import json
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

import ksm_knobs  # noqa: E402

SYSFS = pathlib.Path("/sys/kernel/mm/ksm")
LOCK = "/run/lock/samepage-ksm-kernel.lock"


@pytest.fixture(scope="session")
def kernel_lock():
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
        fcntl.flock(handle, fcntl.LOCK_UN)


@pytest.fixture
def real_ksm(kernel_lock):
    """The real /sys/kernel/mm/ksm, with every knob put back after the test."""
    if not os.access(SYSFS / "run", os.W_OK):
        pytest.fail("%s is not writable: these tests need root on a KSM kernel" % SYSFS)
    saved = ksm_knobs.save()
    try:
        yield SYSFS
    finally:
        ksm_knobs.restore(saved)


def read_knob(name):
    return ksm_knobs.read(name)


@pytest.fixture
def playbook(tmp_path):
    """Run a playbook (YAML text) on localhost; returns (rc, per-task results, stdout)."""

    def run(text, *args, check=True):
        path = tmp_path / "play.yml"
        path.write_text(text)
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                   ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
             "-e", "ansible_python_interpreter=" + sys.executable, str(path), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        try:
            data = json.loads(proc.stdout)
        except ValueError:
            raise AssertionError("ansible-playbook printed no JSON:\n%s\n%s" % (proc.stdout, proc.stderr))
        results = {}
        for play in data["plays"]:
            for task in play["tasks"]:
                results[task["task"]["name"]] = task["hosts"].get("localhost", {})
        if check and proc.returncode != 0:
            raise AssertionError("ansible-playbook failed (rc %d):\n%s" % (proc.returncode, proc.stdout[-6000:]))
        return proc.returncode, results, proc.stdout

    return run
