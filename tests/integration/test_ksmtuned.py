"""ksm_node_profile adaptive on the real kernel with the distribution's real ksmtuned.

The node role (ksm_node_profile: adaptive) writes ksmtuned's configuration; Debian's
/usr/sbin/ksmtuned (package ksmtuned, installed by scripts/bootstrap.sh test) then runs in private
mount and pid namespaces, with that file bind-mounted over /etc/ksmtuned.conf (the path is
hard-coded in the script) and torn down with the namespace. No systemd here, so the role's service
step is off. First a threshold that makes "low free memory" true: ksmtuned starts ksmd and raises
pages_to_scan by the boost on every interval. Then a plenty-of-memory threshold: it stops ksmd.
"""
import os
import pathlib
import signal
import subprocess
import time

import pytest

KSMTUNED = "/usr/sbin/ksmtuned"
HOST_CONF = "/etc/ksmtuned.conf"
ROLE = "samepage.ksm.node : "


def mem_total_kib():
    for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1])
    raise AssertionError("no MemTotal in /proc/meminfo")


ROLE_PLAY = """
- hosts: localhost
  gather_facts: false
  roles:
    - role: samepage.ksm.node
      vars:
        ksm_node_profile: adaptive
        ksm_node_settings: {use_zero_pages: true}
        ksm_node_persist_backend: rc_local
        ksm_node_rc_local_path: %(tmp)s/rc.local
        ksm_node_systemd_dir: %(tmp)s/systemd
        ksm_node_tmpfiles_dir: %(tmp)s/tmpfiles.d
        ksm_node_ksmtuned_service: false
        ksm_node_ksmtuned_install: %(install)s
        ksm_node_ksmtuned_conf_path: %(tmp)s/ksmtuned.conf
        ksm_node_ksmtuned_monitor_interval: 1
        ksm_node_ksmtuned_thres_coef: %(coef)d
        ksm_node_ksmtuned_npages_boost: 300
        ksm_node_ksmtuned_npages_max: 1250
        ksm_node_ksmtuned_log_file: %(tmp)s/ksmtuned.log
"""


class Ksmtuned:
    """The package's ksmtuned with our configuration, in namespaces of its own."""

    def __init__(self, conf, pidfile):
        self.conf, self.pidfile = conf, pidfile
        self.proc = None

    def __enter__(self):
        script = 'mount --bind "$1" %s && PIDFILE="$2" %s && exec sleep 3600' % (HOST_CONF, KSMTUNED)
        self.proc = subprocess.Popen(
            ["unshare", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
             "/bin/bash", "-c", script, "ksmtuned-test", str(self.conf), str(self.pidfile)])
        return self

    def __exit__(self, *exc):
        # unshare's death SIGKILLs the namespace's init, which takes every process in it along
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        return False


def wait_for(what, check, timeout=20):
    deadline = time.monotonic() + timeout
    seen = []
    while time.monotonic() < deadline:
        value = check()
        if not seen or seen[-1] != value:
            seen.append(value)
        if value is not None and value is not False and what(value):
            return seen
        time.sleep(0.1)
    raise AssertionError("timed out; values seen: %r" % seen)


def knobs(sysfs):
    return tuple(int((sysfs / name).read_text()) for name in ("run", "pages_to_scan", "sleep_millisecs"))


@pytest.fixture
def ksmtuned_installed():
    for path in (KSMTUNED, HOST_CONF):
        if not os.path.exists(path):
            pytest.fail("%s is missing: scripts/bootstrap.sh test installs Debian's ksmtuned package" % path)


