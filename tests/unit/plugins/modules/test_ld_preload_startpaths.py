"""ld_preload on start paths that drop the environment, shared env files, named blocks, the prctl
launcher, non-UTF-8 bytes and strict input checks. Temporary trees laid out like /etc."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import stat
import subprocess
import sys
import textwrap

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _optin
from ansible_collections.samepage.ksm.plugins.modules import ld_preload

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))))


def begin(name, kind="LD_PRELOAD"):
    return "# BEGIN samepage.ksm %s %s" % (kind, name)


@pytest.fixture(autouse=True)
def sysv_host(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("MemoryKSM probe ran on a SysV host")
    monkeypatch.setattr(_optin, "systemd_running", lambda *a: False)
    monkeypatch.setattr(_optin, "probe_memoryksm", forbidden)


@pytest.fixture
def etc(tmp_path):
    root = tmp_path / "etc"
    for sub in ("init.d", "default", "sysconfig", "systemd/system", "lib-systemd"):
        (root / sub).mkdir(parents=True)
    lib = tmp_path / "lib" / "libksm_preload.so"
    lib.parent.mkdir()
    lib.write_bytes(b"\x7fELF")
    launcher = tmp_path / "bin" / "samepage-ksm-merge"
    launcher.parent.mkdir()
    # A real launcher: sets PR_SET_MEMORY_MERGE, logs that it ran, execs its arguments.
    launcher.write_text(textwrap.dedent("""\
        #!%s
        import ctypes, os, sys
        if ctypes.CDLL(None, use_errno=True).prctl(67, 1, 0, 0, 0) != 0:
            sys.exit("prctl failed")
        log = os.environ.get("LAUNCHER_LOG")
        if log:
            with open(log, "a") as handle:
                handle.write(" ".join(sys.argv[1:]) + "\\n")
        os.execv(sys.argv[1], sys.argv[1:])
        """ % sys.executable))
    launcher.chmod(0o755)
    return root


def args_for(etc, name, **extra):
    args = {
        "name": name,
        "init_dir": str(etc / "init.d"),
        "envfile_dirs": [str(etc / "sysconfig"), str(etc / "default")],
        "systemd_dir": str(etc / "systemd/system"),
        "unit_dirs": [str(etc / "systemd/system"), str(etc / "lib-systemd")],
        "library": str(etc.parent / "lib" / "libksm_preload.so"),
        "launcher": str(etc.parent / "bin" / "samepage-ksm-merge"),
    }
    args.update(extra)
    return args


def apache(etc):
    ctl = etc / "apache2ctl"
    ctl.write_text(APACHE2CTL.replace("@ETC@", str(etc)))
    ctl.chmod(0o755)
    (etc / "apache2").mkdir()
    (etc / "apache2" / "envvars").write_text(ENVVARS)
    return script(etc, "apache2", APACHE)


def script(etc, name, text, mode=0o755):
    path = etc / "init.d" / name
    path.write_text(text.replace("@ETC@", str(etc)))
    path.chmod(mode)
    return path


# Debian bookworm's /etc/init.d/apache2, the parts that matter: env -i, then apache2ctl.
APACHE = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          apache2
### END INIT INFO

DESC="Apache httpd web server"
NAME=apache2
APACHE_CONFDIR=@ETC@/apache2
APACHE_ENVVARS=$APACHE_CONFDIR/envvars
export APACHE_CONFDIR APACHE_ENVVARS

ENV="env -i LANG=C PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
APACHE2CTL="$ENV @ETC@/apache2ctl"

case "$1" in
  start) $APACHE2CTL start ;;
esac
"""
# apache2ctl's part: read envvars, then exec the daemon (here: report what it got).
APACHE2CTL = """#!/bin/sh
. @ETC@/apache2/envvars
echo "LD_PRELOAD=$LD_PRELOAD"
exec cat /proc/self/ksm_stat
"""
ENVVARS = "# envvars - default environment variables for apache2ctl\nunset HOME\nexport APACHE_RUN_USER=www-data\n"


