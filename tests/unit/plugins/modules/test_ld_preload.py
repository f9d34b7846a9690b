"""samepage.ksm.ld_preload against temporary init.d / sysconfig / systemd trees.

The edited scripts are executed with /bin/sh to prove what the service would really get in its
environment, not only what the file looks like.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import atexit
import os
import shutil
import stat
import subprocess
import tempfile

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _optin
from ansible_collections.samepage.ksm.plugins.modules import ld_preload

# The library and the launcher must exist as regular files: real ones in a private directory.
_FILES = tempfile.mkdtemp(prefix="ldp-unit-")
atexit.register(shutil.rmtree, _FILES, True)
LIB = os.path.join(_FILES, "libksm_preload.so")
LIB2 = os.path.join(_FILES, "libother.so")
LAUNCHER = os.path.join(_FILES, "samepage-ksm-merge")
for _path in (LIB, LIB2):
    with open(_path, "wb") as _handle:
        _handle.write(b"\x7fELF not really a library")
with open(LAUNCHER, "w") as _handle:
    # records that it ran, then execs its arguments (the real one also sets PR_SET_MEMORY_MERGE)
    _handle.write('#!/bin/sh\necho "launcher: $*" >> "${LAUNCHER_LOG:-/dev/null}"\nexec "$@"\n')
os.chmod(LAUNCHER, 0o755)
LEGACY_BEGIN = "# BEGIN samepage.ksm LD_PRELOAD"
LEGACY_END = "# END samepage.ksm LD_PRELOAD"


def begin(name="demo", kind="LD_PRELOAD"):
    return "# BEGIN samepage.ksm %s %s" % (kind, name)


def end(name="demo", kind="LD_PRELOAD"):
    return "# END samepage.ksm %s %s" % (kind, name)


# Every script answers "env" with the variables the service would inherit (builtins only).
ENV_ACTION = '''case "$1" in
  env) echo "LD_PRELOAD=${LD_PRELOAD:-}" ; echo "KSMP_MERGE_THRESHOLD=${KSMP_MERGE_THRESHOLD:-}" ;;
  start|stop) : ;;
esac
'''

# The OpenVZ wiki's example: Percona's /etc/init.d/mysql, PATH then export PATH on the next line.
MYSQL = '''#!/bin/sh
# Copyright Abandoned 1996 TCX DataKonsult AB & Monty Program KB & Detron HB
# MySQL daemon start/stop script.
### BEGIN INIT INFO
# Provides: mysql
# Required-Start: $local_fs $network $remote_fs
# Default-Start:  2 3 4 5
### END INIT INFO

basedir=
datadir=
lsb_functions="/lib/lsb/init-functions"
if test -f $lsb_functions ; then
  :
fi

PATH="/sbin:/usr/sbin:/bin:/usr/bin:$basedir/bin"
export PATH

mode=$1    # start or stop
''' + ENV_ACTION

LSB_NO_PATH = '''#!/bin/sh
### BEGIN INIT INFO
# Provides:          demo
# Required-Start:    $remote_fs $syslog
# Default-Start:     2 3 4 5
# Default-Stop:      0 1 6
# Short-Description: demo service
### END INIT INFO
# A service without any PATH line.

DAEMON=/usr/sbin/demo
''' + ENV_ACTION

DEBIAN_SKELETON = '''#! /bin/sh
### BEGIN INIT INFO
# Provides:          demo
# Required-Start:    $remote_fs $syslog
### END INIT INFO

# Author: Foo Bar <foobar@baz.org>

# Do NOT "set -e"

# PATH should only include /usr/* if it runs after the mountnfs.sh script
PATH=/sbin:/usr/sbin:/bin:/usr/bin
DESC="Description of the service"
NAME=demo
DAEMON=/usr/sbin/$NAME
SCRIPTNAME=/etc/init.d/$NAME

# Read configuration variable file if it is present
[ -r @DEFAULT@/$NAME ] && . @DEFAULT@/$NAME

do_start()
{
\tPATH=/usr/local/bin:$PATH
\t:
}
''' + ENV_ACTION

ONE_LINE = '''#!/bin/sh
# chkconfig: 345 90 10
PATH=/usr/bin:/bin; export PATH
prog=demo
''' + ENV_ACTION

EXPORT_ASSIGN = '''#!/bin/sh
export PATH=/usr/bin:/bin
''' + ENV_ACTION

STYLES = {
    # name: (script, line the block must follow, position rule)
    "mysql": (MYSQL, "export PATH", "path"),
    "lsb-no-path": (LSB_NO_PATH, "", "fallback"),
    "debian-skeleton": (DEBIAN_SKELETON, "PATH=/sbin:/usr/sbin:/bin:/usr/bin", "path"),
    "one-line": (ONE_LINE, "PATH=/usr/bin:/bin; export PATH", "path"),
    "export-assign": (EXPORT_ASSIGN, "export PATH=/usr/bin:/bin", "path"),
}


@pytest.fixture
def tree(tmp_path):
    """A host-like tree: init.d, sysconfig, default, /etc and /usr/lib unit dirs."""
    root = tmp_path / "host"
    for sub in ("init.d", "sysconfig", "default", "etc-systemd", "lib-systemd"):
        (root / sub).mkdir(parents=True)
    return root


def base_args(tree, **extra):
    args = {
        "init_dir": str(tree / "init.d"),
        "envfile_dirs": [str(tree / "sysconfig"), str(tree / "default")],
        "systemd_dir": str(tree / "etc-systemd"),
        "unit_dirs": [str(tree / "etc-systemd"), str(tree / "lib-systemd")],
        "library": LIB,
        "launcher": LAUNCHER,
    }
    args.update(extra)
    return args


def write_script(tree, name, text, mode=0o750):
    path = tree / "init.d" / name
    path.write_text(text.replace("@DEFAULT@", str(tree / "default")))
    path.chmod(mode)
    return path


def service_env(script, env=None):
    """What the script exports to the program it starts: run its 'env' action."""
    out = subprocess.run(["/bin/sh", str(script), "env"], capture_output=True, text=True, check=True,
                         env=env if env is not None else {"PATH": "/usr/bin:/bin"}).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


@pytest.fixture
def warnings(monkeypatch):
    """Every module.warn() message of the test, in order."""
    seen = []
    monkeypatch.setattr(ld_preload.AnsibleModule, "warn", lambda self, msg, *a, **k: seen.append(msg))
    return seen


@pytest.fixture(autouse=True)
def no_probes(monkeypatch):
    """A SysV host (systemd not the running init); the MemoryKSM probe fails the test unless a
    test installs its own: it must not run by accident."""
    def forbidden(*args, **kwargs):
        raise AssertionError("MemoryKSM probe ran although the method did not need it")
    monkeypatch.setattr(_optin, "systemd_running", lambda *a: False)
    monkeypatch.setattr(_optin, "probe_memoryksm", forbidden)


# ---------------------------------------------------------------------------------------------
# SysV init scripts

@pytest.mark.parametrize("style", sorted(STYLES))
def test_sysv_add_twice_check_diff_absent(run_module, tree, digest, style):
    text, anchor, rule = STYLES[style]
    script = write_script(tree, "demo", text)
    original = script.read_bytes()
    args = base_args(tree, service="demo")

    # check mode: reports the change, writes nothing
    before = digest(tree)
    failed, result = run_module(ld_preload, args, check_mode=True, diff=True)
    assert not failed, result.get("msg")
    assert result["changed"] and result["restart_needed"] and not result["daemon_reload_needed"]
    assert result["method"] == "sysv" and result["position"] == rule
    assert digest(tree) == before
    assert result["diff"][0]["before"] == original.decode()
    assert begin() in result["diff"][0]["after"]

    failed, result = run_module(ld_preload, args, diff=True)
    assert not failed and result["changed"] and result["path"] == str(script)
    assert result["ld_preload"] == LIB
    new = script.read_text()
    assert new == result["diff"][0]["after"]
    lines = new.splitlines()
    start = lines.index(begin())
    assert lines[start:start + 4] == [begin(), "LD_PRELOAD=" + LIB, "export LD_PRELOAD", end()]
    if anchor:
        assert lines[start - 1] == anchor
    else:
        # fallback: after the LSB header and every leading comment/blank line, before the first command
        assert all(not line.strip() or line.startswith("#") for line in lines[:start])
        assert lines[start + 4] == "DAEMON=/usr/sbin/demo"
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    assert subprocess.run(["/bin/sh", "-n", str(script)], check=False).returncode == 0
    assert service_env(script)["LD_PRELOAD"] == LIB
    # started again from an environment that already has it (restart = "$0 stop; $0 start"): once
    assert service_env(script, {"PATH": "/bin", "LD_PRELOAD": LIB})["LD_PRELOAD"] == LIB

    failed, result = run_module(ld_preload, args)
    assert not failed and not result["changed"] and not result["restart_needed"]
    assert script.read_text() == new

    failed, result = run_module(ld_preload, dict(args, state="absent"), diff=True)
    assert not failed and result["changed"] and result["restart_needed"]
    assert script.read_bytes() == original
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    failed, result = run_module(ld_preload, dict(args, state="absent"))
    assert not failed and not result["changed"]
    assert script.read_bytes() == original


def test_sysv_drift_is_repaired(run_module, tree):
    script = write_script(tree, "mysql", MYSQL)
    args = base_args(tree, service="mysql")
    assert run_module(ld_preload, args)[1]["changed"]
    good = script.read_text()
    script.write_text(good.replace("LD_PRELOAD=" + LIB, "LD_PRELOAD=/usr/lib/old.so"))
    failed, result = run_module(ld_preload, args)
    assert not failed and result["changed"]
    assert script.read_text() == good
    assert not run_module(ld_preload, args)[1]["changed"]


def test_sysv_library_change_updates_block_in_place(run_module, tree):
    script = write_script(tree, "mysql", MYSQL)
    run_module(ld_preload, base_args(tree, service="mysql"))
    failed, result = run_module(ld_preload, base_args(tree, service="mysql", library=LIB2))
    assert not failed and result["changed"]
    text = script.read_text()
    assert text.count(begin("mysql")) == 1 and LIB not in text and "LD_PRELOAD=%s" % LIB2 in text


def test_sysv_keeps_existing_ld_preload(run_module, tree):
    text = MYSQL.replace("export PATH\n", "export PATH\nLD_PRELOAD=/opt/other.so\nexport LD_PRELOAD\n")
    script = write_script(tree, "mysql", text)
    args = base_args(tree, service="mysql")
    failed, result = run_module(ld_preload, args)
    assert not failed and result["changed"], result
    assert result["position"] == "after-ld-preload"
    assert result["ld_preload"] == "/opt/other.so " + LIB
    lines = script.read_text().splitlines()
    assert lines[lines.index(begin("mysql")) - 1] == "export LD_PRELOAD"
    assert service_env(script)["LD_PRELOAD"] == "/opt/other.so " + LIB
    # inherited value that already holds the library, in either separator style: not duplicated
    env = {"PATH": "/bin", "LD_PRELOAD": "/x.so"}
    assert service_env(script, env)["LD_PRELOAD"] == "/opt/other.so " + LIB
    assert not run_module(ld_preload, args)[1]["changed"]
    assert run_module(ld_preload, dict(args, state="absent"))[1]["changed"]
    assert script.read_text() == text


def test_sysv_script_already_holding_library_is_not_duplicated(run_module, tree):
    text = MYSQL.replace("mode=$1", "LD_PRELOAD=%s:/opt/other.so\nexport LD_PRELOAD\nmode=$1" % LIB)
    script = write_script(tree, "mysql", text)
    failed, result = run_module(ld_preload, base_args(tree, service="mysql"))
    assert not failed and result["changed"]
    assert result["ld_preload"] == "%s:/opt/other.so" % LIB
    assert service_env(script)["LD_PRELOAD"] == "%s:/opt/other.so" % LIB


def test_sysv_merge_threshold(run_module, tree):
    script = write_script(tree, "mysql", MYSQL)
    args = base_args(tree, service="mysql", merge_threshold=4096)
    assert run_module(ld_preload, args)[1]["changed"]
    env = service_env(script)
    assert env == {"LD_PRELOAD": LIB, "KSMP_MERGE_THRESHOLD": "4096"}
    assert not run_module(ld_preload, args)[1]["changed"]
    # dropping the threshold changes the block again
    assert run_module(ld_preload, base_args(tree, service="mysql"))[1]["changed"]
    assert service_env(script)["KSMP_MERGE_THRESHOLD"] == ""


def test_sysv_invalid_script_is_refused(run_module, tree, digest):
    broken = "#!/bin/sh\nPATH=/bin\nexport PATH\nif true; then\n  echo unterminated\n"
    write_script(tree, "broken", broken)
    before = digest(tree)
    for check_mode in (True, False):
        failed, result = run_module(ld_preload, base_args(tree, service="broken"), check_mode=check_mode)
        assert failed
        assert "already fails" in result["msg"] and "-n" in result["msg"] and "nothing was written" in result["msg"]
        assert digest(tree) == before


def test_sysv_bash_script_checked_with_bash(run_module, tree):
    """A bash init script with bash-only syntax is checked with bash, not with dash's /bin/sh."""
    text = "#!/bin/bash\nPATH=/usr/bin:/bin\nexport PATH\nopts=(a b)\n[[ -n ${opts[0]} ]] && :\n"
    script = write_script(tree, "bashsvc", text)
    failed, result = run_module(ld_preload, base_args(tree, service="bashsvc"))
    assert not failed and result["changed"], result
    assert subprocess.run(["/bin/bash", "-n", str(script)], check=False).returncode == 0


