"""Run inside the corpus sandbox (sandbox.sh) for one init script; prints one JSON result.

Steps, all on the real script as its package ships it, with the real ld_preload module (called
in-process, like the unit tests do) at its default paths (/etc/init.d, /etc/default, ...):
  control start -> check mode (+diff) -> present -> present again -> start -> absent -> absent again
  -> the same with method=envfile (the service's own env file or a clear refusal) and method=prctl.
A start runs `/etc/init.d/NAME start` the way `service` does (env -i, fixed PATH), in its own pid
namespace, with a time limit; the daemon binaries are probes (see world.py) that record the
environment, ksm_stat and maps of the process the start path exec'd.
"""
import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "build", "collections"))

from ansible.module_utils import basic  # noqa: E402
from ansible.module_utils.testing import patch_module_args  # noqa: E402

from ansible_collections.samepage.ksm.plugins.modules import ld_preload  # noqa: E402

LIBRARY = "/usr/lib64/libksm_preload.so"
LAUNCHER = "/usr/local/sbin/samepage-ksm-merge"
PROBES = "/run/corpus-probe"
UPPER = "/run/corpus-upper"
# Paths under the upper layer that the machinery itself writes (Python caches, module temp dirs).
NOISE = ("root/.ansible/", "root/.cache/")
START_TIMEOUT = float(os.environ.get("CORPUS_START_TIMEOUT", "30"))
# A script whose untouched start hung without ever reaching a daemon gets this much afterwards.
HUNG_TIMEOUT = float(os.environ.get("CORPUS_HUNG_TIMEOUT", "6"))
TIMEOUT = {}
SETTLE = float(os.environ.get("CORPUS_SETTLE", "1.5"))


class Done(Exception):
    def __init__(self, result):
        Exception.__init__(self, result.get("msg", ""))
        self.result = result


def _exit(self, **kwargs):
    kwargs.setdefault("changed", False)
    kwargs.setdefault("failed", False)
    raise Done(kwargs)


def _fail(self, msg, **kwargs):
    kwargs.update(msg=msg, failed=True)
    raise Done(kwargs)


basic.AnsibleModule.exit_json = _exit
basic.AnsibleModule.fail_json = _fail
WARNINGS = []
basic.AnsibleModule.warn = lambda self, text: WARNINGS.append(text)


def module(name, check=False, diff=False, **extra):
    args = dict(name=name, _ansible_check_mode=check, _ansible_diff=diff, _ansible_remote_tmp="/tmp")
    args.update(extra)
    with patch_module_args(args):
        try:
            ld_preload.main()
        except Done as done:
            return done.result
    raise AssertionError("module returned without exit_json/fail_json")


def upper_files():
    """{path: sha256+mode} of every file written to the overlay since the sandbox started."""
    found = {}
    for directory, dirs, files in os.walk(UPPER):
        for entry in files:
            full = os.path.join(directory, entry)
            rel = os.path.relpath(full, UPPER)
            if rel.startswith(NOISE) or "/__pycache__/" in "/" + rel:
                continue
            st = os.lstat(full)
            if stat.S_ISCHR(st.st_mode):
                found["/" + rel] = "whiteout"
                continue
            with open(full, "rb") as handle:
                found["/" + rel] = "%s %o" % (hashlib.sha256(handle.read()).hexdigest(), st.st_mode)
    return found


def written_between(before, after):
    return sorted(p for p in set(before) | set(after) if before.get(p) != after.get(p))


def snapshot(path):
    try:
        st = os.stat(path)
    except OSError:
        return None
    with open(path, "rb") as handle:
        return dict(data=handle.read(), mode=stat.S_IMODE(st.st_mode))


def shell_of(path):
    with open(path, "rb") as handle:
        first = handle.readline().decode("latin-1")
    if first.startswith("#!"):
        words = first[2:].split()
        if words:
            name = os.path.basename(words[-1] if os.path.basename(words[0]) == "env" else words[0])
            if name in ("bash", "sh", "dash", "ksh"):
                return shutil.which(name) or "/bin/sh"
    return "/bin/sh"


