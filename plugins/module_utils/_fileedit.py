# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""Managed-block editing and atomic file writes, shared by the collection's modules.

A managed block is a run of whole lines between a begin and an end marker line. Everything
outside the block is kept byte-for-byte: files are handled as the raw text of _fileplan (bytes
decoded as latin-1, lossless on Python 2.7 and 3), so bytes that are not UTF-8 survive a round
trip. Private to the collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import errno
import os
import stat
import tempfile

from ansible_collections.samepage.ksm.plugins.module_utils._fileplan import decode, encode  # noqa: F401 (re-exported)


class BlockError(Exception):
    """The file's markers are not in a state we can edit safely."""


def read_text(path):
    """The file's text, or None when it does not exist."""
    try:
        with open(path, 'rb') as handle:
            return decode(handle.read())
    except (IOError, OSError) as exc:
        if getattr(exc, 'errno', None) == errno.ENOENT:
            return None
        raise


def find_block(text, begin, end):
    """(start, stop) character offsets of the whole-line block, or None when absent.

    Fails on a lone, repeated or out-of-order marker: editing then could eat foreign lines.
    """
    lines = text.splitlines(True)
    begins = [i for i, line in enumerate(lines) if line.rstrip('\r\n') == begin]
    ends = [i for i, line in enumerate(lines) if line.rstrip('\r\n') == end]
    if not begins and not ends:
        return None
    if len(begins) != 1 or len(ends) != 1 or ends[0] < begins[0]:
        raise BlockError(
            'found %d %r and %d %r marker lines; expected exactly one of each, begin first. '
            'Fix the file by hand, then run again' % (len(begins), begin, len(ends), end))
    start = sum(len(line) for line in lines[:begins[0]])
    stop = sum(len(line) for line in lines[:ends[0] + 1])
    return start, stop


def render_block(begin, body_lines, end, newline='\n'):
    return newline.join([begin] + list(body_lines) + [end]) + newline


def set_block(text, block, begin, end, offset=None):
    """Return ``text`` with the managed block replaced by, or inserted as, ``block``.

    An existing block is replaced where it stands; a new one goes at ``offset`` (a line start;
    default: the end). A file without a final newline keeps lacking one, so that remove_block()
    gives back the exact original bytes.
    """
    text = text or ''
    span = find_block(text, begin, end)
    if span is not None:
        start, stop = span
        if stop == len(text) and not text.endswith('\n'):
            block = block.rstrip('\n')
        return text[:start] + block + text[stop:]
    if offset is None:
        offset = len(text)
    head, tail = text[:offset], text[offset:]
    if head and not head.endswith('\n'):
        return head + '\n' + block.rstrip('\n') + tail
    return head + block + tail


def remove_block(text, begin, end):
    """Return ``text`` without the managed block: the exact inverse of set_block()."""
    if text is None:
        return None
    span = find_block(text, begin, end)
    if span is None:
        return text
    start, stop = span
    if stop == len(text) and not text.endswith('\n') and start > 0 and text[start - 1] == '\n':
        start -= 1
    return text[:start] + text[stop:]


def block_body(text, begin, end):
    """The lines between the markers, or None when there is no block."""
    span = find_block(text or '', begin, end)
    if span is None:
        return None
    return text[span[0]:span[1]].splitlines()[1:-1]


def write_atomic(module, path, text, mode=None, backup=False):
    """Write ``text`` to ``path`` through a temporary file in the same directory.

    Keeps the existing file's mode/owner unless ``mode`` is given. Returns the backup path or None.
    Follows a symlink at ``path`` (EL's /etc/rc.local -> rc.d/rc.local) so the link stays a link.
    """
    target = os.path.realpath(path)
    directory = os.path.dirname(target)
    backup_file = None
    existing = None
    try:
        existing = os.stat(target)
    except OSError:
        existing = None
    if backup and existing is not None:
        backup_file = module.backup_local(target)
    fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(target), dir=directory)
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(encode(text))
        if existing is not None:
            os.chmod(tmp, stat.S_IMODE(existing.st_mode))
            try:
                os.chown(tmp, existing.st_uid, existing.st_gid)
            except OSError:
                pass
        module.atomic_move(tmp, target, unsafe_writes=False)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    # atomic_move copies the old file's mode (or applies the umask to a new file): set ours after.
    if mode is not None:
        os.chmod(target, mode)
    return backup_file


def remove_file(path):
    try:
        os.unlink(path)
        return True
    except OSError as exc:
        if getattr(exc, 'errno', None) == errno.ENOENT:
            return False
        raise


def file_diff(path, before, after):
    """A diff dict in the shape Ansible's --diff callback prints."""
    return {
        'before_header': path if before is not None else '%s (absent)' % path,
        'after_header': path if after is not None else '%s (absent)' % path,
        'before': before or '',
        'after': after or '',
    }