def test_sysv_backup(run_module, tree):
    script = write_script(tree, "mysql", MYSQL)
    failed, result = run_module(ld_preload, base_args(tree, service="mysql", backup=True))
    assert not failed and result["changed"]
    with open(result["backup_file"]) as handle:
        assert handle.read() == MYSQL
    assert script.read_text() != MYSQL


def test_sysv_mangled_markers_fail_without_writing(run_module, tree, digest):
    write_script(tree, "mysql", MYSQL.replace("export PATH\n", "export PATH\n%s\n" % begin("mysql")))
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="mysql"))
    assert failed and "marker" in result["msg"] and "by hand" in result["msg"]
    assert digest(tree) == before


# ---------------------------------------------------------------------------------------------
# Environment files

def test_envfile_created_then_removed(run_module, tree, digest):
    script = write_script(tree, "demo", DEBIAN_SKELETON)
    envfile = tree / "default" / "demo"
    args = base_args(tree, service="demo", method="envfile", merge_threshold=100)

    before = digest(tree)
    failed, result = run_module(ld_preload, args, check_mode=True, diff=True)
    assert not failed and result["changed"] and result["path"] == str(envfile)
    assert result["diff"][0]["before_header"].endswith("(absent)")
    assert digest(tree) == before

    failed, result = run_module(ld_preload, args)
    assert not failed and result["changed"] and result["method"] == "envfile"
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o644
    assert "LD_PRELOAD=%s\nexport LD_PRELOAD\n" % LIB in envfile.read_text()
    assert script.read_text() == DEBIAN_SKELETON.replace("@DEFAULT@", str(tree / "default"))
    assert service_env(script) == {"LD_PRELOAD": LIB, "KSMP_MERGE_THRESHOLD": "100"}
    assert not run_module(ld_preload, args)[1]["changed"]

    failed, result = run_module(ld_preload, dict(args, state="absent"))
    assert not failed and result["changed"] and result["files"] == [str(envfile)]
    assert not envfile.exists()
    assert digest(tree) == before
    assert not run_module(ld_preload, dict(args, state="absent"))[1]["changed"]


