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
  - The file complements node_exporter's own C(ksmd) collector (C(--collector.ksmd), which exports
    C(node_ksmd_pages_shared), C(node_ksmd_pages_sharing), C(node_ksmd_pages_unshared),
    C(node_ksmd_pages_volatile), C(node_ksmd_pages_to_scan), C(node_ksmd_sleep_seconds),
    C(node_ksmd_run), C(node_ksmd_merge_across_nodes) and C(node_ksmd_full_scans_total)).
    It holds only what that collector lacks, under the C(samepage_ksm_) prefix so that no name can
    clash with it - memory saved and C(general_profit) in bytes (negative values included),
    C(ksm_zero_pages), C(pages_scanned), C(pages_skipped), the stable node counters, the knobs the
    collector does not read (C(use_zero_pages), C(smart_scan), C(max_page_sharing),
    C(stable_node_chains_prune_millisecs) in seconds) and the scan-time advisor
    (C(samepage_ksm_advisor_mode{mode=...}) and its limits), and ksmd's CPU time.
  - C(samepage_ksm_available) and C(samepage_ksm_ksmd_running) are always present (0 or 1), so an
    alert can tell a stopped ksmd from a host that does not report.
  - Per-group profit comes from C(ksm.top_groups), which M(samepage.ksm.ksm_info) returns with its
    option C(top_groups). There is one series per group labelled C(kind) (container, unit, slice, lxc, openvz, host) and C(group)
    (its name, or its id when it has no name), at most O(groups) groups, the rest summed into one
    C(kind="other", group="other") series. There are no per-process labels.
  - Base units (C(_bytes), C(_seconds), C(_ratio)); counters end in C(_total).
  - The file must replace the old one atomically (written beside it under a name that does not end
    in C(.prom), then renamed), or node_exporter may read half a file; C(playbooks/report.yml) does that.
positional: groups
options:
  _input:
    description: The C(ksm) dictionary of a M(samepage.ksm.ksm_info) result.
    type: dict
    required: true
  groups:
    description:
      - How many of C(ksm.top_groups) get a series of their own (highest profit first); the others
        are summed into the C(other) series. V(0) sums every group into C(other).
    type: int
    default: 10
'''

EXAMPLES = r'''
- name: Read KSM state and the ten most profitable containers and units
  samepage.ksm.ksm_info:
    top_groups: 10
  register: ksm_state

- name: Stage the textfile beside the live one (not *.prom, so node_exporter ignores it)
  ansible.builtin.copy:
    content: "{{ ksm_state.ksm | samepage.ksm.ksm_prometheus(10) }}"
    dest: /var/lib/prometheus/node-exporter/.ksm.prom.staged
    mode: "0644"

- name: Rename it over ksm.prom in one step
  ansible.builtin.copy:
    src: /var/lib/prometheus/node-exporter/.ksm.prom.staged
    dest: /var/lib/prometheus/node-exporter/ksm.prom
    remote_src: true
    mode: "0644"