def syntax_ok(paths):
    for path in paths:
        if not os.path.isfile(path):
            continue
        shell = shell_of(path)
        proc = subprocess.run([shell, "-n", path], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            return "%s -n %s: %s" % (shell, path, proc.stderr.strip())
    return None


# The script is pid 1 of its namespace: when it exits, every daemon it left in the background dies.
# Linger until the probes have gone quiet (0.3 s without a new record, at most 2 s) so that those
# daemons are recorded too.
LINGER = """"$0" start; rc=$?
i=0; last=-1
while [ $i -lt 20 ]; do
    now=$(ls /run/corpus-probe | wc -l)
    [ "$now" = "$last" ] && [ $i -ge 3 ] && break
    last=$now; i=$((i + 1)); sleep 0.1
done
exit $rc"""


def _daemon_started():
    """A probe recorded a start (not a version or usage check)."""
    for entry in os.listdir(PROBES):
        if entry.endswith(".exe"):
            try:
                with open(os.path.join(PROBES, entry), "rb") as handle:
                    lines = handle.read().decode("latin-1").splitlines()
            except OSError:
                continue
            if len(lines) > 1 and lines[1].strip() not in ("-?", "-V", "-v", "--version", "-h", "--help", "-t"):
                return True
    return False


def start(name, timeout=None):
    """Start the service as `service NAME start` does; the probes' records of what its daemons got.

    The start ends when the script returns, or SETTLE seconds after a daemon start was recorded
    (scripts that then wait for a pid file the probe never writes), or at START_TIMEOUT.
    """
    for entry in os.listdir(PROBES):
        os.unlink(os.path.join(PROBES, entry))
    command = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
               "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "TERM=dumb",
               "LANG=C", "/bin/sh", "-c", LINGER, "/etc/init.d/%s" % name]
    with open("/tmp/corpus-start.out", "w+b") as output:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=output, stderr=output)
        deadline = time.monotonic() + (timeout or START_TIMEOUT)
        seen = None
        while proc.poll() is None and time.monotonic() < deadline:
            if seen is None and _daemon_started():
                seen = time.monotonic()
            if seen is not None and time.monotonic() - seen > SETTLE:
                break
            time.sleep(0.1)
        cut = proc.poll() is None
        if cut:
            proc.kill()   # --kill-child: the pid namespace and everything in it goes too
        proc.wait()
        output.seek(0)
        text = output.read().decode("latin-1")[-400:]
    records = []
    for entry in sorted(os.listdir(PROBES), key=lambda e: (len(e), e)):
        if not entry.endswith(".exe"):
            continue
        pid = entry[:-4]
        record = dict(pid=int(pid))
        with open(os.path.join(PROBES, entry), "rb") as handle:
            lines = handle.read().decode("latin-1").splitlines()
        record["exe"] = lines[0] if lines else "?"
        record["args"] = lines[1] if len(lines) > 1 else ""
        env = {}
        try:
            with open(os.path.join(PROBES, pid + ".environ"), "rb") as handle:
                for item in handle.read().split(b"\0"):
                    if b"=" in item:
                        key, value = item.decode("latin-1").split("=", 1)
                        env[key] = value
        except OSError:
            pass
        record["ld_preload"] = env.get("LD_PRELOAD")
        try:
            with open(os.path.join(PROBES, pid + ".maps"), "rb") as handle:
                record["mapped"] = LIBRARY.encode() in handle.read()
        except OSError:
            record["mapped"] = False
        try:
            with open(os.path.join(PROBES, pid + ".ksm"), "rb") as handle:
                record["merge_any"] = b"ksm_merge_any: yes" in handle.read()
        except OSError:
            record["merge_any"] = False
        records.append(record)
    return dict(rc=proc.returncode, cut=cut, records=records, output=text)


def restored(originals, files):
    """None when every file is back as it was (bytes and mode), else what differs."""
    for path in files:
        now = snapshot(path)
        was = originals.get(path)
        if was is None and now is not None:
            return "%s still exists" % path
        if was is not None and now != was:
            return "%s differs from the original (bytes or mode)" % path
    return None


def run_method(name, out, method, extra):
    """One pass: check, present, again, start, absent, again. Fills out[...] with what it saw."""
    before_check = upper_files()
    check = module(name, check=True, diff=True, method=method, **extra)
    out["check_writes_nothing"] = upper_files() == before_check
    out["check_failed"] = bool(check.get("failed"))
    present = module(name, method=method, **extra)
    out["present"] = {k: present.get(k) for k in ("failed", "changed", "method", "path", "files", "msg", "reason")}
    after_present = upper_files()
    written = written_between(before_check, after_present)
    out["written"] = written
    if present.get("failed"):
        out["refused"] = present.get("msg")
        out["nothing_written"] = written == []
        out["check_agrees"] = check.get("failed") is True and check.get("msg") == present.get("msg")
        return
    files = present.get("files") or []
    out["only_named_files"] = written == sorted(files)
    out["check_agrees"] = check.get("changed") == present.get("changed")
    out["syntax"] = syntax_ok(files)
    again = module(name, method=method, **extra)
    out["idempotent"] = not again.get("failed") and not again.get("changed")
    out["start"] = start(name, TIMEOUT.get("later"))
    absent = module(name, state="absent", method=method, **extra)
    out["absent_ok"] = not absent.get("failed") and absent.get("changed") == bool(files)
    out["absent_msg"] = absent.get("msg")
    absent_again = module(name, state="absent", method=method, **extra)
    out["absent_idempotent"] = not absent_again.get("failed") and not absent_again.get("changed")
    out["restored"] = restored(ORIGINALS, files)


ORIGINALS = {}


def main():
    name = sys.argv[1]
    result = dict(script=name)
    script = "/etc/init.d/" + name
    ORIGINALS[script] = snapshot(script)
    ORIGINALS[os.path.realpath(script)] = snapshot(script)   # a script may be a link (ups-monitor)
    # Every file the module might touch, as it was: the script, env files, envvars.
    for directory in ("/etc/default", "/etc/sysconfig", "/etc/apache2"):
        if os.path.isdir(directory):
            for entry in os.listdir(directory):
                path = os.path.join(directory, entry)
                if os.path.isfile(path):
                    ORIGINALS[path] = snapshot(path)
    result["control"] = start(name)
    control = result["control"]
    if control["cut"] and not control["records"]:
        TIMEOUT["later"] = HUNG_TIMEOUT
    result["auto"] = {}
    run_method(name, result["auto"], "auto", {})
    result["envfile"] = {}
    run_method(name, result["envfile"], "envfile", {})
    result["prctl"] = {}
    run_method(name, result["prctl"], "prctl", {"launcher": LAUNCHER})
    result["warnings"] = WARNINGS
    print(json.dumps(result))


if __name__ == "__main__":
    main()