def test_envfile_existing_file_kept_byte_for_byte(run_module, tree):
    text = "#!/bin/sh\n# chkconfig: 345 90 10\nprog=httpd\n[ -f %s/$prog ] && . %s/$prog\n" % (
        tree / "sysconfig", tree / "sysconfig") + ENV_ACTION
    script = write_script(tree, "httpd", text)
    envfile = tree / "sysconfig" / "httpd"
    original = b"# httpd options\nOPTIONS=-DFOREGROUND\nLD_PRELOAD=/opt/other.so\nexport LD_PRELOAD"
    envfile.write_bytes(original)  # no final newline
    envfile.chmod(0o600)
    args = base_args(tree, service="httpd", method="envfile")
    failed, result = run_module(ld_preload, args)
    assert not failed and result["changed"], result
    assert result["ld_preload"] == "/opt/other.so " + LIB
    assert service_env(script)["LD_PRELOAD"] == "/opt/other.so " + LIB
    assert stat.S_IMODE(envfile.stat().st_mode) == 0o600
    assert not run_module(ld_preload, args)[1]["changed"]
    assert run_module(ld_preload, dict(args, state="absent"))[1]["changed"]
    assert envfile.read_bytes() == original


def test_sysv_warns_when_a_sourced_file_sets_ld_preload(run_module, tree, warnings):
    write_script(tree, "demo", DEBIAN_SKELETON)
    (tree / "default" / "demo").write_text("LD_PRELOAD=/opt/other.so\n")
    failed, result = run_module(ld_preload, base_args(tree, service="demo", method="sysv"))
    assert not failed and result["changed"]
    assert any(str(tree / "default" / "demo") in w and "method=envfile" in w for w in warnings), warnings


