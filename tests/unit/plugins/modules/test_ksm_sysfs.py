"""Unit tests of samepage.ksm.ksm_sysfs against temporary trees laid out like /sys/kernel/mm/ksm."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

import pytest
from ansible.release import __version__ as ANSIBLE_CORE_VERSION

from ansible_collections.samepage.ksm.plugins.module_utils import _ksm
from ansible_collections.samepage.ksm.plugins.modules import ksm_sysfs

ANSIBLE_CORE = tuple(int(part) for part in ANSIBLE_CORE_VERSION.split(".")[:2])

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
def etc(tmp_path):
    """A fake /etc for the boot files: rc.local path, systemd and tmpfiles.d directories."""
    root = tmp_path / "etc"
    (root / "systemd" / "system").mkdir(parents=True)
    (root / "tmpfiles.d").mkdir()
    return root


@pytest.fixture
def run(run_module, fake_sysfs, meminfo, etc):
    """run(args, **kw): the module against the fake trees; returns (failed, result).

    Knob names among ``args`` go into ``settings`` (the module's one dict of knobs)."""

    def call(args, **kwargs):
        full = dict(sysfs_path=str(fake_sysfs), meminfo_path=str(meminfo), competing="ignore",
                    rc_local_path=str(etc / "rc.local"), systemd_dir=str(etc / "systemd" / "system"),
                    tmpfiles_dir=str(etc / "tmpfiles.d"))
        settings = dict((k, v) for k, v in args.items() if k in _ksm.KNOB_BY_NAME)
        full.update((k, v) for k, v in args.items() if k not in _ksm.KNOB_BY_NAME)
        if settings:
            full["settings"] = dict(full.get("settings") or {}, **settings)
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
    # one normaliser for every knob: what is wrong, and what is accepted
    ("run-3", dict(run=3), {}, ["settings: run: invalid value 3", "from 0 to 2"]),
    ("run-negative", dict(run=-1), {}, ["run: invalid value -1", "from 0 to 2"]),
    ("run-word", dict(run="start"), {}, ["run: invalid value 'start'", "whole number"]),
    ("run-float", dict(run=1.5), {}, ["run: invalid value 1.5", "whole number"]),
    ("run-whole-float", dict(run=1.0), {}, ["run: invalid value 1.0", "whole number"]),
    ("run-bool", dict(run=True), {}, ["run: invalid value True", "whole number"]),
    ("merge-across-nodes-2", dict(merge_across_nodes=2), {}, ["merge_across_nodes: invalid value 2", "from 0 to 1"]),
    ("merge-across-nodes-word", dict(merge_across_nodes="numa"), {}, ["merge_across_nodes", "numa", "whole number"]),
    ("advisor-mode-typo", dict(advisor_mode="scan"), {}, ["advisor_mode: invalid value 'scan'", "'none', 'scan-time'"]),
    ("advisor-mode-upper", dict(advisor_mode="SCAN-TIME"), {}, ["advisor_mode", "'none', 'scan-time'"]),
    ("advisor-mode-bracketed", dict(advisor_mode="[none]"), {}, ["advisor_mode", "'none', 'scan-time'"]),
    ("use-zero-pages-word", dict(use_zero_pages="maybe"), {}, ["use_zero_pages: invalid value 'maybe'", "a boolean"]),
    ("smart-scan-2", dict(smart_scan="2"), {}, ["smart_scan: invalid value '2'", "true/false, yes/no, on/off, 1/0"]),
    ("strict-word", dict(strict="perhaps", run=1), {}, ["strict", "Valid booleans"]),
    ("force-unmerge-word", dict(force_unmerge="always", run=1), {}, ["force_unmerge", "Valid booleans"]),
    ("pages-to-scan-word", dict(pages_to_scan="many"), {}, ["pages_to_scan: invalid value 'many'", "whole number"]),
    ("pages-to-scan-float", dict(pages_to_scan=2.5), {}, ["pages_to_scan", "whole number"]),
    ("pages-to-scan-exponent", dict(pages_to_scan="1e3"), {}, ["pages_to_scan: invalid value '1e3'", "ASCII digits"]),
    ("pages-to-scan-superscript", dict(pages_to_scan=u"\u00b2"), {}, ["pages_to_scan: invalid value", "ASCII digits"]),
    ("sleep-arabic-indic", dict(sleep_millisecs=u"\u0661\u0662"), {}, ["sleep_millisecs: invalid value", "ASCII digits"]),
    ("pages-to-scan-newline", dict(pages_to_scan="100\n"), {}, ["pages_to_scan: invalid value '100\\n'"]),
    ("unknown-knob", dict(settings=dict(pages=100)), {}, ["settings", "pages", "pages_to_scan"]),
    ("unknown-option", dict(pages=100, run=1), {}, ["Unsupported parameters", "pages"]),
    # ranges
    ("pages-to-scan-negative", dict(pages_to_scan=-1), {}, ["pages_to_scan", "-1", "from 0 to 4294967295"]),
    ("pages-to-scan-too-big", dict(pages_to_scan=BIG), {}, ["pages_to_scan", str(BIG), "from 0 to 4294967295"]),
    ("sleep-negative", dict(sleep_millisecs=-5), {}, ["sleep_millisecs", "-5", "from 0 to 4294967295"]),
    ("sleep-too-big", dict(sleep_millisecs=BIG), {}, ["sleep_millisecs", "from 0 to 4294967295"]),
    ("max-page-sharing-1", dict(max_page_sharing=1), {}, ["max_page_sharing", "1", "from 2 to 2147483647"]),
    ("max-page-sharing-too-big", dict(max_page_sharing=2 ** 31), {}, ["max_page_sharing", "to 2147483647"]),
    ("max-page-sharing-bool", dict(max_page_sharing=True), {}, ["max_page_sharing", "True", "whole number"]),
    ("prune-negative", dict(stable_node_chains_prune_millisecs=-1), {},
     ["stable_node_chains_prune_millisecs", "-1", "from 0 to 4294967295"]),
    ("advisor-max-cpu-0", dict(advisor_max_cpu=0), {}, ["advisor_max_cpu", "0", "from 1 to 100"]),
    ("advisor-max-cpu-101", dict(advisor_max_cpu=101), {}, ["advisor_max_cpu", "101", "from 1 to 100"]),
    ("target-scan-time-0", dict(advisor_target_scan_time=0), {}, ["advisor_target_scan_time", "from 1 to 4294967295"]),
    ("unmerge-timeout-negative", dict(unmerge_timeout=-1, run=1), {}, ["unmerge_timeout", "-1", "0 or more"]),
    # ansible-core 2.16's type error names the option and the type, not the value (2.17+ add it)
    ("unmerge-timeout-word", dict(unmerge_timeout="soon", run=1), {},
     ["unmerge_timeout", "int"] + (["soon"] if ANSIBLE_CORE >= (2, 17) else [])),
    ("boost-seconds-zero", dict(run=1, persist="systemd", boost=dict(run=1), boost_seconds=0), {},
     ["boost_seconds: invalid value 0", "from 1 to 31536000"]),
    ("boost-seconds-year-plus", dict(run=1, persist="rc_local", boost=dict(run=1), boost_seconds=86400 * 365 + 1), {},
     ["boost_seconds: invalid value 31536001", "from 1 to 31536000"]),
    ("boost-seconds-unicode", dict(run=1, persist="rc_local", boost=dict(run=1), boost_seconds=u"\u0661\u0662"), {},
     ["boost_seconds: invalid value", "ASCII digits"]),
    ("boost-seconds-float", dict(run=1, persist="rc_local", boost=dict(run=1), boost_seconds=60.5), {},
     ["boost_seconds: invalid value 60.5"]),
    ("boost-without-boot-backend", dict(run=1, pages_to_scan=5, boost=dict(pages_to_scan=50)), {},
     ["boost is applied at boot", "persist: rc_local or persist: systemd (got keep)"]),
    ("boost-with-tmpfiles", dict(run=1, pages_to_scan=5, persist="tmpfiles", boost=dict(pages_to_scan=50)), {},
     ["boost is applied at boot", "(got tmpfiles)"]),
    ("boost-knob-not-in-settings", dict(run=1, persist="rc_local", boost=dict(sleep_millisecs=5)), {},
     ["boost: sleep_millisecs has no value in settings"]),
    ("boost-bad-value", dict(run=1, sleep_millisecs=5, persist="rc_local", boost=dict(sleep_millisecs="fast")), {},
     ["boost: sleep_millisecs: invalid value 'fast'"]),
    ("empty-settings", dict(settings={}), {}, ["settings is empty"]),
    ("absent-with-a-backend", dict(state="absent", persist="systemd"), {}, ["persist: systemd cannot go with state: absent"]),
    ("sysfs-path-unsafe-for-boot", dict(run=1, persist="rc_local"), {"__sysfs": "a b"}, ["must be an absolute path of letters"]),
    # rules that tie knobs together
    ("pages-to-scan-with-new-advisor", dict(advisor_mode="scan-time", pages_to_scan=1000), {},
     ["pages_to_scan cannot be set while advisor_mode is scan-time", "set advisor_mode: none"]),
    ("pages-to-scan-under-live-advisor", dict(pages_to_scan=1000), {"advisor_mode": "none [scan-time]"},
     ["pages_to_scan cannot be set while advisor_mode is scan-time", "leave pages_to_scan unset"]),
    ("advisor-min-above-live-max", dict(advisor_min_pages_to_scan=40000), {},
     ["advisor_min_pages_to_scan (40000) must not exceed advisor_max_pages_to_scan (30000)"]),
    ("advisor-min-above-given-max", dict(advisor_min_pages_to_scan=10, advisor_max_pages_to_scan=5), {},
     ["advisor_min_pages_to_scan (10) must not exceed advisor_max_pages_to_scan (5)"]),
    # a knob this kernel lacks, with strict: true
    ("strict-missing-knob", dict(smart_scan=True, strict=True), {"smart_scan": None},
     ["no KSM knob smart_scan", "strict: true", "set strict: false"]),
    ("strict-missing-advisor", dict(advisor_mode="scan-time", strict=True), {"advisor_mode": None},
     ["no KSM knob advisor_mode", "Linux 6.8"]),
    # every problem is reported at once, and a valid knob next to them is not written either
    ("several-errors", dict(pages_to_scan=-1, sleep_millisecs=BIG, run=1), {},
     ["pages_to_scan: invalid value -1", "sleep_millisecs: invalid value %d" % BIG]),
]


