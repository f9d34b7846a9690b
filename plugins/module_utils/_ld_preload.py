# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure text logic of the ld_preload module: validation, SysV script and env file blocks,
start paths that drop the environment, systemd Environment= parsing, LD_PRELOAD merging.

Texts are raw text (see _fileplan: bytes decoded as latin-1). Nothing here writes; the planner
(_ld_preload_plan) decides and the file plan acts.
Private to the collection. Keep this file Python 2.7 / 3.6 clean: it runs on the managed host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shlex

from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import (
    block_body, find_block, remove_block, set_block)

# Blocks carry the service's name: two services may each keep their own block in one file.
# The unnamed markers of older releases are still read (and replaced or removed) for upgrades.
LEGACY_BEGIN = '# BEGIN samepage.ksm LD_PRELOAD'
LEGACY_END = '# END samepage.ksm LD_PRELOAD'
BEGIN = LEGACY_BEGIN
END = LEGACY_END
KINDS = ('LD_PRELOAD', 'PRCTL')
# Inside a block of an env file we created: state=absent then removes the whole file.
CREATED_FILE = '# samepage.ksm created this file; state=absent removes it with this block.'
DROPIN_HEADER = '# Managed by samepage.ksm (ld_preload); state=absent removes this file.'
DROPIN_CREATED_DIR = '# samepage.ksm created this directory; state=absent removes it when empty.'

# \A ... \Z: a trailing newline is not accepted ('$' would let one through).
SERVICE_CHARS = re.compile(r'\A[A-Za-z0-9_.@:-]+\Z')
DROPIN_CHARS = re.compile(r'\A[A-Za-z0-9_.@:+-]+\.conf\Z')
# No whitespace, quotes, '$', backslash, glob characters or ':' (LD_PRELOAD's own separator):
# the path goes verbatim into shell code, a case pattern and a systemd Environment= word.
LIBRARY_CHARS = re.compile(r'\A/[A-Za-z0-9_.+,=@%/-]*\Z')
SERVICE_ACCEPTED = ("letters, digits and '_', '.', '@', ':', '-'; no '/', no '..', no leading '-', no "
                    "whitespace or newline; an optional '.service' suffix")
MERGE_THRESHOLD_MAX = 2 ** 31 - 1
_ASCII_DIGITS = re.compile(r'\A[0-9]+\Z')

try:
    _STRING_TYPES = (str, unicode)  # noqa: F821 (Python 2)
    _INT_TYPES = (int, long)  # noqa: F821 (Python 2)
except NameError:
    _STRING_TYPES = (str,)
    _INT_TYPES = (int,)


def markers(name, kind='LD_PRELOAD'):
    """(begin, end) marker lines of the service's block of ``kind`` (LD_PRELOAD or PRCTL)."""
    return ('# BEGIN samepage.ksm %s %s' % (kind, name), '# END samepage.ksm %s %s' % (kind, name))


class LdPreloadError(ValueError):
    """Input or target state we refuse to act on; the message says what and how to fix it."""


def validate_service(name):
    """The service's base name (without '.service'), or LdPreloadError saying what is accepted."""
    if name is None or name == '':
        raise LdPreloadError('service must not be empty; expected a service name such as '
                             "'mysql' or 'mysqld.service' (%s)" % SERVICE_ACCEPTED)
    problem = None
    if '/' in name:
        problem = "contains '/' (a path, not a service name)"
    elif '..' in name:
        problem = "contains '..'"
    elif name.startswith('-'):
        problem = "starts with '-'"
    elif not SERVICE_CHARS.match(name):
        problem = 'contains characters other than the accepted ones'
    base = name[:-len('.service')] if name.endswith('.service') else name
    if problem is None and (base == '' or base.strip('.') == '' or base.startswith('-')):
        problem = 'leaves no usable name'
    if problem is not None:
        raise LdPreloadError('service %r %s; expected %s' % (name, problem, SERVICE_ACCEPTED))
    return base


