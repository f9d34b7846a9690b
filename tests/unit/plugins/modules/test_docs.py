"""Every module's DOCUMENTATION, EXAMPLES and RETURN parse as YAML: ansible-doc needs them, and
this fails in seconds where ansible-test sanity (validate-modules, which checks the details)
takes minutes."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import ast
import pathlib

import pytest
import yaml

MODULES = sorted((pathlib.Path(__file__).resolve().parents[4] / "plugins" / "modules").glob("*.py"))


def blocks(path):
    found = {}
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") in ("DOCUMENTATION", "EXAMPLES", "RETURN"):
            found[node.targets[0].id] = node.value.value
    return found


@pytest.mark.parametrize("path", MODULES, ids=[path.stem for path in MODULES])
def test_documentation_blocks_parse(path):
    found = blocks(path)
    assert set(found) == {"DOCUMENTATION", "EXAMPLES", "RETURN"}
    doc = yaml.safe_load(found["DOCUMENTATION"])
    assert doc["module"] == path.stem
    examples = yaml.safe_load(found["EXAMPLES"])
    assert examples and all("name" in task for task in examples)
    assert yaml.safe_load(found["RETURN"]) is not None
