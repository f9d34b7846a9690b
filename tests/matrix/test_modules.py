"""Every module of the collection, run for real by ansible-playbook on this machine.

The controller is the ansible-core of the Python running pytest (one venv per version:
scripts/matrix.sh); the module side runs on each interpreter named in SAMEPAGE_TARGET_PYTHON
(comma-separated; default: this Python). ``make test-matrix`` runs it once per controller with
the controller's own Python; ``make test-interpreters`` runs it with ansible-core 2.16 on pyenv's
Python 2.7 and 3.6, the interpreters of EL7 and EL8.

Files are real files in a temporary tree, in ASCII and with non-UTF-8 bytes (Latin-1 and bytes
that are no encoding at all): what the modules do not manage must come back byte for byte, in
check mode nothing may change, and diff mode must return a diff. The real kernel's knobs are
changed only under the kernel lock and restored afterwards.
"""
import base64
import fcntl
import json
import os
import pathlib
import re
import subprocess
import sys

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "tools"))

import ksm_knobs  # noqa: E402

LOCK = "/run/lock/samepage-ksm-kernel.lock"
SYSFS = pathlib.Path("/sys/kernel/mm/ksm")
BIN = pathlib.Path(sys.executable).parent
TARGETS = [p for p in os.environ.get("SAMEPAGE_TARGET_PYTHON", sys.executable).split(",") if p]

# Bytes outside what the modules manage: plain ASCII, or Latin-1 text plus bytes that are not
# valid in any UTF-8 (0xff, 0xfe, a lone continuation byte). Python 2.7 has no surrogateescape.
CONTENTS = {
    "ascii": b"# plain ASCII comment\n",
    "non-utf8": b"# caf\xe9 na\xefve \xff\xfe \x80 (Latin-1 and stray bytes)\n",
}


def target_id(path):
    match = re.search(r"versions/(\d+\.\d+)", path)
    return "py" + (match.group(1) if match else "%d.%d" % sys.version_info[:2])


@pytest.fixture(params=TARGETS, ids=[target_id(p) for p in TARGETS])
def target(request):
    if not os.access(request.param, os.X_OK):
        pytest.fail("target interpreter %s is not executable" % request.param)
    return request.param


@pytest.fixture(params=sorted(CONTENTS))
def foreign(request):
    return CONTENTS[request.param]


@pytest.fixture
def kernel_lock():
    with open(LOCK, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        saved = ksm_knobs.save()
        try:
            yield
        finally:
            ksm_knobs.restore(saved)
            fcntl.flock(handle, fcntl.LOCK_UN)


def module_options(name):
    """The options a module documents (the tests follow the module's current interface)."""
    source = (ROOT / "plugins" / "modules" / (name + ".py")).read_text()
    doc = re.search(r"DOCUMENTATION\s*=\s*r?'''(.*?)'''", source, re.S) or \
        re.search(r'DOCUMENTATION\s*=\s*r?"""(.*?)"""', source, re.S)
    return yaml.safe_load(doc.group(1)).get("options", {})


def sysfs_args(settings):
    """ksm_sysfs arguments for these knob settings (one settings dict, or one option per knob)."""
    if "settings" in module_options("ksm_sysfs"):
        return {"settings": settings}
    return dict(settings)


def playbook(tmp_path, target, tasks, check=True):
    """Run the tasks on localhost with the target interpreter; returns {register name: result}."""
    out = tmp_path / "results.json"
    registered = [t["register"] for t in tasks if "register" in t]
    dump = {"name": "Results", "delegate_to": "localhost", "ansible.builtin.copy": {
        "dest": str(out), "mode": "0600",
        "content": "{{ {%s} | to_json }}" % ", ".join(
            "'%s': %s | default(None)" % (r, r) for r in registered)}}
    play = [{"hosts": "localhost", "gather_facts": False, "tasks": tasks + [dump]}]
    path = tmp_path / "play.yml"
    path.write_text(yaml.safe_dump(play, sort_keys=False))
    env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
               ANSIBLE_COLLECTIONS_PATH=str(ROOT / "build" / "collections"),
               ANSIBLE_STDOUT_CALLBACK="default", ANSIBLE_NOCOLOR="1", ANSIBLE_RETRY_FILES_ENABLED="0",
               PATH="%s:%s" % (BIN, os.environ.get("PATH", "")))
    proc = subprocess.run(
        [str(BIN / "ansible-playbook"), "-i", "localhost,", "-c", "local",
         "-e", "ansible_python_interpreter=" + target, str(path)],
        cwd=str(tmp_path), env=env, capture_output=True, text=True, check=False)
    if check and proc.returncode != 0:
        raise AssertionError("ansible-playbook (rc %d) with %s:\n%s\n%s" % (
            proc.returncode, target, proc.stdout[-8000:], proc.stderr[-3000:]))
    results = json.loads(out.read_text())
    for name, result in results.items():
        text = json.dumps(result or {})
        # A traceback on the target is a bug even where the task was allowed to fail.
        assert "Traceback (most recent call last)" not in text, "%s crashed on %s:\n%s" % (name, target, text)
    return results