def validate_library(path, option='library', example='/usr/lib64/libksm_preload.so'):
    """A path that goes verbatim into shell code, a case pattern and a systemd Environment= word."""
    if not path or not path.startswith('/'):
        raise LdPreloadError('%s %r must be an absolute path such as %s' % (option, path, example))
    if not LIBRARY_CHARS.match(path):
        raise LdPreloadError(
            "%s %r contains characters that are not accepted; expected an absolute path of letters, "
            "digits and '_', '.', '+', ',', '=', '@', '%%', '-', '/' (no whitespace, newline, quotes, '$', ':', "
            "backslash or glob characters)" % (option, path))
    if path == '/':
        raise LdPreloadError("%s '/' is a directory; expected the absolute path of a file such as %s"
                             % (option, example))
    if os.path.normpath(path) != path:
        raise LdPreloadError("%s %r is not a normalized path (no '//', '.', '..' or trailing '/'); "
                             'expected e.g. %s' % (option, path, os.path.normpath(path)))
    return path


def validate_dropin_name(name):
    if not name or not DROPIN_CHARS.match(name) or '..' in name or name[0] in '.-':
        raise LdPreloadError(
            "dropin_name %r is not accepted; expected a file name ending in '.conf' made of letters, "
            "digits and '_', '.', '@', ':', '+', '-' (no '/', no '..', no newline, not starting with '.' or '-')"
            % (name,))
    return name


def validate_merge_threshold(value):
    """None, or an int 0..2^31-1 from an int or a string of ASCII digits (not a bool, float or '²')."""
    if value is None:
        return None
    number = None
    if isinstance(value, bool):
        number = None
    elif isinstance(value, _INT_TYPES):
        number = int(value)
    elif isinstance(value, _STRING_TYPES) and _ASCII_DIGITS.match(value):
        number = int(value)
    if number is None or not 0 <= number <= MERGE_THRESHOLD_MAX:
        raise LdPreloadError(
            'merge_threshold %r is not accepted; expected a whole number from 0 to %d (an integer or a string '
            'of ASCII digits; not a boolean, a float or other digits)' % (value, MERGE_THRESHOLD_MAX))
    return number


def check_regular_file(option, path, exists, is_file, check_mode, executable=None):
    """None when ``path`` is fine, a warning text (check mode, missing), or LdPreloadError."""
    if exists and not is_file:
        raise LdPreloadError('%s %s is not a regular file; expected the path of the file itself' % (option, path))
    if not exists:
        if check_mode:
            return ('%s %s does not exist yet; in a real run this is an error (install it first: the check '
                    'assumes an earlier task puts it there)' % (option, path))
        raise LdPreloadError('%s %s does not exist; install it first (a service started with a missing %s '
                             'does not get it); nothing was written' % (option, path, option))
    if executable is False:
        raise LdPreloadError('%s %s is not executable' % (option, path))
    return None


# ---------------------------------------------------------------------------------------------
# Shell scripts: where the block goes

# One shell word that stays on its line: a quoted string without backquotes/backslashes or an
# unquoted word without separators or command substitution.
_VALUE = r'''(?:"[^"`\\]*"|'[^']*'|[^\s;&|<>()"'`\\#]*)'''
# '\s*(?:;\s*)?' rather than '\s*;?\s*': two adjacent '\s*' cost quadratic time on a long blank run.
_TAIL = r'\s*(?:;\s*)?(?:#.*)?$'
_PATH_ONE_LINE = re.compile(r'^PATH=' + _VALUE + r'\s*;\s*export\s+PATH' + _TAIL)
_EXPORT_PATH_ASSIGN = re.compile(r'^export\s+PATH=' + _VALUE + _TAIL)
_PATH_ASSIGN = re.compile(r'^PATH=' + _VALUE + _TAIL)
_EXPORT_PATH = re.compile(r'^export(?:\s+[A-Za-z_][A-Za-z0-9_]*)*\s+PATH(?:\s+[A-Za-z_][A-Za-z0-9_]*)*' + _TAIL)
_PRELOAD_LINE = re.compile(
    r'^(?:export\s+)?LD_PRELOAD=' + _VALUE + r'(?:\s*;\s*export\s+LD_PRELOAD)?' + _TAIL)
