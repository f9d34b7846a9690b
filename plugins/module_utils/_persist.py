# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Boot-time persistence of KSM knobs: rc.local block, systemd units, tmpfiles.d lines.

Pure functions (text in, text out) so that every rendering and editing rule is unit-testable;
the ksm_persist module does the reading and writing. Private to the collection.
Keep this file Python 2.7 / 3.6 clean: it runs on the managed host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import re

from ansible_collections.samepage.ksm.plugins.module_utils import _fileedit
from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import find_block
from ansible_collections.samepage.ksm.plugins.module_utils._ksm import (
    KNOB_BY_NAME, format_knob, ordered, validate_settings,
)

BEGIN = '# BEGIN samepage.ksm managed block'
END = '# END samepage.ksm managed block'
# No "-e": with it, one failing write (a knob the booted kernel lacks) would abort the whole file.
SHEBANG = '#!/bin/sh\n'
# Inside the block of an rc.local that the module created: removing the block then removes the
# file too, when nothing but SHEBANG is left in it. A file that predates the block never has it.
CREATED_FILE = '# created by samepage.ksm: remove the file with the block'

SERVICE = 'samepage-ksm.service'
RELAX_SERVICE = 'samepage-ksm-relax.service'
RELAX_TIMER = 'samepage-ksm-relax.timer'
TMPFILES_CONF = 'samepage-ksm.conf'
RC_LOCAL_SERVICE = 'rc-local.service'
BACKENDS = ('rc_local', 'systemd', 'tmpfiles')
# Where `systemctl enable` puts the links of our units (removed together with the units).
WANTS = {SERVICE: 'multi-user.target.wants', RELAX_TIMER: 'timers.target.wants'}

# The sysfs path is pasted into shell, systemd and tmpfiles lines: allow no quoting hazards
# (blanks, quotes, $, `, \, systemd's % specifiers).
SAFE_PATH = re.compile(r'^/[A-Za-z0-9._+/-]*$')
# A top-level exit command: `exit`, `exit 0`, `exit $?`, optionally with a trailing comment.
EXIT_LINE = re.compile(r'^exit(?:[ \t]+[^\s;&|#]+)?[ \t]*(?:#.*)?$')

HEADER = 'Managed by samepage.ksm (samepage.ksm.ksm_persist): local changes are overwritten.'


def validate(state, backend, settings, boost, boost_seconds, sysfs_path):
    """Check every option. Returns (boot, relax, errors).

    ``boot`` is the [(knob, text)] list written at boot in safe order: ``settings`` with the
    ``boost`` values laid over them. ``relax`` is the [(knob, text)] list written ``boost_seconds``
    later: the boosted knobs back at their ``settings`` values. Both are empty on errors.
    """
    errors = []
    settings = settings or {}
    boost = boost or {}
    if backend not in BACKENDS:
        errors.append('backend %r is not supported; expected one of %s' % (backend, ', '.join(BACKENDS)))
    if not SAFE_PATH.match(sysfs_path or ''):
        errors.append(
            'sysfs_path %r must be an absolute path of letters, digits and . _ + - / only '
            '(it is written into shell, systemd and tmpfiles lines)' % (sysfs_path,))
    if boost_seconds is None or boost_seconds < 1:
        errors.append('boost_seconds must be a whole number of seconds, 1 or more; got %r' % (boost_seconds,))
    if state == 'present' and not settings:
        errors.append('settings is empty: give at least one knob to set at boot, e.g. {run: 1}; '
                      'to remove the persisted settings use state=absent')
    if boost and backend == 'tmpfiles' and state == 'present':
        errors.append('boost needs a delayed second step, which tmpfiles.d cannot do; '
                      'use backend rc_local or systemd, or drop boost')
    wanted, setting_errors = validate_settings(settings)
    errors.extend('settings: %s' % e for e in setting_errors)
    boosted, boost_errors = validate_settings(boost)
    errors.extend('boost: %s' % e for e in boost_errors)
    for name in sorted(boosted):
        if name not in wanted and name in KNOB_BY_NAME:
            errors.append('boost: %s has no value in settings, so nothing would relax it after '
                          'boost_seconds; add %s to settings' % (name, name))
        elif KNOB_BY_NAME[name].needs_unmerge and boosted[name] != wanted[name]:
            errors.append('boost: %s cannot be boosted: the kernel changes it only while no page is '
                          'merged, which is not the case after the boost; set it in settings only' % name)
    if errors:
        return [], [], errors
    at_boot = dict(wanted)
    at_boot.update(boosted)
    boot_checked, boot_errors = validate_settings(at_boot)
    errors.extend('boost: %s' % e for e in boot_errors)
    relax = dict((k, wanted[k]) for k in boosted if boosted[k] != wanted[k])
    relax_checked, relax_errors = validate_settings(relax, current=at_boot)
    errors.extend('settings after boost: %s' % e for e in relax_errors)
    if errors:
        return [], [], errors
    return knob_lines(at_boot), knob_lines(relax), []