@pytest.mark.parametrize("args, prepare, expected", [c[1:] for c in BAD_INPUT], ids=[c[0] for c in BAD_INPUT])
def test_bad_input_fails_clearly_and_writes_nothing(run, fake_sysfs, etc, digest, writes, args, prepare, expected):
    args = dict(args)
    for name, value in prepare.items():
        if name == "__sysfs":
            unsafe = fake_sysfs.parent / value
            fake_sysfs.rename(unsafe)
            fake_sysfs = unsafe
            args["sysfs_path"] = str(unsafe)
        elif value is None:
            (fake_sysfs / name).unlink()
        else:
            set_knobs(fake_sysfs, **{name: value})
    before = digest(fake_sysfs), digest(etc)
    failed, result = run(args)
    assert failed, result
    for text in expected:
        assert text in result["msg"], (text, result["msg"])
    assert writes == []
    assert (digest(fake_sysfs), digest(etc)) == before


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
    assert result["ksm"]["knobs"]["run"] == 1 and result["ksm"]["knobs"]["max_page_sharing"] == 256
    assert result["ksm"]["available"] is True and result["persist"]["files"] == []
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
    assert result["ksm"]["knobs"]["pages_to_scan"] == 5000 and result["ksm"]["knobs"]["run"] == 1
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
    assert len(result["diff"]) == 1
    assert result["diff"][0]["before"] == "pages_to_scan = 100\nsmart_scan = 1\nrun = 0\n"
    assert result["diff"][0]["after"] == "pages_to_scan = 1000\nsmart_scan = 1\nrun = 1\n"
    assert result["diff"][0]["before_header"] == str(fake_sysfs)


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
    assert result["ksm"]["knobs"]["advisor_mode"] == "scan-time"


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
    assert "smart_scan" not in result["ksm"]["knobs"]


