"""ksm_estimate_report: nodes ranked by estimated saving, unreachable and failed hosts listed as such."""
import json

import pytest
from ansible.errors import AnsibleFilterError

from ansible_collections.samepage.ksm.plugins.filter.ksm_estimate_report import ksm_estimate_report


def estimate(saving_mib, percent, groups=(), complete=True):
    return {"changed": False, "estimate": {
        "host": "h", "saving_bytes": int(saving_mib * 1048576), "saving_mib": saving_mib,
        "saving_percent_of_ram": percent, "scanned_mib": 1000.0, "mem_total_bytes": 8 << 30, "candidates": 4,
        "complete": complete, "groups": list(groups), "sample": {"final": 1}, "cpu_seconds": 1.5,
        "elapsed_seconds": 1.6}}


GROUPS = [
    {"kind": "container", "id": "ab" * 32, "name": "web1", "runtime": "podman", "saving_mib": 40.5},
    {"kind": "unit", "id": "mariadb.service", "name": "mariadb.service", "runtime": "systemd", "saving_mib": 9.5},
    {"kind": "host", "id": "/", "name": None, "runtime": None, "saving_mib": 0.25},
    {"kind": "lxc", "id": "ct1", "name": "ct1", "runtime": "lxc", "saving_mib": 0.1},
]


def test_ranks_by_saving_and_lists_the_rest_as_such():
    report = ksm_estimate_report({
        "small": estimate(10.0, 0.12),
        "big": estimate(50.25, 0.61, GROUPS),
        "down": {"unreachable": True, "msg": "Failed to connect\nmore"},
        "broken": {"failed": True, "msg": "reading other processes' memory needs root"},
        "partial": estimate(20.0, None, complete=False),
    }, "2026-12-01T00:00:00Z")
    order = [h["host"] for h in report["hosts"]]
    assert order == ["big", "partial", "small", "broken", "down"]
    lines = report["markdown"].splitlines()
    assert "| 1 | big | ok | 50.25 | 0.61 | 1000.00 | 4 | podman web1 40.50 MiB, mariadb.service 9.50 MiB, host / 0.25 MiB |" in lines
    assert "| 2 | partial | partial (time budget) | 20.00 | n/a |" in report["markdown"]
    assert "| - | down | unreachable: Failed to connect | n/a |" in report["markdown"]
    assert "| - | broken | failed: reading other processes' memory needs root |" in report["markdown"]
    assert report["totals"] == {"hosts": 5, "estimated": 3, "unreachable": 1, "failed": 1,
                                "saving_bytes": int(50.25 * 1048576) + int(20 * 1048576) + int(10 * 1048576),
                                "saving_mib": 80.25, "scanned_mib": 3000.0}
    data = json.loads(report["json"])
    assert data["generated"] == "2026-12-01T00:00:00Z" and len(data["hosts"][0]["groups"]) == 4
    assert "ct1" not in report["markdown"]        # beyond top=3 in the table, kept in the JSON


def test_no_result_is_failed_and_bad_input_is_refused():
    report = ksm_estimate_report({"x": None})
    assert report["hosts"][0]["status"] == "failed" and report["totals"]["estimated"] == 0
    with pytest.raises(AnsibleFilterError, match="expected a dict"):
        ksm_estimate_report(["x"])
    with pytest.raises(AnsibleFilterError, match="top must be a number"):
        ksm_estimate_report({}, top="many")
