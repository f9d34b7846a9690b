"""Unit tests of plugins/module_utils/_ksm.py: knob table, parsing, validation, sysfs and meminfo I/O."""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os

import pytest
from hypothesis import given, strategies as st

from ansible_collections.samepage.ksm.plugins.module_utils import _ksm


def test_knob_table_order_puts_advisor_first_and_run_last():
    names = list(_ksm.KNOB_NAMES)
    assert names[0] == "advisor_mode" and names[-1] == "run"
    assert names.index("advisor_mode") < names.index("pages_to_scan")
    assert names.index("merge_across_nodes") > names.index("sleep_millisecs")
    assert set(_ksm.KNOB_BY_NAME) == set(names) and len(names) == 13
    assert sorted(k.name for k in _ksm.KNOBS if k.needs_unmerge) == ["max_page_sharing", "merge_across_nodes"]


def test_ordered_sorts_into_write_order_and_keeps_unknown_last():
    assert _ksm.ordered(["run", "pages_to_scan", "zzz", "advisor_mode"]) == [
        "advisor_mode", "pages_to_scan", "run", "zzz"]


@pytest.mark.parametrize("name, raw, value", [
    ("advisor_mode", "[none] scan-time\n", "none"),
    ("advisor_mode", "none [scan-time]\n", "scan-time"),
    ("advisor_mode", "scan-time\n", "scan-time"),
    ("run", "1\n", 1),
    ("pages_to_scan", " 4294967295 \n", 4294967295),
    ("pages_shared", "0\n", 0),
    ("something_new", "text value\n", "text value"),
])
def test_parse_knob(name, raw, value):
    assert _ksm.parse_knob(name, raw) == value


@pytest.mark.parametrize("name, value, text", [
    ("advisor_mode", "scan-time", "scan-time"), ("run", 2, "2"), ("use_zero_pages", True, "1"),
    ("smart_scan", False, "0"), ("pages_to_scan", "300", "300"),
])
def test_format_knob(name, value, text):
    assert _ksm.format_knob(name, value) == text


@pytest.mark.parametrize("name, value, normalized", [
    ("run", 0, 0), ("run", "2", 2), ("pages_to_scan", 4294967295, 4294967295), ("pages_to_scan", "0300", 300),
    ("max_page_sharing", 2, 2), ("use_zero_pages", True, 1), ("use_zero_pages", "off", 0),
    ("smart_scan", "yes", 1), ("smart_scan", "No", 0), ("smart_scan", "TRUE", 1), ("smart_scan", 0, 0),
    ("smart_scan", "1", 1), ("smart_scan", "on", 1), ("use_zero_pages", "false", 0),
    ("advisor_mode", "scan-time", "scan-time"), ("advisor_mode", u"none", "none"),
    ("advisor_max_cpu", 100, 100), ("advisor_target_scan_time", 1, 1),
])
def test_normalize_accepts(name, value, normalized):
    assert _ksm.normalize_value(name, value) == (normalized, None)


@pytest.mark.parametrize("name, value, accepted", [
    ("run", 3, "from 0 to 2"), ("run", True, "whole number"), ("run", "1.5", "whole number"),
    ("pages_to_scan", -1, "from 0 to 4294967295"), ("pages_to_scan", 7.5, "whole number"),
    # floats and exponent forms are refused even when they are whole (one rule for every door)
    ("pages_to_scan", 7.0, "whole number"), ("pages_to_scan", "1e3", "whole number"),
    ("pages_to_scan", 1e3, "whole number"), ("sleep_millisecs", "2.0", "whole number"),
    # unicode digits: str.isdigit() says yes, the kernel says EINVAL
    ("pages_to_scan", u"\u00b2", "ASCII digits"), ("sleep_millisecs", u"\u0661\u0662", "ASCII digits"),
    ("pages_to_scan", u"\uff11\uff10", "ASCII digits"),
    # surrounding blanks and a trailing newline: the string must be digits and nothing else
    ("pages_to_scan", "100\n", "whole number"), ("pages_to_scan", " 100", "whole number"),
    ("pages_to_scan", "", "whole number"), ("pages_to_scan", "-5", "whole number"),
    ("pages_to_scan", None, "whole number"), ("pages_to_scan", [1], "whole number"),
    ("max_page_sharing", 1, "from 2 to 2147483647"), ("max_page_sharing", True, "whole number"),
    ("use_zero_pages", 2, "a boolean"), ("use_zero_pages", 1.0, "a boolean"),
    ("smart_scan", "maybe", "a boolean"), ("smart_scan", "y", "a boolean"), ("smart_scan", "yes\n", "a boolean"),
    ("smart_scan", u"\u0661", "a boolean"),
    ("advisor_mode", "scan", "'none', 'scan-time'"), ("advisor_mode", " scan-time ", "'none', 'scan-time'"),
    ("advisor_mode", "NONE", "'none', 'scan-time'"),
    ("advisor_mode", 1, "'none', 'scan-time'"), ("advisor_max_cpu", 0, "from 1 to 100"),
])
def test_normalize_rejects_with_what_is_accepted(name, value, accepted):
    normalized, error = _ksm.normalize_value(name, value)
    assert normalized is None
    assert error.startswith("%s: invalid value %r" % (name, value)) and accepted in error