def test_advisor_and_pages_to_scan_are_refused_even_where_the_advisor_is_missing(run, fake_sysfs, writes):
    # the same settings must mean the same everywhere: at boot a newer kernel would answer EINVAL
    (fake_sysfs / "advisor_mode").unlink()
    failed, result = run(dict(advisor_mode="scan-time", pages_to_scan=300))
    assert failed and "pages_to_scan cannot be set while advisor_mode is scan-time" in result["msg"]
    assert writes == []


def test_advisor_none_is_already_true_where_the_advisor_is_missing(run, fake_sysfs, writes, warned):
    (fake_sysfs / "advisor_mode").unlink()
    failed, result = run(dict(advisor_mode="none", pages_to_scan=300, strict=True))
    assert not failed, result
    assert result["skipped"] == [] and warned == []
    assert writes == [("pages_to_scan", "300")]


def test_missing_sysfs_dir_fails_clearly(run_module, tmp_path):
    failed, result = run_module(ksm_sysfs, dict(sysfs_path=str(tmp_path / "nope"), settings=dict(run=1)))
    assert failed
    assert "does not exist" in result["msg"] and "CONFIG_KSM" in result["msg"]
    assert not (tmp_path / "nope").exists()


def test_permission_denied_fails_before_writing(run, fake_sysfs, digest, writes, monkeypatch):
    before = digest(fake_sysfs)
    monkeypatch.setattr(ksm_sysfs.os, "access", lambda path, mode: not path.endswith("/run"))
    failed, result = run(dict(pages_to_scan=1000, run=1))
    assert failed
    assert "not writable here (run:" in result["msg"] and "become: true" in result["msg"]
    assert "nothing was written" in result["msg"]
    assert writes == [] and digest(fake_sysfs) == before