def slurped(result):
    return base64.b64decode(result["content"])


def assert_changed_then_idempotent(results, first, again, check=None, diff_of=None):
    assert results[first]["changed"] is True, results[first]
    assert results[again]["changed"] is False, results[again]
    if check:
        assert results[check]["changed"] is True, results[check]
    if diff_of:
        diff = results[diff_of].get("diff")
        assert diff, "no diff returned by %s: %s" % (diff_of, results[diff_of])


# ------------------------------------------------------------------ ksm_info
def test_ksm_info_reads_the_real_kernel(tmp_path, target):
    results = playbook(tmp_path, target, [
        {"name": "info", "samepage.ksm.ksm_info": {"top_processes": 3}, "register": "info"},
        {"name": "info in check mode", "samepage.ksm.ksm_info": {}, "check_mode": True, "register": "check"},
    ])
    ksm = results["info"]["ksm"]
    assert results["info"]["changed"] is False
    assert ksm["available"] is True
    assert int(ksm["knobs"]["run"]) == ksm_knobs.read("run")
    assert int(ksm["knobs"]["pages_to_scan"]) == ksm_knobs.read("pages_to_scan")
    assert set(ksm["counters"]) >= {"pages_sharing", "full_scans"}
    assert results["check"]["changed"] is False and results["check"]["ksm"]


# ------------------------------------------------------------------ ksm_optin_info
def test_ksm_optin_info_reports_the_opt_ins(tmp_path, target):
    if not (ROOT / "plugins" / "modules" / "ksm_optin_info.py").exists():
        pytest.fail("plugins/modules/ksm_optin_info.py is missing")
    # PID 1 of this machine is not systemd: the MemoryKSM probe must say why it cannot work.
    # name: the opt-in a service already has (here our block in an init script with non-UTF-8 bytes).
    init = tmp_path / "init.d"
    init.mkdir()
    script = init / "demo"
    original = (b"#!/bin/sh\n### BEGIN INIT INFO\n# Provides: demo\n### END INIT INFO\n" + CONTENTS["non-utf8"] +
                b"PATH=/sbin:/usr/sbin:/bin:/usr/bin\necho started\n")
    script.write_bytes(original)
    os.chmod(script, 0o755)
    args = ld_preload_args(tmp_path, method="sysv")
    where = dict((k, args[k]) for k in ("init_dir", "envfile_dirs", "systemd_dir", "unit_dirs"))
    results = playbook(tmp_path, target, [
        {"name": "optin", "samepage.ksm.ksm_optin_info": {}, "register": "optin"},
        {"name": "none yet", "samepage.ksm.ksm_optin_info": dict(where, name=["demo"], memoryksm_probe=False),
         "register": "none_yet"},
        {"name": "inject", "samepage.ksm.ld_preload": args, "register": "inject"},
        {"name": "found", "samepage.ksm.ksm_optin_info": dict(where, name=["demo"], memoryksm_probe=False),
         "check_mode": True, "register": "found"},
    ])
    facts = results["optin"]
    assert facts["changed"] is False
    text = json.dumps(facts)
    assert "prctl" in text, facts
    assert results["none_yet"]["services"] == {"demo": {"method": None, "optin": None, "path": None}}
    assert results["inject"]["changed"] is True
    assert results["found"]["changed"] is False
    assert results["found"]["services"] == {"demo": {"method": "sysv", "optin": "preload", "path": str(script)}}


