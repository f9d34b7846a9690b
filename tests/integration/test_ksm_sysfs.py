"""samepage.ksm.ksm_sysfs through ansible-playbook against this machine's real /sys/kernel/mm/ksm.

The real_ksm fixture holds the kernel lock and puts every knob back afterwards.
"""
import json
import os
import pathlib
import subprocess
import sys
import time

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "tests" / "tools"))

from ksm_knobs import read as read_knob  # noqa: E402
from ksm_workload import Workload  # noqa: E402


def play(tasks):
    return "- hosts: localhost\n  gather_facts: false\n  tasks:\n" + tasks


KNOBS = ("run", "pages_to_scan", "sleep_millisecs", "merge_across_nodes", "max_page_sharing", "advisor_mode",
         "advisor_target_scan_time")


def task(name, args, extra=""):
    """A ksm_sysfs task: knob names among args go into its settings dict."""
    settings = dict((k, v) for k, v in args.items() if k in KNOBS)
    options = dict((k, v) for k, v in args.items() if k not in KNOBS)
    options.setdefault("competing", "ignore")
    if settings:
        options["settings"] = settings
    body = "".join("        %s: %s\n" % (key, json.dumps(value)) for key, value in options.items())
    return "    - name: %s\n      samepage.ksm.ksm_sysfs:\n%s%s" % (name, body, extra)


def write_raw(sysfs, name, value):
    (sysfs / name).write_text("%s\n" % value)


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    pytest.fail("timed out after %ss waiting for %s" % (timeout, what))


@pytest.fixture
def baseline(real_ksm):
    """Kernel defaults for the knobs these tests touch, so every test starts from a known state."""
    write_raw(real_ksm, "run", 2)
    for name, value in (("advisor_mode", "none"), ("pages_to_scan", 100), ("sleep_millisecs", 20),
                        ("merge_across_nodes", 1), ("max_page_sharing", 256)):
        if read_knob(name) != value:
            write_raw(real_ksm, name, value)
    write_raw(real_ksm, "run", 0)
    return real_ksm


def test_set_again_check_mode_and_drift(baseline, playbook):
    args = dict(run=1, pages_to_scan=1234, sleep_millisecs=37)
    text = play(task("set", args) + task("again", args))
    rc, results, dummy = playbook(text)
    assert results["set"]["changed"] is True
    assert [c["knob"] for c in results["set"]["changes"]] == ["pages_to_scan", "sleep_millisecs", "run"]
    assert results["again"]["changed"] is False
    assert results["again"]["changes"] == []
    assert (read_knob("run"), read_knob("pages_to_scan"), read_knob("sleep_millisecs")) == (1, 1234, 37)

    # check mode: reports the change, writes nothing
    rc, results, dummy = playbook(play(task("check", dict(pages_to_scan=4321, run=0))), "--check", "--diff")
    assert results["check"]["changed"] is True
    assert results["check"]["ksm"]["knobs"]["pages_to_scan"] == 4321
    assert "pages_to_scan = 1234\n" in results["check"]["diff"][0]["before"]
    assert "pages_to_scan = 4321\n" in results["check"]["diff"][0]["after"]
    assert (baseline / "pages_to_scan").read_text() == "1234\n"
    assert (baseline / "run").read_text() == "1\n"

    # out-of-band drift is put back
    write_raw(baseline, "sleep_millisecs", 99)
    rc, results, dummy = playbook(play(task("drift", args)))
    assert results["drift"]["changed"] is True
    assert results["drift"]["changes"] == [dict(knob="sleep_millisecs", before=99, after=37)]
    assert read_knob("sleep_millisecs") == 37


def test_bad_value_fails_and_leaves_kernel_alone(baseline, playbook):
    before = {n: read_knob(n) for n in ("run", "pages_to_scan", "max_page_sharing")}
    rc, results, dummy = playbook(play(task("bad", dict(pages_to_scan=500, max_page_sharing=1, run=1))), check=False)
    assert rc != 0
    assert results["bad"]["failed"] is True
    assert "max_page_sharing: invalid value 1; expected a whole number from 2" in results["bad"]["msg"]
    assert {n: read_knob(n) for n in before} == before


def test_merge_across_nodes_flip_while_pages_are_shared(baseline, playbook):
    if not (baseline / "merge_across_nodes").exists():
        pytest.fail("this kernel has no merge_across_nodes (not NUMA): the test machine must provide it")
    with Workload(mib=32, procs=2, opt_in="madvise"):
        write_raw(baseline, "pages_to_scan", 5000)
        write_raw(baseline, "run", 1)
        wait_for(lambda: read_knob("pages_shared") > 0, 60, "pages_shared > 0")
        shared_before = read_knob("pages_shared")
        rc, results, dummy = playbook(play(task("flip", dict(merge_across_nodes=0))))
        flip = results["flip"]
        assert flip["changed"] is True and flip["unmerged"] is True
        assert flip["changes"] == [dict(knob="merge_across_nodes", before=1, after=0)]
        assert read_knob("merge_across_nodes") == 0
        assert read_knob("run") == 1, "ksmd must be running again after the unmerge"
        assert flip["ksm"]["knobs"]["run"] == 1
        # ksmd merges again under the new setting
        wait_for(lambda: read_knob("pages_shared") > 0, 60, "pages to merge again")
        flips = task("flip back", dict(merge_across_nodes=1)) + task("flip back again", dict(merge_across_nodes=1))
        rc, results, dummy = playbook(play(flips))
        assert results["flip back"]["changed"] is True and results["flip back"]["unmerged"] is True
        assert results["flip back again"]["changed"] is False
        assert read_knob("merge_across_nodes") == 1 and read_knob("run") == 1
        assert shared_before > 0