def test_permission_denied_in_check_mode_warns(run, fake_sysfs, monkeypatch, warned):
    monkeypatch.setattr(ksm_sysfs.os, "access", lambda path, mode: False)
    failed, result = run(dict(run=1), check_mode=True)
    assert not failed and result["changed"] is True
    assert any("permission denied" in w for w in warned)


def test_read_only_sysfs_fails_even_when_nothing_needs_writing(run, fake_sysfs, monkeypatch):
    set_knobs(fake_sysfs, run=1)
    monkeypatch.setattr(ksm_sysfs.os, "access", lambda path, mode: False)
    failed, result = run(dict(run=1))
    assert failed and "exists but is not writable here" in result["msg"]


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
    assert failed and "rolled back no knob" in result["msg"] and "EINVAL" in result["msg"]
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


# ---------------------------------------------------------------------------------------------
# One call: runtime + boot + verification

from ansible_collections.samepage.ksm.plugins.module_utils import _fileplan, _persist  # noqa: E402


class FakeSystemctl(object):
    """systemctl as the module calls it: show (the probe), daemon-reload, enable, stop."""

    def __init__(self, states=None):
        self.states = dict(states or {})
        self.calls = []

    def __call__(self, argv):
        self.calls.append(list(argv))
        if argv[0] == "show":
            units = argv[argv.index("--") + 1:]
            return 0, "\n".join("Id=%s\nUnitFileState=%s\nActiveState=%s\n" % ((u,) + self.states.get(u, ("", "inactive")))
                                for u in units), ""
        if argv[0] == "enable":
            for unit in argv[2:]:
                self.states[unit] = ("enabled", self.states.get(unit, ("", "inactive"))[1])
        return 0, "", ""


@pytest.fixture
def systemd_host(monkeypatch, tmp_path):
    """A host where systemd is the init: the probe sees /run/systemd/system and a fake systemctl."""
    systemctl = FakeSystemctl()
    monkeypatch.setattr(ksm_sysfs.Run, "systemctl", lambda self: systemctl)
    real_isdir = os.path.isdir
    monkeypatch.setattr(ksm_sysfs.os.path, "isdir", lambda p: True if p == "/run/systemd/system" else real_isdir(p))
    import ansible_collections.samepage.ksm.plugins.module_utils._node_checks as checks
    monkeypatch.setattr(checks.os.path, "isdir", lambda p: True if p == "/run/systemd/system" else real_isdir(p))
    return systemctl