def test_missing_library_is_an_error_and_a_warning_in_check_mode(run_module, tree, warnings, digest):
    write_script(tree, "mysql", MYSQL)
    before = digest(tree)
    args = base_args(tree, service="mysql", library="/nonexistent/lib.so")
    failed, result = run_module(ld_preload, args)
    assert failed and "/nonexistent/lib.so does not exist" in result["msg"] and "nothing was written" in result["msg"]
    assert digest(tree) == before
    # check mode predicts the run after the package install: a warning, and the change it would make
    failed, result = run_module(ld_preload, args, check_mode=True)
    assert not failed and result["changed"]
    assert any("/nonexistent/lib.so does not exist yet" in w for w in warnings), warnings
    assert digest(tree) == before
    for bad in ("/", str(tree)):
        failed, result = run_module(ld_preload, dict(args, library=bad), check_mode=True)
        assert failed and "library" in result["msg"] and ("directory" in result["msg"] or "regular file" in
                                                          result["msg"])
    assert digest(tree) == before


def test_envfile_not_sourced_suggests_sysv(run_module, tree, digest):
    write_script(tree, "mysql", MYSQL)
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="mysql", method="envfile"))
    assert failed and "does not source" in result["msg"] and "method=sysv" in result["msg"]
    assert digest(tree) == before