def test_memory_guard_refuses_unmerge_on_the_real_kernel(baseline, playbook, tmp_path):
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal: 1024 kB\nMemAvailable: 4 kB\n")
    with Workload(mib=16, procs=2, opt_in="madvise"):
        write_raw(baseline, "pages_to_scan", 5000)
        write_raw(baseline, "run", 1)
        wait_for(lambda: read_knob("pages_sharing") > 0, 60, "pages_sharing > 0")
        args = dict(max_page_sharing=128, meminfo_path=str(meminfo))
        rc, results, dummy = playbook(play(task("guarded", args)), check=False)
        assert rc != 0 and "MemAvailable is only 0 MiB" in results["guarded"]["msg"]
        assert read_knob("max_page_sharing") == 256 and read_knob("run") == 1
        assert read_knob("pages_shared") > 0, "nothing may have been unmerged"


def test_advisor_scan_time_then_back_to_none(baseline, playbook):
    if not (baseline / "advisor_mode").exists():
        pytest.fail("this kernel has no advisor_mode: the test machine must provide it")
    rc, results, dummy = playbook(play(
        task("advisor on", dict(advisor_mode="scan-time", advisor_target_scan_time=300)) +
        task("advisor on again", dict(advisor_mode="scan-time", advisor_target_scan_time=300))))
    assert results["advisor on"]["changed"] is True
    assert results["advisor on again"]["changed"] is False
    assert "[scan-time]" in (baseline / "advisor_mode").read_text()
    assert read_knob("advisor_target_scan_time") == 300

    rc, results, dummy = playbook(play(task("pages under advisor", dict(pages_to_scan=800))), check=False)
    assert rc != 0
    assert "pages_to_scan cannot be set while advisor_mode is scan-time" in results["pages under advisor"]["msg"]
    assert read_knob("advisor_mode") == "scan-time"

    rc, results, dummy = playbook(play(
        task("advisor off", dict(advisor_mode="none", pages_to_scan=800)) +
        task("advisor off again", dict(advisor_mode="none", pages_to_scan=800))))
    assert results["advisor off"]["changed"] is True
    assert [c["knob"] for c in results["advisor off"]["changes"]] == ["advisor_mode", "pages_to_scan"]
    assert results["advisor off again"]["changed"] is False
    assert "[none]" in (baseline / "advisor_mode").read_text()
    assert read_knob("pages_to_scan") == 800


def test_one_call_sets_persists_verifies_and_waits_for_a_scan(baseline, playbook, tmp_path):
    """Runtime, rc.local, verification and a full scan with the new values, in one task on the real kernel."""
    rc_local = tmp_path / "rc.local"
    rc_local.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(str(rc_local), 0o644)
    args = dict(run=1, pages_to_scan=5000, sleep_millisecs=20, advisor_mode="none", persist="rc_local",
                rc_local_path=str(rc_local), competing="fail", verify_ksmd=True, wait_full_scan=True, wait_timeout=60)
    with Workload(mib=8, procs=2, opt_in="madvise"):
        before = read_knob("full_scans")
        started = time.monotonic()
        rc, results, dummy = playbook(play(task("node", args) + task("node again", args)))
        waited = time.monotonic() - started
    node = results["node"]
    assert node["changed"] is True and node["persist"]["files"] == [str(rc_local)]
    assert node["ksm"]["knobs"]["pages_to_scan"] == 5000 and node["ksm"]["ksmd"]["running"] is True
    assert node["ksm"]["counters"]["full_scans"] >= before + 2
    assert results["node again"]["changed"] is False
    text = rc_local.read_text()
    assert text.index("# BEGIN samepage.ksm") < text.index("exit 0") and "# samepage.ksm: original mode 0644" in text
    assert os.stat(str(rc_local)).st_mode & 0o777 == 0o755
    assert waited < 120
    # the boot block really sets the knobs: run it against the real kernel after a reset
    write_raw(baseline, "pages_to_scan", 100)
    subprocess.run(["sh", str(rc_local)], check=True)
    assert read_knob("pages_to_scan") == 5000
    # state absent: stops ksmd, resets the knobs, gives the file its bytes and mode back
    rc, results, dummy = playbook(play(task("ksm absent", dict(state="absent", rc_local_path=str(rc_local))) +
                                       task("ksm absent again", dict(state="absent", rc_local_path=str(rc_local)))))
    assert results["ksm absent"]["changed"] is True and results["ksm absent again"]["changed"] is False
    assert (read_knob("run"), read_knob("pages_to_scan")) == (0, 100)
    assert rc_local.read_text() == "#!/bin/sh\nexit 0\n" and os.stat(str(rc_local)).st_mode & 0o777 == 0o644


def test_a_foreign_rc_local_line_stops_the_call_before_any_write(baseline, playbook, tmp_path):
    rc_local = tmp_path / "rc.local"
    rc_local.write_text("#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\nexit 0\n")
    rc, results, dummy = playbook(play(task("node", dict(run=1, pages_to_scan=777, persist="rc_local", competing="fail",
                                                         rc_local_path=str(rc_local)))), check=False)
    assert rc != 0 and "writes KSM knobs outside the samepage.ksm block (line 2)" in results["node"]["msg"]
    assert read_knob("pages_to_scan") == 100 and read_knob("run") == 0
    assert rc_local.read_text() == "#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\nexit 0\n"
