"""The real-script corpus: fetch (cached by version), build the world, run every init script's
sandbox once per session, and print the table at the end of the run."""
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
CACHE = os.environ.get("CORPUS_CACHE", os.path.join(ROOT, ".cache", "corpus"))
PARALLEL = int(os.environ.get("CORPUS_PARALLEL", "4"))
sys.path.insert(0, HERE)

import world as world_builder  # noqa: E402

STATE = {}


def prepare():
    if "world" in STATE:
        return STATE
    started = time.monotonic()
    if os.geteuid() != 0:
        raise RuntimeError("the corpus sandbox needs root (mount and pid namespaces, overlayfs)")
    fetch = subprocess.run([os.path.join(HERE, "fetch.sh")], capture_output=True, text=True, check=False)
    STATE["fetch"] = (fetch.stdout.strip().splitlines() or ["fetch.sh printed nothing"])[-1]
    if fetch.returncode != 0:
        raise RuntimeError("tests/corpus/fetch.sh failed:\n%s\n%s" % (fetch.stdout, fetch.stderr))
    STATE["fetch_s"] = time.monotonic() - started
    world, rows = world_builder.build(CACHE, log=lambda text: STATE.setdefault("log", []).append(text))
    STATE["world"], STATE["packages"] = world, rows
    STATE["scripts"] = sorted(e for e in os.listdir(os.path.join(world, "etc", "init.d"))
                              if not e.startswith(".") and e not in ("README", "skeleton"))
    STATE["prepare_s"] = time.monotonic() - started
    return STATE


def run_one(name):
    state = tempfile.mkdtemp(prefix="samepage-corpus-")
    try:
        proc = subprocess.run(
            ["nice", "unshare", "--mount", "--pid", "--net", "--fork", "--kill-child", "--mount-proc",
             os.path.join(HERE, "sandbox.sh"), STATE["world"], state,
             os.path.join(ROOT, ".venv", "bin", "python"), os.path.join(HERE, "inside.py"), name],
            capture_output=True, text=True, timeout=300, check=False,
            env=dict(os.environ, SANDBOX_KEEP=os.path.realpath(ROOT)))
    finally:
        os.rmdir(state)
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return dict(script=name, error="sandbox rc %d: %s %s" % (
            proc.returncode, proc.stdout[-2000:], proc.stderr[-2000:]))


def results():
    if "results" not in STATE:
        prepare()
        started = time.monotonic()
        with ThreadPoolExecutor(max_workers=PARALLEL) as pool:
            STATE["results"] = dict(zip(STATE["scripts"], pool.map(run_one, STATE["scripts"])))
        STATE["run_s"] = time.monotonic() - started
        os.makedirs(os.path.join(ROOT, "build"), exist_ok=True)
        with open(os.path.join(ROOT, "build", "corpus-results.json"), "w") as handle:
            json.dump(STATE["results"], handle, indent=1)
    return STATE["results"]


def pytest_generate_tests(metafunc):
    if "script_name" in metafunc.fixturenames:
        metafunc.parametrize("script_name", prepare()["scripts"])


@pytest.fixture(scope="session")
def corpus():
    return results()


CLEAR = re.compile(r"line \d+|system-wide|also sourced by|not the service's own|does not source|"
                   r"no SysV init script|sources no environment file")


# A daemon binary run for its version or usage line, or a configuration test: not a start.
CHECK_ARGS = re.compile(r"\A(?:-\?|-V|-v|--version|-version|-h|--help|-t|-T|-n|configtest|--test|-k ?configtest)\Z")


def starts(records):
    """The probe records that are daemon starts (pre-flight checks left out)."""
    return [r for r in records if not CHECK_ARGS.match(r["args"].strip())]


def has_library(record):
    return bool(record["ld_preload"]) and world_builder.LIBRARY in record["ld_preload"].replace(":", " ").split() \
        and record["mapped"]


