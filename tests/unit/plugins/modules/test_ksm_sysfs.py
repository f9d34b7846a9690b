"""Unit tests of samepage.ksm.ksm_sysfs against temporary trees laid out like /sys/kernel/mm/ksm."""
import errno
import os

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _ksm
from ansible_collections.samepage.ksm.plugins.modules import ksm_sysfs

BIG = 2 ** 32  # one past the kernel's unsigned int range


def knob(tree, name):
    return (tree / name).read_text()


def set_knobs(tree, **values):
    for name, value in values.items():
        (tree / name).write_text("%s\n" % value)


@pytest.fixture
def meminfo(tmp_path):
    """A meminfo file with plenty of MemAvailable (8 GiB)."""
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:       16777216 kB\nMemFree:         1048576 kB\nMemAvailable:    8388608 kB\n")
    return path


@pytest.fixture
def run(run_module, fake_sysfs, meminfo):
    """run(args, **kw): the module against the fake tree; returns (failed, result)."""

    def call(args, **kwargs):
        full = dict(sysfs_path=str(fake_sysfs), meminfo_path=str(meminfo))
        full.update(args)
        return run_module(ksm_sysfs, full, **kwargs)

    return call


@pytest.fixture
def writes(monkeypatch):
    """Record every knob write (name, text) while still writing the fake file."""
    calls = []
    real = _ksm.write_knob

    def recording(sysfs_path, name, value):
        calls.append((name, _ksm.format_knob(name, value)))
        real(sysfs_path, name, value)

    monkeypatch.setattr(_ksm, "write_knob", recording)
    return calls


def kernel_like_writer(monkeypatch, tree, busy_after_unmerge=False, clear_on_unmerge=True, fail=None):
    """Emulate the kernel's EBUSY rule and run=2 unmerge on the fake tree; returns the call log.

    fail: {knob: errno} makes that knob's write fail with that error.
    """
    calls = []
    real = _ksm.write_knob

    def writer(sysfs_path, name, value):
        text = _ksm.format_knob(name, value)
        calls.append((name, text))
        if fail and name in fail:
            raise OSError(fail[name], os.strerror(fail[name]))
        spec = _ksm.KNOB_BY_NAME[name]
        current = _ksm.read_knob(sysfs_path, name)
        if spec.needs_unmerge and current != value and (
                busy_after_unmerge or _ksm.read_knob(sysfs_path, "pages_shared") > 0):
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        real(sysfs_path, name, value)
        if name == "run" and value == 2 and clear_on_unmerge:
            set_knobs(tree, pages_shared=0, pages_sharing=0)

    monkeypatch.setattr(_ksm, "write_knob", writer)
    return calls