_EXPORT_PRELOAD = re.compile(r'^export(?:\s+[A-Za-z_][A-Za-z0-9_]*)*\s+LD_PRELOAD(?:\s+[A-Za-z_][A-Za-z0-9_]*)*'
                             + _TAIL)
_HEREDOC = re.compile(r'''<<(-?)\s*\\?(["']?)([A-Za-z_][A-Za-z0-9_]*)\2''')


def top_level_lines(text):
    """(index, line without newline, offset after the line) for lines a top-level command may
    start on: unindented, not inside a here-document, not continuing a previous line."""
    result = []
    offset = 0
    heredoc = None
    continued = False
    for index, raw in enumerate(text.splitlines(True)):
        line = raw.rstrip('\r\n')
        offset += len(raw)
        if heredoc is not None:
            delimiter, strip_tabs = heredoc
            if (line.lstrip('\t') if strip_tabs else line) == delimiter:
                heredoc = None
            continue
        was_continued = continued
        continued = line.endswith('\\') and not line.lstrip().startswith('#')
        if not line.lstrip().startswith('#'):
            match = _HEREDOC.search(line)
            if match:
                heredoc = (match.group(3), match.group(1) == '-')
        if was_continued or line[:1] in (' ', '\t'):
            continue
        result.append((index, line, offset))
    return result


def fallback_offset(text):
    """After the shebang, the LSB header and every leading comment/blank line: before the first
    command of the script (or at its end when it has none)."""
    offset = 0
    for raw in text.splitlines(True):
        stripped = raw.strip()
        if stripped and not stripped.startswith('#'):
            break
        offset += len(raw)
    # Keep trailing blank lines of the header above the block, not between it and the code.
    return offset


def path_offset(text):
    """Offset right after the first top-level PATH assignment (and its 'export PATH'), or None."""
    lines = top_level_lines(text)
    for position, (index, line, after) in enumerate(lines):
        if _PATH_ONE_LINE.match(line) or _EXPORT_PATH_ASSIGN.match(line):
            return after
        if _PATH_ASSIGN.match(line):
            for later_index, later, later_after in lines[position + 1:]:
                if later.strip() == '' or later.lstrip().startswith('#'):
                    continue
                if _EXPORT_PATH.match(later):
                    return later_after
                break
            return after
    return None


def preload_offset(text):
    """Offset after the last top-level line that assigns or exports LD_PRELOAD, or None."""
    found = None
    for index, line, after in top_level_lines(text):
        if _PRELOAD_LINE.match(line) or _EXPORT_PRELOAD.match(line):
            found = after
    return found


def script_offset(text):
    """Where a new block goes in an init script, and which rule chose it ('path' or 'fallback')."""
    offset = path_offset(text)
    rule = 'path'
    if offset is None:
        offset, rule = fallback_offset(text), 'fallback'
    existing = preload_offset(text)
    if existing is not None and existing > offset:
        # The script sets LD_PRELOAD itself further down: go after it so ours is appended.
        offset, rule = existing, 'after-ld-preload'
    return offset, rule


_SETS_PRELOAD = re.compile(r'(?:^|[\s;&|(])(?:export\s+)?LD_PRELOAD=|\bexport(?:\s+[A-Za-z_][A-Za-z0-9_]*)*\s+LD_PRELOAD\b',
                           re.M)


def mentions_preload(text):
    """Whether shell text assigns or exports LD_PRELOAD (an echo of "$LD_PRELOAD" does not count)."""
    for line in (text or '').splitlines():
        if not line.lstrip().startswith('#') and _SETS_PRELOAD.search(line):
            return True
    return False


