"""The shared managed-block editor: exact round trips and refusal of broken markers."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest
from hypothesis import given, strategies as st

from ansible_collections.samepage.ksm.plugins.module_utils import _fileedit as fe

BEGIN, END = "# BEGIN test", "# END test"
BLOCK = fe.render_block(BEGIN, ["echo managed"], END)


@pytest.mark.parametrize("text", ["", "a\n", "a", "a\r\nb\r\n", "#!/bin/sh\nexit 0\n", "\n\n"])
def test_set_then_remove_restores_exact_text(text):
    added = fe.set_block(text, BLOCK, BEGIN, END)
    assert fe.block_body(added, BEGIN, END) == ["echo managed"]
    assert fe.remove_block(added, BEGIN, END) == text


def test_existing_block_is_replaced_where_it_stands():
    text = "top\n" + BLOCK + "bottom\n"
    new = fe.set_block(text, fe.render_block(BEGIN, ["echo new"], END), BEGIN, END, offset=0)
    assert new == "top\n# BEGIN test\necho new\n# END test\nbottom\n"
    assert fe.set_block(new, fe.render_block(BEGIN, ["echo new"], END), BEGIN, END) == new


def test_insert_at_offset():
    text = "one\ntwo\n"
    assert fe.set_block(text, BLOCK, BEGIN, END, offset=4) == "one\n" + BLOCK + "two\n"


@pytest.mark.parametrize("text", [
    BEGIN + "\n",                              # no end marker
    END + "\n",                                # no begin marker
    END + "\n" + BEGIN + "\n",                 # out of order
    BLOCK + BLOCK,                             # two blocks
])
def test_broken_markers_are_refused(text):
    with pytest.raises(fe.BlockError, match="expected exactly one of each"):
        fe.set_block(text, BLOCK, BEGIN, END)
    with pytest.raises(fe.BlockError):
        fe.remove_block(text, BEGIN, END)


def test_remove_without_block_or_file():
    assert fe.remove_block("x\n", BEGIN, END) == "x\n"
    assert fe.remove_block(None, BEGIN, END) is None


def test_non_utf8_bytes_survive():
    raw = b"caf\xe9\n\xff\xfe\n"
    text = fe.decode(raw)
    assert fe.encode(fe.remove_block(fe.set_block(text, BLOCK, BEGIN, END), BEGIN, END)) == raw


@given(st.binary(max_size=300).filter(lambda b: b"# BEGIN test" not in b and b"# END test" not in b),
       st.integers(min_value=0, max_value=300))
def test_round_trip_property(raw, where):
    text = fe.decode(raw)
    starts = [0] + [i + 1 for i, c in enumerate(text) if c == "\n"]
    offset = max(s for s in starts if s <= min(where, len(text)))
    added = fe.set_block(text, BLOCK, BEGIN, END, offset=offset)
    assert fe.encode(fe.remove_block(added, BEGIN, END)) == raw


def test_file_diff_headers():
    diff = fe.file_diff("/etc/x", None, "new\n")
    assert diff["before_header"] == "/etc/x (absent)" and diff["after"] == "new\n"
