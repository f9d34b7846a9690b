"""Every init script that real Debian packages ship, through ld_preload in a sandbox.

Static checks for every script; for every script whose start reaches a daemon binary (a probe, see
world.py), the dynamic check that the process the start path finally exec'd got the library (and,
with method=prctl, the KSM flag). A refusal must name the file and line (or why no file is the
service's own) and write nothing. No file outside the named service's own is ever written.
"""
from conftest import classify, starts

MIN_SCRIPTS = 40


def test_corpus_is_large_enough(corpus):
    assert len(corpus) >= MIN_SCRIPTS, "only %d init scripts in the corpus" % len(corpus)
    errors = [name for name, result in corpus.items() if result.get("error")]
    assert not errors, "sandbox errors: %s" % {name: corpus[name]["error"][:500] for name in errors}


def test_script(corpus, script_name):
    result = corpus[script_name]
    assert not result.get("error"), result.get("error")
    row = classify(result)
    auto = result["auto"]
    assert row["control_clean"], "the untouched script's daemon already had LD_PRELOAD or the KSM flag: %s" % (
        result["control"]["records"],)
    assert not row["unnamed"], "files written that do not belong to %s: %s" % (script_name, row["unnamed"])
    assert row["static_ok"], "static checks failed: %s" % {k: v for k, v in auto.items() if k != "start"}
    if row["refused"]:
        assert row["refused_clearly"], "refusal without file/line and a way out: %s" % auto["refused"]
    else:
        assert not row["missed"], "decided start, but the daemon missed the library: %s" % row["missed"]
        if row["control_observed"]:
            assert row["observed"], "the daemon ran before the edit but not after: %s" % auto["start"]
    envfile = result["envfile"]
    assert row["envfile_static_ok"], "envfile static checks failed: %s" % {k: v for k, v in envfile.items() if k != "start"}
    if row["envfile_refused"]:
        assert row["envfile_refused_clearly"], "envfile refusal without a reason: %s" % envfile["refused"]
    else:
        assert not row["envfile_missed"], "envfile start, but the daemon missed the library: %s" % row["envfile_missed"]
    prctl = result["prctl"]
    assert row["prctl_static_ok"], "prctl static checks failed: %s" % {k: v for k, v in prctl.items() if k != "start"}
    if not row["prctl_refused"]:
        precords = starts((prctl.get("start") or {}).get("records") or [])
        assert all(r["merge_any"] for r in precords), "prctl start without the flag: %s" % precords
        if row["control_observed"]:
            assert precords, "the daemon ran before the prctl block but not after: %s" % prctl["start"]