def shell_block_body(library, merge_threshold, append, created_file=False):
    """Lines between the markers for a sourced/executed sh script."""
    body = []
    if created_file:
        body.append(CREATED_FILE)
    if append:
        body.extend([
            'case " ${LD_PRELOAD:-} " in',
            '*[\\ :]%s[\\ :]*) ;;' % library,
            '*) LD_PRELOAD="${LD_PRELOAD:+$LD_PRELOAD }%s" ;;' % library,
            'esac',
        ])
    else:
        body.append('LD_PRELOAD=%s' % library)
    body.append('export LD_PRELOAD')
    if merge_threshold is not None:
        body.append('KSMP_MERGE_THRESHOLD=%d' % merge_threshold)
        body.append('export KSMP_MERGE_THRESHOLD')
    return body


def prctl_block_body(launcher, interpreter):
    """Lines of a PRCTL block: re-exec the script once under the launcher (guard variable).

    The launcher sets PR_SET_MEMORY_MERGE and execs; the flag is a process attribute, inherited
    across fork and exec (Linux 6.4+), so it survives 'env -i', 'su -' and everything else the
    start path does. ``interpreter``: the shebang's words, e.g. ['/bin/sh', '-e'].
    """
    words = ' '.join(list(interpreter) + ['"$0"', '"$@"'])
    return [
        'if [ -z "${SAMEPAGE_KSM_MERGE_EXEC:-}" ] && [ -x %s ]; then' % launcher,
        '\tSAMEPAGE_KSM_MERGE_EXEC=1',
        '\texport SAMEPAGE_KSM_MERGE_EXEC',
        '\texec %s %s' % (launcher, words),
        'fi',
    ]


def render(body, name, kind='LD_PRELOAD'):
    begin, end = markers(name, kind)
    return '\n'.join([begin] + list(body) + [end]) + '\n'


def _span(text, name, kind, legacy):
    """(begin, end) of the block that is ours in ``text``: the named one, else (legacy) the unnamed one."""
    begin, end = markers(name, kind)
    if find_block(text or '', begin, end) is not None:
        return begin, end
    if legacy and kind == 'LD_PRELOAD' and find_block(text or '', LEGACY_BEGIN, LEGACY_END) is not None:
        return LEGACY_BEGIN, LEGACY_END
    return begin, end


def put_block(text, block, offset, name, kind='LD_PRELOAD', legacy=False):
    """``text`` with our block replaced where it stands, or inserted at ``offset`` (a line start).

    ``legacy``: an unnamed block of an older release in this file is ours and is replaced.
    """
    begin, end = _span(text, name, kind, legacy)
    return set_block(text, block, begin, end, offset)


def remove_our_block(text, name, kinds=KINDS, legacy=False):
    """``text`` without the service's blocks (the exact inverse of put_block), unchanged when absent."""
    if text is None:
        return None
    for kind in kinds:
        begin, end = _span(text, name, kind, legacy)
        text = remove_block(text, begin, end)
    return text


def our_block_body(text, name, kind='LD_PRELOAD', legacy=False):
    begin, end = _span(text, name, kind, legacy)
    return block_body(text, begin, end)


def has_legacy_block(text):
    return find_block(text or '', LEGACY_BEGIN, LEGACY_END) is not None


# ---------------------------------------------------------------------------------------------
# Start paths that drop or replace the environment

