"""_optin probes: prctl on the running kernel for real; the MemoryKSM unit through fake commands."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os

import pytest

from ansible_collections.samepage.ksm.plugins.module_utils import _optin

EXIT_KSM = ("Job for run-u12.service failed because the control process exited with error code.\n"
            "run-u12.service: Failed at step KSM spawning /bin/cat: Invalid argument\n")


class FakeModule:
    def __init__(self, answers, bins=("systemd-run", "systemctl", "timeout")):
        self.answers = answers
        self.bins = bins
        self.calls = []

    def get_bin_path(self, name, required=False):
        return "/usr/bin/" + name if name in self.bins else None

    def run_command(self, args, environ_update=None):
        self.calls.append(args)
        for key, answer in self.answers.items():
            if key in args[-3:] or any(key == a for a in args):
                return answer
        return (1, "", "unexpected command %r" % (args,))


def test_prctl_probe_on_this_kernel():
    # The testbed's kernel (6.18) keeps the flag across exec; a broken fork/exec/parse says otherwise.
    result = _optin.probe_prctl()
    assert result == {"works": True, "reason": result["reason"]}
    assert "ksm_merge_any: yes" in result["reason"]


def test_prctl_probe_reports_a_failed_exec(tmp_path):
    result = _optin.probe_prctl(cat=str(tmp_path / "no-such-cat"))
    assert result["works"] is False and "could not exec" in result["reason"]


@pytest.mark.parametrize("answer, works, needle", [
    ((0, "ksm_rmap_items 0\nksm_merge_any: yes\nksm_mergeable: yes\n", ""), True, "ksm_merge_any: yes"),
    ((1, "", EXIT_KSM), False, "Failed at step KSM"),
    ((1, "", "Unknown assignment: MemoryKSM=yes\n"), False, "Unknown assignment"),
    ((0, "ksm_rmap_items 0\nksm_merge_any: no\n", ""), False, "ignores the key"),
    ((0, "", ""), False, "no ksm_merge_any line"),
])
def test_memoryksm_probe_outcomes(answer, works, needle):
    module = FakeModule({"MemoryKSM=yes": answer})
    result = _optin.probe_memoryksm(module, running=True)
    assert result["works"] is works
    assert needle in result["reason"]
    args = module.calls[0]
    assert args[:2] == ["/usr/bin/timeout", "60"]
    assert args[2:] == ["/usr/bin/systemd-run", "--quiet", "--wait", "--pipe", "--collect", "-p", "MemoryKSM=yes",
                        "/bin/cat", "/proc/self/ksm_stat"]


def test_memoryksm_probe_needs_running_systemd():
    module = FakeModule({})
    result = _optin.probe_memoryksm(module, running=False)
    assert result["works"] is False and "not the running init" in result["reason"]
    assert module.calls == []


def test_systemd_running_is_the_runtime_dir_not_unit_files(tmp_path):
    assert _optin.systemd_running(str(tmp_path / "run-systemd-system")) is False
    (tmp_path / "run-systemd-system").mkdir()
    assert _optin.systemd_running(str(tmp_path / "run-systemd-system")) is True


def test_optin_facts_shape():
    module = FakeModule({"--version": (0, "systemd 257 (257.9-1)\n+PAM", "")})
    facts = _optin.optin_facts(module, probe_memoryksm_unit=False, running=True)
    assert facts["systemd_version"] == 257 and facts["systemd_running"] is True
    assert facts["kernel_release"] == os.uname()[2]
    assert facts["memoryksm"]["works"] is False and "not probed" in facts["memoryksm"]["reason"]
    assert facts["prctl"]["works"] is True


def test_merge_any_parsing():
    assert _optin.merge_any("ksm_merge_any: yes\n") is True
    assert _optin.merge_any("ksm_merge_any: no\n") is False
    assert _optin.merge_any("ksm_rmap_items 3\n") is None