def test_envfile_without_script_needs_existing_file(run_module, tree, digest):
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="ghost", method="envfile"))
    assert failed and str(tree / "sysconfig" / "ghost") in result["msg"]
    assert digest(tree) == before
    (tree / "sysconfig" / "ghost").write_text("A=1\n")
    failed, result = run_module(ld_preload, base_args(tree, service="ghost", method="envfile"))
    assert not failed and result["changed"] and result["path"] == str(tree / "sysconfig" / "ghost")


# ---------------------------------------------------------------------------------------------
# systemd

UNIT = """[Unit]
Description=Demo

[Service]
Environment=LD_PRELOAD=/opt/other.so "GREETING=hello world"
ExecStart=/usr/bin/sleep infinity

[Install]
WantedBy=multi-user.target
"""


def probes(monkeypatch, works=False, running=True):
    """A host where systemd runs; the MemoryKSM probe answers ``works``. Returns the probe calls."""
    calls = []

    def probe(module, running=None, **kwargs):
        calls.append("memoryksm")
        return {"works": works, "reason": "injected: works=%s" % works}
    monkeypatch.setattr(_optin, "systemd_running", lambda *a: running)
    monkeypatch.setattr(_optin, "probe_memoryksm", probe)
    return calls


def test_systemd_dropin_merges_existing_ld_preload(run_module, tree, digest, monkeypatch):
    calls = probes(monkeypatch, works=False)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    dropin_dir = tree / "etc-systemd" / "demo.service.d"
    dropin = dropin_dir / "samepage-ksm.conf"
    args = base_args(tree, service="demo.service", merge_threshold=8)

    before = digest(tree)
    failed, result = run_module(ld_preload, args, check_mode=True, diff=True)
    assert not failed and result["changed"] and result["method"] == "systemd"
    assert digest(tree) == before and not dropin_dir.exists()
    assert calls == ["memoryksm"]  # auto tried MemoryKSM first, the probe said no

    failed, result = run_module(ld_preload, args, diff=True)
    assert not failed and result["changed"] and result["daemon_reload_needed"] and result["restart_needed"]
    assert result["path"] == str(dropin)
    assert result["ld_preload"] == "/opt/other.so " + LIB
    content = dropin.read_text()
    assert result["diff"][0]["after"] == content
    assert '[Service]\nEnvironment="LD_PRELOAD=/opt/other.so %s"\nEnvironment="KSMP_MERGE_THRESHOLD=8"\n' % LIB in content
    assert stat.S_IMODE(dropin.stat().st_mode) == 0o644
    assert stat.S_IMODE(dropin_dir.stat().st_mode) == 0o755

    failed, result = run_module(ld_preload, args)
    assert not failed and not result["changed"] and not result["daemon_reload_needed"]

    failed, result = run_module(ld_preload, dict(args, state="absent"))
    assert not failed and result["changed"] and result["daemon_reload_needed"]
    assert not dropin_dir.exists()  # we created it, it is empty: gone
    assert digest(tree) == before
    assert not run_module(ld_preload, dict(args, state="absent"))[1]["changed"]


