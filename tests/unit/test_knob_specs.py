"""The knob lists Ansible needs outside _ksm (doc fragment, role argument specs) are generated from
_ksm.KNOBS: they must match the table, and the table is the only place production code spells a knob."""
import pathlib
import re
import subprocess
import sys

import yaml

from ansible_collections.samepage.ksm.plugins.module_utils import _ksm

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_generated_files_match_the_table():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "gen_knob_specs.py"), "--check"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_role_specs_reject_what_the_table_does_not_know():
    specs = yaml.safe_load((ROOT / "roles" / "node" / "meta" / "argument_specs.yml").read_text())
    options = specs["argument_specs"]["main"]["options"]
    for var in ("ksm_node_settings", "ksm_node_boost_settings"):
        assert list(options[var]["options"]) == list(_ksm.KNOB_NAMES)
        assert all(spec["type"] == "raw" for spec in options[var]["options"].values())


# The code that sets, persists and checks knobs. (Reports that print a knob's value, such as the
# Prometheus filter's metric names, read the table's output and are not a second schema.)
SETTERS = [ROOT / "plugins" / "modules" / name for name in ("ksm_sysfs.py", "ksm_persist.py", "ksm_info.py")] + [
    ROOT / "plugins" / "module_utils" / name for name in ("_persist.py", "_node_checks.py", "_ksm_info.py")] + sorted(
    path for path in (ROOT / "roles" / "node").rglob("*.yml") if path.name != "argument_specs.yml")
# The role's profiles are named sets of knob values (data); the advisor switch is one of them.
PROFILE_LINES = re.compile(r"^\s+(run|pages_to_scan|sleep_millisecs|advisor_mode): [\w-]+$|'advisor_mode': 'none'")


def test_knob_names_are_spelled_only_in_the_table():
    """The modules, their module_utils and the node role name no knob outside _ksm.KNOBS (docs aside)."""
    # a knob named in code is a quoted name (in YAML also a key); prose in messages may use the words
    names = "|".join(_ksm.KNOB_NAMES)
    pattern = re.compile(r"""(['"])(%s)\1|^\s*(%s):|\b(%s)=|\.(%s)\b""" % (names, names, names, names))
    offenders = []
    for path in SETTERS:
        text = path.read_text()
        if path.suffix == ".py":
            # documentation blocks are docs; code is what counts
            text = re.sub(r"(DOCUMENTATION|EXAMPLES|RETURN) = r'''.*?'''", "", text, flags=re.S)
            text = re.sub(r'""".*?"""', "", text, flags=re.S)
            text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        else:
            text = "\n".join(line.split("#", 1)[0] for line in text.splitlines())
        for number, line in enumerate(text.splitlines(), 1):
            if pattern.search(line) and not (path.name == "main.yml" and PROFILE_LINES.search(line)):
                offenders.append("%s:%d: %s" % (path.relative_to(ROOT), number, line.strip()))
    assert offenders == [], "\n".join(offenders)
