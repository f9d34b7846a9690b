"""Unit-test helpers: import the collection by its FQCN and run a module's main() in-process."""
import hashlib
import os
import pathlib
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
COLLECTIONS = ROOT / "build" / "collections"
if not (COLLECTIONS / "ansible_collections" / "samepage" / "ksm").exists():
    raise RuntimeError("run scripts/bootstrap.sh first: %s is missing" % COLLECTIONS)
sys.path.insert(0, str(COLLECTIONS))

from ansible.module_utils import basic  # noqa: E402
try:
    from ansible.module_utils.testing import patch_module_args  # noqa: E402
except ImportError:  # ansible-core < 2.19 (make test-matrix runs these tests on 2.16 and 2.18)
    import contextlib
    import json

    @contextlib.contextmanager
    def patch_module_args(args):
        saved = basic._ANSIBLE_ARGS
        basic._ANSIBLE_ARGS = json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode()
        try:
            yield
        finally:
            basic._ANSIBLE_ARGS = saved


class ModuleExit(Exception):
    """exit_json / fail_json, caught: .result is the dict, .failed tells which."""

    def __init__(self, result, failed):
        super().__init__(result.get("msg", ""))
        self.result = result
        self.failed = failed


def _exit_json(self, **kwargs):
    kwargs.setdefault("changed", False)
    raise ModuleExit(kwargs, failed=False)


def _fail_json(self, msg, **kwargs):
    kwargs["msg"] = msg
    kwargs["failed"] = True
    raise ModuleExit(kwargs, failed=True)


@pytest.fixture
def run_module(monkeypatch):
    """run_module(module, args, check_mode=False, diff=False) -> (failed, result dict)."""
    monkeypatch.setattr(basic.AnsibleModule, "exit_json", _exit_json)
    monkeypatch.setattr(basic.AnsibleModule, "fail_json", _fail_json)

    def run(module, args, check_mode=False, diff=False):
        args = dict(args)
        args["_ansible_check_mode"] = check_mode
        args["_ansible_diff"] = diff
        args.setdefault("_ansible_remote_tmp", "/tmp")
        with patch_module_args(args):
            try:
                module.main()
            except ModuleExit as done:
                return done.failed, done.result
        raise AssertionError("module returned without exit_json/fail_json")

    return run


@pytest.fixture
def warned(monkeypatch):
    """Warnings the module emitted during the test (the in-process runner does not return them)."""
    messages = []
    monkeypatch.setattr(basic.AnsibleModule, "warn", lambda self, text: messages.append(text))
    return messages


def tree_digest(path):
    """A digest of every file name, mode and content under path: proves 'nothing was written'."""
    digest = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(path)):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            st = os.lstat(full)
            digest.update(("%s %o\n" % (os.path.relpath(full, path), st.st_mode)).encode())
            if os.path.isfile(full) and not os.path.islink(full):
                with open(full, "rb") as handle:
                    digest.update(handle.read())
    return digest.hexdigest()


@pytest.fixture
def digest():
    return tree_digest


DEFAULT_KNOBS = {
    "run": "0", "pages_to_scan": "100", "sleep_millisecs": "20", "merge_across_nodes": "1",
    "use_zero_pages": "0", "max_page_sharing": "256", "stable_node_chains_prune_millisecs": "2000",
    "smart_scan": "1", "advisor_mode": "[none] scan-time", "advisor_max_cpu": "70",
    "advisor_min_pages_to_scan": "500", "advisor_max_pages_to_scan": "30000",
    "advisor_target_scan_time": "200",
    "pages_shared": "0", "pages_sharing": "0", "pages_unshared": "0", "pages_volatile": "0",
    "pages_scanned": "0", "pages_skipped": "0", "full_scans": "0", "general_profit": "0",
    "ksm_zero_pages": "0", "stable_node_chains": "0", "stable_node_dups": "0",
}


@pytest.fixture
def fake_sysfs(tmp_path):
    """A temporary directory laid out like a 6.18 kernel's /sys/kernel/mm/ksm at its defaults."""
    root = tmp_path / "ksm"
    root.mkdir()
    for name, value in DEFAULT_KNOBS.items():
        (root / name).write_text(value + "\n")
    return root


@pytest.fixture
def old_target(tmp_path):
    """old_target(version) -> (pyenv's Python VERSION, a lib dir holding the module_utils).

    Python 2 has no namespace packages, so the collection's module_utils are laid out with
    __init__.py files, as Ansible's module payload does on a target; the caller puts the lib dir
    on sys.path of the old interpreter.
    """
    lib = tmp_path / "lib"
    pkg = lib / "ansible_collections" / "samepage" / "ksm" / "plugins" / "module_utils"
    pkg.mkdir(parents=True)
    for level in [pkg] + list(pkg.parents)[:4]:
        (level / "__init__.py").write_text("")
    for source in (ROOT / "plugins" / "module_utils").glob("_*.py"):
        (pkg / source.name).write_bytes(source.read_bytes())

    def find(version):
        python = pathlib.Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions" / version / "bin" / "python"
        assert python.exists(), "pyenv's Python %s is part of this machine kind (TESTBED.md); missing: %s" % (version, python)
        return python, lib

    return find