def test_normalize_accepts_every_bool_word_and_nothing_else():
    for word, number in (("true", 1), ("yes", 1), ("on", 1), ("1", 1),
                         ("false", 0), ("no", 0), ("off", 0), ("0", 0)):
        assert _ksm.normalize_value("smart_scan", word) == (number, None)
        assert _ksm.normalize_value("smart_scan", word.upper()) == (number, None)


def test_settings_spec_has_one_raw_option_per_knob():
    spec = _ksm.settings_spec()
    assert spec["type"] == "dict"
    assert sorted(spec["options"]) == sorted(_ksm.KNOB_NAMES)
    assert all(option == {"type": "raw"} for option in spec["options"].values())


def test_settings_spec_makes_ansible_reject_a_misspelt_knob():
    from ansible.module_utils.common.arg_spec import ArgumentSpecValidator
    validator = ArgumentSpecValidator(dict(settings=_ksm.settings_spec()))
    result = validator.validate(dict(settings=dict(pages_to_scna=5)))
    assert result.error_messages and "pages_to_scna" in " ".join(result.error_messages)
    good = validator.validate(dict(settings=dict(pages_to_scan="5", smart_scan="yes")))
    assert good.error_messages == []
    # values are left raw for normalize_value: Ansible must not coerce them first
    assert good.validated_parameters["settings"]["pages_to_scan"] == "5"
    assert good.validated_parameters["settings"]["run"] is None


def test_validate_settings_refuses_a_non_dict():
    wanted, errors = _ksm.validate_settings("run=1")
    assert wanted == {} and errors and "expected a dict" in errors[0]


def test_normalize_unknown_knob_lists_known_ones():
    normalized, error = _ksm.normalize_value("pages_to_scna", 1)
    assert normalized is None and "unknown KSM knob 'pages_to_scna'" in error and "pages_to_scan" in error


@given(st.integers(min_value=-2 ** 40, max_value=2 ** 40))
def test_normalize_int_range_property(number):
    value, error = _ksm.normalize_value("sleep_millisecs", number)
    if 0 <= number <= _ksm.UINT_MAX:
        assert (value, error) == (number, None)
    else:
        assert value is None and "from 0 to 4294967295" in error


def test_validate_settings_collects_every_error_and_ignores_none():
    wanted, errors = _ksm.validate_settings(
        dict(run=1, pages_to_scan=-1, sleep_millisecs=None, advisor_mode="scan-time", max_page_sharing=1))
    assert wanted == dict(run=1, advisor_mode="scan-time")
    assert len(errors) == 2
    assert any(e.startswith("pages_to_scan:") for e in errors) and any(e.startswith("max_page_sharing:") for e in errors)


def test_validate_settings_applies_cross_rules_with_current_values():
    wanted, errors = _ksm.validate_settings(dict(pages_to_scan=100), current=dict(advisor_mode="scan-time"))
    assert wanted == dict(pages_to_scan=100)
    assert errors and "advisor_mode is scan-time" in errors[0]
    assert _ksm.validate_settings(dict(pages_to_scan=100, advisor_mode="none"),
                                  current=dict(advisor_mode="scan-time"))[1] == []