def knob_lines(values):
    return [(name, format_knob(name, values[name])) for name in ordered(values)]


def rc_block(sysfs_path, boot, relax, boost_seconds, created_file=False):
    """The managed block for rc.local (text with the marker lines, newline-terminated).

    ``created_file``: the module created the file, and says so in the block (CREATED_FILE).
    """
    lines = [BEGIN]
    if created_file:
        lines.append(CREATED_FILE)
    lines.extend([
        '# KSM tuning at boot. %s' % HEADER,
        'if [ -d %s ]; then' % sysfs_path,
    ])
    # "|| true": an rc.local started with "sh -e" must not stop at a knob the kernel lacks.
    for name, value in boot:
        lines.append('  echo %s > %s/%s || true' % (value, sysfs_path, name))
    if relax:
        script = '; '.join(['sleep %d' % boost_seconds] + [
            'echo %s > %s/%s' % (value, sysfs_path, name) for name, value in relax])
        lines.extend([
            '  # Relax the boot boost after %d seconds, detached so that boot goes on.' % boost_seconds,
            "  samepage_ksm_relax='%s'" % script,
            '  if command -v setsid >/dev/null 2>&1; then',
            '    setsid /bin/sh -c "$samepage_ksm_relax" </dev/null >/dev/null 2>&1 &',
            '  else',
            '    nohup /bin/sh -c "$samepage_ksm_relax" </dev/null >/dev/null 2>&1 &',
            '  fi',
            '  unset samepage_ksm_relax',
        ])
    lines.extend(['fi', END])
    return '\n'.join(lines) + '\n'


def _lines(text):
    """[(offset, line_with_eol)] split exactly as _fileedit.find_block splits."""
    result = []
    offset = 0
    for line in text.splitlines(True):
        result.append((offset, line))
        offset += len(line)
    return result


def _is_filler(line):
    stripped = line.strip()
    return not stripped or stripped.startswith('#')


def trailing_exit_offset(text):
    """Offset of the file's trailing top-level ``exit`` line, or None.

    The rule: when the last command of the file (ignoring blank and comment lines after it) is an
    ``exit`` at the start of a line (Debian's ``exit 0``), a new block goes right before it, since a
    block after it would never run. Any other ``exit`` (indented, or with commands after it) is
    conditional or inside a function, and is left alone.
    """
    lines = _lines(text)
    for index in range(len(lines) - 1, -1, -1):
        offset, line = lines[index]
        if _is_filler(line):
            continue
        body = line.rstrip('\r\n')
        # The previous line must end with "\n": only then does the shell see this as its own line.
        if EXIT_LINE.match(body) and (offset == 0 or text[offset - 1] == '\n'):
            return offset
        return None
    return None


def early_exit_lines(text, before=None):
    """1-based numbers of column-0 ``exit`` lines before ``before`` (offset) that have commands after them."""
    numbers = []
    lines = _lines(text)
    for index, (offset, line) in enumerate(lines):
        if before is not None and offset >= before:
            break
        if EXIT_LINE.match(line.rstrip('\r\n')) and any(not _is_filler(rest) for dummy, rest in lines[index + 1:]):
            numbers.append(index + 1)
    return numbers


