"""The boot artefacts written by samepage.ksm.ksm_persist work when booted, on a fake KSM sysfs.

The module runs through ansible-playbook; then each artefact is executed the way a boot would:
rc.local by /bin/sh (a host without systemd), the systemd units' ExecStart lines and
`systemd-analyze verify`, the tmpfiles.d file by `systemd-tmpfiles --create`. Nothing here
touches the real kernel: sysfs_path points at a temporary directory.
The real-kernel reboot proof is the node role's molecule scenario.
"""
import json
import os
import pathlib
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest

DEFAULTS = {"run": "0", "pages_to_scan": "100", "sleep_millisecs": "20", "advisor_mode": "[none] scan-time",
            "merge_across_nodes": "1", "max_page_sharing": "256", "use_zero_pages": "0"}
SETTINGS = {"advisor_mode": "none", "pages_to_scan": 1000, "sleep_millisecs": 50, "merge_across_nodes": 0,
            "use_zero_pages": 1, "run": 1}
EXPECTED = {"advisor_mode": "none", "pages_to_scan": "1000", "sleep_millisecs": "50", "merge_across_nodes": "0",
            "use_zero_pages": "1", "run": "1", "max_page_sharing": "256"}
DEBIAN_RC_LOCAL = "#!/bin/sh -e\n#\n# rc.local\n#\necho booted > {marker}\n\nexit 0\n"


def need(tool, package):
    path = shutil.which(tool)
    if path is None:
        pytest.fail("%s is missing: install the Debian package %r (scripts/bootstrap.sh test lists it)" % (tool, package))
    return path


@pytest.fixture
def host(tmp_path):
    """A fake host: etc/ dirs and a fake KSM sysfs at kernel defaults."""
    sysfs = tmp_path / "sys" / "kernel" / "mm" / "ksm"
    sysfs.mkdir(parents=True)
    for name, value in DEFAULTS.items():
        (sysfs / name).write_text(value + "\n")
    for sub in ("etc/systemd/system", "etc/tmpfiles.d"):
        (tmp_path / sub).mkdir(parents=True)
    return tmp_path


def knobs(sysfs):
    return dict((name, (sysfs / name).read_text().strip()) for name in DEFAULTS)


ROOT = pathlib.Path(__file__).resolve().parents[2]