def test_settings_and_rc_local_persistence_in_one_call_then_nothing(run, fake_sysfs, etc, digest):
    args = dict(run=1, pages_to_scan=1000, persist="rc_local")
    failed, result = run(args)
    assert not failed, result
    assert result["changed"] and knob(fake_sysfs, "run") == "1\n"
    text = (etc / "rc.local").read_text()
    assert "echo 1000 > %s/pages_to_scan || true" % fake_sysfs in text
    assert result["persist"]["backend"] == "rc_local" and result["persist"]["files"] == [str(etc / "rc.local")]
    assert result["ksm"]["knobs"]["pages_to_scan"] == 1000
    settled = digest(fake_sysfs), digest(etc)
    failed, result = run(args)
    assert not failed and result["changed"] is False and result["persist"]["files"] == []
    assert (digest(fake_sysfs), digest(etc)) == settled


def test_check_mode_with_diff_writes_nothing_and_shows_knobs_and_files(run, fake_sysfs, etc, digest, writes):
    before = digest(fake_sysfs), digest(etc)
    failed, result = run(dict(run=1, persist="tmpfiles"), check_mode=True, diff=True)
    assert not failed and result["changed"]
    assert [d["before_header"] for d in result["diff"]] == [str(fake_sysfs), str(etc / "tmpfiles.d" / _persist.TMPFILES_CONF) + " (absent)"]
    assert result["diff"][0]["after"] == "run = 1\n"
    assert "w %s/run - - - - 1" % fake_sysfs in result["diff"][1]["after"]
    assert result["ksm"]["knobs"]["run"] == 1
    assert writes == [] and (digest(fake_sysfs), digest(etc)) == before


def test_switching_backend_writes_the_new_and_removes_the_old(run, etc):
    assert not run(dict(run=1, persist="tmpfiles"))[0]
    failed, result = run(dict(run=1, persist="rc_local"))
    assert not failed and result["changed"]
    assert result["persist"]["removed"] == [str(etc / "tmpfiles.d" / _persist.TMPFILES_CONF)]
    assert (etc / "rc.local").exists() and not (etc / "tmpfiles.d" / _persist.TMPFILES_CONF).exists()


def test_persist_none_removes_our_artefacts_and_keep_leaves_them(run, etc):
    assert not run(dict(run=1, persist="rc_local"))[0]
    failed, result = run(dict(run=1))           # default persist: keep
    assert not failed and not result["changed"] and (etc / "rc.local").exists()
    failed, result = run(dict(run=1, persist="none"))
    assert not failed and result["changed"] and not (etc / "rc.local").exists()


def test_boot_file_failure_puts_the_knobs_back(run, fake_sysfs, etc, digest, monkeypatch):
    before = digest(fake_sysfs), digest(etc)

    def no_space(self, path, text, mode, st):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(_fileplan.FilePlan, "_put", no_space)
    failed, result = run(dict(run=1, pages_to_scan=1000, persist="systemd"))
    assert failed
    assert "cannot write %s" % (etc / "systemd" / "system" / _persist.SERVICE) in result["msg"]
    assert "ENOSPC" in result["msg"] and "rolled back run, pages_to_scan" in result["msg"]
    assert (digest(fake_sysfs), digest(etc)) == before


def test_verification_fails_when_the_kernel_does_not_hold_the_value(run, fake_sysfs, monkeypatch):
    real = _ksm.write_knob

    def clamping(sysfs_path, name, value):  # e.g. another controller racing us
        real(sysfs_path, name, 500 if name == "pages_to_scan" else value)

    monkeypatch.setattr(_ksm, "write_knob", clamping)
    failed, result = run(dict(pages_to_scan=1000))
    assert failed and "does not hold the wanted KSM values" in result["msg"]
    assert "pages_to_scan=500 (wanted 1000)" in result["msg"] and result["ksm"]["knobs"]["pages_to_scan"] == 500


def test_verify_ksmd(run, fake_sysfs, tmp_path):
    (tmp_path / "proc").mkdir()
    failed, result = run(dict(run=1, verify_ksmd=True, proc_path=str(tmp_path / "proc")))
    assert failed and "ksmd is not running although run is 1" in result["msg"]
    failed, result = run(dict(run=1, verify_ksmd=False, proc_path=str(tmp_path / "proc")))
    assert not failed


