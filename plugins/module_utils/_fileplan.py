# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One plan for every file a module manages: read, decide, show the diff, then act whole.

A module reads each file through ``FilePlan.read``, computes the new text, and records
``write``/``remove``/``mkdir`` operations. Nothing touches the disk until ``apply``, which
writes every file atomically (temporary file in the same directory, then rename), keeps mode
and owner unless told otherwise, makes the requested backups, and, when any step fails, puts
back what it had already done, so that a multi-file change happens whole or not at all.

Text is "raw text": the file's bytes decoded as latin-1, one character per byte. That round
trip is lossless for any bytes on Python 2.7 and 3 alike (2.7 has no ``surrogateescape``),
and every marker and line the collection inserts is ASCII. ``printable`` turns raw text into
what a person reads in a diff: UTF-8 decoded, other bytes shown as ``\\xNN``.

Private to the collection. Runs on the managed host: Python 2.7 / 3.6 clean.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import codecs
import errno
import os
import stat
import tempfile

from ansible_collections.samepage.ksm.plugins.module_utils._ksm import describe_os_error

RAW = 'latin-1'
NEW_FILE_MODE = 0o644
_ESCAPE = 'samepage_ksm_escape'


def _escape_undecodable(error):
    bad = error.object[error.start:error.end]
    return (u''.join(u'\\x%02x' % (b if isinstance(b, int) else ord(b)) for b in bad), error.end)


codecs.register_error(_ESCAPE, _escape_undecodable)


class FilePlanError(Exception):
    """A file could not be read, planned or changed; the message names it and the outcome."""


def decode(data):
    """Bytes to raw text (lossless)."""
    return data.decode(RAW)


def encode(text):
    """Raw text back to the exact bytes."""
    return text.encode(RAW)


def printable(text):
    """Raw text as a person reads it: UTF-8, with undecodable bytes as ``\\xNN``; None stays None."""
    if text is None:
        return None
    return encode(text).decode('utf-8', _ESCAPE)


def _mode_of(st):
    return stat.S_IMODE(st.st_mode) if st is not None else None


def _lstat(path):
    try:
        return os.lstat(path)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        raise


