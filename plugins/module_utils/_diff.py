# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""A small record of (key, before, after) triples that renders Ansible's ``diff`` result.

Modelled on community.docker's DifferenceTracker. Private to the collection.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class DifferenceTracker(object):
    """Collects every compared key in insertion order; knows which of them differ."""

    def __init__(self):
        self._entries = []

    def add(self, key, before=None, after=None):
        self._entries.append((key, before, after))

    def merge(self, other):
        self._entries.extend(other._entries)

    @property
    def empty(self):
        return not self._entries

    @property
    def has_differences(self):
        return any(before != after for dummy, before, after in self._entries)

    def differences(self):
        """[{'key', 'before', 'after'}] for the keys whose value changes, in insertion order."""
        return [dict(key=key, before=before, after=after)
                for key, before, after in self._entries if before != after]

    def get_before(self):
        return dict((key, before) for key, before, dummy in self._entries)

    def get_after(self):
        return dict((key, after) for key, dummy, after in self._entries)

    def as_text_diff(self, header=None, separator=' = '):
        """Ansible's diff dict with ``key = value`` lines, one per compared key."""
        def render(index):
            return ''.join('%s%s%s\n' % (entry[0], separator, entry[index]) for entry in self._entries)

        diff = dict(before=render(1), after=render(2))
        if header:
            diff['before_header'] = header
            diff['after_header'] = header
        return diff