# ------------------------------------------------------------------ ksm_sysfs
def test_ksm_sysfs_on_the_real_kernel(tmp_path, target, kernel_lock):
    before = ksm_knobs.read("sleep_millisecs")
    wanted = before + 7 if before < 10000 else before - 7
    pages = ksm_knobs.read("pages_to_scan")
    settings = {"sleep_millisecs": wanted, "pages_to_scan": pages}
    results = playbook(tmp_path, target, [
        {"name": "check", "samepage.ksm.ksm_sysfs": sysfs_args(settings), "check_mode": True,
         "diff": True, "register": "check"},
        {"name": "read after check", "ansible.builtin.slurp": {"src": str(SYSFS / "sleep_millisecs")},
         "register": "after_check"},
        {"name": "set", "samepage.ksm.ksm_sysfs": sysfs_args(settings), "diff": True, "register": "set"},
        {"name": "again", "samepage.ksm.ksm_sysfs": sysfs_args(settings), "register": "again"},
        {"name": "bad value", "samepage.ksm.ksm_sysfs": sysfs_args({"sleep_millisecs": "12.5"}),
         "ignore_errors": True, "register": "bad"},
    ])
    assert_changed_then_idempotent(results, "set", "again", check="check", diff_of="set")
    assert results["check"].get("diff"), results["check"]
    assert int(slurped(results["after_check"])) == before, "check mode wrote the knob"
    assert ksm_knobs.read("sleep_millisecs") == wanted
    assert results["bad"]["failed"] is True and "sleep_millisecs" in results["bad"]["msg"]
    assert ksm_knobs.read("sleep_millisecs") == wanted, "a refused value was written"


# ------------------------------------------------------------------ ksm_persist
def test_ksm_persist_rc_local_keeps_foreign_bytes(tmp_path, target, foreign):
    rc_local = tmp_path / "rc.local"
    original = b"#!/bin/sh -e\n" + foreign + b"echo hello > /dev/null\n" + foreign + b"exit 0\n"
    rc_local.write_bytes(original)
    os.chmod(rc_local, 0o750)
    args = {"backend": "rc_local", "rc_local_path": str(rc_local),
            "settings": {"run": 1, "pages_to_scan": 1000, "sleep_millisecs": 50}}
    results = playbook(tmp_path, target, [
        {"name": "check", "samepage.ksm.ksm_persist": args, "check_mode": True, "diff": True, "register": "check"},
        {"name": "untouched", "ansible.builtin.slurp": {"src": str(rc_local)}, "register": "untouched"},
        {"name": "persist", "samepage.ksm.ksm_persist": args, "diff": True, "register": "persist"},
        {"name": "again", "samepage.ksm.ksm_persist": args, "register": "again"},
        {"name": "written", "ansible.builtin.slurp": {"src": str(rc_local)}, "register": "written"},
        {"name": "absent", "samepage.ksm.ksm_persist": dict(args, state="absent"), "diff": True,
         "register": "absent"},
        {"name": "absent again", "samepage.ksm.ksm_persist": dict(args, state="absent"), "register": "absent2"},
    ])
    assert_changed_then_idempotent(results, "persist", "again", check="check", diff_of="persist")
    assert slurped(results["untouched"]) == original, "check mode changed rc.local"
    written = slurped(results["written"])
    assert written.count(foreign) == 2 and written.startswith(b"#!/bin/sh -e\n" + foreign)
    assert b"pages_to_scan" in written and written.rstrip().endswith(b"exit 0")
    assert_changed_then_idempotent(results, "absent", "absent2", diff_of="absent")
    assert rc_local.read_bytes() == original, "state=absent did not give back the original bytes"
    assert oct(rc_local.stat().st_mode & 0o7777) == oct(0o750)