_COMMENT = re.compile(r'(?:^|(?<=\s))#.*$')
# A command word starts here (also inside a quoted string or a $(...): ENV="env -i ...").
_CMD = r'''(?:^|(?<=[\s;&|(`"'=]))'''
_END = r'''(?=[\s"']|$)'''
# su/runuser options before the command string (-c CMD): a '-l' inside CMD is not su's.
_ARGS = r'(?:\s+(?!-c\b|--command\b|--session-command\b)[^;&|\s]+)*?'
_DROPS = [
    ('env -i', re.compile(_CMD + r'(?:/usr/bin/|/bin/)?env\s+(?:-[A-Za-z]*i[A-Za-z]*|--ignore-environment|-)' + _END),
     'runs commands with an emptied environment (env -i)'),
    ('su -', re.compile(_CMD + r'(?:/usr/bin/|/bin/)?su' + _ARGS + r'\s+(?:-|-l|--login)' + _END),
     'starts a login shell (su -), which clears the environment'),
    ('runuser -l', re.compile(_CMD + r'(?:/usr/sbin/|/sbin/)?runuser' + _ARGS + r'\s+(?:-|-l|--login)' + _END),
     'starts a login shell (runuser -l), which clears the environment'),
    ('sudo', re.compile(_CMD + r'(?:/usr/bin/)?sudo(?=\s)'),
     'runs a command through sudo, which always removes LD_PRELOAD'),
]
_SSD = re.compile(_CMD + r'(?:/sbin/|/usr/sbin/)?start-stop-daemon\s')
_SSD_CHUID = re.compile(r'(?:^|\s)(?:--chuid|-c)[\s=]')
_LOGIN_SHELL = re.compile(r'''(?:^|[\s/])(?:ba|da|k|mk|z)?sh["']?\s+(?:--\s+)?(?:-[A-Za-z]*l[A-Za-z]*|--login)(?=\s|$)''')
_DAEMON_USER = re.compile(_CMD + r'daemon\s+(?:[^;&|]*\s)?--user(?:=|\s)')
_ASSIGNS_PRELOAD = re.compile(
    r'(?:^|(?<=[\s;&|(`]))(?:(?:export|readonly|local|typeset|declare)\s+(?:-\w+\s+)*(?:[A-Za-z_]\w*(?:=\S*)?\s+)*)?LD_PRELOAD='
    r'|(?:^|(?<=[\s;&|(]))unset\s+(?:-v\s+)?(?:[A-Za-z_]\w*\s+)*LD_PRELOAD\b')


def code_lines(text):
    """(line number, code, top level, offset after it) for each logical line of shell text.

    Comments are stripped (roughly: '#' at a word start), backslash continuations joined,
    here-document bodies skipped. Top level: the logical line starts unindented.
    """
    result = []
    offset = 0
    heredoc = None
    pending = None
    for index, raw in enumerate((text or '').splitlines(True)):
        offset += len(raw)
        line = raw.rstrip('\r\n')
        if heredoc is not None:
            delimiter, strip_tabs = heredoc
            if (line.lstrip('\t') if strip_tabs else line) == delimiter:
                heredoc = None
            continue
        if pending is None and line.lstrip().startswith('#'):
            continue
        code = _COMMENT.sub('', line) if '#' in line else line
        if pending is not None:
            number, top, joined = pending
            joined = joined + ' ' + code.strip()
        else:
            number, top, joined = index + 1, line[:1] not in (' ', '\t'), code
        if joined.endswith('\\'):
            pending = (number, top, joined[:-1])
            continue
        pending = None
        match = _HEREDOC.search(joined)
        if match:
            heredoc = (match.group(3), match.group(1) == '-')
        if joined.strip():
            result.append((number, joined, top, offset))
    if pending is not None:
        result.append((pending[0], pending[2], pending[1], offset))
    return result


def _daemon_function_drops(functions_text):
    """(line number, line) where the daemon() of an EL functions file runs --user commands in a
    login shell; None when it does not."""
    inside = False
    for number, code, top, dummy in code_lines(functions_text):
        if top and re.match(r'\s*daemon\s*\(\)', code):
            inside = True
            continue
        if inside and top and code.strip() == '}':
            return None
        if inside:
            for dummy_kind, pattern, dummy_what in _DROPS[1:3]:
                if pattern.search(code):
                    return number, code.strip()
    return None


