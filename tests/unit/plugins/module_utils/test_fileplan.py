"""The file-plan layer: decide first, act whole, undo on failure, one diff shape, any bytes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import subprocess

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _fileplan as fp


class FakeModule:
    """What FilePlan uses of AnsibleModule: backups and the SELinux helpers."""

    def __init__(self):
        self.backups = []

    def backup_local(self, path):
        backup = path + ".bak"
        with open(path, "rb") as src, open(backup, "wb") as dst:
            dst.write(src.read())
        self.backups.append(backup)
        return backup

    def selinux_enabled(self):
        return False


@pytest.fixture
def plan():
    return fp.FilePlan(FakeModule())


def test_nothing_touches_the_disk_before_apply(tmp_path, plan, digest):
    (tmp_path / "old").write_text("old\n")
    before = digest(tmp_path)
    plan.write(str(tmp_path / "new"), "new\n")
    plan.write(str(tmp_path / "old"), "changed\n")
    plan.remove(str(tmp_path / "old"))
    assert plan.changed
    assert digest(tmp_path) == before


def test_new_file_gets_0644_and_existing_keeps_its_mode(tmp_path, plan):
    existing = tmp_path / "rc.local"
    existing.write_text("#!/bin/sh\n")
    existing.chmod(0o700)
    plan.write(str(tmp_path / "new.conf"), "x\n")
    plan.write(str(existing), "#!/bin/sh\necho hi\n")
    plan.apply()
    assert (tmp_path / "new.conf").stat().st_mode & 0o7777 == 0o644
    assert existing.stat().st_mode & 0o7777 == 0o700
    assert existing.read_text() == "#!/bin/sh\necho hi\n"


def test_same_text_and_mode_is_no_change_but_a_mode_change_is(tmp_path, plan):
    path = tmp_path / "f"
    path.write_text("same\n")
    path.chmod(0o644)
    assert plan.write(str(path), "same\n") is False
    assert not plan.changed
    assert plan.write(str(path), "same\n", mode=0o755) is True
    diff = plan.diff()[0]
    assert diff["before_header"] == "%s (mode 0644)" % path and diff["after_header"] == "%s (mode 0755)" % path
    plan.apply()
    assert path.stat().st_mode & 0o7777 == 0o755


def test_symlink_target_is_written_and_link_kept(tmp_path, plan):
    (tmp_path / "rc.d").mkdir()
    target = tmp_path / "rc.d" / "rc.local"
    target.write_text("a\n")
    link = tmp_path / "rc.local"
    link.symlink_to("rc.d/rc.local")
    plan.write(str(link), "b\n")
    assert plan.files == [str(target)]
    plan.apply()
    assert link.is_symlink() and target.read_text() == "b\n"


def test_raw_text_round_trips_any_bytes_and_diff_escapes_them(tmp_path, plan):
    raw = b"caf\xc3\xa9 \xff\xfe\x00 end\n"
    path = tmp_path / "script"
    path.write_bytes(raw)
    text = plan.read(str(path))
    plan.write(str(path), text + "added\n")
    diff = plan.diff()[0]
    assert diff["before"] == "caf\u00e9 \\xff\\xfe\x00 end\n"
    assert diff["after"].endswith("added\n")
    plan.apply()
    assert path.read_bytes() == raw + b"added\n"


def test_failure_part_way_puts_everything_back(tmp_path, plan, monkeypatch, digest):
    first = tmp_path / "first"
    first.write_text("first\n")
    first.chmod(0o600)
    gone = tmp_path / "gone"
    gone.write_text("old backend\n")
    plan.write(str(first), "changed\n")
    plan.write(str(tmp_path / "created"), "new\n")
    plan.remove(str(gone))
    before = digest(tmp_path)
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if str(path) == str(gone):
            raise OSError(errno.EROFS, "Read-only file system", str(path))
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "unlink", unlink)
    with pytest.raises(fp.FilePlanError) as caught:
        plan.apply()
    msg = str(caught.value)
    assert msg.startswith("cannot remove %s: [EROFS]" % gone)
    assert "put back" in msg and str(first) in msg and "every file is as before" in msg
    monkeypatch.setattr(os, "unlink", real_unlink)
    assert digest(tmp_path) == before
    assert first.stat().st_mode & 0o7777 == 0o600


def test_first_write_failing_says_nothing_was_changed(tmp_path, plan, monkeypatch):
    plan.write(str(tmp_path / "a"), "a\n")

    def rename(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(fp.FilePlanError, match=r"cannot write .*/a: \[ENOSPC\] No space left on device; nothing was changed"):
        plan.apply()
    assert sorted(os.listdir(tmp_path)) == []  # no temporary file left behind


def test_missing_directory_is_refused_at_plan_time(tmp_path, plan):
    with pytest.raises(fp.FilePlanError, match="directory .*/nodir does not exist; nothing was written"):
        plan.write(str(tmp_path / "nodir" / "f"), "x\n")
    plan.mkdir(str(tmp_path / "d"))
    plan.write(str(tmp_path / "d" / "f"), "x\n")
    plan.apply()
    assert (tmp_path / "d" / "f").read_text() == "x\n"


def test_remove_symlink_and_rmdir_when_empty(tmp_path, plan):
    wants = tmp_path / "multi-user.target.wants"
    wants.mkdir()
    (wants / "unit.service").symlink_to("/etc/systemd/system/unit.service")
    plan.remove(str(wants / "unit.service"), rmdir=str(wants))
    assert "symbolic link to /etc/systemd/system/unit.service" in plan.diff()[0]["before_header"]
    result = plan.apply()
    assert not wants.exists() and result["dirs_removed"] == [str(wants)]


def test_backups_are_reported(tmp_path, plan):
    path = tmp_path / "f"
    path.write_text("old\n")
    plan.write(str(path), "new\n", backup=True)
    result = plan.apply()
    assert result["backups"] == {str(path): str(path) + ".bak"}
    assert (tmp_path / "f.bak").read_text() == "old\n"


def test_reading_a_directory_is_a_clear_error(tmp_path, plan):
    with pytest.raises(fp.FilePlanError, match="is a directory, expected a file; nothing was written"):
        plan.read(str(tmp_path))


@pytest.mark.parametrize("version", ["2.7.18", "3.6.15"])
def test_runs_on_old_target_interpreters(tmp_path, old_target, version):
    """The plan, the raw text and the escaped diff on the Pythons of EL7 and EL8, for real."""
    python, lib = old_target(version)
    path = tmp_path / "script"
    path.write_bytes(b"\xff\xfe old\n")
    code = (
        "import sys\n"
        "sys.path.insert(0, %r)\n"
        "from ansible_collections.samepage.ksm.plugins.module_utils import _fileplan as fp\n"
        "p = fp.FilePlan(None)\n"
        "t = p.read(%r)\n"
        "p.write(%r, t + u'new\\n')\n"
        "d = p.diff()[0]\n"
        "assert d['before'] == u'\\\\xff\\\\xfe old\\n', repr(d['before'])\n"
        "p.apply()\n"
    ) % (str(lib), str(path), str(path))
    subprocess.run([str(python), "-c", code], check=True)
    assert path.read_bytes() == b"\xff\xfe old\nnew\n"
