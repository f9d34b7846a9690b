# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: ksm_prometheus
short_description: Render a ksm_info result as a Prometheus node_exporter textfile
version_added: 1.0.0
author:
  - samepage.ksm maintainers (@samepage)
description:
  - Takes the C(ksm) dictionary returned by M(samepage.ksm.ksm_info) and returns the text of a
    node_exporter textfile collector file (C(*.prom)) with C(# HELP) and C(# TYPE) lines.
  - Metric names follow the Prometheus conventions (C(node_ksm_) prefix, base units in the name,
    C(_total) for counters). A host without KSM gets only C(node_ksm_available 0).
  - Write the result atomically (M(ansible.builtin.copy) does) so node_exporter never reads half a file.
options:
  _input:
    description: The C(ksm) dictionary of a M(samepage.ksm.ksm_info) result.
    type: dict
    required: true
'''

EXAMPLES = r'''
- name: Read KSM state
  samepage.ksm.ksm_info:
  register: ksm_state

- name: Publish it to node_exporter's textfile collector
  ansible.builtin.copy:
    content: "{{ ksm_state.ksm | samepage.ksm.ksm_prometheus }}"
    dest: /var/lib/node_exporter/textfile_collector/ksm.prom
    mode: "0644"
'''

RETURN = r'''
_value:
  description: The textfile content, one C(# HELP), C(# TYPE) and sample line per metric, ending in a newline.
  type: str
  sample: |
    # HELP node_ksm_available Whether the kernel's KSM sysfs directory exists and is readable.
    # TYPE node_ksm_available gauge
    node_ksm_available 1
'''

from ansible.errors import AnsibleFilterError

# (metric name, type, help, where the value comes from)
METRICS = (
    ('node_ksm_saved_bytes', 'gauge', 'Memory saved by KSM: (pages_sharing + ksm_zero_pages) * page size.',
     ('saved_bytes',)),
    ('node_ksm_general_profit_bytes', 'gauge', 'Memory saved by KSM minus its metadata (general_profit).',
     ('general_profit_bytes',)),
    ('node_ksm_page_size_bytes', 'gauge', 'Page size of the host.', ('page_size',)),
    ('node_ksm_run', 'gauge', 'The run knob: 0 stopped, 1 running, 2 unmerging.', ('knobs', 'run')),
    ('node_ksm_pages_to_scan', 'gauge', 'Pages ksmd scans per wake-up.', ('knobs', 'pages_to_scan')),
    ('node_ksm_pages_shared', 'gauge', 'KSM pages in use (each shared by several sites).', ('counters', 'pages_shared')),
    ('node_ksm_pages_sharing', 'gauge', 'Sites sharing KSM pages (how many pages are saved).', ('counters', 'pages_sharing')),
    ('node_ksm_pages_unshared', 'gauge', 'Pages scanned repeatedly but unique.', ('counters', 'pages_unshared')),
    ('node_ksm_pages_volatile', 'gauge', 'Pages changing too fast to be merged.', ('counters', 'pages_volatile')),
    ('node_ksm_zero_pages', 'gauge', 'Empty pages merged with the kernel zero page.', ('counters', 'ksm_zero_pages')),
    ('node_ksm_stable_node_chains', 'gauge', 'KSM pages that hit the max_page_sharing limit.', ('counters', 'stable_node_chains')),
    ('node_ksm_stable_node_dups', 'gauge', 'Duplicated KSM pages in stable node chains.', ('counters', 'stable_node_dups')),
    ('node_ksm_full_scans_total', 'counter', 'Full scans of mergeable memory completed by ksmd.', ('counters', 'full_scans')),
    ('node_ksm_pages_scanned_total', 'counter', 'Pages scanned by ksmd.', ('counters', 'pages_scanned')),
    ('node_ksm_pages_skipped_total', 'counter', 'Pages skipped by smart scanning.', ('counters', 'pages_skipped')),
)


def _value(data, path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        return None
    return data


def _sample(name, kind, help_text, value):
    return ['# HELP %s %s' % (name, help_text), '# TYPE %s %s' % (name, kind), '%s %s' % (name, _number(value))]


def _number(value):
    if isinstance(value, float):
        return repr(value)
    return str(int(value))


def ksm_prometheus(ksm):
    if not isinstance(ksm, dict) or 'available' not in ksm:
        raise AnsibleFilterError('ksm_prometheus: expected the "ksm" dictionary of a ksm_info result, got %r'
                                 % (type(ksm).__name__,))
    available = bool(ksm.get('available'))
    lines = _sample('node_ksm_available', 'gauge',
                    "Whether the kernel's KSM sysfs directory exists and is readable.", 1 if available else 0)
    if available:
        for name, kind, help_text, path in METRICS:
            value = _value(ksm, path)
            if value is not None:
                lines += _sample(name, kind, help_text, value)
        sleep = _value(ksm, ('knobs', 'sleep_millisecs'))
        if sleep is not None:
            lines += _sample('node_ksm_sleep_seconds', 'gauge', 'How long ksmd sleeps between scans.', sleep / 1000.0)
    ksmd = ksm.get('ksmd') or {}
    if ksmd.get('pid') is not None:
        lines += _sample('node_ksm_ksmd_running', 'gauge', 'Whether the ksmd kernel thread exists.',
                         1 if ksmd.get('running') else 0)
        cpu = _value(ksmd, ('cpu_seconds',))
        if cpu is not None:
            lines += _sample('node_ksm_ksmd_cpu_seconds_total', 'counter', 'CPU time used by ksmd since boot.',
                             float(cpu))
    return '\n'.join(lines) + '\n'


class FilterModule(object):
    def filters(self):
        return {'ksm_prometheus': ksm_prometheus}