class FilePlan(object):
    """The file operations of one module run, decided before any of them is done."""

    def __init__(self, module):
        self.module = module
        self._texts = {}
        self._mkdirs = []    # [(path, mode)]
        self._ops = []       # dicts, in the order recorded: writes and removals
        self.warnings = []

    # -- reading --------------------------------------------------------------------------
    def read(self, path):
        """The file's raw text, or None when it does not exist. Follows symbolic links."""
        if path in self._texts:
            return self._texts[path]
        try:
            with open(path, 'rb') as handle:
                text = decode(handle.read())
        except (IOError, OSError) as exc:
            if getattr(exc, 'errno', None) in (errno.ENOENT, errno.ENOTDIR):
                text = None
            elif getattr(exc, 'errno', None) == errno.EISDIR:
                raise FilePlanError('%s is a directory, expected a file; nothing was written' % path)
            else:
                raise FilePlanError('cannot read %s: %s; nothing was written' % (path, describe_os_error(exc)))
        self._texts[path] = text
        return text

    # -- deciding -------------------------------------------------------------------------
    def _op_for(self, path):
        for op in self._ops:
            if op['path'] == path:
                return op
        return None

    def _dir_ready(self, directory):
        return os.path.isdir(directory) or any(d == directory for d, dummy in self._mkdirs)

    def mkdir(self, path, mode=0o755):
        """Create a directory (its parent must exist or be planned) unless it exists."""
        path = os.path.normpath(path)
        if os.path.isdir(path) or any(d == path for d, dummy in self._mkdirs):
            return
        if os.path.lexists(path):
            raise FilePlanError('%s exists and is not a directory; nothing was written' % path)
        if not self._dir_ready(os.path.dirname(path)):
            raise FilePlanError('cannot create %s: its parent directory %s does not exist; nothing was written'
                                % (path, os.path.dirname(path)))
        self._mkdirs.append((path, mode))

    def write(self, path, text, mode=None, backup=False):
        """Plan ``path`` to hold ``text`` (raw text) with ``mode`` (None: keep it; new files 0644).

        A symbolic link at ``path`` is followed: its target is written and the link stays.
        Recorded only when the content or the mode would change.
        """
        target = os.path.realpath(path)
        before = self.read(target)
        if os.path.isdir(target):
            raise FilePlanError('%s is a directory, expected a file; nothing was written' % target)
        if not self._dir_ready(os.path.dirname(target)):
            raise FilePlanError('cannot create %s: directory %s does not exist; nothing was written'
                                % (target, os.path.dirname(target)))
        st = _lstat(target) if before is not None else None
        old_mode = _mode_of(st)
        new_mode = mode if mode is not None else (old_mode if old_mode is not None else NEW_FILE_MODE)
        existing = self._op_for(target)
        if existing is not None:
            self._ops.remove(existing)
        if before == text and old_mode == new_mode:
            return False
        self._ops.append(dict(kind='write', path=target, before=before, after=text, old_mode=old_mode,
                              mode=new_mode, backup=backup, stat=st, link=None))
        return True

    def remove(self, path, backup=False, rmdir=None):
        """Plan the removal of ``path`` (a file or a symbolic link, not followed).

        ``rmdir``: a directory to remove afterwards when nothing is left in it.
        """
        st = _lstat(path)
        if st is None:
            return False
        if stat.S_ISDIR(st.st_mode):
            raise FilePlanError('%s is a directory, expected a file; nothing was written' % path)
        link = os.readlink(path) if stat.S_ISLNK(st.st_mode) else None
        before = None if link is not None else self.read(path)
        existing = self._op_for(path)
        if existing is not None:
            self._ops.remove(existing)
        self._ops.append(dict(kind='remove', path=path, before=before, after=None, old_mode=_mode_of(st),
                              mode=None, backup=backup and link is None, stat=st, link=link, rmdir=rmdir))
        return True

    # -- what was decided -----------------------------------------------------------------
    @property
    def changed(self):
        return bool(self._ops or self._mkdirs)

    @property
    def files(self):
        """Every file written or removed, in the order recorded."""
        return [op['path'] for op in self._ops]

    @property
    def removed(self):
        return [op['path'] for op in self._ops if op['kind'] == 'remove']

    @property
    def written(self):
        return [op['path'] for op in self._ops if op['kind'] == 'write']

    @property
    def dirs_created(self):
        return [path for path, dummy in self._mkdirs]

    def diff(self):
        """One Ansible diff dict per file (whole file before and after), in the order recorded."""
        result = []
        for op in self._ops:
            before_header = op['path'] if op['before'] is not None or op['link'] else '%s (absent)' % op['path']
            after_header = op['path'] if op['kind'] == 'write' else '%s (absent)' % op['path']
            if op['link'] is not None:
                before_header += ' (symbolic link to %s)' % op['link']
            if op['kind'] == 'write' and op['old_mode'] != op['mode']:
                if op['old_mode'] is not None:
                    before_header += ' (mode %04o)' % op['old_mode']
                after_header += ' (mode %04o)' % op['mode']
            result.append(dict(before_header=before_header, after_header=after_header,
                               before=printable(op['before']) or '', after=printable(op['after']) or ''))
        return result

    # -- acting ---------------------------------------------------------------------------
    def _put(self, path, text, mode, st):
        """Write ``text`` to ``path`` atomically with ``mode``; owner (and SELinux context) of ``st`` kept."""
        directory = os.path.dirname(path)
        fd, tmp = tempfile.mkstemp(prefix='.%s.' % os.path.basename(path), dir=directory)
        try:
            with os.fdopen(fd, 'wb') as handle:
                handle.write(encode(text))
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(tmp, mode)
            if st is not None:
                try:
                    os.chown(tmp, st.st_uid, st.st_gid)
                except OSError:
                    pass
                self._keep_context(tmp, path)
            os.rename(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _keep_context(self, tmp, path):
        module = self.module
        try:
            if module is not None and module.selinux_enabled():
                module.set_context_if_different(tmp, module.selinux_context(path), False)
        except Exception:  # pylint: disable=broad-except
            pass

    def _backup(self, path, backups):
        if self.module is not None:
            made = self.module.backup_local(path)
            if made:
                backups[path] = made

    def apply(self):
        """Do every planned operation; never call in check mode.

        Order: directories, then writes, then removals (a backend switch writes the new files
        before the old ones go). On an error, what was done is undone, newest first, and
        FilePlanError says which file failed, why, and what state the files are in.
        Returns {'backups': {path: backup file}, 'dirs_removed': [...]}.
        """
        backups = {}
        undo = []
        dirs_removed = []
        step = None
        try:
            for path, mode in self._mkdirs:
                step = ('create directory', path)
                os.mkdir(path)
                undo.append(('rmdir', path, None))
                os.chmod(path, mode)
            for op in [o for o in self._ops if o['kind'] == 'write']:
                step = ('write', op['path'])
                if op['backup'] and op['before'] is not None:
                    self._backup(op['path'], backups)
                self._put(op['path'], op['after'], op['mode'], op['stat'])
                undo.append(('restore', op['path'], op))
            for op in [o for o in self._ops if o['kind'] == 'remove']:
                step = ('remove', op['path'])
                if op['backup']:
                    self._backup(op['path'], backups)
                os.unlink(op['path'])
                undo.append(('restore', op['path'], op))
        except (IOError, OSError) as exc:
            undone, failed = self._undo(undo)
            msg = 'cannot %s %s: %s' % (step[0], step[1], describe_os_error(exc))
            if failed:
                msg += '; UNDO FAILED for %s: check these files by hand' % '; '.join(failed)
            elif undone:
                msg += '; put back %s, so every file is as before' % ', '.join(undone)
            else:
                msg += '; nothing was changed'
            raise FilePlanError(msg)
        for op in self._ops:
            directory = op.get('rmdir') if op['kind'] == 'remove' else None
            if directory:
                try:
                    os.rmdir(directory)
                    dirs_removed.append(directory)
                except OSError as exc:
                    if exc.errno not in (errno.ENOENT,):
                        self.warnings.append('%s is not empty any more (or cannot be removed: %s); left in place'
                                             % (directory, describe_os_error(exc)))
        return dict(backups=backups, dirs_removed=dirs_removed)

    def _undo(self, undo):
        undone, failed = [], []
        for action, path, op in reversed(undo):
            try:
                if action == 'rmdir':
                    os.rmdir(path)
                elif op['link'] is not None:
                    os.symlink(op['link'], path)
                elif op['before'] is None:
                    os.unlink(path)
                else:
                    self._put(path, op['before'], op['old_mode'], op['stat'])
                undone.append(path)
            except (IOError, OSError) as exc:
                failed.append('%s (%s)' % (path, describe_os_error(exc)))
        return undone, failed
