"""roles/container/files/samepage-ksm-merge on the running kernel, with each Python it supports.

The launcher only sets a per-process flag (PR_SET_MEMORY_MERGE); it never touches the global
KSM knobs, so no kernel lock is needed."""
import glob
import os
import subprocess
import sys

import pytest

LAUNCHER = os.path.join(os.path.dirname(__file__), "..", "..", "..", "roles", "container", "files", "samepage-ksm-merge")
PYTHONS = [sys.executable] + sorted(glob.glob(os.path.expanduser("~/.pyenv/versions/2.7*/bin/python"))
                                    + glob.glob(os.path.expanduser("~/.pyenv/versions/3.6*/bin/python")))[:2]


def ksm_stat_supported():
    try:
        with open("/proc/self/ksm_stat") as handle:
            return "ksm_merge_any" in handle.read()
    except OSError:
        return False


@pytest.mark.skipif(not ksm_stat_supported(), reason="kernel without ksm_merge_any in /proc/PID/ksm_stat")
@pytest.mark.parametrize("python", PYTHONS)
def test_exec_keeps_the_flag(python):
    # grep is exec'd by a shell exec'd by the launcher: the flag survives two execs and a fork
    out = subprocess.run([python, LAUNCHER, "sh", "-c", "grep merge_any /proc/self/ksm_stat"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=True)
    assert out.stdout.strip() == "ksm_merge_any: yes"
    # and without the launcher the same command is not opted in
    plain = subprocess.run(["sh", "-c", "grep merge_any /proc/self/ksm_stat"], stdout=subprocess.PIPE, text=True, check=True)
    assert plain.stdout.strip() == "ksm_merge_any: no"


@pytest.mark.parametrize("python", PYTHONS)
def test_missing_command_fails_loudly(python):
    out = subprocess.run([python, LAUNCHER, "/nonexistent/daemon"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    assert out.returncode == 127
    assert "cannot execute /nonexistent/daemon" in out.stderr


def test_usage():
    out = subprocess.run([sys.executable, LAUNCHER], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, check=False)
    assert out.returncode == 2 and "usage: samepage-ksm-merge CMD" in out.stderr