def start(path, env=None):
    return subprocess.run(["/bin/sh", str(path), "start"], capture_output=True, text=True, check=True,
                          env=env or {"PATH": "/usr/bin:/bin"}).stdout


def test_apache_env_i_auto_writes_envvars(run_module, etc, digest):
    path = apache(etc)
    envvars = etc / "apache2" / "envvars"
    args = args_for(etc, "apache2")
    # control: the env -i start path has no LD_PRELOAD
    assert "LD_PRELOAD=\n" in start(path)
    failed, result = run_module(ld_preload, args)
    assert not failed, result.get("msg")
    assert result["method"] == "envfile" and result["path"] == str(envvars)
    assert "line 12" in result["reason"] and "env -i" in result["reason"]
    assert path.read_text() == APACHE.replace("@ETC@", str(etc))  # the script is not touched
    assert "LD_PRELOAD=%s\n" % args["library"] in start(path)   # the command after env -i has it
    assert not run_module(ld_preload, args)[1]["changed"]
    failed, result = run_module(ld_preload, dict(args, state="absent"))
    assert not failed and result["changed"] and envvars.read_text() == ENVVARS


def test_apache_env_i_sysv_is_refused_naming_the_line(run_module, etc, digest):
    apache(etc)
    before = digest(etc)
    failed, result = run_module(ld_preload, args_for(etc, "apache2", method="sysv"))
    assert failed
    msg = result["msg"]
    assert "init.d/apache2 line 12" in msg and "env -i" in msg and "nothing was written" in msg
    assert "envvars" in msg and "method=prctl" in msg
    assert digest(etc) == before


def test_apache_prctl_survives_env_i(run_module, etc, tmp_path):
    """The prctl block re-execs the script once under the launcher; the flag survives env -i."""
    path = apache(etc)
    envvars = etc / "apache2" / "envvars"
    assert "ksm_merge_any: no" in start(path)
    args = args_for(etc, "apache2", method="prctl")
    failed, result = run_module(ld_preload, args)
    assert not failed, result.get("msg")
    text = path.read_text()
    lines = text.splitlines()
    assert lines.index(begin("apache2", "PRCTL")) == 5  # after the header, before the first command
    assert lines[lines.index(begin("apache2", "PRCTL")) + 4].strip().startswith("exec %s /bin/sh \"$0\"" % args["launcher"])
    log = tmp_path / "launcher.log"
    out = start(path, {"PATH": "/usr/bin:/bin", "LAUNCHER_LOG": str(log)})
    assert "ksm_merge_any: yes" in out
    assert log.read_text() == "/bin/sh %s start\n" % path  # exactly once
    assert not run_module(ld_preload, args)[1]["changed"]
    assert run_module(ld_preload, dict(args, state="absent"))[1]["changed"]
    assert path.read_text() == APACHE.replace("@ETC@", str(etc))


def test_prctl_keeps_the_shebang_option_and_refuses_systemd(run_module, etc, monkeypatch):
    path = script(etc, "demo", "#!/bin/sh -e\nPATH=/bin\nrun() { :; }\n")
    failed, result = run_module(ld_preload, args_for(etc, "demo", method="prctl"))
    assert not failed, result.get("msg")
    assert 'exec %s /bin/sh -e "$0" "$@"' % args_for(etc, "x")["launcher"] in path.read_text()
    (etc / "lib-systemd" / "demo.service").write_text("[Service]\nExecStart=/bin/true\n")
    monkeypatch.setattr(_optin, "systemd_running", lambda *a: True)
    failed, result = run_module(ld_preload, args_for(etc, "demo", method="prctl"))
    assert failed and "systemd is the running init" in result["msg"] and "memoryksm" in result["msg"]


