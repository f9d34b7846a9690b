# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""KSM sysfs knob table, parsing and validation shared by the collection's modules.

Private to the collection (leading underscore): no compatibility promise to other code.
Keep this file Python 2.7 / 3.6 clean: it runs on the managed host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import re
from collections import namedtuple

DEFAULT_SYSFS_PATH = '/sys/kernel/mm/ksm'

UINT_MAX = 4294967295
INT_MAX = 2147483647

# kind: 'int' (decimal, bounded), 'bool' (0/1), 'choice' (one of choices).
# default: the kernel's value at boot (Linux 6.x), written back by state=absent with reset.
# missing_means: how a kernel without the knob behaves, so that asking for that value there is
# already satisfied (no warning, no strict failure): a kernel without the advisor has it off.
KnobSpec = namedtuple('KnobSpec', ['name', 'kind', 'minimum', 'maximum', 'choices', 'needs_unmerge', 'help',
                                   'default', 'missing_means'])


def _int(name, minimum, maximum, default, help_text, needs_unmerge=False):
    return KnobSpec(name, 'int', minimum, maximum, None, needs_unmerge, help_text, default, None)


def _bool(name, default, help_text):
    return KnobSpec(name, 'bool', 0, 1, None, False, help_text, default, None)


# The one table of KSM knobs: every module, the role specs (scripts/gen_knob_specs.py) and the docs
# come from it. Safe write order: advisor_mode goes first, since the kernel rejects pages_to_scan
# (EINVAL) while the scan-time advisor is on, so switching the advisor off must happen before
# pages_to_scan is written. Knobs that need an empty stable tree (EBUSY otherwise) come next, and
# run goes last so that ksmd starts with the final tuning.
KNOBS = (
    KnobSpec('advisor_mode', 'choice', None, None, ('none', 'scan-time'), False,
             'Automatic pages_to_scan tuning (Linux 6.8 and later).', 'none', 'none'),
    _int('advisor_max_cpu', 1, 100, 70, 'Upper bound of ksmd CPU use, percent, for the scan-time advisor.'),
    _int('advisor_min_pages_to_scan', 0, UINT_MAX, 500, 'Lower bound of pages_to_scan chosen by the advisor.'),
    _int('advisor_max_pages_to_scan', 0, UINT_MAX, 30000, 'Upper bound of pages_to_scan chosen by the advisor.'),
    _int('advisor_target_scan_time', 1, UINT_MAX, 200, 'Seconds the advisor aims for one full scan.'),
    _int('pages_to_scan', 0, UINT_MAX, 100, 'Pages ksmd scans before it sleeps (not while advisor_mode is scan-time).'),
    _int('sleep_millisecs', 0, UINT_MAX, 20, 'Milliseconds ksmd sleeps between scans.'),
    _bool('use_zero_pages', 0, 'Merge empty pages with the kernel zero page.'),
    _bool('smart_scan', 1, 'Skip pages that did not de-duplicate in earlier scans.'),
    _int('stable_node_chains_prune_millisecs', 0, UINT_MAX, 2000, 'How often stale stable_node chains are pruned.'),
    _int('merge_across_nodes', 0, 1, 1, 'Merge pages across NUMA nodes (changing it unmerges every page first).',
         needs_unmerge=True),
    _int('max_page_sharing', 2, INT_MAX, 256, 'Most pages that may share one KSM page (changing it unmerges every page '
         'first).', needs_unmerge=True),
    _int('run', 0, 2, 0, '0 stops ksmd, 1 runs it, 2 stops it and unmerges every merged page.'),
)

KNOB_BY_NAME = dict((k.name, k) for k in KNOBS)
# The knob the unmerge dance and the ksmd checks drive: 0 stop, 1 run, 2 stop and unmerge.
RUN = KNOBS[-1].name
KNOB_NAMES = tuple(k.name for k in KNOBS)

# Read-only counters the kernel may expose (newer kernels add more; readers keep unknown ones).
COUNTERS = (
    'pages_shared', 'pages_sharing', 'pages_unshared', 'pages_volatile', 'pages_scanned',
    'pages_skipped', 'full_scans', 'general_profit', 'ksm_zero_pages', 'stable_node_chains',
    'stable_node_dups',
)

try:
    _STRING_TYPES = (str, unicode)  # noqa: F821 (Python 2)
    _INT_TYPES = (int, type(2 ** 64))  # Python 2's long, without naming it (vermin, 3.x)
except NameError:
    _STRING_TYPES = (str,)
    _INT_TYPES = (int,)

