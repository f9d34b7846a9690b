"""Unit tests for _persist: validation, renderings, and the rc.local block editor."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
import subprocess

import pytest
from hypothesis import assume, given, settings as hsettings, strategies as st

from ansible_collections.samepage.ksm.plugins.module_utils import _persist as persist
from ansible_collections.samepage.ksm.plugins.module_utils import _fileplan
from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import BlockError, decode, encode

SYSFS = "/sys/kernel/mm/ksm"


def validate(settings=None, boost=None, backend="rc_local", state="present", boost_seconds=600, sysfs=SYSFS):
    return persist.validate(state, backend, settings, boost, boost_seconds, sysfs)


# ---------------------------------------------------------------- validation

def test_boot_order_is_safe_and_values_formatted():
    boot, relax, errors = validate({"run": 1, "max_page_sharing": 512, "advisor_mode": "none",
                                    "use_zero_pages": True, "pages_to_scan": "300"})
    assert errors == []
    assert relax == []
    assert boot == [("advisor_mode", "none"), ("pages_to_scan", "300"), ("use_zero_pages", "1"),
                    ("max_page_sharing", "512"), ("run", "1")]


def test_boost_overlays_settings_at_boot_and_relax_restores_only_what_differs():
    boot, relax, errors = validate({"run": 1, "pages_to_scan": 100, "sleep_millisecs": 50},
                                   {"pages_to_scan": 5000, "sleep_millisecs": 50})
    assert errors == []
    assert boot == [("pages_to_scan", "5000"), ("sleep_millisecs", "50"), ("run", "1")]
    assert relax == [("pages_to_scan", "100")]


@pytest.mark.parametrize("kwargs, expected", [
    (dict(settings={}), r"settings is empty"),
    (dict(settings=None), r"settings is empty"),
    (dict(settings={"runn": 1}), r"settings: unknown KSM knob 'runn'"),
    (dict(settings={"run": 3}), r"settings: run: invalid value 3; expected a whole number from 0 to 2"),
    (dict(settings={"run": 1}, boost={"sleep_millisecs": -1}), r"boost: sleep_millisecs: invalid value -1"),
    (dict(settings={"run": 1}, boost={"pages_to_scan": 5000}), r"boost: pages_to_scan has no value in settings"),
    (dict(settings={"run": 1, "max_page_sharing": 256}, boost={"max_page_sharing": 1024}),
     r"max_page_sharing cannot be boosted"),
    (dict(settings={"run": 1, "pages_to_scan": 9}, boost={"pages_to_scan": 99}, backend="tmpfiles"),
     r"use backend rc_local or systemd"),
    (dict(settings={"run": 1}, boost_seconds=0), r"boost_seconds must be a whole number of seconds from 1 to 31536000"),
    (dict(settings={"run": 1}, boost_seconds=-5), r"got -5"),
    (dict(settings={"run": 1}, boost_seconds=86400 * 365 + 1), r"\(one year\); got 31536001"),
    (dict(settings={"run": 1}, boost_seconds=True), r"got True"),
    (dict(settings={"run": 1}, sysfs="relative/ksm"), r"sysfs_path 'relative/ksm' must be an absolute path"),
    (dict(settings={"run": 1}, sysfs="/sys/kernel/mm/ksm; reboot"), r"must be an absolute path of letters"),
    (dict(settings={"run": 1}, sysfs="/tmp/a b"), r"must be an absolute path"),
    (dict(settings={"run": 1}, sysfs="/tmp/%n"), r"must be an absolute path"),
    (dict(settings={"run": 1}, backend="cron"), r"backend 'cron' is not supported"),
    (dict(settings={"advisor_mode": "scan-time", "pages_to_scan": 100}), r"pages_to_scan cannot be set while advisor_mode is scan-time"),
    (dict(settings={"advisor_mode": "none", "pages_to_scan": 100}, boost={"advisor_mode": "scan-time"}),
     r"boost: pages_to_scan cannot be set while advisor_mode is scan-time"),
])
def test_bad_input_is_reported(kwargs, expected):
    boot, relax, errors = validate(**kwargs)
    assert boot == [] and relax == []
    assert any(re.search(expected, e) for e in errors), errors


def test_all_errors_are_reported_at_once():
    dummy, dummy2, errors = validate({"run": 7, "bogus": 1}, {"pages_to_scan": 1}, boost_seconds=0)
    assert len(errors) >= 4, errors


def test_absent_needs_no_settings():
    assert validate(None, state="absent") == ([], [], [])


def test_absent_ignores_the_backend_boost_conflict():
    assert validate({"run": 1, "pages_to_scan": 9}, {"pages_to_scan": 99}, backend="tmpfiles", state="absent")[2] == []


# ---------------------------------------------------------------- renderings

def test_rc_block_guards_and_orders_writes():
    boot, relax, dummy = validate({"run": 1, "merge_across_nodes": 0, "advisor_mode": "none"})
    block = persist.rc_block(SYSFS, boot, relax, 600)
    lines = block.splitlines()
    assert lines[0] == persist.BEGIN and lines[-1] == persist.END
    assert "if [ -d /sys/kernel/mm/ksm ]; then" in lines
    writes = [line.strip() for line in lines if line.strip().startswith("echo")]
    assert writes == ["echo none > /sys/kernel/mm/ksm/advisor_mode || true",
                      "echo 0 > /sys/kernel/mm/ksm/merge_across_nodes || true",
                      "echo 1 > /sys/kernel/mm/ksm/run || true"]
    assert "sleep" not in block and "setsid" not in block
    assert block.endswith(persist.END + "\n")


def test_rc_block_with_boost_detaches_the_relax_step():
    boot, relax, dummy = validate({"run": 1, "sleep_millisecs": 50}, {"sleep_millisecs": 5})
    block = persist.rc_block(SYSFS, boot, relax, 42)
    assert "echo 5 > /sys/kernel/mm/ksm/sleep_millisecs || true" in block
    assert "samepage_ksm_relax='sleep 42; echo 50 > /sys/kernel/mm/ksm/sleep_millisecs'" in block
    assert 'setsid /bin/sh -c "$samepage_ksm_relax" </dev/null >/dev/null 2>&1 &' in block
    assert 'nohup /bin/sh -c "$samepage_ksm_relax" </dev/null >/dev/null 2>&1 &' in block


def test_systemd_units_without_boost():
    boot, relax, dummy = validate({"run": 1, "pages_to_scan": 200})
    units = persist.systemd_units("/x/ksm", boot, relax, 600)
    assert sorted(units) == [persist.SERVICE]
    text = units[persist.SERVICE]
    assert "ConditionPathExists=/x/ksm\n" in text
    assert "Type=oneshot\nRemainAfterExit=yes\n" in text
    assert "[Install]\nWantedBy=multi-user.target\n" in text
    assert [line for line in text.splitlines() if line.startswith("ExecStart")] == [
        "ExecStart=-/bin/sh -c 'echo 200 > /x/ksm/pages_to_scan'",
        "ExecStart=-/bin/sh -c 'echo 1 > /x/ksm/run'"]


def test_systemd_units_with_boost():
    boot, relax, dummy = validate({"run": 1, "pages_to_scan": 200}, {"pages_to_scan": 4000})
    units = persist.systemd_units(SYSFS, boot, relax, 90)
    assert sorted(units) == sorted([persist.SERVICE, persist.RELAX_SERVICE, persist.RELAX_TIMER])
    assert "echo 4000 > /sys/kernel/mm/ksm/pages_to_scan" in units[persist.SERVICE]
    assert "OnBootSec=90\n" in units[persist.RELAX_TIMER]
    assert "WantedBy=timers.target\n" in units[persist.RELAX_TIMER]
    assert "Unit=samepage-ksm-relax.service\n" in units[persist.RELAX_TIMER]
    relax_service = units[persist.RELAX_SERVICE]
    assert "After=samepage-ksm.service\n" in relax_service
    assert "[Install]" not in relax_service
    assert [line for line in relax_service.splitlines() if line.startswith("ExecStart")] == [
        "ExecStart=-/bin/sh -c 'echo 200 > /sys/kernel/mm/ksm/pages_to_scan'"]


def test_tmpfiles_conf_lines_in_safe_order():
    boot, dummy, dummy2 = validate({"run": 1, "advisor_mode": "scan-time", "advisor_max_cpu": 30})
    text = persist.tmpfiles_conf(SYSFS, boot)
    assert text.startswith("# Managed by samepage.ksm")
    assert [line for line in text.splitlines() if not line.startswith("#")] == [
        "w /sys/kernel/mm/ksm/advisor_mode - - - - scan-time",
        "w /sys/kernel/mm/ksm/advisor_max_cpu - - - - 30",
        "w /sys/kernel/mm/ksm/run - - - - 1"]


@pytest.mark.parametrize("mode, expected", [(0o644, 0o755), (0o600, 0o700), (0o755, 0o755), (0o640, 0o750), (0o000, 0o100)])
def test_executable_mode(mode, expected):
    assert persist.executable_mode(mode) == expected


# ---------------------------------------------------------------- rc.local editing

BLOCK = persist.rc_block(SYSFS, [("run", "1")], [], 600)


@pytest.mark.parametrize("original, expected", [
    ("", BLOCK),
    ("#!/bin/sh\n", "#!/bin/sh\n" + BLOCK),
    ("#!/bin/sh -e\nfoo\n\nexit 0\n", "#!/bin/sh -e\nfoo\n\n" + BLOCK + "exit 0\n"),
    ("#!/bin/sh\nexit 0", "#!/bin/sh\n" + BLOCK + "exit 0"),                      # no final newline
    ("#!/bin/sh\nexit 0\n\n# end\n", "#!/bin/sh\n" + BLOCK + "exit 0\n\n# end\n"),  # comments after exit
    ("#!/bin/sh\nexit $?  # done\n", "#!/bin/sh\n" + BLOCK + "exit $?  # done\n"),
    ("exit\n", BLOCK + "exit\n"),
    # Indented exit: conditional, so the block goes at the end.
    ("if x; then\n  exit 0\nfi\n", "if x; then\n  exit 0\nfi\n" + BLOCK),
    # Exit followed by commands: not the trailing exit.
    ("exit 0\nfoo\n", "exit 0\nfoo\n" + BLOCK),
    ("foo\n# exit 0\n", "foo\n# exit 0\n" + BLOCK),
    ("exit 0 && foo\n", "exit 0 && foo\n" + BLOCK),
    ("foo", "foo\n" + BLOCK[:-1]),                                              # no final newline
    ("#!/bin/sh\r\nfoo\r\nexit 0\r\n", "#!/bin/sh\r\nfoo\r\n" + BLOCK + "exit 0\r\n"),
])
def test_add_block_placement_and_exact_removal(original, expected):
    added = persist.add_block(original, BLOCK)
    assert added == expected
    assert persist.add_block(added, BLOCK) == added
    assert persist.remove_block(added) == original


def test_existing_block_is_replaced_in_place():
    other = persist.rc_block(SYSFS, [("run", "0")], [], 600)
    text = "a\n" + BLOCK + "b\nexit 0\n"
    assert persist.add_block(text, other) == "a\n" + other + "b\nexit 0\n"


def test_existing_block_at_end_without_newline_stays_without_newline():
    other = persist.rc_block(SYSFS, [("run", "0")], [], 600)
    text = persist.add_block("foo", BLOCK)
    replaced = persist.add_block(text, other)
    assert replaced == "foo\n" + other[:-1]
    assert persist.remove_block(replaced) == "foo"


@pytest.mark.parametrize("broken", [
    persist.BEGIN + "\nfoo\n",
    "foo\n" + persist.END + "\n",
    persist.END + "\n" + persist.BEGIN + "\n",
    BLOCK + BLOCK,
])
def test_broken_markers_raise(broken):
    with pytest.raises(BlockError, match="Fix the file by hand"):
        persist.add_block(broken, BLOCK)
    with pytest.raises(BlockError):
        persist.remove_block(broken)


def test_early_exit_lines():
    text = "#!/bin/sh\nexit 0\nfoo\n" + BLOCK
    assert persist.early_exit_lines(text, before=text.index(persist.BEGIN)) == [2]
    text = "#!/bin/sh\n" + BLOCK + "exit 0\n"
    assert persist.early_exit_lines(text, before=text.index(persist.BEGIN)) == []


@hsettings(max_examples=400, deadline=None)
@given(st.binary(max_size=300), st.sampled_from([b"", b"\n", b"exit 0\n", b"exit 0", b"\nexit 0\r\n# tail", b"\r"]))
def test_add_then_remove_restores_arbitrary_bytes(data, ending):
    original = decode(data + ending)
    assume(persist.BEGIN not in original and persist.END not in original)
    added = persist.add_block(original, BLOCK)
    assert persist.has_block(added)
    assert encode(persist.remove_block(added)) == data + ending
    assert persist.add_block(added, BLOCK) == added
    # The block's lines are intact, so a shell reading the file sees whole commands.
    assert "\n" + persist.BEGIN + "\n" in "\n" + added


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=200))
def test_add_then_remove_restores_arbitrary_text(original):
    assume(persist.BEGIN not in original and persist.END not in original)
    added = persist.add_block(original, BLOCK)
    assert persist.remove_block(added) == original


# ---------------------------------------------------------------- a created rc.local goes with its block

CREATED_BLOCK = persist.rc_block(SYSFS, [("run", "1")], [], 600, created_file=True)


def test_created_block_carries_the_marker_right_after_begin():
    lines = CREATED_BLOCK.splitlines()
    assert lines[:2] == [persist.BEGIN, persist.CREATED_FILE]
    assert lines[2:] == BLOCK.splitlines()[1:]
    assert persist.CREATED_FILE not in BLOCK
    assert persist.CREATED_FILE == "# created by samepage.ksm: remove the file with the block"


@pytest.mark.parametrize("text, created, expected", [
    (persist.SHEBANG + CREATED_BLOCK, True, None),                      # only what we wrote: the file goes
    (persist.SHEBANG + BLOCK, False, persist.SHEBANG),                  # predates the block: kept
    (persist.SHEBANG + CREATED_BLOCK + "foo\n", True, persist.SHEBANG + "foo\n"),
    ("#!/bin/sh\nfoo\n" + CREATED_BLOCK, True, "#!/bin/sh\nfoo\n"),
    ("#!/bin/sh -e\n" + CREATED_BLOCK, True, "#!/bin/sh -e\n"),
    ("#!/bin/sh\r\n" + CREATED_BLOCK, True, "#!/bin/sh\r\n"),
    (CREATED_BLOCK, True, ""),                                          # not exactly our shebang: kept
    (persist.SHEBANG + CREATED_BLOCK + "\n", True, persist.SHEBANG + "\n"),
    # The marker must be a line of its own inside the block.
    ("#!/bin/sh\n" + BLOCK.replace(persist.BEGIN + "\n", persist.BEGIN + "\n  " + persist.CREATED_FILE + "\n"),
     False, "#!/bin/sh\n"),
    ("#!/bin/sh\n" + persist.CREATED_FILE + "\n" + BLOCK, False, "#!/bin/sh\n" + persist.CREATED_FILE + "\n"),
    ("foo\n", False, "foo\n"),                                           # no block at all
])
def test_without_block(text, created, expected):
    assert persist.created_by_us(text) is created
    assert persist.without_block(text) == expected


def test_created_marker_is_kept_when_the_block_is_replaced():
    other = persist.rc_block(SYSFS, [("run", "0")], [], 600, created_file=persist.created_by_us(persist.SHEBANG + CREATED_BLOCK))
    replaced = persist.add_block(persist.SHEBANG + CREATED_BLOCK, other)
    assert persist.created_by_us(replaced) and persist.without_block(replaced) is None


@pytest.mark.parametrize("broken", [persist.BEGIN + "\n" + persist.CREATED_FILE + "\n", CREATED_BLOCK + CREATED_BLOCK])
def test_created_by_us_and_without_block_raise_on_broken_markers(broken):
    with pytest.raises(BlockError, match="Fix the file by hand"):
        persist.created_by_us(persist.SHEBANG + broken)
    with pytest.raises(BlockError):
        persist.without_block(persist.SHEBANG + broken)


@hsettings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=120), st.booleans())
def test_without_block_removes_the_file_only_when_nothing_else_is_left(head, created):
    assume(persist.BEGIN not in head and persist.END not in head)
    block = CREATED_BLOCK if created else BLOCK
    after = persist.without_block(persist.add_block(head, block))
    if created and head == persist.SHEBANG:
        assert after is None
    else:
        assert after == head


# ---------------------------------------------------------------- where the block goes in real-world scripts

@pytest.mark.parametrize("original, before", [
    # the last command is an exit that ends the script: the block goes right before its line
    ("#!/bin/sh\nfoo\nexit 0;\n", "exit 0;\n"),
    ("#!/bin/sh\nfoo\nexit 0 ;  # done\n", "exit 0 ;  # done\n"),
    ("#!/bin/sh\nfoo\n  exit 0\n", "  exit 0\n"),
    ("#!/bin/sh\nfoo\n\texit\n\n# end\n", "\texit\n"),
    # an exit inside a case arm is not the end of the script; the last top-level exit is
    ("#!/bin/sh\ncase \"$1\" in\n  stop) exit 0 ;;\nesac\nfoo\nexit 0\n", "exit 0\n"),
    ("#!/bin/sh\ncase \"$1\" in\nstop)\nexit 0\n;;\n*) echo x;;\nesac\nfoo\nexit 0\n", "exit 0\n"),
    ("#!/bin/sh\nf() {\n  exit 1\n}\nf\nexit 0\n", "exit 0\n"),
    ("#!/bin/sh\nwhile true; do exit 0; done\nexit 0\n", "exit 0\n"),
])
def test_block_goes_before_the_exit_that_really_ends_the_script(original, before):
    added = persist.add_block(original, BLOCK)
    assert added.index(persist.BEGIN) == original.rindex(before)
    assert added.endswith(BLOCK + original[original.rindex(before):])
    assert persist.remove_block(added) == original
    assert persist.early_exit_lines(added, before=added.index(persist.BEGIN)) == []


@pytest.mark.parametrize("original", [
    "#!/bin/sh\nif x; then\n  exit 0\nfi\n",             # conditional
    "#!/bin/sh\ncase \"$1\" in\n  *) exit 0 ;;\nesac\n",  # inside case, last command is esac
    "#!/bin/sh\nf() {\n  exit 0\n}\n",                   # inside a function
    "#!/bin/sh\ncat <<EOF\nexit 0\nEOF\n",                # text of a here-document
    "#!/bin/sh\necho 'a\nexit 0\n'\n",                    # inside a quoted string
    "#!/bin/sh\nexit 0 && foo\n",                          # not alone on its line
])
def test_exits_that_do_not_end_the_script_leave_the_block_at_the_end(original):
    assert persist.add_block(original, BLOCK) == original + BLOCK


def test_exit_in_a_case_arm_at_column_0_is_not_an_early_exit():
    text = "#!/bin/sh\ncase \"$1\" in\nstop)\nexit 0\n;;\nesac\nfoo\n" + BLOCK
    assert persist.early_exit_lines(text, before=text.index(persist.BEGIN)) == []
    text = "#!/bin/sh\nexit 0\nfoo\n" + BLOCK
    assert persist.early_exit_lines(text, before=text.index(persist.BEGIN)) == [2]


def test_unbalanced_script_falls_back_to_the_column_0_rule():
    # a stray "fi": the scanner gives up, and only an exit alone at column 0 counts
    assert persist.add_block("#!/bin/sh\nfi\nexit 0\n", BLOCK) == "#!/bin/sh\nfi\n" + BLOCK + "exit 0\n"
    assert persist.add_block("#!/bin/sh\nfi\n  exit 0\n", BLOCK) == "#!/bin/sh\nfi\n  exit 0\n" + BLOCK


@pytest.mark.parametrize("line", [
    "exit" + " " * 100000 + "x y",
    "exit" + " " * 100000 + "0" + " " * 100000 + ";" + " " * 100000 + "#",
    "  " + "\t " * 50000 + "exit 0",
    "echo" + " " * 100000 + ";" + " " * 100000 + "exit",
])
def test_a_long_run_of_blanks_on_one_line_is_handled(line):
    # one pass per line, no backtracking regex: 100k blanks must not take quadratic time
    text = "#!/bin/sh\n" + line + "\n"
    added = persist.add_block(text, BLOCK)
    assert persist.remove_block(added) == text
    persist.early_exit_lines(added)


# ---------------------------------------------------------------- the planner on a FilePlan

SETTINGS = {"run": 1, "pages_to_scan": 1000}


@pytest.fixture
def etc(tmp_path):
    root = tmp_path / "etc"
    (root / "systemd" / "system").mkdir(parents=True)
    (root / "tmpfiles.d").mkdir()
    return root


def plan_boot(etc, backend, settings=None, boost=None, seconds=600, rc_local=None):
    settings = SETTINGS if settings is None else settings
    boot, relax, errors = validate(settings, boost, backend=backend or "rc_local", state="present" if backend else "absent",
                                   boost_seconds=seconds)
    assert errors == []
    plan = _fileplan.FilePlan(None)
    info = persist.plan_boot(plan, backend, boot, relax, seconds, SYSFS, str(rc_local or etc / "rc.local"),
                             str(etc / "systemd" / "system") + "/", str(etc / "tmpfiles.d"))
    return plan, info


def test_a_non_executable_rc_local_gets_its_mode_back(etc):
    rc_local = etc / "rc.local"
    rc_local.write_text("#!/bin/sh\necho hello\n")
    os.chmod(str(rc_local), 0o644)  # EL's /etc/rc.d/rc.local ships so
    plan, dummy = plan_boot(etc, "rc_local")
    plan.apply()
    assert os.stat(str(rc_local)).st_mode & 0o7777 == 0o755
    assert persist.ORIGINAL_MODE + "0644" in rc_local.read_text()
    plan, dummy = plan_boot(etc, "rc_local", settings={"run": 1})   # an update keeps the record
    plan.apply()
    assert persist.ORIGINAL_MODE + "0644" in rc_local.read_text()
    plan, dummy = plan_boot(etc, None)
    assert "(mode 0644)" in plan.diff()[0]["after_header"]
    plan.apply()
    assert rc_local.read_text() == "#!/bin/sh\necho hello\n"
    assert os.stat(str(rc_local)).st_mode & 0o7777 == 0o644
    assert not plan_boot(etc, None)[0].changed


def test_an_executable_rc_local_records_no_mode(etc):
    rc_local = etc / "rc.local"
    rc_local.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(str(rc_local), 0o750)
    plan_boot(etc, "rc_local")[0].apply()
    assert persist.ORIGINAL_MODE not in rc_local.read_text()
    plan_boot(etc, None)[0].apply()
    assert os.stat(str(rc_local)).st_mode & 0o7777 == 0o750


def test_trailing_slash_on_systemd_dir_still_reports_removed_units(etc):
    plan, info = plan_boot(etc, "systemd", boost={"pages_to_scan": 5000})
    plan.apply()
    wants = etc / "systemd" / "system" / "timers.target.wants"
    wants.mkdir()
    (wants / persist.RELAX_TIMER).symlink_to("../" + persist.RELAX_TIMER)
    plan, info = plan_boot(etc, "rc_local")
    assert info["units_removed"] == [persist.SERVICE, persist.RELAX_SERVICE, persist.RELAX_TIMER]
    assert info["daemon_reload_needed"] is True
    assert str(wants / persist.RELAX_TIMER) in plan.removed
    plan.apply()
    assert sorted(os.listdir(str(etc / "systemd" / "system"))) == ["timers.target.wants"]
    assert os.listdir(str(wants)) == []


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_switching_backend_is_atomic(etc, monkeypatch, code):
    plan_boot(etc, "systemd")[0].apply()
    unit = etc / "systemd" / "system" / persist.SERVICE
    before = unit.read_bytes()
    plan, dummy = plan_boot(etc, "rc_local")
    real = _fileplan.FilePlan._put

    def full_disk(self, path, text, mode, st):
        if path.endswith("rc.local"):
            raise OSError(code, os.strerror(code))
        return real(self, path, text, mode, st)

    monkeypatch.setattr(_fileplan.FilePlan, "_put", full_disk)
    with pytest.raises(_fileplan.FilePlanError) as caught:
        plan.apply()
    message = str(caught.value)
    assert str(etc / "rc.local") in message and errno.errorcode[code] in message and "nothing was changed" in message
    assert unit.read_bytes() == before and not (etc / "rc.local").exists()


def test_undecodable_bytes_in_rc_local_survive_and_show_escaped(etc):
    rc_local = etc / "rc.local"
    data = b"#!/bin/sh\n# caf\xe9 \xff\xfe\nexit 0\n"
    rc_local.write_bytes(data)
    plan, dummy = plan_boot(etc, "rc_local")
    diff = plan.diff()[0]
    assert "# caf\\xe9 \\xff\\xfe" in diff["before"] and "# caf\\xe9 \\xff\\xfe" in diff["after"]
    plan.apply()
    assert rc_local.read_bytes().startswith(b"#!/bin/sh\n# caf\xe9 \xff\xfe\n# BEGIN")
    plan_boot(etc, None)[0].apply()
    assert rc_local.read_bytes() == data


@pytest.mark.parametrize("version", ["2.7.18", "3.6.15"])
def test_planner_runs_on_old_target_interpreters(tmp_path, old_target, version):
    """rc.local with non-UTF-8 bytes, planned, diffed and written on the Pythons of EL7 and EL8."""
    python, lib = old_target(version)
    rc_local = tmp_path / "rc.local"
    rc_local.write_bytes(b"#!/bin/sh\n# \xff\xfe\ncase x in\n  *) exit 1 ;;\nesac\nexit 0;\n")
    os.chmod(str(rc_local), 0o644)
    code = (
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from ansible_collections.samepage.ksm.plugins.module_utils import _fileplan, _persist\n"
        "boot, relax, errors = _persist.validate('present', 'rc_local', {'run': u'1'}, None, 600, '/sys/kernel/mm/ksm')\n"
        "assert not errors, errors\n"
        "p = _fileplan.FilePlan(None)\n"
        "_persist.plan_boot(p, 'rc_local', boot, relax, 600, '/sys/kernel/mm/ksm', %r, %r, %r)\n"
        "d = p.diff()[0]\n"
        "assert u'# \\\\xff\\\\xfe' in d['after'], repr(d['after'])\n"
        "p.apply()\n"
    ) % (str(lib), str(rc_local), str(tmp_path / "nosystemd"), str(tmp_path / "notmpfiles"))
    subprocess.run([str(python), "-c", code], check=True)
    text = rc_local.read_bytes()
    assert text.startswith(b"#!/bin/sh\n# \xff\xfe\ncase x in\n  *) exit 1 ;;\nesac\n# BEGIN samepage.ksm")
    assert text.endswith(b"# END samepage.ksm managed block\nexit 0;\n")
    assert os.stat(str(rc_local)).st_mode & 0o7777 == 0o755