def run_play(tmp_dir, text):
    """Run a playbook on localhost; returns {task name: result}."""
    play = tmp_dir / "play.yml"
    play.write_text(text)
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json")
    proc = subprocess.run(
        [str(ROOT / ".venv" / "bin" / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=" + sys.executable, str(play)],
        cwd=str(ROOT), env=env, capture_output=True, text=True, check=False)
    try:
        data = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError("ansible-playbook printed no JSON (rc %d):\n%s\n%s" % (proc.returncode, proc.stdout, proc.stderr))
    assert proc.returncode == 0, proc.stdout[-4000:]
    results = {}
    for each in data["plays"]:
        for task in each["tasks"]:
            results[task["task"]["name"]] = task["hosts"]["localhost"]
    return results


def persist(host, **args):
    """Run ksm_persist via ansible-playbook (twice: changed, then not changed); returns the first result."""
    args.setdefault("sysfs_path", str(host / "sys/kernel/mm/ksm"))
    args.setdefault("rc_local_path", str(host / "etc/rc.local"))
    args.setdefault("systemd_dir", str(host / "etc/systemd/system"))
    args.setdefault("tmpfiles_dir", str(host / "etc/tmpfiles.d"))
    play = ("- hosts: localhost\n  gather_facts: false\n  tasks:\n"
            "    - name: persist\n      samepage.ksm.ksm_persist: %s\n"
            "    - name: persist again\n      samepage.ksm.ksm_persist: %s\n") % (json.dumps(args), json.dumps(args))
    results = run_play(host, play)
    assert results["persist"]["changed"] is True, results["persist"]
    assert results["persist again"]["changed"] is False, results["persist again"]
    return results["persist"]


def boot_rc_local(path, env=None):
    """Run rc.local as init does; returns the seconds it took."""
    start = time.monotonic()
    proc = subprocess.run([str(path), "start"], capture_output=True, text=True, timeout=30, env=env, check=False)
    took = time.monotonic() - start
    assert proc.returncode == 0, "rc.local failed (%d): %s" % (proc.returncode, proc.stderr)
    return took, proc


def wait_for(sysfs, expected, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(knobs(sysfs)[k] == v for k, v in expected.items()):
            return time.monotonic()
        time.sleep(0.05)
    raise AssertionError("fake sysfs never reached %r within %ss: %r" % (expected, timeout, knobs(sysfs)))


def test_rc_local_boot_writes_the_knobs(host):
    sysfs = host / "sys/kernel/mm/ksm"
    rc_local = host / "etc/rc.local"
    marker = host / "booted"
    rc_local.write_text(DEBIAN_RC_LOCAL.format(marker=marker))
    rc_local.chmod(0o644)
    # A knob that cannot be written (here a directory) must not stop a "sh -e" rc.local.
    (sysfs / "smart_scan").mkdir()
    persist(host, settings=dict(SETTINGS, smart_scan=True))
    assert os.access(str(rc_local), os.X_OK)
    took, proc = boot_rc_local(rc_local)
    assert knobs(sysfs) == EXPECTED
    assert marker.read_text() == "booted\n", "the foreign lines of rc.local still run"
    assert "smart_scan" in proc.stderr, "the failed write is reported on stderr"
    shellcheck = need("shellcheck", "shellcheck")
    check = subprocess.run([shellcheck, "--severity=warning", str(rc_local)], capture_output=True, text=True, check=False)
    assert check.returncode == 0, check.stdout


def test_rc_local_without_ksm_sysfs_is_a_no_op(host):
    rc_local = host / "etc/rc.local"
    missing = host / "no" / "ksm"
    persist(host, settings=SETTINGS, sysfs_path=str(missing))
    boot_rc_local(rc_local)
    assert not missing.exists() and not missing.parent.exists()


@pytest.mark.parametrize("detach", ["setsid", "nohup"])
def test_rc_local_boost_then_relax(host, tmp_path, detach):
    sysfs = host / "sys/kernel/mm/ksm"
    rc_local = host / "etc/rc.local"
    persist(host, settings=SETTINGS, boost={"pages_to_scan": 20000, "sleep_millisecs": 5}, boost_seconds=2)
    env = None
    if detach == "nohup":
        # A host without setsid: only sleep and nohup on PATH (echo is a shell builtin).
        bin_dir = tmp_path / "bin"
        bin_dir.mkdir()
        for tool in ("sleep", "nohup"):
            os.symlink(need(tool, "coreutils"), str(bin_dir / tool))
        env = {"PATH": str(bin_dir)}
    else:
        need("setsid", "util-linux")
    start = time.monotonic()
    took, dummy = boot_rc_local(rc_local, env=env)
    assert took < 1.5, "rc.local waited for the relax step (%.1fs): it must not block the boot" % took
    assert knobs(sysfs) == dict(EXPECTED, pages_to_scan="20000", sleep_millisecs="5")
    relaxed_at = wait_for(sysfs, EXPECTED, timeout=15)
    assert relaxed_at - start >= 1.9, "relaxed after %.2fs, before boost_seconds" % (relaxed_at - start)
    assert knobs(sysfs) == EXPECTED


def exec_starts(unit_text):
    """The argv of each ExecStart= line (the '-' prefix stripped)."""
    commands = []
    for line in unit_text.splitlines():
        if line.startswith("ExecStart="):
            commands.append(shlex.split(line[len("ExecStart="):].lstrip("-")))
    return commands


def test_systemd_units_verify_and_their_commands_write_the_knobs(host):
    sysfs = host / "sys/kernel/mm/ksm"
    unit_dir = host / "etc/systemd/system"
    result = persist(host, backend="systemd", settings=SETTINGS,
                     boost={"pages_to_scan": 20000}, boost_seconds=2)
    assert result["units"] == ["samepage-ksm.service", "samepage-ksm-relax.timer"]
    assert result["daemon_reload_needed"] is True
    analyze = need("systemd-analyze", "systemd")
    names = ["samepage-ksm.service", "samepage-ksm-relax.service", "samepage-ksm-relax.timer"]
    verify = subprocess.run([analyze, "verify"] + [str(unit_dir / n) for n in names],
                            capture_output=True, text=True, check=False,
                            env=dict(os.environ, SYSTEMD_LOG_LEVEL="notice"))
    assert verify.returncode == 0, verify.stderr
    ours = [line for line in verify.stderr.splitlines() if "samepage-ksm" in line]
    assert ours == [], ours
    # What systemd would run at boot, then OnBootSec later.
    for argv in exec_starts((unit_dir / "samepage-ksm.service").read_text()):
        subprocess.run(argv, check=True)
    assert knobs(sysfs) == dict(EXPECTED, pages_to_scan="20000")
    for argv in exec_starts((unit_dir / "samepage-ksm-relax.service").read_text()):
        subprocess.run(argv, check=True)
    assert knobs(sysfs) == EXPECTED


def test_tmpfiles_conf_applies_in_order(host, tmp_path):
    sysfs = host / "sys/kernel/mm/ksm"
    persist(host, backend="tmpfiles", settings=SETTINGS)
    conf = host / "etc/tmpfiles.d/samepage-ksm.conf"
    tmpfiles = need("systemd-tmpfiles", "systemd")
    strace = need("strace", "strace")
    # "w" writes from offset 0 without truncating (a sysfs file has no length): empty the fake files.
    for name in DEFAULTS:
        (sysfs / name).write_text("")
    trace = tmp_path / "trace"
    # -y names each write's file: the trace shows the order in which systemd-tmpfiles writes the knobs.
    subprocess.run([strace, "-f", "-qq", "-y", "-e", "trace=write", "-o", str(trace), tmpfiles, "--create", str(conf)],
                   check=True, capture_output=True)
    assert knobs(sysfs) == dict(EXPECTED, max_page_sharing="")
    written = []
    for line in trace.read_text().splitlines():
        match = re.search(r"write\(\d+<%s/(\w+)>, \"([^\"]*)\"" % re.escape(str(sysfs)), line)
        if match:
            written.append(match.groups())
    assert written == [("advisor_mode", "none"), ("pages_to_scan", "1000"), ("sleep_millisecs", "50"),
                       ("use_zero_pages", "1"), ("merge_across_nodes", "0"), ("run", "1")]