# ---------------------------------------------------------------------------------------------
# Bad input: a clear message (what is wrong, what is accepted) and not one byte written.
# Each case: module args, optional tree preparation, substrings the message must contain.
BAD_INPUT = [
    # choices enforced by the argument spec
    ("run-3", dict(run=3), {}, ["run", "one of: 0, 1, 2", "3"]),
    ("run-negative", dict(run=-1), {}, ["run", "one of: 0, 1, 2", "-1"]),
    ("run-word", dict(run="start"), {}, ["run", "start", "int"]),
    ("run-float", dict(run=1.5), {}, ["run", "float", "int"]),
    ("merge-across-nodes-2", dict(merge_across_nodes=2), {}, ["merge_across_nodes", "one of: 0, 1", "2"]),
    ("merge-across-nodes-word", dict(merge_across_nodes="numa"), {}, ["merge_across_nodes", "numa", "int"]),
    ("advisor-mode-typo", dict(advisor_mode="scan"), {}, ["advisor_mode", "one of: none, scan-time", "scan"]),
    ("advisor-mode-upper", dict(advisor_mode="SCAN-TIME"), {}, ["advisor_mode", "one of: none, scan-time"]),
    ("advisor-mode-bracketed", dict(advisor_mode="[none]"), {}, ["advisor_mode", "one of: none, scan-time"]),
    ("use-zero-pages-word", dict(use_zero_pages="maybe"), {}, ["use_zero_pages", "maybe", "Valid booleans"]),
    ("smart-scan-2", dict(smart_scan="2"), {}, ["smart_scan", "Valid booleans"]),
    ("strict-word", dict(strict="perhaps", run=1), {}, ["strict", "Valid booleans"]),
    ("force-unmerge-word", dict(force_unmerge="always", run=1), {}, ["force_unmerge", "Valid booleans"]),
    ("pages-to-scan-word", dict(pages_to_scan="many"), {}, ["pages_to_scan", "many", "int"]),
    ("pages-to-scan-float", dict(pages_to_scan=2.5), {}, ["pages_to_scan", "int"]),
    ("unknown-option", dict(pages=100), {}, ["Unsupported parameters", "pages", "pages_to_scan"]),
    # ranges checked by the module
    ("pages-to-scan-negative", dict(pages_to_scan=-1), {}, ["pages_to_scan", "-1", "from 0 to 4294967295"]),
    ("pages-to-scan-too-big", dict(pages_to_scan=BIG), {}, ["pages_to_scan", str(BIG), "from 0 to 4294967295"]),
    ("sleep-negative", dict(sleep_millisecs=-5), {}, ["sleep_millisecs", "-5", "from 0 to 4294967295"]),
    ("sleep-too-big", dict(sleep_millisecs=BIG), {}, ["sleep_millisecs", "from 0 to 4294967295"]),
    ("max-page-sharing-1", dict(max_page_sharing=1), {}, ["max_page_sharing", "1", "from 2 to 2147483647"]),
    ("max-page-sharing-0", dict(max_page_sharing=0), {}, ["max_page_sharing", "from 2 to 2147483647"]),
    ("max-page-sharing-negative", dict(max_page_sharing=-3), {}, ["max_page_sharing", "-3", "from 2 to"]),
    ("max-page-sharing-too-big", dict(max_page_sharing=2 ** 31), {}, ["max_page_sharing", "to 2147483647"]),
    ("max-page-sharing-bool", dict(max_page_sharing=True), {}, ["max_page_sharing", "True", "whole number"]),
    ("prune-negative", dict(stable_node_chains_prune_millisecs=-1), {},
     ["stable_node_chains_prune_millisecs", "-1", "from 0 to 4294967295"]),
    ("prune-too-big", dict(stable_node_chains_prune_millisecs=BIG), {},
     ["stable_node_chains_prune_millisecs", "from 0 to 4294967295"]),
    ("advisor-max-cpu-0", dict(advisor_max_cpu=0), {}, ["advisor_max_cpu", "0", "from 1 to 100"]),
    ("advisor-max-cpu-101", dict(advisor_max_cpu=101), {}, ["advisor_max_cpu", "101", "from 1 to 100"]),
    ("advisor-max-cpu-negative", dict(advisor_max_cpu=-20), {}, ["advisor_max_cpu", "-20", "from 1 to 100"]),
    ("advisor-min-negative", dict(advisor_min_pages_to_scan=-1), {},
     ["advisor_min_pages_to_scan", "from 0 to 4294967295"]),
    ("advisor-min-too-big", dict(advisor_min_pages_to_scan=BIG), {},
     ["advisor_min_pages_to_scan", "from 0 to 4294967295"]),
    ("advisor-max-negative", dict(advisor_max_pages_to_scan=-1), {},
     ["advisor_max_pages_to_scan", "from 0 to 4294967295"]),
    ("advisor-max-too-big", dict(advisor_max_pages_to_scan=BIG), {},
     ["advisor_max_pages_to_scan", "from 0 to 4294967295"]),
    ("target-scan-time-0", dict(advisor_target_scan_time=0), {},
     ["advisor_target_scan_time", "from 1 to 4294967295"]),
    ("target-scan-time-negative", dict(advisor_target_scan_time=-10), {},
     ["advisor_target_scan_time", "-10", "from 1 to"]),
    ("target-scan-time-too-big", dict(advisor_target_scan_time=BIG), {},
     ["advisor_target_scan_time", "from 1 to 4294967295"]),
    ("unmerge-timeout-negative", dict(unmerge_timeout=-1, run=1), {}, ["unmerge_timeout", "-1", "0 or more"]),
    ("unmerge-timeout-word", dict(unmerge_timeout="soon", run=1), {}, ["unmerge_timeout", "soon", "int"]),
    # rules that tie knobs together
    ("pages-to-scan-with-new-advisor", dict(advisor_mode="scan-time", pages_to_scan=1000), {},
     ["pages_to_scan cannot be set while advisor_mode is scan-time", "set advisor_mode: none"]),
    ("pages-to-scan-under-live-advisor", dict(pages_to_scan=1000), {"advisor_mode": "none [scan-time]"},
     ["pages_to_scan cannot be set while advisor_mode is scan-time", "leave pages_to_scan unset"]),
    ("advisor-min-above-live-max", dict(advisor_min_pages_to_scan=40000), {},
     ["advisor_min_pages_to_scan (40000) must not exceed advisor_max_pages_to_scan (30000)"]),
    ("advisor-max-below-live-min", dict(advisor_max_pages_to_scan=100), {},
     ["advisor_min_pages_to_scan (500) must not exceed advisor_max_pages_to_scan (100)"]),
    ("advisor-min-above-given-max", dict(advisor_min_pages_to_scan=10, advisor_max_pages_to_scan=5), {},
     ["advisor_min_pages_to_scan (10) must not exceed advisor_max_pages_to_scan (5)"]),
    # a knob this kernel lacks, with strict: true
    ("strict-missing-knob", dict(smart_scan=True, strict=True), {"smart_scan": None},
     ["no KSM knob smart_scan", "strict: true", "set strict: false"]),
    # every problem is reported at once, and a valid knob next to them is not written either
    ("several-errors", dict(pages_to_scan=-1, sleep_millisecs=BIG, run=1), {},
     ["pages_to_scan: invalid value -1", "sleep_millisecs: invalid value %d" % BIG]),
]