def test_systemd_dropin_dir_not_ours_is_kept(run_module, tree, monkeypatch):
    probes(monkeypatch)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    dropin_dir = tree / "etc-systemd" / "demo.service.d"
    dropin_dir.mkdir()
    (dropin_dir / "10-limits.conf").write_text("[Service]\nEnvironment=LD_PRELOAD=/opt/third.so\nLimitNOFILE=4096\n")
    args = base_args(tree, service="demo")
    failed, result = run_module(ld_preload, args)
    assert not failed and result["changed"]
    # the later drop-in replaced the unit's value: that effective value is kept first
    assert result["ld_preload"] == "/opt/third.so " + LIB
    assert run_module(ld_preload, dict(args, state="absent"))[1]["changed"]
    assert sorted(os.listdir(dropin_dir)) == ["10-limits.conf"]


def test_systemd_already_holding_library(run_module, tree, monkeypatch):
    probes(monkeypatch)
    (tree / "etc-systemd" / "demo.service").write_text(
        "[Service]\nEnvironment=\"LD_PRELOAD=%s:/opt/other.so\"\nExecStart=/bin/true\n" % LIB)
    failed, result = run_module(ld_preload, base_args(tree, service="demo"))
    assert not failed and result["changed"]
    assert result["ld_preload"] == "%s:/opt/other.so" % LIB
    text = (tree / "etc-systemd" / "demo.service.d" / "samepage-ksm.conf").read_text()
    assert text.count(LIB) == 1


def test_systemd_later_dropin_override_warns(run_module, tree, monkeypatch, warnings):
    probes(monkeypatch)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    later = tree / "lib-systemd" / "demo.service.d"
    later.mkdir()
    (later / "zz-local.conf").write_text("[Service]\nEnvironment=LD_PRELOAD=/opt/zz.so\n")
    failed, result = run_module(ld_preload, base_args(tree, service="demo"))
    assert not failed and result["changed"]
    assert any("zz-local.conf" in w and "overrides" in w for w in warnings), warnings


