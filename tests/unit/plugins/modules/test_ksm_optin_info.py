"""samepage.ksm.ksm_optin_info's ``services``: the opt-in each named service already has from us.

Each artefact is written by samepage.ksm.ld_preload itself into a host-like tree built from the
ksm-demo fixture (its real init script, env file and unit), then read back by ksm_optin_info,
which must name the method and the file and change nothing, also in check mode.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import pathlib

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _optin
from ansible_collections.samepage.ksm.plugins.modules import ksm_optin_info, ld_preload

DEMO = pathlib.Path(__file__).resolve().parents[3] / "fixtures" / "demo"
LOCATIONS = ("dropin_name", "init_dir", "envfile_dirs", "systemd_dir", "unit_dirs")


@pytest.fixture
def tree(tmp_path):
    """init.d/ksm-demo (sourcing the tree's default/ksm-demo), default/ksm-demo and the unit."""
    root = tmp_path / "host"
    for sub in ("init.d", "sysconfig", "default", "etc-systemd", "lib-systemd"):
        (root / sub).mkdir(parents=True)
    envfile = root / "default" / "ksm-demo"
    script = (DEMO / "ksm-demo.init").read_text().replace("/etc/default/ksm-demo", str(envfile))
    (root / "init.d" / "ksm-demo").write_text(script)
    os.chmod(str(root / "init.d" / "ksm-demo"), 0o755)
    envfile.write_text((DEMO / "ksm-demo.default").read_text())
    (root / "lib-systemd" / "ksm-demo.service").write_text((DEMO / "ksm-demo.service").read_text())
    return root


@pytest.fixture
def library(tmp_path):
    path = tmp_path / "libksm_preload.so"
    path.write_bytes(b"\x7fELF stand-in: only its existence is checked")
    return str(path)


@pytest.fixture
def launcher(tmp_path):
    path = tmp_path / "samepage-ksm-merge"
    path.write_text("#!/bin/sh\nexec \"$@\"\n")
    os.chmod(str(path), 0o755)
    return str(path)


def where(tree):
    return {
        "init_dir": str(tree / "init.d"),
        "envfile_dirs": [str(tree / "sysconfig"), str(tree / "default")],
        "systemd_dir": str(tree / "etc-systemd"),
        "unit_dirs": [str(tree / "etc-systemd"), str(tree / "lib-systemd")],
    }


def systemd_host(monkeypatch, running):
    """systemd as the running init (or not), and a MemoryKSM probe that works."""
    monkeypatch.setattr(_optin, "systemd_running", lambda *a: running)
    monkeypatch.setattr(_optin, "probe_memoryksm",
                        lambda module, **k: {"works": True, "reason": "injected: works"})


def info(run_module, tree, names, check_mode=False):
    failed, result = run_module(ksm_optin_info, dict(where(tree), name=names, memoryksm_probe=False),
                                check_mode=check_mode)
    assert not failed, result.get("msg")
    assert result["changed"] is False
    return result


# method given to ld_preload -> (systemd runs, method reported, optin, file that holds it)
CASES = {
    "sysv": (False, "sysv", "preload", "init.d/ksm-demo"),
    "envfile": (False, "envfile", "preload", "default/ksm-demo"),
    "prctl": (False, "prctl", "prctl", "init.d/ksm-demo"),
    "systemd": (True, "systemd", "preload", "etc-systemd/ksm-demo.service.d/samepage-ksm.conf"),
    "memoryksm": (True, "memoryksm", "memoryksm", "etc-systemd/ksm-demo.service.d/samepage-ksm.conf"),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_reports_the_artefact_ld_preload_wrote(run_module, tree, library, launcher, digest, monkeypatch, method):
    running, reported, optin, path = CASES[method]
    systemd_host(monkeypatch, running)
    assert info(run_module, tree, ["ksm-demo"])["services"] == {
        "ksm-demo": {"method": None, "optin": None, "path": None}}

    failed, result = run_module(ld_preload, dict(where(tree), name="ksm-demo", method=method, library=library,
                                                 launcher=launcher))
    assert not failed and result["changed"], result.get("msg")

    before = digest(tree)
    for check_mode in (True, False):
        found = info(run_module, tree, ["ksm-demo", "ksm-demo.service"], check_mode=check_mode)["services"]
        expected = {"method": reported, "optin": optin, "path": str(tree / path)}
        assert found == {"ksm-demo": expected, "ksm-demo.service": expected}
    assert digest(tree) == before

    # the same detection keeps the method in ld_preload's auto: nothing to change there either
    failed, result = run_module(ld_preload, dict(where(tree), name="ksm-demo", library=library, launcher=launcher))
    assert not failed and not result["changed"] and result["method"] == reported
    assert digest(tree) == before

    # taken out again: nothing reported
    failed, result = run_module(ld_preload, dict(where(tree), name="ksm-demo", state="absent", method=method))
    assert not failed and result["changed"], result.get("msg")
    assert info(run_module, tree, ["ksm-demo"])["services"]["ksm-demo"]["method"] is None


def test_each_service_on_its_own(run_module, tree, library, monkeypatch):
    systemd_host(monkeypatch, False)
    (tree / "init.d" / "other").write_text((tree / "init.d" / "ksm-demo").read_text().replace("ksm-demo", "other"))
    failed, result = run_module(ld_preload, dict(where(tree), name="ksm-demo", method="sysv", library=library))
    assert not failed and result["changed"]
    services = info(run_module, tree, ["other", "ksm-demo", "missing"])["services"]
    assert services["ksm-demo"]["method"] == "sysv"
    assert services["other"] == {"method": None, "optin": None, "path": None}
    assert services["missing"] == {"method": None, "optin": None, "path": None}


def test_a_block_of_another_dropin_name_is_not_ours(run_module, tree, library, monkeypatch):
    systemd_host(monkeypatch, True)
    failed, result = run_module(ld_preload, dict(where(tree), name="ksm-demo", method="systemd", library=library))
    assert not failed and result["changed"]
    failed, result = run_module(ksm_optin_info, dict(where(tree), name=["ksm-demo"], dropin_name="50-other.conf",
                                                     memoryksm_probe=False))
    assert not failed and result["services"]["ksm-demo"]["method"] is None


def test_without_name_no_services(run_module, tree):
    result = info(run_module, tree, [])
    assert result["services"] == {}
    assert set(result) >= {"prctl", "memoryksm", "systemd_running", "kernel_release"}


@pytest.mark.parametrize("args, needle", [
    ({"name": ["../etc/passwd"]}, "name '../etc/passwd'"),
    ({"name": ["ok", "-x"]}, "name '-x'"),
    ({"name": ["ksm-demo"], "dropin_name": "../x.conf"}, "dropin_name"),
    ({"name": ["ksm-demo"], "init_dir": "relative/init.d"}, "init_dir 'relative/init.d' must be an absolute path"),
])
def test_bad_input_names_the_option(run_module, tree, digest, args, needle):
    before = digest(tree)
    failed, result = run_module(ksm_optin_info, dict(where(tree), memoryksm_probe=False, **args))
    assert failed and needle in result["msg"], result["msg"]
    assert digest(tree) == before


def test_locations_default_to_ld_preloads():
    """The same files as ld_preload looks at, unless told otherwise."""
    ours, theirs = ksm_optin_info.argument_spec(), ld_preload.argument_spec()
    for option in LOCATIONS:
        assert ours[option] == dict(theirs[option]), option