def environment_drops(text, functions_text=None):
    """[(line number, line, kind, what it does)] for every line of an init script after which the
    environment it exported may not reach the daemon."""
    found = []
    for number, code, dummy_top, dummy in code_lines(text):
        hit = None
        for kind, pattern, what in _DROPS:
            if pattern.search(code):
                hit = (kind, what)
                break
        if hit is None and _SSD.search(code) and _SSD_CHUID.search(code) and _LOGIN_SHELL.search(code):
            hit = ('login shell', 'runs the daemon as another user through a login shell, whose profile may reset '
                                  'the environment')
        if hit is None and _DAEMON_USER.search(code):
            if functions_text is None:
                hit = ('daemon --user', 'runs the daemon as another user through the daemon() of an init functions '
                                        'file that could not be read')
            else:
                login = _daemon_function_drops(functions_text)
                if login is not None:
                    hit = ('daemon --user', 'runs the daemon as another user through daemon(), which starts a '
                                            'login shell (functions line %d: %s)' % login)
        if hit is not None:
            found.append((number, code.strip(), hit[0], hit[1]))
    return found


def late_preload_assignments(text, offset):
    """[(line number, line)] that assign or unset LD_PRELOAD where our value could be lost:
    anywhere not at top level (functions, if/case branches, subshells) and at top level from
    ``offset`` on (after our block, or after the line that sources our env file)."""
    found = []
    for number, code, top, after in code_lines(text):
        if not _ASSIGNS_PRELOAD.search(code):
            continue
        if top and after <= offset and (_PRELOAD_LINE.match(code) or _EXPORT_PRELOAD.match(code)):
            continue
        found.append((number, code.strip()))
    return found


def source_line_offset(script_text, path):
    """Offset after the first logical line of the script that sources ``path``; None when none does."""
    values = simple_assignments(script_text)
    for dummy, code, dummy_top, after in code_lines(script_text):
        if path in _sourced_on_line(code, values):
            return after
    return None


# Env files that several services read: never edited without an explicit envfile path.
DENIED_ENVFILES = ('rcS', 'rc', 'locale', 'keyboard', 'console-setup', 'network', 'networking', 'init',
                   'functions', 'halt', 'hwclock', 'tmpfs', 'devpts', 'nss', 'useradd', 'grub', 'bootlogd',
                   'i18n', 'clock', 'kernel', 'syslog', 'cpupower')

# An env -i start path whose command reads a file of its own before it execs the daemon.
APACHE_SERVICE = re.compile(r'\Aapache2(-[A-Za-z0-9_.@:-]+)?\Z')


def surviving_file(base, script_text, drops, etc_dir):
    """The file the env-dropping command itself reads (apache2ctl -> <etc>/apache2<suffix>/envvars),
    when every drop in the script is an 'env -i' in front of that command; else None."""
    match = APACHE_SERVICE.match(base)
    if not match or not drops or 'apache2ctl' not in script_text:
        return None
    if any(drop[2] != 'env -i' for drop in drops):
        return None
    return os.path.join(etc_dir, 'apache2%s' % (match.group(1) or ''), 'envvars')


# ---------------------------------------------------------------------------------------------
# Which env file an init script sources

_SOURCE = re.compile(r'''(?:^|[\s;&|({])(?:\.|source)\s+(["']?)([^\s"';&|)]+)\1''')
_SIMPLE_ASSIGN = re.compile(r'''^\s*([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"`$\\]*)"|'([^']*)'|([^\s;&|<>()"'`$\\#]*))\s*(?:;\s*)?(?:#.*)?$''')
_VARIABLE = re.compile(r'\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?')


def simple_assignments(text):
    """First literal value of each plain VAR=value line (no expansions): resolves $NAME/$prog."""
    values = {}
    for line in text.splitlines():
        match = _SIMPLE_ASSIGN.match(line)
        if match and match.group(1) not in values:
            values[match.group(1)] = [v for v in match.group(2, 3, 4) if v is not None][0]
    return values


def _sourced_on_line(line, values):
    found = []
    for match in _SOURCE.finditer(line):
        target = match.group(2)
        unresolved = []

        def expand(var):
            if var.group(1) in values:
                return values[var.group(1)]
            unresolved.append(var.group(1))
            return var.group(0)
        target = _VARIABLE.sub(expand, target)
        if unresolved or not target.startswith('/'):
            continue
        found.append(os.path.normpath(target))
    return found