def test_systemd_foreign_dropin_is_refused(run_module, tree, digest, monkeypatch):
    probes(monkeypatch)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    (tree / "etc-systemd" / "demo.service.d").mkdir()
    (tree / "etc-systemd" / "demo.service.d" / "samepage-ksm.conf").write_text("[Service]\nNice=5\n")
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="demo"))
    assert failed and "not managed by samepage.ksm" in result["msg"]
    failed, result = run_module(ld_preload, base_args(tree, service="demo", state="absent"))
    assert not failed and not result["changed"]
    assert digest(tree) == before


def test_systemd_template_instance(run_module, tree, monkeypatch):
    probes(monkeypatch)
    (tree / "lib-systemd" / "worker@.service").write_text(UNIT)
    failed, result = run_module(ld_preload, base_args(tree, service="worker@3"))
    assert not failed and result["changed"] and result["method"] == "systemd"
    assert result["path"] == str(tree / "etc-systemd" / "worker@3.service.d" / "samepage-ksm.conf")
    assert result["ld_preload"] == "/opt/other.so " + LIB


@pytest.mark.parametrize("running, works, method, called", [
    (True, True, "memoryksm", ["memoryksm"]),
    (True, False, "systemd", ["memoryksm"]),
    # unit files exist, but systemd is not the running init: the init script starts the service
    (False, True, "sysv", []),
])
def test_auto_selection_by_proof(run_module, tree, monkeypatch, running, works, method, called):
    calls = probes(monkeypatch, works=works, running=running)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    write_script(tree, "demo", DEBIAN_SKELETON)
    failed, result = run_module(ld_preload, base_args(tree, service="demo", library="/bin/sh"))
    assert not failed and result["method"] == method, result
    assert calls == called
    dropin = tree / "etc-systemd" / "demo.service.d" / "samepage-ksm.conf"
    if method == "sysv":
        assert not dropin.exists() and begin() in (tree / "init.d" / "demo").read_text()
        return
    text = dropin.read_text()
    if method == "memoryksm":
        assert "[Service]\nMemoryKSM=yes\n" in text and "LD_PRELOAD" not in text
        assert result["ld_preload"] == "/opt/other.so"  # untouched
    else:
        assert "MemoryKSM" not in text and "/bin/sh" in text


def test_auto_is_sticky(run_module, tree, monkeypatch):
    """A host with our preload drop-in keeps it when MemoryKSM becomes available (e.g. an OS upgrade)."""
    calls = probes(monkeypatch, works=False)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    args = base_args(tree, service="demo", library="/bin/sh")
    assert run_module(ld_preload, args)[1]["method"] == "systemd"
    calls = probes(monkeypatch, works=True)
    failed, result = run_module(ld_preload, args)
    assert not failed and not result["changed"] and result["method"] == "systemd"
    assert "kept" in result["reason"] and calls == []
    # the user asks for another method: then it changes
    failed, result = run_module(ld_preload, dict(args, method="memoryksm"))
    assert not failed and result["changed"] and calls == ["memoryksm"]


def test_memoryksm_probe_failing_is_an_error(run_module, tree, monkeypatch, digest):
    probes(monkeypatch, works=False)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="demo", method="memoryksm"))
    assert failed and "does not work on this host" in result["msg"] and "method=systemd" in result["msg"]
    assert "injected" in result["msg"] and "nothing was written" in result["msg"]
    assert digest(tree) == before


def test_memoryksm_then_absent(run_module, tree, monkeypatch, digest):
    probes(monkeypatch, works=True)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    before = digest(tree)
    args = base_args(tree, service="demo", method="memoryksm")
    failed, result = run_module(ld_preload, args)
    assert not failed and result["changed"] and result["daemon_reload_needed"]
    assert not run_module(ld_preload, args)[1]["changed"]
    # switching to a preload drop-in rewrites the same file
    failed, result = run_module(ld_preload, dict(args, method="systemd"))
    assert not failed and result["changed"]
    assert "MemoryKSM" not in (tree / "etc-systemd" / "demo.service.d" / "samepage-ksm.conf").read_text()
    assert run_module(ld_preload, dict(args, state="absent"))[1]["changed"]
    assert digest(tree) == before