def classify(result):
    """One row of the table for a script's result."""
    row = dict(script=result.get("script"), error=result.get("error"))
    if row["error"]:
        return row
    auto, prctl = result["auto"], result["prctl"]
    row["refused"] = bool(auto.get("refused"))
    row["refused_clearly"] = row["refused"] and bool(CLEAR.search(auto["refused"])) and \
        "nothing was written" in auto["refused"] or (row["refused"] and "looked for" in auto["refused"])
    static = [auto.get("check_writes_nothing")]
    if row["refused"]:
        static += [auto.get("nothing_written"), auto.get("check_agrees")]
    else:
        static += [auto.get("only_named_files"), auto.get("check_agrees"), auto.get("syntax") is None,
                   auto.get("idempotent"), auto.get("absent_ok"), auto.get("absent_idempotent"),
                   auto.get("restored") is None]
    row["static_ok"] = all(static)
    row["decided"] = not row["refused"]
    records = starts((auto.get("start") or {}).get("records") or [])
    row["observed"] = bool(records)
    row["reached"] = bool(records) and all(has_library(r) for r in records)
    row["missed"] = [r for r in records if not has_library(r)]
    row["control_observed"] = bool(starts(result["control"]["records"]))
    row["control_clean"] = not any(r["ld_preload"] or r["merge_any"] for r in result["control"]["records"])
    precords = starts((prctl.get("start") or {}).get("records") or [])
    row["prctl_refused"] = bool(prctl.get("refused"))
    prctl_static = [prctl.get("check_writes_nothing")]
    if row["prctl_refused"]:
        prctl_static += [prctl.get("nothing_written")]
    else:
        prctl_static += [prctl.get("only_named_files"), prctl.get("syntax") is None, prctl.get("idempotent"),
                         prctl.get("absent_ok"), prctl.get("absent_idempotent"), prctl.get("restored") is None]
    row["prctl_static_ok"] = all(prctl_static)
    row["prctl_observed"] = bool(precords)
    row["prctl_reached"] = bool(precords) and all(r["merge_any"] for r in precords)
    envfile = result["envfile"]
    row["envfile_refused"] = bool(envfile.get("refused"))
    row["envfile_refused_clearly"] = row["envfile_refused"] and bool(CLEAR.search(envfile["refused"]))
    envfile_static = [envfile.get("check_writes_nothing")]
    if row["envfile_refused"]:
        envfile_static += [envfile.get("nothing_written"), envfile.get("check_agrees")]
    else:
        envfile_static += [envfile.get("only_named_files"), envfile.get("syntax") is None, envfile.get("idempotent"),
                           envfile.get("absent_ok"), envfile.get("absent_idempotent"), envfile.get("restored") is None]
    row["envfile_static_ok"] = all(envfile_static)
    erecords = starts((envfile.get("start") or {}).get("records") or [])
    row["envfile_observed"] = bool(erecords)
    row["envfile_reached"] = bool(erecords) and all(has_library(r) for r in erecords)
    row["envfile_missed"] = [r for r in erecords if not has_library(r)]
    row["unnamed"] = []
    for one in (auto, envfile, prctl):
        named = (one.get("present") or {}).get("files") or []
        row["unnamed"].extend(p for p in one.get("written") or [] if p not in named)
    row["method"] = (auto.get("present") or {}).get("method")
    return row


def table(rows):
    ok = [r for r in rows if not r.get("error")]

    def count(key):
        return sum(1 for r in ok if r.get(key))
    lines = [
        "| real init scripts (Debian bookworm, %d packages) | count |" % len(STATE.get("packages", [])),
        "|---|--:|",
        "| scripts tried | %d |" % len(rows),
        "| static checks ok (check mode writes nothing, sh -n, idempotent, absent restores bytes+mode) | %d |"
        % count("static_ok"),
        "| starts decided (method=auto edited a file) | %d |" % count("decided"),
        "| ... library reached the exec'd daemon (LD_PRELOAD + mapped) | %d |" % count("reached"),
        "| ... daemon start not observed in the sandbox | %d |" % sum(1 for r in ok if r["decided"] and not r["observed"]),
        "| ... decided start where the daemon missed the library | %d |" % sum(1 for r in ok if r["decided"] and r["missed"]),
        "| refused clearly (file, line, method that works; nothing written) | %d |" % count("refused_clearly"),
        "| method=envfile: the service's own env file edited | %d |" % sum(1 for r in ok if not r["envfile_refused"]),
        "| ... library reached the exec'd daemon | %d |" % count("envfile_reached"),
        "| ... daemon missed the library | %d |" % sum(1 for r in ok if r["envfile_missed"]),
        "| method=envfile refused clearly (shared or system-wide file, or none of its own) | %d |"
        % count("envfile_refused_clearly"),
        "| method=prctl: flag reached the exec'd daemon (ksm_merge_any) | %d |" % count("prctl_reached"),
        "| method=prctl refused | %d |" % count("prctl_refused"),
        "| services opted in that were not named (files written outside the named service's) | %d |"
        % sum(len(r["unnamed"]) for r in ok),
        "| sandbox errors | %d |" % (len(rows) - len(ok)),
    ]
    return lines


def pytest_terminal_summary(terminalreporter):
    if "results" not in STATE:
        return
    rows = [classify(STATE["results"][name]) for name in STATE["scripts"]]
    write = terminalreporter.write_line
    write("")
    write("corpus: %s" % STATE.get("fetch", ""))
    for text in STATE.get("log", []):
        write(text)
    for line in table(rows):
        write(line)
    methods = {}
    for row in rows:
        if row.get("decided"):
            methods[row["method"]] = methods.get(row["method"], 0) + 1
    write("methods chosen by auto: %s" % ", ".join("%s %d" % item for item in sorted(methods.items())))
    for row in rows:
        if row.get("refused"):
            message = STATE["results"][row["script"]]["auto"]["refused"]
            write("  refused %-22s %s" % (row["script"], message[:230]))
    for row in rows:
        if row.get("envfile_refused") and ("samba" in STATE["results"][row["script"]]["envfile"]["refused"]
                                           or "system-wide" in STATE["results"][row["script"]]["envfile"]["refused"]):
            write("  envfile refused %-15s %s" % (row["script"], STATE["results"][row["script"]]["envfile"]["refused"][:230]))
    for row in rows:
        if row.get("decided") and not row.get("observed"):
            write("  not observed %-17s %s" % (row["script"], STATE["results"][row["script"]]["auto"]["start"]["output"][-150:].replace("\n", " | ")))
    write("corpus stage: fetch %.1f s, world %.1f s, sandboxes %.1f s (%d in parallel)" % (
        STATE.get("fetch_s", 0), STATE.get("prepare_s", 0) - STATE.get("fetch_s", 0), STATE.get("run_s", 0), PARALLEL))