def sourced_files(script_text):
    """Absolute paths the script sources with '.' or 'source', variables resolved where the script
    assigns them a literal; paths with unresolved variables are left out."""
    values = simple_assignments(script_text)
    found = []
    for line in script_text.splitlines():
        if line.lstrip().startswith('#'):
            continue
        for target in _sourced_on_line(line, values):
            if target not in found:
                found.append(target)
    return found


# ---------------------------------------------------------------------------------------------
# systemd units

def unit_names(base):
    """Unit file names that configure the service, most specific first (instance, template)."""
    names = [base + '.service']
    if '@' in base:
        prefix, instance = base.split('@', 1)
        if instance:
            names.append(prefix + '@.service')
    return names


def _logical_lines(text):
    pending = ''
    for line in text.splitlines():
        stripped = line.strip()
        if not pending and (stripped.startswith('#') or stripped.startswith(';')):
            continue
        if stripped.endswith('\\'):
            pending += stripped[:-1] + ' '
            continue
        yield pending + stripped
        pending = ''
    if pending:
        yield pending


def environment_events(text):
    """[Service] Environment= settings in order: a dict per assignment line, None for a reset."""
    events = []
    section = None
    for line in _logical_lines(text):
        if line.startswith('[') and line.endswith(']'):
            section = line[1:-1]
            continue
        if section != 'Service' or '=' not in line:
            continue
        key, value = line.split('=', 1)
        if key.strip() != 'Environment':
            continue
        value = value.strip()
        if value == '':
            events.append(None)
            continue
        try:
            words = shlex.split(value)
        except ValueError:
            raise LdPreloadError('cannot parse the unit line %r: unbalanced quotes' % line)
        assignments = {}
        for word in words:
            if '=' in word:
                name, val = word.split('=', 1)
                assignments[name] = val
        events.append(assignments)
    return events


def effective_variable(events, name, value=None):
    """Apply environment events to a starting ``value`` of variable ``name``."""
    for event in events:
        if event is None:
            value = None
        elif name in event:
            value = event[name]
    return value


def preload_entries(value):
    return [entry for entry in re.split(r'[\s:]+', (value or '').strip()) if entry]


def merge_preload(existing, library):
    """LD_PRELOAD that keeps ``existing`` first and holds ``library`` once."""
    if not preload_entries(existing):
        return library
    if library in preload_entries(existing):
        return existing.strip()
    return existing.strip() + ' ' + library


def quote_environment(name, value):
    return '"%s=%s"' % (name, value.replace('\\', '\\\\').replace('"', '\\"'))


def render_dropin(method, preload, merge_threshold, created_dir):
    lines = [DROPIN_HEADER]
    if created_dir:
        lines.append(DROPIN_CREATED_DIR)
    lines.append('[Service]')
    if method == 'memoryksm':
        lines.append('MemoryKSM=yes')
    else:
        lines.append('Environment=%s' % quote_environment('LD_PRELOAD', preload))
        if merge_threshold is not None:
            lines.append('Environment=%s' % quote_environment('KSMP_MERGE_THRESHOLD', str(merge_threshold)))
    return '\n'.join(lines) + '\n'


def is_our_dropin(text):
    return text is not None and text.splitlines()[:1] == [DROPIN_HEADER]


# ---------------------------------------------------------------------------------------------
# Versions

def parse_systemd_version(output):
    """'systemd 252 (252.38-1~deb12u1)' -> 252; None when unrecognised."""
    match = re.match(r'\s*systemd\s+(\d+)', output or '')
    return int(match.group(1)) if match else None


def parse_kernel_release(release):
    """'6.18.44-fc-v782' -> (6, 18); None when unrecognised."""
    match = re.match(r'\s*(\d+)\.(\d+)', release or '')
    return (int(match.group(1)), int(match.group(2))) if match else None


MEMORYKSM_SYSTEMD = 254
MEMORYKSM_KERNEL = (6, 4)