def test_sysv_only_host_runs_no_probe(run_module, tree):
    write_script(tree, "mysql", MYSQL)
    failed, result = run_module(ld_preload, base_args(tree, service="mysql"))  # autouse fixture forbids probes
    assert not failed and result["method"] == "sysv"


def test_absent_auto_removes_every_artefact(run_module, tree, monkeypatch, digest):
    probes(monkeypatch)
    script = write_script(tree, "demo", DEBIAN_SKELETON)
    (tree / "lib-systemd" / "demo.service").write_text(UNIT)
    before = digest(tree)
    for method in ("sysv", "envfile", "systemd"):
        assert run_module(ld_preload, base_args(tree, service="demo", method=method))[1]["changed"]
    failed, result = run_module(ld_preload, base_args(tree, service="demo", state="absent"))
    assert not failed and result["changed"] and len(result["files"]) == 3
    assert digest(tree) == before
    assert "samepage.ksm" not in script.read_text()


# ---------------------------------------------------------------------------------------------
# Input validation: fails with what is wrong and what is accepted, writes nothing

BAD_SERVICES = ["../x", "/etc/passwd", "a b", "", "-rf", "x;y", "x/y", "..", ".", "a..b", "$(id)", "`id`",
                "x\ny", "svc*", "a|b", ".service", "..service", "name'", 'na"me', "x&", "é"]


@pytest.mark.parametrize("name", BAD_SERVICES)
def test_bad_service_names(run_module, tree, digest, name):
    write_script(tree, "x", MYSQL)
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service=name))
    assert failed
    assert "service" in result["msg"] and "expected" in result["msg"]
    assert digest(tree) == before


@pytest.mark.parametrize("library", ["relative/lib.so", "/usr/lib/my lib.so", "/usr/lib/$LIB/x.so", "/a'b.so",
                                     '/a"b.so', "/a:b.so", "/usr/lib/*.so", "/usr/../lib/x.so", "/usr//x.so", ""])
def test_bad_library(run_module, tree, digest, library):
    write_script(tree, "mysql", MYSQL)
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="mysql", library=library))
    assert failed and "library" in result["msg"]
    assert digest(tree) == before


@pytest.mark.parametrize("extra, needle", [
    ({"dropin_name": "../evil.conf"}, "dropin_name"),
    ({"dropin_name": "x.txt"}, "dropin_name"),
    ({"merge_threshold": -1}, "merge_threshold"),
    ({"unit_dirs": []}, "unit_dirs"),
    ({"envfile_dirs": ["relative"]}, "envfile_dirs"),
])
def test_bad_options(run_module, tree, digest, extra, needle):
    write_script(tree, "mysql", MYSQL)
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="mysql", **extra))
    assert failed and needle in result["msg"]
    assert digest(tree) == before


def test_unknown_service_lists_every_path(run_module, tree, digest):
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="nosuch"))
    assert failed and "nosuch" in result["msg"]
    for path in (tree / "etc-systemd" / "nosuch.service", tree / "lib-systemd" / "nosuch.service",
                 tree / "init.d" / "nosuch"):
        assert str(path) in result["msg"]
    assert digest(tree) == before
    for method in ("sysv", "systemd", "memoryksm"):
        failed, result = run_module(ld_preload, base_args(tree, service="nosuch", method=method))
        assert failed and str(tree / "init.d" / "nosuch") in result["msg"]
    # nothing to remove is not an error
    failed, result = run_module(ld_preload, base_args(tree, service="nosuch", state="absent"))
    assert not failed and not result["changed"]
    assert digest(tree) == before


def test_masked_unit_is_refused(run_module, tree, monkeypatch, digest):
    probes(monkeypatch)
    (tree / "etc-systemd" / "demo.service").symlink_to("/dev/null")
    before = digest(tree)
    failed, result = run_module(ld_preload, base_args(tree, service="demo"))
    assert failed and "masked" in result["msg"]
    assert digest(tree) == before