def test_wait_full_scan_waits_for_two_more_scans(run, fake_sysfs, monkeypatch):
    from ansible_collections.samepage.ksm.plugins.module_utils import _ksm_info
    set_knobs(fake_sysfs, full_scans=7)
    sleeps = []

    def scan(seconds):
        sleeps.append(seconds)
        set_knobs(fake_sysfs, full_scans=7 + len(sleeps))

    monkeypatch.setattr(_ksm_info.time, "sleep", scan)
    failed, result = run(dict(run=1, wait_full_scan=True, wait_timeout=30))
    assert not failed and sleeps == [1, 1] and result["ksm"]["counters"]["full_scans"] == 9


def test_competing_fail_writes_nothing_and_warn_goes_on(run, fake_sysfs, etc, digest, writes, warned):
    (etc / "rc.local").write_text("#!/bin/sh\necho 1 > /sys/kernel/mm/ksm/run\nexit 0\n")
    before = digest(fake_sysfs), digest(etc)
    failed, result = run(dict(run=1, persist="rc_local", competing="fail"))
    assert failed and "other KSM controllers would override" in result["msg"] and "(line 2)" in result["msg"]
    assert writes == [] and (digest(fake_sysfs), digest(etc)) == before
    failed, result = run(dict(run=1, competing="fail", competing_allow=["rc_local"]))
    assert not failed and result["competing"][0]["kind"] == "rc_local"
    assert any("may override" in w for w in warned)


def test_systemd_units_are_reloaded_enabled_and_stopped(run, etc, systemd_host):
    failed, result = run(dict(run=1, persist="systemd", boost=dict(run=1), boost_seconds=60))
    assert not failed, result
    assert result["persist"]["units_enabled"] == [_persist.SERVICE]
    assert ["daemon-reload"] in systemd_host.calls and ["enable", "--", _persist.SERVICE] in systemd_host.calls
    systemd_host.calls[:] = []
    failed, result = run(dict(run=1, persist="systemd"))
    assert not failed and not result["changed"] and [c[0] for c in systemd_host.calls] == ["show"]
    systemd_host.states[_persist.SERVICE] = ("enabled", "active")
    failed, result = run(dict(run=1, persist="rc_local"))
    assert not failed and result["persist"]["units_removed"] == [_persist.SERVICE]
    assert result["persist"]["units_stopped"] == [_persist.SERVICE]
    assert ["stop", "--", _persist.SERVICE] in systemd_host.calls


def test_systemd_check_mode_runs_no_changing_command(run, etc, systemd_host):
    failed, result = run(dict(run=1, persist="systemd"), check_mode=True)
    assert not failed and result["changed"] and result["persist"]["units_enabled"] == [_persist.SERVICE]
    assert [c[0] for c in systemd_host.calls] == ["show"]


# ---------------------------------------------------------------------------------------------
# state: absent

def test_absent_unmerges_stops_resets_and_removes_boot_files(run, fake_sysfs, etc, monkeypatch):
    assert not run(dict(run=1, pages_to_scan=1000, sleep_millisecs=50, persist="rc_local"))[0]
    set_knobs(fake_sysfs, pages_shared=10, pages_sharing=40)
    calls = kernel_like_writer(monkeypatch, fake_sysfs)
    failed, result = run(dict(state="absent"))
    assert not failed, result
    assert calls[0] == ("run", "2") and calls[-1] == ("run", "0")
    assert ("pages_to_scan", "100") in calls and ("sleep_millisecs", "20") in calls
    assert result["unmerged"] is True and not (etc / "rc.local").exists()
    calls[:] = []
    failed, result = run(dict(state="absent"))
    assert not failed and result["changed"] is False and calls == []


def test_absent_without_reset_only_stops(run, fake_sysfs, writes):
    set_knobs(fake_sysfs, run=1, pages_to_scan=1000)
    failed, result = run(dict(state="absent", reset=False))
    assert not failed and writes == [("run", "0")] and knob(fake_sysfs, "pages_to_scan") == "1000\n"