@pytest.mark.parametrize("wanted, current, fragment", [
    (dict(pages_to_scan=1, advisor_mode="scan-time"), {}, "advisor_mode is scan-time"),
    (dict(advisor_min_pages_to_scan=9), dict(advisor_max_pages_to_scan=8), "(9) must not exceed"),
    (dict(advisor_max_pages_to_scan=8), dict(advisor_min_pages_to_scan=9), "(9) must not exceed"),
])
def test_cross_check_rejects(wanted, current, fragment):
    errors = _ksm.cross_check(wanted, current)
    assert len(errors) == 1 and fragment in errors[0]


def test_cross_check_ignores_rules_the_user_does_not_touch():
    # a live min > max the user leaves alone is not this task's problem
    assert _ksm.cross_check(dict(run=1), dict(advisor_min_pages_to_scan=9, advisor_max_pages_to_scan=8)) == []
    assert _ksm.cross_check(dict(pages_to_scan=5), dict(advisor_mode="none")) == []


def test_read_all_and_read_knob(fake_sysfs):
    values = _ksm.read_all(str(fake_sysfs))
    assert values["advisor_mode"] == "none" and values["run"] == 0 and values["pages_shared"] == 0
    (fake_sysfs / "subdir").mkdir()
    assert "subdir" not in _ksm.read_all(str(fake_sysfs))
    assert _ksm.read_knob(str(fake_sysfs), "max_page_sharing") == 256


def test_write_knob_writes_one_line_and_truncates(fake_sysfs):
    _ksm.write_knob(str(fake_sysfs), "pages_to_scan", 7)
    assert (fake_sysfs / "pages_to_scan").read_text() == "7\n"
    _ksm.write_knob(str(fake_sysfs), "advisor_mode", "scan-time")
    assert (fake_sysfs / "advisor_mode").read_text() == "scan-time\n"
    _ksm.write_knob(str(fake_sysfs), "use_zero_pages", True)
    assert (fake_sysfs / "use_zero_pages").read_text() == "1\n"


def test_write_knob_never_creates_a_missing_knob(fake_sysfs):
    (fake_sysfs / "smart_scan").unlink()
    with pytest.raises(OSError) as caught:
        _ksm.write_knob(str(fake_sysfs), "smart_scan", 1)
    assert caught.value.errno == errno.ENOENT
    assert not (fake_sysfs / "smart_scan").exists()


def test_describe_os_error_names_the_errno():
    assert _ksm.describe_os_error(OSError(errno.EBUSY, os.strerror(errno.EBUSY))) == \
        "[EBUSY] %s" % os.strerror(errno.EBUSY)
    assert _ksm.describe_os_error(IOError(errno.EINVAL, "Invalid argument")) == "[EINVAL] Invalid argument"


def test_read_meminfo_converts_kb_and_skips_junk(tmp_path):
    path = tmp_path / "meminfo"
    path.write_text("MemTotal:  1000 kB\nMemAvailable: 250 kB\nHugePages_Total: 4\ngarbage\nBad: x kB\n")
    info = _ksm.read_meminfo(str(path))
    assert info == {"MemTotal": 1024000, "MemAvailable": 256000, "HugePages_Total": 4}
    assert _ksm.available_memory(info) == 256000


def test_available_memory_falls_back_for_old_kernels():
    assert _ksm.available_memory({"MemFree": 10, "Buffers": 20, "Cached": 30}) == 60
    assert _ksm.available_memory({}) == 0


def test_read_meminfo_of_this_machine_has_memavailable():
    assert _ksm.available_memory(_ksm.read_meminfo()) > 0


def test_page_size_is_a_power_of_two():
    size = _ksm.page_size()
    assert size >= 4096 and size & (size - 1) == 0


def test_require_sysfs(tmp_path, fake_sysfs):
    _ksm.require_sysfs(str(fake_sysfs))
    with pytest.raises(_ksm.KsmError) as caught:
        _ksm.require_sysfs(str(tmp_path / "absent"))
    assert "does not exist" in str(caught.value) and "CONFIG_KSM" in str(caught.value)