# Booleans as Ansible users write them. Nothing else: no 'y'/'n', no floats, no other digits.
BOOL_WORDS = {'true': 1, 'yes': 1, 'on': 1, '1': 1, 'false': 0, 'no': 0, 'off': 0, '0': 0}
# ASCII digits only, the whole string: str.isdigit() is True for '\u00b2' and Arabic-Indic digits,
# and '$' would let a trailing newline through.
_ASCII_DIGITS = re.compile(r'\A[0-9]+\Z')


class KsmError(Exception):
    """A failure with a message fit for the user."""


def parse_knob(name, raw):
    """Turn the kernel's text for a knob into a Python value.

    ``advisor_mode`` prints every choice with the active one in brackets (``[none] scan-time``).
    """
    text = raw.strip()
    spec = KNOB_BY_NAME.get(name)
    if spec is not None and spec.kind == 'choice':
        for word in text.split():
            if word.startswith('[') and word.endswith(']'):
                return word[1:-1]
        return text
    try:
        return int(text)
    except ValueError:
        return text


def format_knob(name, value):
    """The text written to the knob's sysfs file."""
    spec = KNOB_BY_NAME[name]
    if spec.kind == 'choice':
        return str(value)
    return str(int(value))


def describe_accepted(spec):
    if spec.kind == 'choice':
        return 'one of %s' % ', '.join(repr(c) for c in spec.choices)
    if spec.kind == 'bool':
        return 'a boolean (true/false, yes/no, on/off, 1/0)'
    return 'a whole number from %d to %d (an integer or a string of ASCII digits)' % (spec.minimum, spec.maximum)


def _as_integer(value):
    """An int from an int or a string of ASCII digits; None for anything else (bool, float, '1e3')."""
    if isinstance(value, bool):
        return None
    if isinstance(value, _INT_TYPES):
        return int(value)
    if isinstance(value, _STRING_TYPES) and _ASCII_DIGITS.match(value):
        return int(value)
    return None


def parse_whole(value, minimum=1, maximum=None):
    """An int option given as an int or ASCII digits (not a float, bool or other digits), within
    [minimum, maximum]; None when it is not."""
    number = _as_integer(value)
    if number is None or number < minimum or (maximum is not None and number > maximum):
        return None
    return number


def normalize_value(name, value):
    """Validate one user value for knob ``name``: the one normaliser of every door (runtime, boot,
    verification, role variables). Returns (normalized, error_message_or_None).

    int knobs: an int or a string of ASCII digits, within the knob's range (never a float or a bool);
    bool knobs: true/false, yes/no, on/off, 1/0 (as bools, ints or case-insensitive strings), normalized
    to 1/0; choice knobs: exactly one of the choices.
    """
    spec = KNOB_BY_NAME.get(name)
    if spec is None:
        return None, 'unknown KSM knob %r; known knobs: %s' % (name, ', '.join(KNOB_NAMES))
    invalid = '%s: invalid value %r; expected %s' % (name, value, describe_accepted(spec))
    if spec.kind == 'choice':
        if isinstance(value, _STRING_TYPES) and value in spec.choices:
            return str(value), None
        return None, invalid
    if spec.kind == 'bool':
        if isinstance(value, bool):
            return int(value), None
        if isinstance(value, _INT_TYPES) and value in (0, 1):
            return int(value), None
        if isinstance(value, _STRING_TYPES) and value.lower() in BOOL_WORDS:
            return BOOL_WORDS[value.lower()], None
        return None, invalid
    number = _as_integer(value)
    if number is None or number < spec.minimum or number > spec.maximum:
        return None, invalid
    return number, None


def settings_spec():
    """The argument_spec entry of a ``settings`` dict: one ``raw`` sub-option per knob, so that
    Ansible rejects an unknown knob name; values then go through normalize_value()."""
    return dict(type='dict', options=dict((name, dict(type='raw')) for name in KNOB_NAMES))


def validate_settings(settings, current=None):
    """Validate a mapping of knob -> value (None values are ignored).

    ``current`` (knob -> value as read) lets cross-knob rules see values the user leaves alone.
    Returns (normalized_dict, errors). Nothing is written here.
    """
    if settings is None:
        settings = {}
    if not isinstance(settings, dict):
        return {}, ['expected a dict of knob name to value, got %r' % (settings,)]
    errors = []
    wanted = {}
    for name in sorted(settings):
        value = settings[name]
        if value is None:
            continue
        normalized, error = normalize_value(name, value)
        if error:
            errors.append(error)
        else:
            wanted[name] = normalized
    errors.extend(cross_check(wanted, current))
    return wanted, errors