# ------------------------------------------------------------------ ld_preload
def ld_preload_args(tmp_path, **extra):
    library = tmp_path / "lib64" / "libksm_preload.so"
    if not library.exists():  # the module refuses a library that is not installed
        library.parent.mkdir()
        library.write_bytes(b"\x7fELF stand-in: the services here are never started\n")
    args = {"service": "demo", "init_dir": str(tmp_path / "init.d"),
            "envfile_dirs": [str(tmp_path / "default")], "systemd_dir": str(tmp_path / "systemd"),
            "unit_dirs": [str(tmp_path / "systemd"), str(tmp_path / "lib-systemd")],
            "library": str(library)}
    args.update(extra)
    return args


def test_ld_preload_sysv_script_keeps_foreign_bytes(tmp_path, target, foreign):
    init = tmp_path / "init.d"
    init.mkdir()
    script = init / "demo"
    original = (b"#!/bin/sh\n### BEGIN INIT INFO\n# Provides: demo\n### END INIT INFO\n" + foreign +
                b"PATH=/sbin:/usr/sbin:/bin:/usr/bin\n" + foreign + b"echo started\n")
    script.write_bytes(original)
    os.chmod(script, 0o755)
    args = ld_preload_args(tmp_path, method="sysv")
    results = playbook(tmp_path, target, [
        {"name": "check", "samepage.ksm.ld_preload": args, "check_mode": True, "diff": True, "register": "check"},
        {"name": "untouched", "ansible.builtin.slurp": {"src": str(script)}, "register": "untouched"},
        {"name": "inject", "samepage.ksm.ld_preload": args, "diff": True, "register": "inject"},
        {"name": "again", "samepage.ksm.ld_preload": args, "register": "again"},
        {"name": "written", "ansible.builtin.slurp": {"src": str(script)}, "register": "written"},
        {"name": "remove", "samepage.ksm.ld_preload": dict(args, state="absent"), "register": "remove"},
        {"name": "remove again", "samepage.ksm.ld_preload": dict(args, state="absent"), "register": "remove2"},
    ])
    assert_changed_then_idempotent(results, "inject", "again", check="check", diff_of="inject")
    assert results["check"].get("diff"), results["check"]
    assert slurped(results["untouched"]) == original, "check mode changed the init script"
    written = slurped(results["written"])
    assert b"LD_PRELOAD" in written and written.count(foreign) == 2
    assert written.index(b"PATH=/sbin") < written.index(b"LD_PRELOAD")
    assert_changed_then_idempotent(results, "remove", "remove2")
    assert script.read_bytes() == original
    assert oct(script.stat().st_mode & 0o7777) == oct(0o755)


