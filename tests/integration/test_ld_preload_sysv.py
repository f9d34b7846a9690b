"""samepage.ksm.ld_preload through ansible-playbook on localhost: a real SysV-style init script
starts a real program, which then has LD_PRELOAD in /proc/PID/environ and the library in its maps.

Touches no KSM knob: everything lives in a temporary directory.
"""
import hashlib
import json
import os
import pathlib
import signal
import stat
import subprocess
import sys
import time

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]

SERVICE = "samepage-ldp-demo"

PROBE_C = r"""
/* A harmless library to preload: it only proves it was loaded. */
int samepage_ldp_probe(void) { return 42; }
__attribute__((constructor)) static void samepage_ldp_init(void) { }
"""

SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          samepage-ldp-demo
# Required-Start:    $local_fs
# Default-Start:     2 3 4 5
# Short-Description: ld_preload integration test service
### END INIT INFO

PIDFILE=@PIDFILE@
PATH="/sbin:/usr/sbin:/bin:/usr/bin"
export PATH

case "$1" in
  start)
    sh -c 'exec sleep 300' </dev/null >/dev/null 2>&1 &
    echo $! > "$PIDFILE"
    ;;
  stop)
    [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
    rm -f "$PIDFILE"
    ;;
  *)
    echo "Usage: $0 {start|stop}" >&2
    exit 3
    ;;
esac
"""

PRESENT_PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    ldp_args: &ldp
      name: {service}
      library: {library}
      merge_threshold: 4096
      init_dir: {init_dir}
      unit_dirs: [{units}]
      systemd_dir: {units}
      envfile_dirs: [{envdir}]
  tasks:
    - name: check
      samepage.ksm.ld_preload: *ldp
      check_mode: true
      diff: true
    - name: after check
      ansible.builtin.stat:
        path: {script}
        checksum_algorithm: sha256
    - name: present
      samepage.ksm.ld_preload: *ldp
      diff: true
    - name: present again
      samepage.ksm.ld_preload: *ldp
    - name: drift
      ansible.builtin.replace:
        path: {script}
        regexp: '^LD_PRELOAD=.*$'
        replace: 'LD_PRELOAD=/usr/lib/stale.so'
    - name: repair
      samepage.ksm.ld_preload: *ldp
    - name: repair again
      samepage.ksm.ld_preload: *ldp
"""

ABSENT_PLAY = """
- hosts: localhost
  gather_facts: false
  tasks:
    - name: absent
      samepage.ksm.ld_preload:
        name: {service}
        state: absent
        init_dir: {init_dir}
        unit_dirs: [{units}]
        systemd_dir: {units}
        envfile_dirs: [{envdir}]
    - name: absent again
      samepage.ksm.ld_preload:
        name: {service}
        state: absent
        init_dir: {init_dir}
        unit_dirs: [{units}]
        systemd_dir: {units}
        envfile_dirs: [{envdir}]
"""


@pytest.fixture
def playbook(tmp_path):
    """Run a playbook on localhost (it must succeed); returns the results by task name.

    Like the shared fixture, without ANSIBLE_CALLBACKS_ENABLED="" (ansible-core 2.19 fails on it).
    """
    def run(text, *args):
        path = tmp_path / "play.yml"
        path.write_text(text)
        env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
        env.pop("ANSIBLE_CALLBACKS_ENABLED", None)
        proc = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
             "-e", "ansible_python_interpreter=" + sys.executable, str(path), *args],
            cwd=ROOT, env=env, capture_output=True, text=True, check=False, timeout=300)
        assert proc.returncode == 0, "ansible-playbook failed (rc %d):\n%s\n%s" % (
            proc.returncode, proc.stdout[-6000:], proc.stderr[-3000:])
        data = json.loads(proc.stdout)
        results = {}
        for play in data["plays"]:
            for task in play["tasks"]:
                results[task["task"]["name"]] = task["hosts"]["localhost"]
        return results

    return run


@pytest.fixture
def host(tmp_path):
    """A library compiled here, an init dir holding the demo script, empty unit and env dirs."""
    src = tmp_path / "probe.c"
    src.write_text(PROBE_C)
    library = tmp_path / "lib" / "libsamepage_ldp_probe.so"
    library.parent.mkdir()
    subprocess.run(["gcc", "-shared", "-fPIC", "-o", str(library), str(src)], check=True)
    init_dir = tmp_path / "init.d"
    init_dir.mkdir()
    script = init_dir / SERVICE
    script.write_text(SCRIPT.replace("@PIDFILE@", str(tmp_path / (SERVICE + ".pid"))))
    script.chmod(0o750)
    for sub in ("units", "default"):
        (tmp_path / sub).mkdir()
    names = dict(service=SERVICE, library=library, init_dir=init_dir, units=tmp_path / "units",
                 envdir=tmp_path / "default", script=script)
    yield names, tmp_path / (SERVICE + ".pid")
    pidfile = tmp_path / (SERVICE + ".pid")
    if pidfile.exists():  # the test failed before it stopped the service
        try:
            os.kill(int(pidfile.read_text()), signal.SIGTERM)
        except (OSError, ValueError):
            pass


def start_service(script, pidfile):
    subprocess.run([str(script), "start"], check=True, timeout=30)
    pid = int(pidfile.read_text())
    # The child execs sh, then sleep: wait until the exec has happened.
    deadline = time.monotonic() + 30  # generous: the machine may be busy
    while time.monotonic() < deadline:
        if os.readlink("/proc/%d/exe" % pid).endswith("/sleep"):
            return pid
        time.sleep(0.05)
    raise AssertionError("pid %d never became sleep" % pid)