def cross_check(wanted, current=None):
    """Errors from rules that tie knobs together; ``wanted`` holds normalized values.

    ``current`` (knob -> value as read) supplies the values the user leaves alone.
    """
    errors = []
    effective = dict(current or {})
    effective.update(wanted)
    if 'pages_to_scan' in wanted and effective.get('advisor_mode') == 'scan-time':
        errors.append(
            'pages_to_scan cannot be set while advisor_mode is scan-time (the advisor owns it and '
            'the kernel answers EINVAL); set advisor_mode: none, or leave pages_to_scan unset')
    low, high = effective.get('advisor_min_pages_to_scan'), effective.get('advisor_max_pages_to_scan')
    if isinstance(low, int) and isinstance(high, int) and low > high and (
            'advisor_min_pages_to_scan' in wanted or 'advisor_max_pages_to_scan' in wanted):
        errors.append('advisor_min_pages_to_scan (%d) must not exceed advisor_max_pages_to_scan (%d)' % (low, high))
    return errors


def ordered(names):
    """Knob names sorted into the safe write order."""
    index = dict((n, i) for i, n in enumerate(KNOB_NAMES))
    return sorted(names, key=lambda n: index.get(n, len(index)))


def read_file(path):
    with open(path, 'r') as handle:
        return handle.read()


def read_all(sysfs_path=DEFAULT_SYSFS_PATH):
    """Every readable entry of the KSM sysfs directory, parsed (knobs and counters)."""
    values = {}
    for entry in sorted(os.listdir(sysfs_path)):
        path = os.path.join(sysfs_path, entry)
        if not os.path.isfile(path):
            continue
        try:
            values[entry] = parse_knob(entry, read_file(path))
        except (IOError, OSError):
            continue
    return values


def knob_path(sysfs_path, name):
    return os.path.join(sysfs_path, name)


def read_knob(sysfs_path, name):
    """One knob or counter, parsed; raises IOError/OSError when it cannot be read."""
    return parse_knob(name, read_file(knob_path(sysfs_path, name)))


def write_knob(sysfs_path, name, value):
    """Write one knob the way ``echo VALUE > FILE`` does: one write() of the text and a newline.

    No O_CREAT: a knob the kernel lacks raises ENOENT instead of appearing as a plain file.
    Raises IOError/OSError with the kernel's errno (EINVAL, EBUSY, EACCES, ...).
    """
    data = (format_knob(name, value) + '\n').encode('ascii')
    fd = os.open(knob_path(sysfs_path, name), os.O_WRONLY | os.O_TRUNC)
    try:
        written = os.write(fd, data)
    finally:
        os.close(fd)
    if written != len(data):
        raise IOError(errno.EIO, 'short write (%d of %d bytes)' % (written, len(data)))


def describe_os_error(error):
    """``[EBUSY] Device or resource busy`` for an IOError/OSError."""
    code = getattr(error, 'errno', None)
    name = errno.errorcode.get(code, str(code)) if code is not None else 'error'
    return '[%s] %s' % (name, getattr(error, 'strerror', None) or error)


def read_meminfo(path='/proc/meminfo'):
    """/proc/meminfo as a dict of name -> bytes (values given in kB are converted)."""
    info = {}
    with open(path, 'r') as handle:
        for line in handle:
            name, sep, rest = line.partition(':')
            fields = rest.split()
            if not sep or not fields:
                continue
            try:
                number = int(fields[0])
            except ValueError:
                continue
            if len(fields) > 1 and fields[1].lower() == 'kb':
                number *= 1024
            info[name.strip()] = number
    return info


def available_memory(meminfo):
    """Bytes the kernel can hand out without swapping: MemAvailable, or its pre-3.14 estimate."""
    if 'MemAvailable' in meminfo:
        return meminfo['MemAvailable']
    return meminfo.get('MemFree', 0) + meminfo.get('Buffers', 0) + meminfo.get('Cached', 0)


def page_size():
    return os.sysconf('SC_PAGE_SIZE')


def require_sysfs(sysfs_path=DEFAULT_SYSFS_PATH):
    """Raise KsmError unless the KSM sysfs directory exists."""
    if not os.path.isdir(sysfs_path):
        raise KsmError(
            '%s does not exist: this kernel lacks KSM (CONFIG_KSM is off) or this is a container '
            'that cannot see it; target the hardware node' % sysfs_path)