def test_prctl_needs_an_executable_launcher(run_module, etc, digest, warned):
    script(etc, "demo", "#!/bin/sh\nPATH=/bin\n")
    before = digest(etc)
    args = args_for(etc, "demo", method="prctl", launcher="/nonexistent/samepage-ksm-merge")
    failed, result = run_module(ld_preload, args)
    assert failed and "launcher /nonexistent/samepage-ksm-merge does not exist" in result["msg"]
    failed, result = run_module(ld_preload, args, check_mode=True)
    assert not failed and result["changed"] and any("does not exist yet" in w for w in warned)
    failed, result = run_module(ld_preload, dict(args, launcher=args_for(etc, "x")["library"]))
    assert failed and "not executable" in result["msg"]
    # a launcher whose interpreter is missing would keep the service from starting at all
    broken = etc.parent / "bin" / "broken-launcher"
    broken.write_text("#!/usr/bin/env no-such-python-here\n")
    broken.chmod(0o755)
    failed, result = run_module(ld_preload, dict(args, launcher=str(broken)))
    assert failed and "no-such-python-here" in result["msg"] and "would not start" in result["msg"]
    assert digest(etc) == before


DROPPERS = {
    "su -": ("start)\n  su - postgres -c 'pg_ctl start'\n  ;;", 'su - postgres'),
    "su -l": ("start)\n  su -l -s /bin/sh svc -c run\n  ;;", 'su -l'),
    "runuser -l": ("start)\n  runuser -l tomcat -c '/opt/tomcat/bin/startup.sh'\n  ;;", "runuser -l"),
    "sudo": ("start)\n  sudo -u svc /usr/sbin/svcd\n  ;;", "sudo -u"),
    "ssd login shell": ("start)\n  start-stop-daemon --start --chuid svc --exec /bin/bash -- -l -c /usr/sbin/svcd\n  ;;",
                        "start-stop-daemon"),
    "LD_PRELOAD in if": ("start)\n  if [ -n \"$X\" ]; then\n    LD_PRELOAD=/opt/x.so\n  fi\n  ;;", "LD_PRELOAD=/opt/x.so"),
    "export $(...)": ("start)\n  :\n  ;;\nesac\nexport LD_PRELOAD=$(cat /etc/svc.preload)\ncase x in x)\n  ;;",
                      "export LD_PRELOAD=$(cat"),
    "unset in function": ("start)\n  :\n  ;;\nesac\nclean() {\n  unset LD_PRELOAD\n}\ncase x in x)\n  ;;", "unset LD_PRELOAD"),
}


@pytest.mark.parametrize("case", sorted(DROPPERS))
@pytest.mark.parametrize("method", ["auto", "sysv", "envfile"])
def test_start_paths_that_lose_the_setting_are_refused(run_module, etc, digest, case, method):
    body, needle = DROPPERS[case]
    text = ("#!/bin/sh\nPATH=/sbin:/bin:/usr/sbin:/usr/bin\nNAME=svc\n[ -r @ETC@/default/svc ] && . @ETC@/default/svc\n"
            "case \"$1\" in\n%s\nesac\n" % body)
    path = script(etc, "svc", text)
    before = digest(etc)
    failed, result = run_module(ld_preload, args_for(etc, "svc", method=method))
    assert failed, result
    msg = result["msg"]
    number = [i + 1 for i, line in enumerate(path.read_text().splitlines()) if needle in line][0]
    assert "%s line %d:" % (path, number) in msg, msg
    assert "nothing was written" in msg and "method=prctl" in msg
    assert digest(etc) == before
    # the prctl opt-in is the way out
    failed, result = run_module(ld_preload, args_for(etc, "svc", method="prctl"))
    assert not failed and result["changed"], result.get("msg")


FUNCTIONS_LOGIN = """daemon() {
\tlocal user= pid_file=
\t[ -n "$user" ] && runuser -s /bin/bash - $user -c "$*"
}
"""
FUNCTIONS_PLAIN = """daemon() {
\tlocal user= pid_file=
\t[ -n "$user" ] && runuser -s /bin/bash $user -c "ulimit -S -c 0 >/dev/null 2>&1 ; $*"
}
"""