def test_ld_preload_envfile_and_systemd_dropin(tmp_path, target, foreign):
    init = tmp_path / "init.d"
    init.mkdir()
    default = tmp_path / "default"
    default.mkdir()
    envfile = default / "demo"
    (init / "demo").write_bytes(b"#!/bin/sh\n[ -r %s ] && . %s\necho x\n" % (
        str(envfile).encode(), str(envfile).encode()))
    os.chmod(init / "demo", 0o755)
    original = b"# settings of demo\n" + foreign + b"DEMO_OPTS=\"-v\"\n"
    envfile.write_bytes(original)
    units = tmp_path / "lib-systemd"
    units.mkdir()
    (tmp_path / "systemd").mkdir()
    (units / "demo.service").write_bytes(b"[Unit]\nDescription=demo " + foreign.strip(b"\n#") +
                                         b"\n[Service]\nExecStart=/bin/true\n")
    env_args = ld_preload_args(tmp_path, method="envfile", envfile_dirs=[str(default)])
    env_args["init_dir"] = str(init)
    sd_args = ld_preload_args(tmp_path, method="systemd")
    dropin = tmp_path / "systemd" / "demo.service.d" / "samepage-ksm.conf"
    results = playbook(tmp_path, target, [
        {"name": "env check", "samepage.ksm.ld_preload": env_args, "check_mode": True, "diff": True,
         "register": "env_check"},
        {"name": "env", "samepage.ksm.ld_preload": env_args, "diff": True, "register": "env"},
        {"name": "env again", "samepage.ksm.ld_preload": env_args, "register": "env_again"},
        {"name": "env written", "ansible.builtin.slurp": {"src": str(envfile)}, "register": "env_written"},
        {"name": "env absent", "samepage.ksm.ld_preload": dict(env_args, state="absent"), "register": "env_absent"},
        {"name": "dropin check", "samepage.ksm.ld_preload": sd_args, "check_mode": True, "diff": True,
         "register": "sd_check"},
        {"name": "dropin", "samepage.ksm.ld_preload": sd_args, "diff": True, "register": "sd"},
        {"name": "dropin again", "samepage.ksm.ld_preload": sd_args, "register": "sd_again"},
        {"name": "dropin written", "ansible.builtin.slurp": {"src": str(dropin)}, "register": "sd_written"},
        {"name": "dropin absent", "samepage.ksm.ld_preload": dict(sd_args, state="absent"), "register": "sd_absent"},
    ])
    assert_changed_then_idempotent(results, "env", "env_again", check="env_check", diff_of="env")
    written = slurped(results["env_written"])
    assert written.startswith(original) or foreign in written
    assert b"LD_PRELOAD" in written and written.count(foreign) == 1
    assert results["env_absent"]["changed"] is True
    assert envfile.read_bytes() == original
    assert_changed_then_idempotent(results, "sd", "sd_again", check="sd_check", diff_of="sd")
    assert b"LD_PRELOAD=%s" % sd_args["library"].encode() in slurped(results["sd_written"])
    assert results["sd_absent"]["changed"] is True
    assert not dropin.exists() and not dropin.parent.exists()


# ------------------------------------------------------------------ ksm_estimate
def test_ksm_estimate_counts_a_real_process(tmp_path, target):
    """A process holding 32 MiB of one repeated page: the estimate finds almost all of it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import mmap, sys, time\n"
         "m = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)\n"
         "page = (b'samepage' * 512)\n"
         "for off in range(0, len(m), 4096): m[off:off + 4096] = page\n"
         "sys.stdout.write('ready\\n'); sys.stdout.flush(); time.sleep(300)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "ready\n"
        results = playbook(tmp_path, target, [
            {"name": "estimate", "samepage.ksm.ksm_estimate": {"pids": [holder.pid], "min_size_mib": 1,
                                                               "time_budget": 60},
             "register": "estimate"},
            {"name": "bad option", "samepage.ksm.ksm_estimate": {"pids": [holder.pid], "sample": 3},
             "ignore_errors": True, "register": "bad"},
        ])
    finally:
        holder.kill()
        holder.wait()
    estimate = results["estimate"]["estimate"]
    assert results["estimate"]["changed"] is False
    assert 28 <= float(estimate["saving_mib"]) <= 32.5, estimate
    assert results["bad"]["failed"] is True and "sample" in results["bad"]["msg"]


def test_every_module_is_covered():
    """A new module must get a run here (and so on every controller and interpreter)."""
    covered = {"ksm_info", "ksm_optin_info", "ksm_sysfs", "ksm_persist", "ld_preload", "ksm_estimate"}
    modules = {p.stem for p in (ROOT / "plugins" / "modules").glob("*.py") if p.stem != "__init__"}
    assert modules <= covered, "modules without a run in tests/matrix: %s" % sorted(modules - covered)
