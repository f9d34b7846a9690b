"""Unit tests for samepage.ksm.ksm_persist against temporary trees (rc.local, systemd and tmpfiles dirs)."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat

import pytest
from ansible.module_utils import basic
from hypothesis import HealthCheck, assume, given, settings as hsettings, strategies as st

from ansible_collections.samepage.ksm.plugins.module_utils import _persist as persist
from ansible_collections.samepage.ksm.plugins.modules import ksm_persist

SETTINGS = {"run": 1, "pages_to_scan": 100, "sleep_millisecs": 50}
BOOST = {"pages_to_scan": 5000, "sleep_millisecs": 10}
DEBIAN_RC_LOCAL = (b"#!/bin/sh -e\n#\n# rc.local\n#\n# By default this script does nothing.\n\n"
                   b"echo foreign > /dev/null\n\nexit 0\n")


class Tree(object):
    def __init__(self, root):
        self.root = root
        self.etc = root / "etc"
        self.rc_local = self.etc / "rc.local"
        self.systemd = self.etc / "systemd" / "system"
        self.tmpfiles = self.etc / "tmpfiles.d"
        self.sysfs = root / "sys" / "kernel" / "mm" / "ksm"
        for path in (self.systemd, self.tmpfiles, self.sysfs):
            path.mkdir(parents=True)

    def args(self, **extra):
        args = dict(settings=SETTINGS, rc_local_path=str(self.rc_local), systemd_dir=str(self.systemd),
                    tmpfiles_dir=str(self.tmpfiles), sysfs_path=str(self.sysfs))
        args.update(extra)
        return args

    def unit(self, name):
        return self.systemd / name

    @property
    def conf(self):
        return self.tmpfiles / persist.TMPFILES_CONF


@pytest.fixture
def tree(tmp_path):
    return Tree(tmp_path)


@pytest.fixture
def converge(run_module, digest, tree):
    """Run the module: check mode first (nothing may change), then for real; returns the real result."""
    def run(expect_changed, **args):
        before = digest(str(tree.root))
        failed, check = run_module(ksm_persist, tree.args(**args), check_mode=True, diff=True)
        assert not failed, check["msg"]
        assert check["changed"] is expect_changed
        assert digest(str(tree.root)) == before, "check mode wrote something"
        failed, result = run_module(ksm_persist, tree.args(**args), diff=True)
        assert not failed, result["msg"]
        assert result["changed"] is expect_changed
        assert result["files"] == check["files"]
        assert (digest(str(tree.root)) != before) is expect_changed
        return result
    return run


def mode_of(path):
    return stat.S_IMODE(os.stat(str(path)).st_mode)


# ---------------------------------------------------------------- rc.local

def test_rc_local_created_with_shebang_and_mode_then_idempotent(tree, converge):
    result = converge(True)
    text = tree.rc_local.read_text()
    assert text.startswith("#!/bin/sh\n" + persist.BEGIN + "\n")
    assert text.endswith(persist.END + "\n")
    assert "echo 1 > %s/run || true" % tree.sysfs in text
    assert mode_of(tree.rc_local) == 0o755
    assert result["backend"] == "rc_local"
    assert result["files"] == [str(tree.rc_local)]
    assert result["rc_local_service"] == "rc-local.service"
    assert result["units"] == [] and result["daemon_reload_needed"] is False
    assert result["diff"][0]["before"] == "" and result["diff"][0]["after"] == text
    assert result["diff"][0]["before_header"].endswith("(absent)")
    assert result["settings"] == {"run": "1", "pages_to_scan": "100", "sleep_millisecs": "50"}
    again = converge(False)
    assert again["files"] == [] and again["diff"] == []


def test_rc_local_debian_block_before_exit_and_foreign_lines_kept(tree, converge):
    tree.rc_local.write_bytes(DEBIAN_RC_LOCAL)
    tree.rc_local.chmod(0o644)
    result = converge(True)
    data = tree.rc_local.read_bytes()
    head, rest = data.split(persist.BEGIN.encode(), 1)
    assert head == DEBIAN_RC_LOCAL[:-len(b"exit 0\n")]
    assert rest.endswith(persist.END.encode() + b"\nexit 0\n")
    assert mode_of(tree.rc_local) == 0o755, "rc-local.service runs the file only when it is executable"
    assert result["diff"][0]["after_header"].endswith("(mode 0755)")
    converge(False)
    # Updating the values rewrites the block in place.
    converge(True, settings=dict(SETTINGS, sleep_millisecs=200))
    data = tree.rc_local.read_bytes()
    assert b"echo 200 > " in data and b"echo 50 > " not in data
    assert data.startswith(DEBIAN_RC_LOCAL[:-len(b"exit 0\n")]) and data.endswith(b"\nexit 0\n")
    converge(True, state="absent")
    assert tree.rc_local.read_bytes() == DEBIAN_RC_LOCAL
    converge(False, state="absent")


def test_rc_local_created_by_us_is_removed_by_absent(tree, converge):
    converge(True)
    text = tree.rc_local.read_text()
    assert text.startswith("#!/bin/sh\n%s\n%s\n" % (persist.BEGIN, persist.CREATED_FILE))
    result = converge(True, state="absent")
    assert not os.path.lexists(str(tree.rc_local))
    assert result["files"] == [str(tree.rc_local)] and result["removed"] == [str(tree.rc_local)]
    assert result["units_removed"] == [] and result["daemon_reload_needed"] is False
    assert result["diff"] == [{"before_header": str(tree.rc_local), "before": text,
                               "after_header": "%s (absent)" % tree.rc_local, "after": ""}]
    again = converge(False, state="absent")
    assert again["files"] == [] and again["removed"] == [] and again["diff"] == []
    assert os.listdir(str(tree.etc)) == ["systemd", "tmpfiles.d"]


def test_rc_local_created_by_us_check_mode_absent_keeps_it(tree, run_module):
    failed, dummy = run_module(ksm_persist, tree.args())
    assert not failed
    data = tree.rc_local.read_bytes()
    failed, result = run_module(ksm_persist, tree.args(state="absent"), check_mode=True, diff=True)
    assert not failed and result["changed"] is True
    assert result["removed"] == [str(tree.rc_local)]
    assert result["diff"][0]["after_header"] == "%s (absent)" % tree.rc_local and result["diff"][0]["after"] == ""
    assert tree.rc_local.read_bytes() == data and mode_of(tree.rc_local) == 0o755


def test_rc_local_created_marker_kept_on_every_update(tree, converge):
    converge(True)
    converge(True, settings=dict(SETTINGS, sleep_millisecs=200))
    converge(True, boost=BOOST, boost_seconds=30)
    text = tree.rc_local.read_text()
    assert "samepage_ksm_relax='sleep 30; " in text
    assert text.splitlines().count(persist.CREATED_FILE) == 1
    assert text.startswith("#!/bin/sh\n%s\n%s\n" % (persist.BEGIN, persist.CREATED_FILE))
    converge(False, boost=BOOST, boost_seconds=30)
    converge(True, state="absent")
    assert not tree.rc_local.exists()
    # Created again: marked again.
    converge(True)
    assert persist.CREATED_FILE in tree.rc_local.read_text().splitlines()


@pytest.mark.parametrize("original", [b"#!/bin/sh\n", b"", b"#!/bin/sh\nexit 0\n"])
def test_rc_local_that_predates_the_block_is_never_removed(tree, converge, original):
    tree.rc_local.write_bytes(original)
    tree.rc_local.chmod(0o644)
    converge(True)
    assert persist.CREATED_FILE not in tree.rc_local.read_text()
    converge(True, settings=dict(SETTINGS, run=0))
    result = converge(True, state="absent")
    assert result["removed"] == []
    assert tree.rc_local.read_bytes() == original
    converge(False, state="absent")
    assert tree.rc_local.read_bytes() == original


@pytest.mark.parametrize("edit, left", [
    # A line added after the block, before it, or a changed shebang: the file is no longer only ours.
    (lambda text: text + "echo mine > /dev/null\n", "#!/bin/sh\necho mine > /dev/null\n"),
    (lambda text: text.replace("#!/bin/sh\n", "#!/bin/sh\n# local addition\n"), "#!/bin/sh\n# local addition\n"),
    (lambda text: text.replace("#!/bin/sh\n", "#!/bin/bash\n"), "#!/bin/bash\n"),
    (lambda text: text.replace("#!/bin/sh\n", ""), ""),
])
def test_rc_local_created_by_us_with_lines_of_others_is_kept(tree, converge, edit, left):
    converge(True)
    tree.rc_local.write_text(edit(tree.rc_local.read_text()))
    converge(False)
    result = converge(True, state="absent")
    assert result["removed"] == []
    assert result["diff"][0]["after"] == left and not result["diff"][0]["after_header"].endswith("(absent)")
    assert tree.rc_local.read_text() == left and mode_of(tree.rc_local) == 0o755
    converge(False, state="absent")


def test_rc_local_created_by_us_is_removed_when_switching_backend(tree, converge):
    converge(True)
    result = converge(True, backend="systemd")
    assert not os.path.lexists(str(tree.rc_local))
    assert result["removed"] == [str(tree.rc_local)]
    assert result["units"] == [persist.SERVICE]
    converge(False, backend="systemd")


def test_rc_local_created_by_us_removal_is_backed_up(tree, run_module):
    failed, dummy = run_module(ksm_persist, tree.args())
    assert not failed
    data = tree.rc_local.read_bytes()
    failed, result = run_module(ksm_persist, tree.args(state="absent", backup=True))
    assert not failed and result["changed"] and not tree.rc_local.exists()
    backup = result["backup_files"][str(tree.rc_local)]
    assert open(backup, "rb").read() == data
    failed, result = run_module(ksm_persist, tree.args(state="absent", backup=True))
    assert not failed and not result["changed"] and result["backup_files"] == {}


def test_rc_local_drift_is_repaired(tree, converge):
    converge(True)
    text = tree.rc_local.read_text()
    tree.rc_local.write_text(text.replace("echo 50 >", "echo 999 >"))
    result = converge(True)
    assert "echo 999" in result["diff"][0]["before"]
    assert tree.rc_local.read_text() == text
    tree.rc_local.chmod(0o644)
    converge(True)
    assert mode_of(tree.rc_local) == 0o755


def test_rc_local_symlink_target_edited_link_kept(tree, converge):
    rc_d = tree.etc / "rc.d"
    rc_d.mkdir()
    target = rc_d / "rc.local"
    target.write_bytes(b"#!/bin/bash\ntouch /var/lock/subsys/local\n")
    target.chmod(0o644)
    tree.rc_local.symlink_to("rc.d/rc.local")
    result = converge(True)
    assert tree.rc_local.is_symlink() and os.readlink(str(tree.rc_local)) == "rc.d/rc.local"
    assert result["rc_local_target"] == str(target)
    assert result["files"] == [str(target)]
    assert mode_of(target) == 0o755
    assert target.read_bytes().startswith(b"#!/bin/bash\ntouch /var/lock/subsys/local\n" + persist.BEGIN.encode())
    converge(False)
    converge(True, state="absent")
    assert target.read_bytes() == b"#!/bin/bash\ntouch /var/lock/subsys/local\n"
    assert tree.rc_local.is_symlink()


def test_rc_local_dangling_symlink_creates_target_and_absent_removes_only_it(tree, converge):
    (tree.etc / "rc.d").mkdir()
    tree.rc_local.symlink_to("rc.d/rc.local")
    result = converge(True)
    target = tree.etc / "rc.d" / "rc.local"
    assert tree.rc_local.is_symlink()
    assert result["files"] == [str(target)] and result["rc_local_target"] == str(target)
    assert target.read_text().startswith("#!/bin/sh\n%s\n%s\n" % (persist.BEGIN, persist.CREATED_FILE))
    assert mode_of(target) == 0o755
    converge(False)
    # We created the target only: absent removes it and keeps the (again dangling) link as it was.
    result = converge(True, state="absent")
    assert result["removed"] == [str(target)] and result["rc_local_target"] == str(target)
    assert result["diff"][0]["after_header"] == "%s (absent)" % target
    assert not target.exists() and os.listdir(str(tree.etc / "rc.d")) == []
    assert tree.rc_local.is_symlink() and os.readlink(str(tree.rc_local)) == "rc.d/rc.local"
    converge(False, state="absent")
    assert tree.rc_local.is_symlink() and not target.exists()


def test_rc_local_backup(tree, run_module):
    tree.rc_local.write_bytes(DEBIAN_RC_LOCAL)
    failed, result = run_module(ksm_persist, tree.args(backup=True))
    assert not failed and result["changed"]
    assert open(result["backup_files"][str(tree.rc_local)], "rb").read() == DEBIAN_RC_LOCAL
    failed, result = run_module(ksm_persist, tree.args(backup=True))
    assert not result["changed"] and result["backup_files"] == {}


def test_rc_local_early_exit_warns(tree, run_module, monkeypatch):
    warned = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: warned.append(text))
    tree.rc_local.write_text("#!/bin/sh\nexit 0\nfoo\n")
    failed, result = run_module(ksm_persist, tree.args())
    assert not failed and result["changed"]
    assert tree.rc_local.read_text().startswith("#!/bin/sh\nexit 0\nfoo\n" + persist.BEGIN)
    assert len(warned) == 1 and "unconditional exit on line(s) 2 before the samepage.ksm block" in warned[0], warned
    # A trailing exit is not an early one: no warning.
    tree.rc_local.write_text("#!/bin/sh\nfoo\nexit 0\n")
    failed, result = run_module(ksm_persist, tree.args())
    assert not failed and result["changed"] and len(warned) == 1, warned


def test_rc_local_non_utf8_and_crlf_bytes_survive(tree, converge):
    original = b"#!/bin/sh\r\n\xff\xfe caf\xe9 \x00\r\nexit 0\r\n"
    tree.rc_local.write_bytes(original)
    result = converge(True)
    data = tree.rc_local.read_bytes()
    assert data.startswith(b"#!/bin/sh\r\n\xff\xfe caf\xe9 \x00\r\n" + persist.BEGIN.encode())
    assert data.endswith(persist.END.encode() + b"\nexit 0\r\n")
    assert "\\xff\\xfe caf\\xe9 \x00" in result["diff"][0]["before"], "undecodable bytes are shown as \\xNN in the diff"
    converge(False)
    converge(True, state="absent")
    assert tree.rc_local.read_bytes() == original


@hsettings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(head=st.binary(max_size=200), tail=st.sampled_from([b"", b"\n", b"exit 0\n", b"exit 0", b"\nexit 0\n# x\n"]))
def test_module_add_then_remove_restores_bytes(tmp_path_factory, run_module, head, tail):
    original = head + tail
    assume(persist.BEGIN.encode() not in original and persist.END.encode() not in original)
    tree = Tree(tmp_path_factory.mktemp("prop"))
    tree.rc_local.write_bytes(original)
    failed, result = run_module(ksm_persist, tree.args())
    assert not failed and result["changed"]
    failed, result = run_module(ksm_persist, tree.args())
    assert not failed and not result["changed"]
    failed, result = run_module(ksm_persist, tree.args(state="absent"))
    assert not failed and result["changed"]
    assert tree.rc_local.read_bytes() == original


# ---------------------------------------------------------------- systemd

def test_systemd_backend_writes_units_then_idempotent(tree, converge):
    result = converge(True, backend="systemd")
    service = tree.unit(persist.SERVICE)
    assert mode_of(service) == 0o644
    text = service.read_text()
    assert "ConditionPathExists=%s\n" % tree.sysfs in text
    assert text.index("/pages_to_scan'") < text.index("/sleep_millisecs'") < text.index("/run'")
    assert result["units"] == [persist.SERVICE]
    assert result["daemon_reload_needed"] is True
    assert result["files"] == [str(service)]
    assert result["rc_local_service"] is None
    assert not tree.rc_local.exists() and not tree.unit(persist.RELAX_TIMER).exists()
    again = converge(False, backend="systemd")
    assert again["daemon_reload_needed"] is False
    assert again["units"] == [persist.SERVICE]


def test_systemd_boost_adds_timer_and_dropping_boost_removes_it(tree, converge):
    result = converge(True, backend="systemd", boost=BOOST, boost_seconds=30)
    assert result["units"] == [persist.SERVICE, persist.RELAX_TIMER]
    assert "echo 5000 > " in tree.unit(persist.SERVICE).read_text()
    assert "echo 100 > " in tree.unit(persist.RELAX_SERVICE).read_text()
    assert "OnBootSec=30\n" in tree.unit(persist.RELAX_TIMER).read_text()
    assert result["boost"] == {"pages_to_scan": "5000", "sleep_millisecs": "10"}
    assert result["settings"] == {"run": "1", "pages_to_scan": "100", "sleep_millisecs": "50"}
    converge(False, backend="systemd", boost=BOOST, boost_seconds=30)
    # Simulate `systemctl enable` of the timer, then drop the boost: units and link go.
    wants = tree.systemd / "timers.target.wants"
    wants.mkdir()
    (wants / persist.RELAX_TIMER).symlink_to(tree.unit(persist.RELAX_TIMER))
    result = converge(True, backend="systemd")
    assert sorted(result["removed"]) == sorted([str(tree.unit(persist.RELAX_SERVICE)), str(tree.unit(persist.RELAX_TIMER)),
                                                str(wants / persist.RELAX_TIMER)])
    assert sorted(result["units_removed"]) == [persist.RELAX_SERVICE, persist.RELAX_TIMER]
    assert result["daemon_reload_needed"] is True
    assert not os.path.lexists(str(wants / persist.RELAX_TIMER))
    assert "echo 100 > " in tree.unit(persist.SERVICE).read_text()


def test_systemd_unit_drift_and_mode_repaired(tree, converge):
    converge(True, backend="systemd")
    service = tree.unit(persist.SERVICE)
    good = service.read_text()
    service.write_text(good.replace("RemainAfterExit=yes", "RemainAfterExit=no"))
    result = converge(True, backend="systemd")
    assert "RemainAfterExit=no" in result["diff"][0]["before"]
    assert service.read_text() == good
    service.chmod(0o600)
    converge(True, backend="systemd")
    assert mode_of(service) == 0o644


# ---------------------------------------------------------------- tmpfiles

def test_tmpfiles_backend(tree, converge):
    result = converge(True, backend="tmpfiles", settings={"run": 1, "advisor_mode": "scan-time"})
    lines = [line for line in tree.conf.read_text().splitlines() if not line.startswith("#")]
    assert lines == ["w %s/advisor_mode - - - - scan-time" % tree.sysfs, "w %s/run - - - - 1" % tree.sysfs]
    assert mode_of(tree.conf) == 0o644
    assert result["daemon_reload_needed"] is False and result["units"] == []
    converge(False, backend="tmpfiles", settings={"run": 1, "advisor_mode": "scan-time"})


# ---------------------------------------------------------------- switching and absent

def test_switching_backends_removes_the_previous_one(tree, converge):
    tree.rc_local.write_bytes(DEBIAN_RC_LOCAL)
    tree.rc_local.chmod(0o755)
    converge(True)
    result = converge(True, backend="systemd", boost=BOOST)
    assert tree.rc_local.read_bytes() == DEBIAN_RC_LOCAL
    assert str(tree.rc_local) in result["files"] and result["removed"] == []
    assert tree.unit(persist.SERVICE).exists() and tree.unit(persist.RELAX_TIMER).exists()
    result = converge(True, backend="tmpfiles")
    assert sorted(result["removed"]) == sorted(str(tree.unit(n)) for n in (persist.SERVICE, persist.RELAX_SERVICE, persist.RELAX_TIMER))
    assert result["daemon_reload_needed"] is True
    assert tree.conf.exists() and not tree.unit(persist.SERVICE).exists()
    result = converge(True, backend="rc_local")
    assert result["removed"] == [str(tree.conf)]
    assert persist.has_block(tree.rc_local.read_text())
    converge(False, backend="rc_local")


def test_absent_removes_everything_of_ours_and_nothing_else(tree, converge, run_module):
    tree.rc_local.write_bytes(DEBIAN_RC_LOCAL)
    foreign_unit = tree.unit("other.service")
    foreign_unit.write_text("[Service]\nExecStart=/bin/true\n")
    foreign_conf = tree.tmpfiles / "other.conf"
    foreign_conf.write_text("d /run/other 0755 root root -\n")
    # Leave artefacts of every backend at once (as a half-finished switch might).
    failed, dummy = run_module(ksm_persist, tree.args(backend="systemd", boost=BOOST))
    assert not failed
    tree.conf.write_text("w /x/run - - - - 1\n")
    (tree.systemd / "multi-user.target.wants").mkdir()
    (tree.systemd / "multi-user.target.wants" / persist.SERVICE).symlink_to(tree.unit(persist.SERVICE))
    tree.rc_local.write_text(persist.add_block(tree.rc_local.read_text(), persist.rc_block("/x", [("run", "1")], [], 1)))
    result = converge(True, state="absent")
    assert result["backend"] is None
    assert len(result["removed"]) == 5
    assert tree.rc_local.read_bytes() == DEBIAN_RC_LOCAL
    assert sorted(os.listdir(str(tree.systemd))) == ["multi-user.target.wants", "other.service"]
    assert os.listdir(str(tree.systemd / "multi-user.target.wants")) == []
    assert os.listdir(str(tree.tmpfiles)) == ["other.conf"]
    assert foreign_unit.read_text() == "[Service]\nExecStart=/bin/true\n"
    converge(False, state="absent")


def test_absent_on_empty_tree_changes_nothing(tree, converge):
    result = converge(False, state="absent")
    assert result["files"] == [] and result["removed"] == []
    assert not tree.rc_local.exists()


# ---------------------------------------------------------------- bad input: message, and nothing written

@pytest.mark.parametrize("args, expected", [
    (dict(settings={}), "settings is empty"),
    (dict(settings=None), "settings is empty"),
    (dict(settings={"run": 5}), "run: invalid value 5; expected a whole number from 0 to 2"),
    # a misspelt knob fails in Ansible's own validation (settings has one sub-option per knob)
    (dict(settings={"sleep_milisecs": 5}), "Unsupported parameters for (basic.py) module: settings.sleep_milisecs"),
    (dict(settings={"pages_to_scan": "1e3"}), "pages_to_scan: invalid value '1e3'; expected a whole number"),
    (dict(settings={"pages_to_scan": 2.0}), "pages_to_scan: invalid value 2.0"),
    (dict(settings={"pages_to_scan": u"\u00b2"}), "(an integer or a string of ASCII digits)"),
    (dict(settings={"smart_scan": "y"}), "smart_scan: invalid value 'y'; expected a boolean"),
    (dict(settings={"advisor_mode": "fast"}), "advisor_mode: invalid value 'fast'; expected one of 'none', 'scan-time'"),
    (dict(settings={"use_zero_pages": "maybe"}), "use_zero_pages: invalid value 'maybe'; expected a boolean"),
    (dict(boost={"pages_to_scan": "lots"}), "boost: pages_to_scan: invalid value 'lots'"),
    (dict(boost={"max_page_sharing": 10}), "boost: max_page_sharing has no value in settings"),
    (dict(settings=dict(SETTINGS, max_page_sharing=256), boost={"max_page_sharing": 512}), "cannot be boosted"),
    (dict(boost=BOOST, backend="tmpfiles"), "tmpfiles.d cannot do; use backend rc_local or systemd"),
    (dict(boost=BOOST, boost_seconds=0), "boost_seconds: invalid value 0; expected a whole number of seconds from 1 to 31536000"),
    (dict(boost_seconds=-1), "boost_seconds: invalid value -1"),
    (dict(boost=BOOST, boost_seconds=86400 * 365 + 1), "boost_seconds: invalid value 31536001"),
    (dict(boost=BOOST, boost_seconds=u"\u0661\u0662"), "boost_seconds: invalid value"),
    (dict(sysfs_path="/sys/kernel/mm/ksm $(reboot)"), "must be an absolute path of letters, digits"),
    (dict(sysfs_path="ksm"), "sysfs_path"),
    (dict(backend="upstart"), "value of backend must be one of: rc_local, systemd, tmpfiles"),
    (dict(state="gone"), "value of state must be one of: present, absent"),
    (dict(boost_seconds="soon"), "boost_seconds"),
])
def test_bad_input_fails_and_writes_nothing(tree, run_module, digest, args, expected):
    tree.rc_local.write_bytes(DEBIAN_RC_LOCAL)
    before = digest(str(tree.root))
    failed, result = run_module(ksm_persist, tree.args(**args))
    assert failed
    assert expected in result["msg"], result["msg"]
    assert digest(str(tree.root)) == before


@pytest.mark.parametrize("backend", ["rc_local", "systemd", "tmpfiles"])
@pytest.mark.parametrize("broken", [persist.BEGIN + "\necho x\n", persist.END + "\n",
                                    persist.BEGIN + "\n" + persist.END + "\n" + persist.BEGIN + "\n" + persist.END + "\n"])
def test_broken_markers_fail_for_every_backend_and_write_nothing(tree, run_module, digest, backend, broken):
    tree.rc_local.write_text("#!/bin/sh\n" + broken + "exit 0\n")
    before = digest(str(tree.root))
    failed, result = run_module(ksm_persist, tree.args(backend=backend))
    assert failed
    assert "expected exactly one of each, begin first. Fix the file by hand" in result["msg"]
    assert str(tree.rc_local) in result["msg"]
    assert digest(str(tree.root)) == before
    failed, result = run_module(ksm_persist, tree.args(state="absent"))
    assert failed and digest(str(tree.root)) == before


@pytest.mark.parametrize("backend, missing, expected", [
    ("systemd", "systemd", "systemd_dir"),
    ("tmpfiles", "tmpfiles", "tmpfiles_dir"),
    ("rc_local", "etc", "rc_local_path directory"),
])
def test_missing_directory_fails_and_writes_nothing(tree, run_module, digest, backend, missing, expected):
    target = {"systemd": tree.root / "nope" / "system", "tmpfiles": tree.root / "nope" / "tmpfiles.d",
              "etc": tree.root / "nope" / "rc.local"}[missing]
    key = {"systemd": "systemd_dir", "tmpfiles": "tmpfiles_dir", "etc": "rc_local_path"}[missing]
    tree.rc_local.write_bytes(DEBIAN_RC_LOCAL)
    converge_args = tree.args(backend=backend, **{key: str(target)})
    before = digest(str(tree.root))
    failed, result = run_module(ksm_persist, converge_args)
    assert failed
    assert expected in result["msg"] and "does not exist" in result["msg"], result["msg"]
    assert digest(str(tree.root)) == before


def test_directory_as_rc_local_fails(tree, run_module, digest):
    tree.rc_local.mkdir()
    before = digest(str(tree.root))
    failed, result = run_module(ksm_persist, tree.args())
    assert failed and "is a directory" in result["msg"]
    assert digest(str(tree.root)) == before


def test_trailing_slash_on_systemd_dir_still_lists_removed_units(tree, run_module):
    failed, result = run_module(ksm_persist, tree.args(backend="systemd"))
    assert not failed and result["units"] == [persist.SERVICE]
    failed, result = run_module(ksm_persist, dict(tree.args(state="absent"), systemd_dir=str(tree.systemd) + "/"))
    assert not failed and result["changed"]
    assert result["units_removed"] == [persist.SERVICE] and result["daemon_reload_needed"] is True