def test_absent_on_a_host_without_ksm_still_removes_our_artefacts(run_module, tmp_path, etc, meminfo):
    (etc / "systemd" / "system" / _persist.SERVICE).write_text("[Service]\n")
    (etc / "rc.local").write_text("#!/bin/sh\n" + _persist.rc_block("/sys/kernel/mm/ksm", [("run", "1")], [], 600))
    failed, result = run_module(ksm_sysfs, dict(
        state="absent", sysfs_path=str(tmp_path / "no-ksm"), meminfo_path=str(meminfo), competing="ignore",
        rc_local_path=str(etc / "rc.local"), systemd_dir=str(etc / "systemd" / "system"), tmpfiles_dir=str(etc / "tmpfiles.d")))
    assert not failed, result
    assert result["changed"] and result["ksm"]["available"] is False
    assert (etc / "rc.local").read_text() == "#!/bin/sh\n"
    assert not (etc / "systemd" / "system" / _persist.SERVICE).exists()


def test_present_on_a_host_without_ksm_fails_and_writes_nothing(run_module, tmp_path, etc, digest):
    before = digest(etc)
    failed, result = run_module(ksm_sysfs, dict(
        settings=dict(run=1), persist="rc_local", sysfs_path=str(tmp_path / "no-ksm"), competing="ignore",
        rc_local_path=str(etc / "rc.local"), systemd_dir=str(etc / "systemd" / "system")))
    assert failed and "does not exist" in result["msg"] and "nothing was written" in result["msg"]
    assert digest(etc) == before


def test_read_only_sysfs_fails_present_before_writing(run, fake_sysfs, etc, digest, monkeypatch):
    # an unprivileged container: /sys is there but read-only (access(2) answers EROFS even for root)
    monkeypatch.setattr(ksm_sysfs.os, "access", lambda path, mode: False)
    before = digest(etc)
    failed, result = run(dict(run=1, persist="rc_local"))
    assert failed and "read-only file system" in result["msg"] and "a container sees" in result["msg"]
    assert digest(etc) == before


# ---------------------------------------------------------------------------------------------
# Every door accepts the same values: the runtime module and the boot module share one normaliser

SAME_VALUES = [
    ("pages_to_scan", 300), ("pages_to_scan", "300"), ("pages_to_scan", "0300"), ("pages_to_scan", 3.0),
    ("pages_to_scan", "1e3"), ("pages_to_scan", u"\u00b2"), ("pages_to_scan", u"\u0661\u0662"), ("pages_to_scan", True),
    ("pages_to_scan", " 300"), ("pages_to_scan", "300\n"), ("pages_to_scan", -1), ("pages_to_scan", 2 ** 32),
    ("smart_scan", "yes"), ("smart_scan", "On"), ("smart_scan", "y"), ("smart_scan", 2), ("smart_scan", False),
    ("smart_scan", "1"), ("smart_scan", 1.0), ("advisor_mode", "none"), ("advisor_mode", " none"),
    ("advisor_mode", "None"), ("max_page_sharing", "1"), ("max_page_sharing", "2"),
]


@pytest.mark.parametrize("name, value", SAME_VALUES, ids=["%s=%r" % case for case in SAME_VALUES])
def test_ksm_sysfs_and_ksm_persist_accept_exactly_the_same_values(run, run_module, etc, fake_sysfs, name, value):
    from ansible_collections.samepage.ksm.plugins.modules import ksm_persist
    runtime_failed, runtime = run({"settings": {name: value}}, check_mode=True)
    boot_failed, boot = run_module(ksm_persist, dict(
        settings={name: value}, rc_local_path=str(etc / "rc.local"), systemd_dir=str(etc / "systemd" / "system"),
        tmpfiles_dir=str(etc / "tmpfiles.d"), sysfs_path=str(fake_sysfs)), check_mode=True)
    assert runtime_failed == boot_failed, (runtime.get("msg"), boot.get("msg"))
    assert runtime_failed == (_ksm.normalize_value(name, value)[1] is not None)
    if runtime_failed:
        assert "%s: invalid value %r" % (name, value) in runtime["msg"]
        assert "%s: invalid value %r" % (name, value) in boot["msg"]