def test_bad_input_catalogue_is_large_enough():
    assert len(BAD_INPUT) >= 40


@pytest.mark.parametrize("args, prepare, expected", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_fails_clearly_and_writes_nothing(run, fake_sysfs, digest, writes, args, prepare, expected):
    for name, value in prepare.items():
        if value is None:
            (fake_sysfs / name).unlink()
        else:
            set_knobs(fake_sysfs, **{name: value})
    before = digest(fake_sysfs)
    failed, result = run(args)
    assert failed, result
    for text in expected:
        assert text in result["msg"], (text, result["msg"])
    assert writes == []
    assert digest(fake_sysfs) == before


# ---------------------------------------------------------------------------------------------
# Success paths

def test_set_then_idempotent(run, fake_sysfs, digest):
    args = dict(run=1, pages_to_scan=1000, sleep_millisecs=50, use_zero_pages=True)
    failed, result = run(args)
    assert not failed, result
    assert result["changed"] is True
    assert [c["knob"] for c in result["changes"]] == ["pages_to_scan", "sleep_millisecs", "use_zero_pages", "run"]
    assert result["changes"][0] == dict(knob="pages_to_scan", before=100, after=1000)
    assert knob(fake_sysfs, "pages_to_scan") == "1000\n"
    assert knob(fake_sysfs, "sleep_millisecs") == "50\n"
    assert knob(fake_sysfs, "use_zero_pages") == "1\n"
    assert knob(fake_sysfs, "run") == "1\n"
    assert result["knobs"]["run"] == 1 and result["knobs"]["max_page_sharing"] == 256
    assert result["unmerged"] is False and result["skipped"] == []

    settled = digest(fake_sysfs)
    failed, result = run(args)
    assert not failed, result
    assert result["changed"] is False
    assert result["changes"] == []
    assert digest(fake_sysfs) == settled


def test_only_differing_knobs_are_written(run, fake_sysfs, writes):
    failed, result = run(dict(pages_to_scan=100, sleep_millisecs=20, run=1))
    assert not failed, result
    assert writes == [("run", "1")]


def test_check_mode_predicts_and_writes_nothing(run, fake_sysfs, digest, writes):
    before = digest(fake_sysfs)
    failed, result = run(dict(run=1, pages_to_scan=5000, advisor_mode="none"), check_mode=True)
    assert not failed, result
    assert result["changed"] is True
    assert result["knobs"]["pages_to_scan"] == 5000 and result["knobs"]["run"] == 1
    assert [c["knob"] for c in result["changes"]] == ["pages_to_scan", "run"]
    assert writes == []
    assert digest(fake_sysfs) == before


def test_check_mode_reports_planned_unmerge_without_doing_it(run, fake_sysfs, digest, writes):
    set_knobs(fake_sysfs, run=1, pages_shared=10, pages_sharing=50)
    before = digest(fake_sysfs)
    failed, result = run(dict(merge_across_nodes=0), check_mode=True)
    assert not failed, result
    assert result["changed"] is True and result["unmerged"] is True
    assert writes == []
    assert digest(fake_sysfs) == before


def test_diff_lists_requested_knobs_as_lines(run, fake_sysfs):
    failed, result = run(dict(run=1, pages_to_scan=1000, smart_scan=True), diff=True)
    assert not failed, result
    assert result["diff"]["before"] == "pages_to_scan = 100\nsmart_scan = 1\nrun = 0\n"
    assert result["diff"]["after"] == "pages_to_scan = 1000\nsmart_scan = 1\nrun = 1\n"
    assert result["diff"]["before_header"] == str(fake_sysfs)


def test_no_diff_without_diff_mode(run):
    failed, result = run(dict(run=1))
    assert not failed and "diff" not in result


def test_drift_is_corrected(run, fake_sysfs):
    assert not run(dict(sleep_millisecs=50))[0]
    set_knobs(fake_sysfs, sleep_millisecs=20)  # someone else changed it
    failed, result = run(dict(sleep_millisecs=50))
    assert not failed and result["changed"] is True
    assert result["changes"] == [dict(knob="sleep_millisecs", before=20, after=50)]
    assert knob(fake_sysfs, "sleep_millisecs") == "50\n"


def test_write_order_follows_kernel_rules(run, fake_sysfs, writes):
    set_knobs(fake_sysfs, advisor_mode="none [scan-time]", run=0)
    failed, result = run(dict(run=1, pages_to_scan=2000, advisor_mode="none", max_page_sharing=512,
                              sleep_millisecs=10, advisor_max_cpu=30, use_zero_pages=True))
    assert not failed, result
    assert [name for name, dummy in writes] == [
        "advisor_mode", "advisor_max_cpu", "pages_to_scan", "sleep_millisecs", "use_zero_pages",
        "max_page_sharing", "run"]
    assert writes[0] == ("advisor_mode", "none")


def test_advisor_is_read_as_the_kernel_prints_it(run, fake_sysfs, writes):
    set_knobs(fake_sysfs, advisor_mode="none [scan-time]")
    failed, result = run(dict(advisor_mode="scan-time"))
    assert not failed and result["changed"] is False and writes == []
    assert result["knobs"]["advisor_mode"] == "scan-time"


def test_advisor_scan_time_without_pages_to_scan(run, fake_sysfs, writes):
    failed, result = run(dict(advisor_mode="scan-time", advisor_target_scan_time=60))
    assert not failed, result
    assert writes == [("advisor_mode", "scan-time"), ("advisor_target_scan_time", "60")]


def test_missing_knob_is_skipped_with_warning(run, fake_sysfs, writes, warned):
    (fake_sysfs / "smart_scan").unlink()
    failed, result = run(dict(smart_scan=True, run=1))
    assert not failed, result
    assert result["skipped"] == ["smart_scan"]
    assert any("no KSM knob smart_scan" in w and "strict: true" in w for w in warned)
    assert writes == [("run", "1")]
    assert not (fake_sysfs / "smart_scan").exists()
    assert "smart_scan" not in result["knobs"]


def test_missing_advisor_does_not_block_pages_to_scan(run, fake_sysfs):
    (fake_sysfs / "advisor_mode").unlink()
    failed, result = run(dict(advisor_mode="scan-time", pages_to_scan=300))
    assert not failed, result
    assert result["skipped"] == ["advisor_mode"]
    assert knob(fake_sysfs, "pages_to_scan") == "300\n"


def test_missing_sysfs_dir_fails_clearly(run_module, tmp_path):
    failed, result = run_module(ksm_sysfs, dict(sysfs_path=str(tmp_path / "nope"), run=1))
    assert failed
    assert "does not exist" in result["msg"] and "CONFIG_KSM" in result["msg"]
    assert not (tmp_path / "nope").exists()


def test_permission_denied_fails_before_writing(run, fake_sysfs, digest, writes, monkeypatch):
    before = digest(fake_sysfs)
    monkeypatch.setattr(ksm_sysfs.os, "access", lambda path, mode: not path.endswith("/run"))
    failed, result = run(dict(pages_to_scan=1000, run=1))
    assert failed
    assert "cannot write run" in result["msg"] and "become: true" in result["msg"]
    assert "nothing was written" in result["msg"]
    assert writes == [] and digest(fake_sysfs) == before


def test_permission_denied_in_check_mode_warns(run, fake_sysfs, monkeypatch, warned):
    monkeypatch.setattr(ksm_sysfs.os, "access", lambda path, mode: False)
    failed, result = run(dict(run=1), check_mode=True)
    assert not failed and result["changed"] is True
    assert any("permission denied" in w for w in warned)


# ---------------------------------------------------------------------------------------------
# Failures mid-apply roll back

@pytest.mark.parametrize("code, name", [(errno.EINVAL, "EINVAL"), (errno.EBUSY, "EBUSY"), (errno.EACCES, "EACCES")])
def test_failed_write_rolls_back_in_reverse(run, fake_sysfs, digest, monkeypatch, code, name):
    before = digest(fake_sysfs)
    calls = kernel_like_writer(monkeypatch, fake_sysfs, fail={"smart_scan": code})
    failed, result = run(dict(advisor_max_cpu=20, pages_to_scan=1000, sleep_millisecs=50, smart_scan=False, run=1))
    assert failed
    assert "smart_scan = 0" in result["msg"] and name in result["msg"]
    assert "rolled back sleep_millisecs, pages_to_scan, advisor_max_cpu" in result["msg"]
    assert result["knob"] == "smart_scan" and result["value"] == 0
    assert result["rolled_back"] == ["sleep_millisecs", "pages_to_scan", "advisor_max_cpu"]
    # forward writes, the failing one, then the originals in reverse; run was never reached
    assert calls == [("advisor_max_cpu", "20"), ("pages_to_scan", "1000"), ("sleep_millisecs", "50"),
                     ("smart_scan", "0"), ("sleep_millisecs", "20"), ("pages_to_scan", "100"),
                     ("advisor_max_cpu", "70")]
    assert digest(fake_sysfs) == before


def test_failure_on_first_write_rolls_back_nothing(run, fake_sysfs, digest, monkeypatch):
    before = digest(fake_sysfs)
    kernel_like_writer(monkeypatch, fake_sysfs, fail={"pages_to_scan": errno.EINVAL})
    failed, result = run(dict(pages_to_scan=1000))
    assert failed and "rolled back nothing" in result["msg"] and "EINVAL" in result["msg"]
    assert digest(fake_sysfs) == before


def test_rollback_failure_is_reported(run, fake_sysfs, monkeypatch):
    real = _ksm.write_knob

    def writer(sysfs_path, name, value):
        if name == "sleep_millisecs":
            raise OSError(errno.EINVAL, "Invalid argument")
        if name == "pages_to_scan" and value == 100:
            raise OSError(errno.EIO, "Input/output error")
        real(sysfs_path, name, value)

    monkeypatch.setattr(_ksm, "write_knob", writer)
    failed, result = run(dict(pages_to_scan=1000, sleep_millisecs=50))
    assert failed
    assert "ROLLBACK FAILED for pages_to_scan = 100" in result["msg"] and "EIO" in result["msg"]
    assert result["rollback_errors"]


# ---------------------------------------------------------------------------------------------
# merge_across_nodes / max_page_sharing: unmerge, wait, write, restore run

def test_unmerge_dance_restores_previous_run(run, fake_sysfs, monkeypatch):
    set_knobs(fake_sysfs, run=1, pages_shared=10, pages_sharing=40)
    calls = kernel_like_writer(monkeypatch, fake_sysfs)
    failed, result = run(dict(merge_across_nodes=0, sleep_millisecs=30))
    assert not failed, result
    assert calls == [("sleep_millisecs", "30"), ("run", "2"), ("merge_across_nodes", "0"), ("run", "1")]
    assert result["unmerged"] is True and result["changed"] is True
    assert [c["knob"] for c in result["changes"]] == ["sleep_millisecs", "merge_across_nodes"]
    assert knob(fake_sysfs, "merge_across_nodes") == "0\n" and knob(fake_sysfs, "run") == "1\n"

    calls[:] = []
    failed, result = run(dict(merge_across_nodes=0, sleep_millisecs=30))
    assert not failed and result["changed"] is False and result["unmerged"] is False and calls == []


def test_unmerge_dance_ends_with_requested_run(run, fake_sysfs, monkeypatch):
    set_knobs(fake_sysfs, run=1, pages_shared=10, pages_sharing=40)
    calls = kernel_like_writer(monkeypatch, fake_sysfs)
    failed, result = run(dict(max_page_sharing=1024, run=0))
    assert not failed, result
    assert calls == [("run", "2"), ("max_page_sharing", "1024"), ("run", "0")]
    assert knob(fake_sysfs, "run") == "0\n"


def test_unmerge_with_requested_run_2_writes_run_once(run, fake_sysfs, monkeypatch):
    set_knobs(fake_sysfs, run=1, pages_shared=10, pages_sharing=40)
    calls = kernel_like_writer(monkeypatch, fake_sysfs)
    failed, result = run(dict(max_page_sharing=1024, run=2))
    assert not failed, result
    assert calls == [("run", "2"), ("max_page_sharing", "1024")]


def test_no_unmerge_when_ksmd_stopped_and_nothing_shared(run, fake_sysfs, monkeypatch):
    calls = kernel_like_writer(monkeypatch, fake_sysfs)
    failed, result = run(dict(merge_across_nodes=0))
    assert not failed, result
    assert calls == [("merge_across_nodes", "0")] and result["unmerged"] is False


def test_unmerge_timeout_rolls_back_and_restarts_ksmd(run, fake_sysfs, digest, monkeypatch):
    set_knobs(fake_sysfs, run=1, pages_shared=10, pages_sharing=40)
    before = digest(fake_sysfs)
    calls = kernel_like_writer(monkeypatch, fake_sysfs, clear_on_unmerge=False)
    failed, result = run(dict(merge_across_nodes=0, pages_to_scan=500, unmerge_timeout=0))
    assert failed
    assert "pages_shared is still 10" in result["msg"] and "unmerge_timeout" in result["msg"]
    assert calls == [("pages_to_scan", "500"), ("run", "2"), ("run", "1"), ("pages_to_scan", "100")]
    assert knob(fake_sysfs, "run") == "1\n"  # ksmd is not left stopped
    assert digest(fake_sysfs) == before


def test_ebusy_after_unmerge_rolls_back_and_restarts_ksmd(run, fake_sysfs, monkeypatch):
    set_knobs(fake_sysfs, run=1, pages_shared=10, pages_sharing=40)
    calls = kernel_like_writer(monkeypatch, fake_sysfs, busy_after_unmerge=True)
    failed, result = run(dict(merge_across_nodes=0))
    assert failed
    assert "merge_across_nodes = 0" in result["msg"] and "EBUSY" in result["msg"]
    assert calls == [("run", "2"), ("merge_across_nodes", "0"), ("run", "1")]
    assert knob(fake_sysfs, "run") == "1\n" and knob(fake_sysfs, "merge_across_nodes") == "1\n"
    assert result["unmerged"] is True and result["rolled_back"] == ["run"]


def test_failed_unmerge_write_restores_run(run, fake_sysfs, monkeypatch):
    """The kernel stops ksmd when run=2 fails (ENOMEM): the rollback starts it again."""
    set_knobs(fake_sysfs, run=1, pages_shared=10, pages_sharing=40)
    real = _ksm.write_knob

    def writer(sysfs_path, name, value):
        if name == "run" and value == 2:
            set_knobs(fake_sysfs, run=0)
            raise OSError(errno.ENOMEM, "Cannot allocate memory")
        real(sysfs_path, name, value)

    monkeypatch.setattr(_ksm, "write_knob", writer)
    failed, result = run(dict(max_page_sharing=100))
    assert failed and "ENOMEM" in result["msg"] and "run = 2" in result["msg"]
    assert knob(fake_sysfs, "run") == "1\n" and knob(fake_sysfs, "max_page_sharing") == "256\n"


# ---------------------------------------------------------------------------------------------
# MemAvailable guard

def test_unmerge_refused_when_memory_is_short(run, fake_sysfs, meminfo, digest, writes):
    set_knobs(fake_sysfs, run=1, pages_shared=100, pages_sharing=1000000)  # ~3.8 GiB with 4 KiB pages
    meminfo.write_text("MemTotal: 16777216 kB\nMemFree: 10240 kB\nMemAvailable: 102400 kB\n")
    before = digest(fake_sysfs.parent)
    failed, result = run(dict(merge_across_nodes=0))
    assert failed
    assert "MemAvailable is only 100 MiB" in result["msg"] and "force_unmerge: true" in result["msg"]
    assert "nothing was written" in result["msg"]
    assert writes == [] and digest(fake_sysfs.parent) == before


def test_requested_unmerge_is_guarded_too(run, fake_sysfs, meminfo, writes):
    set_knobs(fake_sysfs, run=1, pages_shared=100, pages_sharing=1000000)
    meminfo.write_text("MemAvailable: 102400 kB\n")
    failed, result = run(dict(run=2))
    assert failed and "MemAvailable" in result["msg"] and writes == []


def test_force_unmerge_overrides_memory_guard(run, fake_sysfs, meminfo, monkeypatch):
    set_knobs(fake_sysfs, run=1, pages_shared=100, pages_sharing=1000000)
    meminfo.write_text("MemAvailable: 102400 kB\n")
    calls = kernel_like_writer(monkeypatch, fake_sysfs)
    failed, result = run(dict(merge_across_nodes=0, force_unmerge=True))
    assert not failed, result
    assert calls == [("run", "2"), ("merge_across_nodes", "0"), ("run", "1")]


def test_memory_guard_counts_zero_pages_and_falls_back_without_memavailable(run, fake_sysfs, meminfo, writes):
    page_mib = _ksm.page_size() / 1048576.0
    set_knobs(fake_sysfs, run=1, pages_shared=1, pages_sharing=0, ksm_zero_pages=int(300 / page_mib))
    meminfo.write_text("MemFree: 102400 kB\nBuffers: 1024 kB\nCached: 1024 kB\n")  # pre-3.14 kernel
    failed, result = run(dict(max_page_sharing=64))
    assert failed and "MemAvailable is only 102 MiB" in result["msg"] and writes == []


def test_unreadable_meminfo_fails_before_unmerge(run, fake_sysfs, tmp_path, writes):
    set_knobs(fake_sysfs, run=1, pages_shared=1, pages_sharing=5)
    failed, result = run(dict(max_page_sharing=64, meminfo_path=str(tmp_path / "missing")))
    assert failed and "cannot read" in result["msg"] and "force_unmerge" in result["msg"]
    assert writes == []
