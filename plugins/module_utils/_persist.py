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

import os
import re

from ansible_collections.samepage.ksm.plugins.module_utils import _fileedit
from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import find_block
from ansible_collections.samepage.ksm.plugins.module_utils._fileplan import FilePlanError
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
# Inside the block when adding it made an existing rc.local executable: removing the block puts
# this mode back (EL ships /etc/rc.d/rc.local 0644, and it must stay inert after us).
ORIGINAL_MODE = '# samepage.ksm: original mode '

SERVICE = 'samepage-ksm.service'
RELAX_SERVICE = 'samepage-ksm-relax.service'
RELAX_TIMER = 'samepage-ksm-relax.timer'
TMPFILES_CONF = 'samepage-ksm.conf'
RC_LOCAL_SERVICE = 'rc-local.service'
BACKENDS = ('rc_local', 'systemd', 'tmpfiles')
UNITS = (SERVICE, RELAX_SERVICE, RELAX_TIMER)
UNIT_MODE = 0o644
RC_LOCAL_MODE = 0o755
# One year. systemd parses OnBootSec= far beyond it, but sleep(1) of old userlands and 32-bit
# time_t stop at 2**31-1 s, and no boot boost needs more than hours: a larger value is a typo.
BOOST_SECONDS_MAX = 86400 * 365
# Where `systemctl enable` puts the links of our units (removed together with the units).
WANTS = {SERVICE: 'multi-user.target.wants', RELAX_TIMER: 'timers.target.wants'}

# The sysfs path is pasted into shell, systemd and tmpfiles lines: allow no quoting hazards
# (blanks, quotes, $, `, \, systemd's % specifiers).
SAFE_PATH = re.compile(r'^/[A-Za-z0-9._+/-]*$')

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
    if isinstance(boost_seconds, bool) or not isinstance(boost_seconds, int) or not 1 <= boost_seconds <= BOOST_SECONDS_MAX:
        errors.append('boost_seconds must be a whole number of seconds from 1 to %d (one year); got %r'
                      % (BOOST_SECONDS_MAX, boost_seconds))
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


def rc_block(sysfs_path, boot, relax, boost_seconds, created_file=False, original_mode=None):
    """The managed block for rc.local (text with the marker lines, newline-terminated).

    ``created_file``: the module created the file, and says so in the block (CREATED_FILE).
    ``original_mode``: the mode the file had before the block made it executable (ORIGINAL_MODE).
    """
    lines = [BEGIN]
    if created_file:
        lines.append(CREATED_FILE)
    if original_mode is not None:
        lines.append('%s%04o' % (ORIGINAL_MODE, original_mode))
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


# Shell words that open and close compound commands, for the rc.local scanner below.
_OPENERS = ('if', 'case', 'for', 'while', 'until', 'select', '{', '(')
_CLOSERS = {'fi': 'if', 'esac': 'case', 'done': 'loop', '}': '{', ')': '('}
_LOOPS = ('for', 'while', 'until', 'select')
# Words after which a new command starts on the same segment.
_LEADERS = ('then', 'do', 'else', 'elif', '!', 'time')
_HEREDOC = re.compile(r'<<-?[ \t]*[\'"]?([A-Za-z0-9_]+)')


class _Unparsed(Exception):
    """The scanner lost track of the script's structure (unbalanced, heredoc it cannot follow)."""


def _split_line(line, quote):
    """(segments, quote at end of line): the line cut at ; ;; & && | || outside quotes, comments dropped.

    Each segment is (text, separator_before). One pass over the characters: linear time.
    """
    segments = []
    current = []
    separator = ''
    i = 0
    n = len(line)
    at_word_start = True
    while i < n:
        char = line[i]
        if quote:
            current.append(char)
            if char == '\\' and quote == '"' and i + 1 < n:
                current.append(line[i + 1])
                i += 2
                continue
            if char == quote:
                quote = None
            i += 1
            at_word_start = False
            continue
        if char in ('"', "'"):
            quote = char
            current.append(char)
        elif char == '\\' and i + 1 < n:
            current.append(line[i:i + 2])
            i += 2
            at_word_start = False
            continue
        elif char == '#' and at_word_start:
            break
        elif char in ';&|':
            op = line[i:i + 2] if line[i:i + 2] in (';;', '&&', '||') else char
            segments.append((''.join(current), separator))
            current = []
            separator = op
            i += len(op)
            at_word_start = True
            continue
        else:
            current.append(char)
        at_word_start = char in ' \t\r\n('
        i += 1
    segments.append((''.join(current), separator))
    return segments, quote