def test_adaptive_profile_with_the_real_ksmtuned(real_ksm, playbook, tmp_path, ksmtuned_installed):
    started = time.monotonic()
    conf = tmp_path / "ksmtuned.conf"
    log = tmp_path / "ksmtuned.log"
    values = {"tmp": tmp_path}

    # 1. the role: ksmtuned configured; our own knobs and boot block leave the scan rate alone
    (real_ksm / "advisor_mode").write_text("scan-time")
    _rc, results, _out = playbook(ROLE_PLAY % dict(values, coef=100, install="true"))
    install = results[ROLE + "Install ksmtuned"]  # the package manager ran; bootstrap installed the package
    assert not install.get("skipped") and not install.get("failed") and not install["changed"], install
    call = results[ROLE + "Knobs, persistence and verification in one call, state present"]
    assert call["changed"] and results[ROLE + "Configure ksmtuned"]["changed"]
    text = conf.read_text()
    for line in ("KSM_MONITOR_INTERVAL=1", "KSM_NPAGES_BOOST=300", "KSM_NPAGES_MAX=1250", "KSM_THRES_COEF=100",
                 "LOGFILE=%s" % log, "DEBUG=1"):
        assert "\n%s\n" % line in text, line
    assert oct(conf.stat().st_mode & 0o777) == "0o644"
    rc_local = (tmp_path / "rc.local").read_text()
    assert "use_zero_pages" in rc_local and "advisor_mode" in rc_local
    for owned in ("ksm/run", "pages_to_scan", "sleep_millisecs"):
        assert owned not in rc_local, "the boot block must leave %s to ksmtuned:\n%s" % (owned, rc_local)
    assert (real_ksm / "advisor_mode").read_text().split() == ["[none]", "scan-time"]  # ksmtuned can write now
    assert int((real_ksm / "use_zero_pages").read_text()) == 1
    # a re-run changes nothing (the package step is proven above; skipped to save a package manager run)
    _rc, again, _out = playbook(ROLE_PLAY % dict(values, coef=100, install="false"))
    assert not any(r.get("changed") for r in again.values()), {k: v.get("changed") for k, v in again.items()}

    # 2. low free memory (threshold = MemTotal): ksmtuned starts ksmd and boosts pages_to_scan
    (real_ksm / "run").write_text("0")
    (real_ksm / "pages_to_scan").write_text("100")
    (real_ksm / "sleep_millisecs").write_text("200")
    total = mem_total_kib()
    sleep = max(10, 10 * 16 * 1024 * 1024 // total)  # ksmtuned's own formula, KSM_SLEEP_MSEC 10
    with Ksmtuned(conf, tmp_path / "ksmtuned.pid"):
        seen = wait_for(lambda k: k[1] >= 900, lambda: knobs(real_ksm))
        seen += wait_for(lambda k: k[1] == 1250, lambda: knobs(real_ksm))
    steps = sorted({k[1] for k in seen if k[0] == 1})
    assert steps == [300, 600, 900, 1200, 1250], seen  # +300 per interval, capped at the maximum
    assert all(k[2] == sleep for k in seen if k[0] == 1), seen
    assert knobs(real_ksm) == (1, 1250, sleep)
    decisions = log.read_text()
    assert "boost" in decisions and "KSMCTL start 1250 %d" % sleep in decisions

    # 3. plenty of memory (threshold 1 % of MemTotal): the role rewrites the file, ksmtuned stops ksmd
    _rc, results, _out = playbook(ROLE_PLAY % dict(values, coef=1, install="false"))
    assert results[ROLE + "Configure ksmtuned"]["changed"] and "\nKSM_THRES_COEF=1\n" in conf.read_text()
    log.write_text("")
    with Ksmtuned(conf, tmp_path / "ksmtuned-2.pid"):
        seen = wait_for(lambda k: k[0] == 0, lambda: knobs(real_ksm))
        time.sleep(2.5)  # two more intervals: it stays stopped
        assert knobs(real_ksm)[0] == 0
    assert "stop ksm" in log.read_text() and "boost" not in log.read_text()
    assert knobs(real_ksm)[1] == 1250  # stopping leaves the scan rate; merged pages stay merged
    print("ksmtuned: boost steps %s, sleep_millisecs %d, then stopped; %.1f s"
          % (steps, sleep, time.monotonic() - started))


def test_adaptive_rejects_knobs_that_ksmtuned_owns(playbook, tmp_path):
    """Decided before anything is written: no lock needed, nothing is touched."""
    play = ROLE_PLAY.replace("ksm_node_settings: {use_zero_pages: true}", "ksm_node_settings: {pages_to_scan: 500}")
    rc, results, _out = playbook(play % {"tmp": tmp_path, "coef": 50, "install": "true"}, check=False)
    assert rc != 0
    msg = results[ROLE + "Check the adaptive profile's variables"]["msg"]
    assert "ksmtuned sets run, pages_to_scan, sleep_millisecs, so ksm_node_settings must not (got pages_to_scan)" in msg
    assert not (tmp_path / "ksmtuned.conf").exists() and not (tmp_path / "rc.local").exists()