def process_env(pid):
    raw = open("/proc/%d/environ" % pid, "rb").read().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def mapped_files(pid):
    with open("/proc/%d/maps" % pid) as handle:
        return {line.split(None, 5)[5].strip() for line in handle if len(line.split(None, 5)) == 6}


def test_sysv_service_starts_with_the_library(host, playbook):
    names, pidfile = host
    script = names["script"]
    original = script.read_bytes()

    # Control: the untouched script starts the program without the library.
    pid = start_service(script, pidfile)
    assert "LD_PRELOAD" not in process_env(pid)
    assert str(names["library"]) not in mapped_files(pid)
    subprocess.run([str(script), "stop"], check=True, timeout=30)

    results = playbook(PRESENT_PLAY.format(**names))
    check = results["check"]
    assert check["changed"] is True and check["method"] == "sysv" and check["restart_needed"] is True
    assert results["after check"]["stat"]["checksum"] == hashlib.sha256(original).hexdigest()
    present = results["present"]
    assert present["changed"] is True and present["position"] == "path"
    assert present["ld_preload"] == str(names["library"])
    assert present["diff"][0]["before"] == original.decode()
    assert results["present again"]["changed"] is False
    assert results["drift"]["changed"] is True
    assert results["repair"]["changed"] is True
    assert results["repair again"]["changed"] is False

    text = script.read_text()
    assert text.count("# BEGIN samepage.ksm LD_PRELOAD %s\n" % SERVICE) == 1
    assert 'export PATH\n# BEGIN samepage.ksm LD_PRELOAD %s\nLD_PRELOAD=%s\n' % (SERVICE, names["library"]) in text
    assert stat.S_IMODE(script.stat().st_mode) == 0o750
    assert subprocess.run(["/bin/sh", "-n", str(script)], check=False).returncode == 0

    pid = start_service(script, pidfile)
    try:
        env = process_env(pid)
        assert env["LD_PRELOAD"] == str(names["library"])
        assert env["KSMP_MERGE_THRESHOLD"] == "4096"
        assert str(names["library"]) in mapped_files(pid)
    finally:
        subprocess.run([str(script), "stop"], check=True, timeout=30)

    results = playbook(ABSENT_PLAY.format(**names))
    assert results["absent"]["changed"] is True and results["absent"]["restart_needed"] is True
    assert results["absent again"]["changed"] is False
    assert script.read_bytes() == original
    assert stat.S_IMODE(script.stat().st_mode) == 0o750


# Like Debian's apache2: the daemon is started through env -i, which empties the environment.
ENV_I_SCRIPT = """#!/bin/sh
### BEGIN INIT INFO
# Provides:          samepage-ldp-demo
### END INIT INFO

PIDFILE=@PIDFILE@
PATH="/sbin:/usr/sbin:/bin:/usr/bin"
export PATH
ENV="env -i LANG=C PATH=/usr/sbin:/usr/bin:/sbin:/bin"

case "$1" in
  start)
    $ENV sh -c 'exec sleep 300' </dev/null >/dev/null 2>&1 &
    echo $! > "$PIDFILE"
    ;;
  stop)
    [ -f "$PIDFILE" ] && kill "$(cat "$PIDFILE")" 2>/dev/null
    rm -f "$PIDFILE"
    ;;
esac
"""

PRCTL_PLAY = """
- hosts: localhost
  gather_facts: false
  vars:
    ldp_args: &ldp
      name: {service}
      library: {library}
      launcher: {launcher}
      init_dir: {init_dir}
      unit_dirs: [{units}]
      systemd_dir: {units}
      envfile_dirs: [{envdir}]
  tasks:
    - name: sysv
      samepage.ksm.ld_preload:
        <<: *ldp
        method: sysv
      ignore_errors: true
    - name: prctl
      samepage.ksm.ld_preload:
        <<: *ldp
        method: prctl
    - name: prctl again
      samepage.ksm.ld_preload:
        <<: *ldp
        method: prctl
"""


def ksm_stat(pid):
    with open("/proc/%d/ksm_stat" % pid) as handle:
        return handle.read()


def test_env_i_start_path_refused_for_sysv_and_reached_by_prctl(host, playbook, tmp_path):
    """A start path with env -i: method=sysv fails naming the line; method=prctl (the container role's real
    launcher) gives the daemon the KSM flag although its environment is emptied."""
    names, pidfile = host
    script = names["script"]
    script.write_text(ENV_I_SCRIPT.replace("@PIDFILE@", str(pidfile)))
    original = script.read_bytes()
    launcher = tmp_path / "samepage-ksm-merge"
    launcher.write_bytes((ROOT / "roles" / "container" / "files" / "samepage-ksm-merge").read_bytes())
    launcher.chmod(0o755)
    names = dict(names, launcher=launcher)

    pid = start_service(script, pidfile)
    assert "ksm_merge_any: no" in ksm_stat(pid)
    subprocess.run([str(script), "stop"], check=True, timeout=30)

    results = playbook(PRCTL_PLAY.format(**names))
    refused = results["sysv"]
    assert refused["failed"] is True and "line 9:" in refused["msg"] and "env -i" in refused["msg"]
    assert results["prctl"]["changed"] is True and results["prctl again"]["changed"] is False
    pid = start_service(script, pidfile)
    try:
        assert "ksm_merge_any: yes" in ksm_stat(pid)
        assert "LD_PRELOAD" not in process_env(pid)
    finally:
        subprocess.run([str(script), "stop"], check=True, timeout=30)
    results = playbook(ABSENT_PLAY.format(**names))
    assert results["absent"]["changed"] is True and results["absent again"]["changed"] is False
    assert script.read_bytes() == original