def scan_script(text):
    """Per line of a shell script: (offset, line, depth at its start, exits) where ``exits`` lists
    (depth, alone) for every ``exit`` command on the line (``alone``: the line holds nothing else).

    A small structural reader of sh: if/fi, case/esac (patterns and arms), loops, { }, ( ),
    functions, quotes across lines and here-documents. Raises _Unparsed when the structure does
    not balance, so that callers can fall back to a conservative rule.
    """
    stack = []
    quote = None
    heredoc = None
    result = []
    for offset, line in _lines(text):
        depth = len(stack)
        body = line.rstrip('\r\n')
        if heredoc is not None:
            if body.strip('\t') == heredoc:
                heredoc = None
            result.append((offset, line, depth, []))
            continue
        if quote is None:
            match = _HEREDOC.search(body)
            if match:
                heredoc = match.group(1)
        segments, quote = _split_line(line, quote)
        exits = []
        real = [seg for seg in segments if seg[0].strip()]
        for text_, separator in segments:
            words = text_.split()
            if separator == ';;':
                if not stack or stack[-1] != 'case-arm':
                    raise _Unparsed()
                stack[-1] = 'case'
            while words:
                if stack and stack[-1] == 'case':
                    word = words.pop(0)
                    if word == 'esac':
                        stack.pop()
                        continue
                    # a pattern runs up to its ")": what follows is the arm's first command
                    while ')' not in word and words:
                        word = words.pop(0)
                    if ')' not in word:
                        raise _Unparsed()
                    stack[-1] = 'case-arm'
                    rest = word.split(')', 1)[1]
                    if rest:
                        words.insert(0, rest)
                    continue
                word = words[0]
                if word in _LEADERS:
                    words.pop(0)
                    continue
                if word in _OPENERS:
                    words.pop(0)
                    stack.append('loop' if word in _LOOPS else word)
                    if word == 'case':
                        # case WORD in: then patterns
                        while words and words[0] != 'in':
                            words.pop(0)
                        if words:
                            words.pop(0)
                        continue
                    if word in _LOOPS:
                        words = []
                    continue
                if word in _CLOSERS:
                    words.pop(0)
                    wanted = _CLOSERS[word]
                    top = stack.pop() if stack else None
                    if top == 'case-arm':
                        top = 'case'
                    if top != wanted:
                        raise _Unparsed()
                    continue
                if word.endswith('()') or (word == 'function' and len(words) > 1):
                    words = words[2:] if word == 'function' else words[1:]
                    continue
                if len(words) > 1 and words[1] == '()':
                    words = words[2:]
                    continue
                if word == 'exit':
                    exits.append((len(stack), len(real) == 1 and len(words) <= 2))
                if word == 'do' or word == 'in':
                    words.pop(0)
                    continue
                # a plain command: its words are arguments, except a closing word after "; "
                break
        result.append((offset, line, depth, exits))
    if stack or quote or heredoc:
        raise _Unparsed()
    return result


def _legacy_exit(line):
    """An exit command alone at the start of the line (the rule when the scanner cannot follow)."""
    if line[:4] != 'exit':
        return False
    segments, dummy = _split_line(line, None)
    real = [seg for seg, dummy2 in segments if seg.strip()]
    return len(real) == 1 and real[0].split()[0] == 'exit' and len(real[0].split()) <= 2


def trailing_exit_offset(text):
    """Offset of the line holding the script's final top-level ``exit``, or None.

    When the last command of the file (ignoring blank and comment lines after it) is an ``exit``
    outside any compound command (Debian's ``exit 0``, also ``exit 0;`` or an indented ``exit 0``),
    a new block goes right before it, since a block after it would never run. An ``exit`` inside
    ``if``, ``case``, a loop or a function, or one with commands after it, is left alone.
    """
    try:
        lines = scan_script(text)
    except _Unparsed:
        lines = None
    raw = _lines(text)
    for index in range(len(raw) - 1, -1, -1):
        offset, line = raw[index]
        if _is_filler(line):
            continue
        # The previous line must end with "\n": only then does the shell see this as its own line.
        if offset and text[offset - 1] != '\n':
            return None
        if lines is None:
            return offset if _legacy_exit(line) else None
        dummy, dummy2, depth, exits = lines[index]
        if depth == 0 and len(exits) == 1 and exits[0] == (0, True):
            return offset
        return None
    return None


def early_exit_lines(text, before=None):
    """1-based numbers of top-level ``exit`` lines before ``before`` (offset) with commands after them."""
    try:
        lines = scan_script(text)
    except _Unparsed:
        lines = [(offset, line, None, [(0, True)] if _legacy_exit(line) else []) for offset, line in _lines(text)]
    last_command = max([index for index, entry in enumerate(lines) if not _is_filler(entry[1])] or [-1])
    numbers = []
    for index, (offset, dummy, dummy2, exits) in enumerate(lines):
        if before is not None and offset >= before:
            break
        if index < last_command and any(level == 0 for level, dummy3 in exits):
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