'''

RETURN = r'''
_value:
  description: The textfile content, one C(# HELP) and C(# TYPE) line per metric and its samples, ending in a newline.
  type: str
  sample: |
    # HELP samepage_ksm_available Whether the kernel's KSM sysfs directory exists and is readable.
    # TYPE samepage_ksm_available gauge
    samepage_ksm_available 1
    # HELP samepage_ksm_ksmd_running Whether the ksmd kernel thread exists (0 when it was not found).
    # TYPE samepage_ksm_ksmd_running gauge
    samepage_ksm_ksmd_running 1
    # HELP samepage_ksm_general_profit_bytes KSM's general_profit: memory saved minus its metadata; negative when the metadata costs more.
    # TYPE samepage_ksm_general_profit_bytes gauge
    samepage_ksm_general_profit_bytes -1048576
'''

from ansible.errors import AnsibleFilterError

PREFIX = 'samepage_ksm_'
GROUP_LABEL_MAX = 128

# (metric name without prefix, type, help, where the value comes from, scale)
METRICS = (
    ('page_size_bytes', 'gauge', 'Page size of the host.', ('page_size',), 1),
    ('saved_bytes', 'gauge', 'Memory saved by KSM: (pages_sharing + ksm_zero_pages) * page size.',
     ('saved_bytes',), 1),
    ('general_profit_bytes', 'gauge', "KSM's general_profit: memory saved minus its metadata; "
     'negative when the metadata costs more.', ('general_profit_bytes',), 1),
    ('zero_pages', 'gauge', 'Empty pages merged with the kernel zero page (ksm_zero_pages).',
     ('counters', 'ksm_zero_pages'), 1),
    ('stable_node_chains', 'gauge', 'KSM pages that hit the max_page_sharing limit.',
     ('counters', 'stable_node_chains'), 1),
    ('stable_node_dups', 'gauge', 'Duplicated KSM pages in stable node chains.', ('counters', 'stable_node_dups'), 1),
    ('pages_scanned_total', 'counter', 'Pages scanned by ksmd since boot.', ('counters', 'pages_scanned'), 1),
    ('pages_skipped_total', 'counter', 'Pages skipped by smart scanning since boot.', ('counters', 'pages_skipped'), 1),
    ('use_zero_pages', 'gauge', 'The use_zero_pages knob: 1 merges empty pages with the zero page.',
     ('knobs', 'use_zero_pages'), 1),
    ('smart_scan', 'gauge', 'The smart_scan knob: 1 skips pages that did not merge in earlier scans.',
     ('knobs', 'smart_scan'), 1),
    ('max_page_sharing', 'gauge', 'The max_page_sharing knob: most sites that may share one KSM page.',
     ('knobs', 'max_page_sharing'), 1),
    ('stable_node_chains_prune_seconds', 'gauge', 'The stable_node_chains_prune_millisecs knob, in seconds.',
     ('knobs', 'stable_node_chains_prune_millisecs'), 1000),
    ('advisor_max_cpu_ratio', 'gauge', 'The advisor_max_cpu knob: upper bound of ksmd CPU use for the '
     'scan-time advisor, as a ratio (0.7 is 70 %).', ('knobs', 'advisor_max_cpu'), 100),
    ('advisor_min_pages_to_scan', 'gauge', 'The advisor_min_pages_to_scan knob.',
     ('knobs', 'advisor_min_pages_to_scan'), 1),
    ('advisor_max_pages_to_scan', 'gauge', 'The advisor_max_pages_to_scan knob.',
     ('knobs', 'advisor_max_pages_to_scan'), 1),
    ('advisor_target_scan_time_seconds', 'gauge', 'The advisor_target_scan_time knob: seconds the advisor '
     'aims for one full scan.', ('knobs', 'advisor_target_scan_time'), 1),
)
ADVISOR_MODES = ('none', 'scan-time')
# (metric name without prefix, help, key in a top_groups entry)
GROUP_METRICS = (
    ('group_profit_bytes', 'KSM profit of the processes of one container, unit or slice (bounded set; '
     'the rest summed in group="other").', 'profit_bytes'),
    ('group_merging_pages', 'Merged pages of the processes of one container, unit or slice.', 'merging_pages'),
    ('group_processes', 'Processes with merged pages in one container, unit or slice.', 'processes'),
)


def _value(data, path):
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    if isinstance(data, bool) or not isinstance(data, (int, float)):
        return None
    return data


def _number(value):
    if isinstance(value, float):
        if value == int(value) and abs(value) < 2 ** 53:
            return str(int(value))
        return repr(value)
    return str(int(value))


def _label(value):
    text = str(value)[:GROUP_LABEL_MAX]
    return text.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')


def _family(name, kind, help_text, samples):
    """HELP, TYPE and the samples of one metric; samples are (labels text, value)."""
    full = PREFIX + name
    lines = ['# HELP %s %s' % (full, help_text.replace('\\', '\\\\').replace('\n', '\\n')),
             '# TYPE %s %s' % (full, kind)]
    for labels, value in samples:
        lines.append('%s%s %s' % (full, labels, _number(value)))
    return lines


def _groups(top_groups, limit):
    """Series of the bounded group set: {(kind, group): {key: sum}}, in profit order, 'other' last."""
    series = {}
    order = []
    other = {'profit_bytes': 0, 'merging_pages': 0, 'processes': 0}
    for index, group in enumerate(top_groups):
        if not isinstance(group, dict):
            raise AnsibleFilterError('ksm_prometheus: ksm.top_groups[%d] must be a dictionary, got %s'
                                     % (index, type(group).__name__))
        kind = str(group.get('kind') or 'unknown')
        name = group.get('name') or group.get('id') or 'unknown'
        key = (kind, _label(name))
        if key not in series and len(series) >= limit:
            target = other
        else:
            if key not in series:
                series[key] = {'profit_bytes': None, 'merging_pages': None, 'processes': None}
                order.append(key)
            target = series[key]
        for field in other:
            value = _value(group, (field,))
            if value is not None:
                target[field] = (target[field] or 0) + value
    order.append(('other', 'other'))
    series[('other', 'other')] = other
    return [(key, series[key]) for key in order]


def ksm_prometheus(ksm, groups=10):
    if not isinstance(ksm, dict) or 'available' not in ksm:
        raise AnsibleFilterError('ksm_prometheus: expected the "ksm" dictionary of a ksm_info result, got %s'
                                 % (type(ksm).__name__,))
    if not isinstance(groups, int) or isinstance(groups, bool) or groups < 0:
        raise AnsibleFilterError('ksm_prometheus: groups must be a whole number >= 0, got %r' % (groups,))
    available = bool(ksm.get('available'))
    ksmd = ksm.get('ksmd') or {}
    lines = _family('available', 'gauge', "Whether the kernel's KSM sysfs directory exists and is readable.",
                    [('', 1 if available else 0)])
    lines += _family('ksmd_running', 'gauge', 'Whether the ksmd kernel thread exists (0 when it was not found).',
                     [('', 1 if ksmd.get('running') else 0)])
    cpu = _value(ksmd, ('cpu_seconds',))
    if cpu is not None:
        lines += _family('ksmd_cpu_seconds_total', 'counter', 'CPU time used by ksmd since boot.', [('', float(cpu))])
    if available:
        for name, kind, help_text, path, scale in METRICS:
            value = _value(ksm, path)
            if value is not None:
                lines += _family(name, kind, help_text, [('', value / float(scale) if scale != 1 else value)])
        mode = (ksm.get('knobs') or {}).get('advisor_mode')
        if mode is not None:
            modes = list(ADVISOR_MODES) + ([str(mode)] if str(mode) not in ADVISOR_MODES else [])
            lines += _family('advisor_mode', 'gauge', 'The advisor_mode knob: 1 for the active mode.',
                             [('{mode="%s"}' % _label(m), 1 if m == str(mode) else 0) for m in modes])
    top_groups = ksm.get('top_groups')
    if available and top_groups is not None:
        if not isinstance(top_groups, list):
            raise AnsibleFilterError('ksm_prometheus: ksm.top_groups must be a list, got %s'
                                     % type(top_groups).__name__)
        series = _groups(top_groups, groups)
        for name, help_text, field in GROUP_METRICS:
            samples = [('{kind="%s",group="%s"}' % (_label(kind), label), values[field])
                       for (kind, label), values in series if values[field] is not None]
            lines += _family(name, 'gauge', help_text, samples)
    return '\n'.join(lines) + '\n'


class FilterModule(object):
    def filters(self):
        return {'ksm_prometheus': ksm_prometheus}