@pytest.mark.parametrize("functions, refused", [(FUNCTIONS_LOGIN, True), (FUNCTIONS_PLAIN, False), (None, True)])
def test_daemon_user_depends_on_the_functions_file(run_module, etc, functions, refused):
    if functions is not None:
        (etc / "init.d" / "functions").write_text(functions)
    script(etc, "svc", "#!/bin/sh\n. @ETC@/init.d/functions\nPATH=/sbin:/bin\nstart() {\n  daemon --user=svc /usr/sbin/svcd\n}\n")
    failed, result = run_module(ld_preload, args_for(etc, "svc", method="sysv"))
    assert failed is refused, result.get("msg")
    if refused:
        assert "line 5" in result["msg"] and "daemon" in result["msg"]


SAMBA_SCRIPT = "#!/bin/sh\nPATH=/sbin:/bin\nNAME=%s\n[ -r @ETC@/default/samba ] && . @ETC@/default/samba\n"


def test_shared_env_file_refused_unless_named_and_blocks_are_per_service(run_module, etc, digest):
    for name in ("smbd", "nmbd"):
        script(etc, name, SAMBA_SCRIPT % name)
    samba = etc / "default" / "samba"
    original = b"# Defaults for samba\nRUN_MODE=\"daemons\"\n\xe9t\xe9\n"
    samba.write_bytes(original)
    samba.chmod(0o640)
    before = digest(etc)
    failed, result = run_module(ld_preload, args_for(etc, "smbd", method="envfile"))
    assert failed and "not the service's own file" in result["msg"] and "envfile:" in result["msg"]
    assert digest(etc) == before
    # an explicit envfile: each service gets its own named block
    for name, threshold in (("smbd", 100), ("nmbd", 200)):
        failed, result = run_module(ld_preload, args_for(etc, name, method="envfile", envfile=str(samba),
                                                         merge_threshold=threshold))
        assert not failed and result["changed"], result.get("msg")
    text = samba.read_bytes()
    assert text.count(b"# BEGIN samepage.ksm LD_PRELOAD smbd") == 1 and text.count(b"# BEGIN samepage.ksm LD_PRELOAD nmbd") == 1
    assert b"KSMP_MERGE_THRESHOLD=100" in text and b"KSMP_MERGE_THRESHOLD=200" in text
    # absent removes only its own block
    failed, result = run_module(ld_preload, args_for(etc, "smbd", state="absent", envfile=str(samba)))
    assert not failed and result["changed"]
    text = samba.read_bytes()
    assert b"LD_PRELOAD smbd" not in text and b"LD_PRELOAD nmbd" in text
    failed, result = run_module(ld_preload, args_for(etc, "nmbd", state="absent", envfile=str(samba)))
    assert not failed and result["changed"]
    assert samba.read_bytes() == original and stat.S_IMODE(samba.stat().st_mode) == 0o640


def test_own_env_file_sourced_by_another_script_is_refused(run_module, etc, digest):
    script(etc, "demo", "#!/bin/sh\nPATH=/bin\n. @ETC@/default/demo\n")
    script(etc, "demo-helper", "#!/bin/sh\nNAME=demo\n[ -f @ETC@/default/$NAME ] && . @ETC@/default/$NAME\n")
    (etc / "default" / "demo").write_text("A=1\n")
    before = digest(etc)
    failed, result = run_module(ld_preload, args_for(etc, "demo", method="envfile"))
    assert failed and "also sourced by %s" % (etc / "init.d" / "demo-helper") in result["msg"]
    assert digest(etc) == before