def add_block(text, block):
    """``text`` with our block set to ``block`` (raises _fileedit.BlockError on broken markers).

    An existing block is replaced where it stands. A new one goes before a trailing ``exit`` (see
    trailing_exit_offset), else at the end; remove_block restores the exact original bytes.
    """
    return _fileedit.set_block(text, block, BEGIN, END, trailing_exit_offset(text))


def remove_block(text):
    """``text`` without our block; the exact inverse of add_block (raises BlockError on broken markers)."""
    return _fileedit.remove_block(text, BEGIN, END)


def has_block(text):
    return find_block(text or '', BEGIN, END) is not None


def created_by_us(text):
    """Whether our block in ``text`` carries CREATED_FILE (raises BlockError on broken markers)."""
    body = _fileedit.block_body(text, BEGIN, END)
    return body is not None and CREATED_FILE in body


def without_block(text):
    """``text`` without our block, or None when the whole file is to be removed.

    The file goes only when our block says that we created it (CREATED_FILE) and what is left
    is exactly the SHEBANG we wrote; a line added by anyone else keeps the file (minus the block).
    Raises BlockError on broken markers.
    """
    after = remove_block(text)
    if after == SHEBANG and created_by_us(text):
        return None
    return after


def executable_mode(mode):
    """``mode`` with the execute bit added for the owner and for whoever may read the file."""
    return mode | 0o100 | ((mode & 0o044) >> 2)


def _exec_lines(sysfs_path, values):
    # "-": like rc.local, a knob the booted kernel lacks is logged and the others still get written.
    return ["ExecStart=-/bin/sh -c 'echo %s > %s/%s'" % (value, sysfs_path, name) for name, value in values]


def systemd_units(sysfs_path, boot, relax, boost_seconds):
    """{unit file name: text} for the systemd backend."""
    # Default dependencies are kept on purpose: the unit runs after sysinit.target (sysfs mounted)
    # and needs nothing earlier, since ksmd applies new values to memory that is already in use.
    units = {
        SERVICE: '\n'.join([
            '# %s' % HEADER,
            '[Unit]',
            'Description=KSM (kernel same-page merging) tuning at boot',
            'Documentation=https://docs.kernel.org/admin-guide/mm/ksm.html',
            'ConditionPathExists=%s' % sysfs_path,
            '',
            '[Service]',
            'Type=oneshot',
            'RemainAfterExit=yes',
        ] + _exec_lines(sysfs_path, boot) + [
            '',
            '[Install]',
            'WantedBy=multi-user.target',
        ]) + '\n',
    }
    if relax:
        units[RELAX_SERVICE] = '\n'.join([
            '# %s' % HEADER,
            '[Unit]',
            'Description=KSM tuning after the boot boost',
            'Documentation=https://docs.kernel.org/admin-guide/mm/ksm.html',
            'ConditionPathExists=%s' % sysfs_path,
            'After=%s' % SERVICE,
            '',
            '[Service]',
            'Type=oneshot',
        ] + _exec_lines(sysfs_path, relax)) + '\n'
        units[RELAX_TIMER] = '\n'.join([
            '# %s' % HEADER,
            '[Unit]',
            'Description=Relax the KSM boot boost %d seconds after boot' % boost_seconds,
            '',
            '[Timer]',
            'OnBootSec=%d' % boost_seconds,
            'AccuracySec=1s',
            'Unit=%s' % RELAX_SERVICE,
            '',
            '[Install]',
            'WantedBy=timers.target',
        ]) + '\n'
    return units


def tmpfiles_conf(sysfs_path, boot):
    """The tmpfiles.d file: ``w`` lines, applied in file order (tmpfiles.d(5))."""
    lines = [
        '# %s' % HEADER,
        '# KSM tuning written at boot by systemd-tmpfiles; a "w" line is skipped when its file is missing.',
        '# Lines apply in the order listed (tmpfiles.d(5)): advisor_mode first, run last.',
    ]
    lines.extend('w %s/%s - - - - %s' % (sysfs_path, name, value) for name, value in boot)
    return '\n'.join(lines) + '\n'
