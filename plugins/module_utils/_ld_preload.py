# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Pure text logic of the ld_preload module: validation, SysV script and env file blocks,
systemd Environment= parsing, LD_PRELOAD merging and version parsing.

Nothing here touches the file system beyond reading; the module decides and writes.
Private to the collection. Keep this file Python 2.7 / 3.6 clean: it runs on the managed host.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import re
import shlex

from ansible_collections.samepage.ksm.plugins.module_utils._fileedit import (
    block_body, remove_block, set_block)

BEGIN = '# BEGIN samepage.ksm LD_PRELOAD'
END = '# END samepage.ksm LD_PRELOAD'
# Inside a block of an env file we created: state=absent then removes the whole file.
CREATED_FILE = '# samepage.ksm created this file; state=absent removes it with this block.'
DROPIN_HEADER = '# Managed by samepage.ksm (ld_preload); state=absent removes this file.'
DROPIN_CREATED_DIR = '# samepage.ksm created this directory; state=absent removes it when empty.'

SERVICE_CHARS = re.compile(r'^[A-Za-z0-9_.@:-]+$')
DROPIN_CHARS = re.compile(r'^[A-Za-z0-9_.@:+-]+\.conf$')
# No whitespace, quotes, '$', backslash, glob characters or ':' (LD_PRELOAD's own separator):
# the path goes verbatim into shell code, a case pattern and a systemd Environment= word.
LIBRARY_CHARS = re.compile(r'^/[A-Za-z0-9_.+,=@%/-]*$')
SERVICE_ACCEPTED = ("letters, digits and '_', '.', '@', ':', '-'; no '/', no '..', no leading '-'; "
                    "an optional '.service' suffix")


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


def validate_library(path):
    if not path or not path.startswith('/'):
        raise LdPreloadError('library %r must be an absolute path such as /usr/lib64/libksm_preload.so'
                             % (path,))
    if not LIBRARY_CHARS.match(path):
        raise LdPreloadError(
            "library %r contains characters that are not accepted; expected an absolute path of letters, "
            "digits and '_', '.', '+', ',', '=', '@', '%%', '-', '/' (no whitespace, quotes, '$', ':', "
            "backslash or glob characters)" % (path,))
    if os.path.normpath(path) != path:
        raise LdPreloadError("library %r is not a normalized path (no '//', '.', '..' or trailing '/'); "
                             'expected e.g. %s' % (path, os.path.normpath(path)))
    return path


def validate_dropin_name(name):
    if not name or not DROPIN_CHARS.match(name) or '..' in name or name[0] in '.-':
        raise LdPreloadError(
            "dropin_name %r is not accepted; expected a file name ending in '.conf' made of letters, "
            "digits and '_', '.', '@', ':', '+', '-' (no '/', no '..', not starting with '.' or '-')"
            % (name,))
    return name


# ---------------------------------------------------------------------------------------------
# Shell scripts: where the block goes

# One shell word that stays on its line: a quoted string without backquotes/backslashes or an
# unquoted word without separators or command substitution.
_VALUE = r'''(?:"[^"`\\]*"|'[^']*'|[^\s;&|<>()"'`\\#]*)'''
_TAIL = r'\s*;?\s*(?:#.*)?$'
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


def render(body):
    return '\n'.join([BEGIN] + list(body) + [END]) + '\n'


def put_block(text, block, offset):
    """``text`` with our block replaced where it stands, or inserted at ``offset`` (a line start)."""
    return set_block(text, block, BEGIN, END, offset)


def remove_our_block(text):
    """``text`` without our block (the exact inverse of put_block), unchanged when absent."""
    return remove_block(text, BEGIN, END)


def our_block_body(text):
    return block_body(text, BEGIN, END)


# ---------------------------------------------------------------------------------------------
# Which env file an init script sources

_SOURCE = re.compile(r'''(?:^|[\s;&|({])(?:\.|source)\s+(["']?)([^\s"';&|)]+)\1''')
_SIMPLE_ASSIGN = re.compile(r'''^\s*([A-Za-z_][A-Za-z0-9_]*)=(?:"([^"`$\\]*)"|'([^']*)'|([^\s;&|<>()"'`$\\#]*))\s*;?\s*(?:#.*)?$''')
_VARIABLE = re.compile(r'\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?')


def simple_assignments(text):
    """First literal value of each plain VAR=value line (no expansions): resolves $NAME/$prog."""
    values = {}
    for line in text.splitlines():
        match = _SIMPLE_ASSIGN.match(line)
        if match and match.group(1) not in values:
            values[match.group(1)] = [v for v in match.group(2, 3, 4) if v is not None][0]
    return values


def sourced_files(script_text):
    """Absolute paths the script sources with '.' or 'source', variables resolved where the script
    assigns them a literal; paths with unresolved variables are left out."""
    values = simple_assignments(script_text)
    found = []
    for line in script_text.splitlines():
        if line.lstrip().startswith('#'):
            continue
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
            target = os.path.normpath(target)
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