@pytest.mark.parametrize("name, envdir", [("network", "sysconfig"), ("rcS", "default"), ("locale", "default")])
def test_system_wide_env_files_are_refused(run_module, etc, digest, name, envdir):
    script(etc, name, "#!/bin/sh\nPATH=/bin\n. @ETC@/%s/%s\n" % (envdir, name))
    (etc / envdir / name).write_text("X=1\n")
    before = digest(etc)
    failed, result = run_module(ld_preload, args_for(etc, name, method="envfile"))
    assert failed and "system-wide" in result["msg"]
    assert digest(etc) == before


def test_env_file_by_literal_name(run_module, etc):
    script(etc, "demo-init", "#!/bin/sh\nPATH=/bin\nNAME=demo\n[ -r @ETC@/default/$NAME ] && . @ETC@/default/$NAME\n")
    failed, result = run_module(ld_preload, args_for(etc, "demo-init", method="envfile"))
    assert not failed, result.get("msg")
    assert result["path"] == str(etc / "default" / "demo")


def test_unnamed_block_of_an_older_release_is_upgraded_and_removed(run_module, etc, warned):
    legacy = "# BEGIN samepage.ksm LD_PRELOAD\nLD_PRELOAD=/old.so\nexport LD_PRELOAD\n# END samepage.ksm LD_PRELOAD\n"
    plain = "#!/bin/sh\nPATH=/bin\nexport PATH\nrun\n"
    path = script(etc, "demo", plain.replace("export PATH\n", "export PATH\n" + legacy))
    args = args_for(etc, "demo", method="sysv")
    failed, result = run_module(ld_preload, args)
    assert not failed and result["changed"]
    text = path.read_text()
    assert "# BEGIN samepage.ksm LD_PRELOAD\n" not in text and text.count(begin("demo")) == 1
    assert run_module(ld_preload, dict(args, state="absent"))[1]["changed"]
    assert path.read_text() == plain
    # an unnamed block in a shared file may be another service's: left in place, with a warning
    (etc / "default" / "samba").write_text("A=1\n" + legacy)
    script(etc, "smbd", SAMBA_SCRIPT % "smbd")
    failed, result = run_module(ld_preload, args_for(etc, "smbd", state="absent"))
    assert not failed and not result["changed"]
    assert any("older release" in w for w in warned), warned


def test_non_utf8_bytes_in_check_diff_and_back(run_module, etc):
    raw = b"#!/bin/sh\n# Auteur: Fran\xe7ois \xff\xfe\nPATH=/bin\nexport PATH\necho caf\xc3\xa9\n"
    path = etc / "init.d" / "demo"
    path.write_bytes(raw)
    path.chmod(0o700)
    args = args_for(etc, "demo", method="sysv")
    failed, result = run_module(ld_preload, args, check_mode=True, diff=True)
    assert not failed and result["changed"], result.get("msg")
    diff = result["diff"][0]
    assert "Fran\\xe7ois \\xff\\xfe" in diff["before"] and "caf\u00e9" in diff["before"]
    assert path.read_bytes() == raw
    failed, result = run_module(ld_preload, args, diff=True)
    assert not failed and b"Fran\xe7ois \xff\xfe" in path.read_bytes()
    failed, result = run_module(ld_preload, args, diff=True)
    assert not failed and not result["changed"] and "\\xff" in result["diff"][0]["after"]
    assert run_module(ld_preload, dict(args, state="absent"))[1]["changed"]
    assert path.read_bytes() == raw and stat.S_IMODE(path.stat().st_mode) == 0o700