def original_mode(text):
    """The mode recorded by ORIGINAL_MODE in our block, or None (raises BlockError on broken markers)."""
    for line in _fileedit.block_body(text, BEGIN, END) or []:
        if line.startswith(ORIGINAL_MODE):
            try:
                return int(line[len(ORIGINAL_MODE):].strip(), 8) & 0o7777
            except ValueError:
                return None
    return None


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


def _mode(path):
    try:
        return os.stat(path).st_mode & 0o7777
    except OSError:
        return None


def _require_dir(path, option):
    if not os.path.isdir(path):
        raise FilePlanError('%s %s does not exist (or is not a directory); create it, or point %s elsewhere; '
                            'nothing was written' % (option, path, option.split()[0]))


def plan_rc_local(plan, rc_local_path, block_args, backup=False):
    """Record in ``plan`` (a _fileplan.FilePlan) our rc.local block: set when ``block_args`` (the
    arguments of rc_block) is given, removed when it is None. Returns (edited file, warnings).

    A file the module creates says so in its block (CREATED_FILE); removing that block removes the
    file when only our shebang line is left. Adding the block to a file that is not executable
    makes it executable and records the old mode in the block (ORIGINAL_MODE); removing the block
    puts that mode back. Raises BlockError (broken markers) or FilePlanError (unreadable file).
    """
    target = os.path.realpath(rc_local_path)
    before = plan.read(target)
    try:
        return _plan_rc_local(plan, target, before, block_args, backup)
    except _fileedit.BlockError as exc:
        raise _fileedit.BlockError('%s: %s' % (target, exc))


def _plan_rc_local(plan, target, before, block_args, backup):
    warnings = []
    if block_args is None:
        if before is not None and has_block(before):
            after = without_block(before)
            if after is None:
                plan.remove(target, backup=backup)
            else:
                plan.write(target, after, mode=original_mode(before), backup=backup)
        return target, warnings
    if before is None:
        _require_dir(os.path.dirname(target), 'rc_local_path directory')
        after = SHEBANG + rc_block(*block_args, created_file=True)
        mode = RC_LOCAL_MODE
    else:
        current = _mode(target)
        mode = executable_mode(current)
        recorded = original_mode(before) if has_block(before) else (current if mode != current else None)
        block = rc_block(*block_args, created_file=created_by_us(before), original_mode=recorded)
        after = add_block(before, block)
    early = early_exit_lines(after, before=after.index(BEGIN))
    if early:
        warnings.append(
            '%s has an unconditional exit on line(s) %s before the samepage.ksm block, which may then '
            'never run; move the block above it or remove that exit' % (target, ', '.join(str(n) for n in early)))
    plan.write(target, after, mode=mode, backup=backup)
    return target, warnings


def plan_boot(plan, backend, boot, relax, boost_seconds, sysfs_path, rc_local_path, systemd_dir, tmpfiles_dir,
              backup=False):
    """Record in ``plan`` the boot configuration of ``backend`` and the removal of every other
    backend's artefacts (``backend`` None: remove them all). Nothing is written here.

    Returns a dict: rc_local_target, units (ours to enable, in order), units_removed (ours whose
    files go), daemon_reload_needed, warnings. Raises BlockError or FilePlanError.
    """
    systemd_dir = os.path.normpath(systemd_dir)
    tmpfiles_dir = os.path.normpath(tmpfiles_dir)
    block_args = (sysfs_path, boot, relax, boost_seconds) if backend == 'rc_local' else None
    target, warnings = plan_rc_local(plan, rc_local_path, block_args, backup=backup)

    units = systemd_units(sysfs_path, boot, relax, boost_seconds) if backend == 'systemd' else {}
    if units:
        _require_dir(systemd_dir, 'systemd_dir')
    unit_paths = []
    removed_units = []
    for name in UNITS:
        path = os.path.join(systemd_dir, name)
        unit_paths.append(path)
        if name in units:
            plan.write(path, units[name], mode=UNIT_MODE)
            continue
        if os.path.lexists(path) and plan.remove(path):
            removed_units.append(name)
        if name in WANTS:
            link = os.path.join(systemd_dir, WANTS[name], name)
            unit_paths.append(link)
            if os.path.islink(link):
                plan.remove(link)
                if name not in removed_units:
                    removed_units.append(name)

    conf_path = os.path.join(tmpfiles_dir, TMPFILES_CONF)
    if backend == 'tmpfiles':
        _require_dir(tmpfiles_dir, 'tmpfiles_dir')
        plan.write(conf_path, tmpfiles_conf(sysfs_path, boot), mode=UNIT_MODE)
    elif os.path.lexists(conf_path):
        plan.remove(conf_path)

    touched = set(plan.files)
    return dict(
        rc_local_target=target,
        units=[name for name in (SERVICE, RELAX_TIMER) if name in units],
        units_removed=removed_units,
        daemon_reload_needed=any(path in touched for path in unit_paths),
        warnings=warnings,
    )