@pytest.mark.parametrize("option, value, needle", [
    ("name", "mysql\n", "service"),
    ("library", "/usr/lib64/libksm_preload.so\n", "library"),
    ("dropin_name", "samepage-ksm.conf\n", "dropin_name"),
    ("launcher", "/usr/local/sbin/x\n", "launcher"),
    ("library", "/", "directory"),
    ("merge_threshold", True, "not a boolean"),
    ("merge_threshold", False, "not a boolean"),
    ("merge_threshold", "1e3", "merge_threshold"),
    ("merge_threshold", 2.0, "merge_threshold"),
    ("merge_threshold", "\u00b2", "ASCII digits"),
    ("merge_threshold", "\u0661\u0662", "ASCII digits"),
    ("merge_threshold", 2 ** 31, "2147483647"),
    ("merge_threshold", -1, "from 0"),
    ("merge_threshold", "12\n", "merge_threshold"),
    ("merge_threshold", "", "merge_threshold"),
])
def test_input_is_checked_to_the_end(run_module, etc, digest, option, value, needle):
    script(etc, "mysql", "#!/bin/sh\nPATH=/bin\n")
    before = digest(etc)
    failed, result = run_module(ld_preload, dict(args_for(etc, "mysql"), **{option: value}))
    assert failed and needle in result["msg"], result.get("msg")
    assert digest(etc) == before


@pytest.mark.parametrize("value", [0, "4096", 2 ** 31 - 1])
def test_merge_threshold_accepted(run_module, etc, value):
    script(etc, "mysql", "#!/bin/sh\nPATH=/bin\n")
    failed, result = run_module(ld_preload, args_for(etc, "mysql", merge_threshold=value))
    assert not failed and "KSMP_MERGE_THRESHOLD=%d\n" % int(value) in (etc / "init.d" / "mysql").read_text()


LINEAR = r"""
import sys
sys.path.insert(0, sys.argv[1])
from ansible_collections.samepage.ksm.plugins.module_utils import _ld_preload as lp
blank = " " * 200000
for line in ("PATH=/bin" + blank + "x", "export PATH" + blank + "x", "NAME=demo" + blank + "x",
             "LD_PRELOAD=/a.so" + blank + "x", "export LD_PRELOAD" + blank + "x", "su" + blank + "x",
             "env" + blank + "x", ". /etc/default/x" + blank + "x", blank + "#"):
    text = "#!/bin/sh\n" + line + "\n"
    lp.script_offset(text), lp.simple_assignments(text), lp.sourced_files(text), lp.mentions_preload(text)
    lp.environment_drops(text, ""), lp.late_preload_assignments(text, 0)
print("ok")
"""


def test_long_blank_runs_cost_linear_time():
    """200 000 blanks on one line: quadratic matching would take hours; the limit is generous."""
    out = subprocess.run([sys.executable, "-c", LINEAR, os.path.join(ROOT, "build", "collections")],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout == "ok\n"


def test_a_failed_removal_puts_every_file_back(run_module, etc, monkeypatch):
    """absent removes a script block and a drop-in together; EROFS on the drop-in leaves both as they were."""
    import errno
    calls = []
    monkeypatch.setattr(_optin, "systemd_running", lambda *a: True)
    monkeypatch.setattr(_optin, "probe_memoryksm", lambda module, **k: calls.append(1) or {"works": False, "reason": "no"})
    path = script(etc, "demo", "#!/bin/sh\nPATH=/bin\nexport PATH\nrun\n")
    (etc / "lib-systemd" / "demo.service").write_text("[Service]\nExecStart=/bin/true\n")
    for method in ("sysv", "systemd"):
        failed, result = run_module(ld_preload, args_for(etc, "demo", method=method))
        assert not failed, result.get("msg")
    dropin = etc / "systemd/system/demo.service.d/samepage-ksm.conf"
    script_before, dropin_before = path.read_bytes(), dropin.read_bytes()
    real_unlink = os.unlink

    def unlink(target, *args, **kwargs):
        if str(target) == str(dropin):
            raise OSError(errno.EROFS, "Read-only file system")
        return real_unlink(target, *args, **kwargs)
    monkeypatch.setattr(os, "unlink", unlink)
    failed, result = run_module(ld_preload, args_for(etc, "demo", state="absent"))
    assert failed
    assert str(dropin) in result["msg"] and "EROFS" in result["msg"] and "put back" in result["msg"]
    assert path.read_bytes() == script_before and dropin.read_bytes() == dropin_before
