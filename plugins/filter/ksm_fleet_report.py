# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: ksm_fleet_report
short_description: Turn per-host ksm_info results into a fleet report (Markdown, JSON, totals)
version_added: 1.0.0
author:
  - samepage.ksm maintainers (@samepage)
description:
  - Takes a mapping of inventory host name to the registered result of M(samepage.ksm.ksm_info)
    and builds a Markdown table, the same data as JSON, and fleet totals.
  - Unreachable hosts, hosts where the module failed and hosts without KSM are listed as such,
    never as zeros, and are left out of the totals.
  - Runs on the controller.
positional: generated
options:
  _input:
    description:
      - Inventory host name mapped to the registered result of M(samepage.ksm.ksm_info) on that host
        (register it with C(ignore_unreachable) so unreachable hosts have a result too).
      - V(null) as a result means the host produced none; it is reported as failed.
    type: dict
    required: true
  generated:
    description:
      - When the data was gathered, shown under the title and stored in the JSON. Left out when not set.
    type: str
  title:
    description: The Markdown heading.
    type: str
    default: KSM fleet report
  top:
    description:
      - How many of each host's top processes to show in the Markdown table, and how many of its top
        groups (containers, units, slices from C(ksm_info) option C(top_groups)) in the groups table.
      - The JSON keeps them all.
    type: int
    default: 3
'''

EXAMPLES = r'''
- name: Build the report from every host's ksm_info result
  ansible.builtin.set_fact:
    ksm_report: >-
      {{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'ksm_state')))
         | samepage.ksm.ksm_fleet_report(now(utc=true).isoformat()) }}
  run_once: true

- name: Write the Markdown report
  ansible.builtin.copy:
    content: "{{ ksm_report.markdown }}"
    dest: /srv/reports/ksm.md
    mode: "0644"
  delegate_to: localhost
  run_once: true
'''

RETURN = r'''
_value:
  description: The report.
  type: dict
  contains:
    markdown:
      description: A Markdown document with one table row per host, a fleet total line, and a table of each host's top groups when there are any.
      type: str
    json:
      description: The same data as a JSON document (C(generated), C(totals), C(hosts)).
      type: str
    totals:
      description: Fleet totals over the hosts whose KSM could be read.
      type: dict
      contains:
        hosts:
          description: Hosts in the report.
          type: int
        reporting:
          description: Hosts whose KSM state was read.
          type: int
        unreachable:
          description: Hosts that could not be reached.
          type: int
        no_ksm:
          description: Reachable hosts without KSM.
          type: int
        failed:
          description: Hosts where reading failed.
          type: int
        saved_bytes:
          description: Memory saved over the reporting hosts.
          type: int
        saved_mib:
          description: RV(_value.totals.saved_bytes) in MiB, two decimals.
          type: float
        general_profit_bytes:
          description: Sum of C(general_profit) over the reporting hosts that have it; V(null) when none has.
          type: int
        general_profit_mib:
          description: RV(_value.totals.general_profit_bytes) in MiB, two decimals.
          type: float
        pages_shared:
          description: Sum of C(pages_shared).
          type: int
        pages_sharing:
          description: Sum of C(pages_sharing).
          type: int
        sharing_ratio:
          description: Fleet C(pages_sharing / pages_shared); V(null) when nothing is shared.
          type: float
    hosts:
      description:
        - One entry per host, sorted by host name, with C(host), C(status) (V(ok), V(no_ksm), V(unreachable), V(failed)),
          C(reason) and the figures, C(top_processes) and C(top_groups) as C(ksm_info) returned them.
      type: list
      elements: dict
'''

import json

from ansible.errors import AnsibleFilterError

MIB = 1024 * 1024
NA = 'n/a'
STATUS_TEXT = {'ok': 'ok', 'no_ksm': 'no KSM', 'unreachable': 'unreachable', 'failed': 'failed'}


def _mib(value):
    return None if value is None else round(value / MIB, 2)


def _first_line(text):
    text = str(text or '').strip()
    return text.splitlines()[0] if text else ''


def host_entry(host, result):
    """One host's row: status, reason and the figures from its ksm_info result."""
    entry = {
        'host': host, 'status': 'failed', 'reason': None, 'hostname': None,
        'saved_bytes': None, 'saved_mib': None, 'general_profit_bytes': None, 'general_profit_mib': None,
        'pages_shared': None, 'pages_sharing': None, 'sharing_ratio': None, 'unshared_ratio': None,
        'full_scans': None, 'run': None, 'ksmd_running': None, 'ksmd_cpu_seconds': None,
        'config_ksm': None, 'page_size': None, 'top_processes': [], 'top_groups': [], 'knobs': {}, 'counters': {},
    }
    if not isinstance(result, dict):
        entry['reason'] = 'no ksm_info result for this host'
        return entry
    if result.get('unreachable'):
        entry['status'] = 'unreachable'
        entry['reason'] = _first_line(result.get('msg')) or 'host unreachable'
        return entry
    ksm = result.get('ksm')
    if not isinstance(ksm, dict):
        entry['reason'] = _first_line(result.get('msg')) or 'ksm_info returned no data'
        return entry
    if result.get('failed'):
        # ksm_sysfs fails with its ksm data attached (e.g. verification): the host still failed
        entry['reason'] = _first_line(result.get('msg')) or 'the task failed'
        return entry
    kernel = ksm.get('kernel') or {}
    ksmd = ksm.get('ksmd') or {}
    entry.update({
        'hostname': ksm.get('host'),
        'config_ksm': kernel.get('config_ksm'),
        'page_size': ksm.get('page_size'),
        'ksmd_running': ksmd.get('running'),
        'ksmd_cpu_seconds': ksmd.get('cpu_seconds'),
    })
    if not ksm.get('available'):
        entry['status'] = 'no_ksm'
        entry['reason'] = ksm.get('reason') or 'KSM is not available'
        return entry
    counters = ksm.get('counters') or {}
    knobs = ksm.get('knobs') or {}
    entry.update({
        'status': 'ok',
        'saved_bytes': ksm.get('saved_bytes'),
        'saved_mib': ksm.get('saved_mib'),
        'general_profit_bytes': ksm.get('general_profit_bytes'),
        'general_profit_mib': ksm.get('general_profit_mib'),
        'pages_shared': counters.get('pages_shared'),
        'pages_sharing': counters.get('pages_sharing'),
        'sharing_ratio': ksm.get('sharing_ratio'),
        'unshared_ratio': ksm.get('unshared_ratio'),
        'full_scans': counters.get('full_scans'),
        'run': knobs.get('run'),
        'top_processes': list(ksm.get('top_processes') or []),
        'top_groups': list(ksm.get('top_groups') or []),
        'knobs': dict(knobs),
        'counters': dict(counters),
    })
    return entry


def _sum(entries, key):
    values = [e[key] for e in entries if isinstance(e.get(key), int)]
    return sum(values) if values else None


def fleet_totals(entries):
    ok = [e for e in entries if e['status'] == 'ok']
    saved = _sum(ok, 'saved_bytes') or 0
    profit = _sum(ok, 'general_profit_bytes')
    shared = _sum(ok, 'pages_shared') or 0
    sharing = _sum(ok, 'pages_sharing') or 0
    return {
        'hosts': len(entries),
        'reporting': len(ok),
        'unreachable': sum(1 for e in entries if e['status'] == 'unreachable'),
        'no_ksm': sum(1 for e in entries if e['status'] == 'no_ksm'),
        'failed': sum(1 for e in entries if e['status'] == 'failed'),
        'saved_bytes': saved,
        'saved_mib': _mib(saved),
        'general_profit_bytes': profit,
        'general_profit_mib': _mib(profit),
        'pages_shared': shared,
        'pages_sharing': sharing,
        'sharing_ratio': round(sharing / shared, 4) if shared else None,
    }


def _cell(value, digits=2):
    if value is None:
        return NA
    if isinstance(value, bool):
        return 'yes' if value else 'no'
    if isinstance(value, float):
        return '%.*f' % (digits, value)
    return str(value).replace('\\', '\\\\').replace('|', '\\|').replace('\n', ' ')


def _process_cell(processes, page_size, top):
    shown = []
    for proc in processes[:top]:
        profit = proc.get('profit_bytes')
        if profit is None and page_size:
            profit = (proc.get('merging_pages') or 0) * page_size
        shown.append('%s[%s] %s MiB' % (proc.get('comm') or '?', proc.get('pid'), _cell(_mib(profit))))
    if len(processes) > top:
        shown.append('+%d more' % (len(processes) - top))
    return _cell(', '.join(shown)) if shown else '-'


def _group_table(entries, top):
    """A second table: each host's top containers, units and slices (ksm_info top_groups)."""
    rows = []
    for e in entries:
        for group in e['top_groups'][:top]:
            pages = group.get('merging_pages')
            merged = pages * e['page_size'] if isinstance(pages, int) and e['page_size'] else None
            rows.append('| %s |' % ' | '.join([
                _cell(e['host']), _cell(group.get('kind')), _cell(group.get('name') or group.get('id')),
                _cell(group.get('runtime')), _cell(group.get('processes')), _cell(_mib(merged)),
                _cell(_mib(group.get('profit_bytes')))]))
        if len(e['top_groups']) > top:
            rows.append('| %s | +%d more | | | | | |' % (_cell(e['host']), len(e['top_groups']) - top))
    if not rows:
        return []
    return ['', '## Top groups (containers, units, slices)', '',
            '| Host | Kind | Group | Runtime | Processes | Merged MiB | Profit MiB |',
            '|---|---|---|---|--:|--:|--:|'] + rows


def render_markdown(entries, totals, generated, title, top):
    lines = ['# %s' % title, '']
    if generated:
        lines += ['Generated %s from %d hosts.' % (generated, totals['hosts']), '']
    lines += [
        '| Host | Status | Saved MiB | General profit MiB | sharing/shared | unshared/sharing '
        '| Full scans | ksmd CPU s | Top processes (profit) |',
        '|---|---|--:|--:|--:|--:|--:|--:|---|',
    ]
    for e in entries:
        status = STATUS_TEXT[e['status']]
        if e['status'] == 'ok' and e['run'] is not None and e['run'] != 1:
            status = 'ok (run=%s)' % e['run']
        if e['reason']:
            status = '%s: %s' % (status, e['reason'])
        if e['status'] == 'ok':
            figures = [_cell(e['saved_mib']), _cell(e['general_profit_mib']), _cell(e['sharing_ratio']),
                       _cell(e['unshared_ratio']), _cell(e['full_scans']), _cell(e['ksmd_cpu_seconds']),
                       _process_cell(e['top_processes'], e['page_size'], top)]
        else:
            figures = [NA] * 7
        lines.append('| %s |' % ' | '.join([_cell(e['host']), _cell(status)] + figures))
    lines += ['', '**Fleet total:** %s MiB saved, general profit %s MiB, on %d of %d hosts '
              '(%d unreachable, %d without KSM, %d failed).' % (
                  _cell(totals['saved_mib']), _cell(totals['general_profit_mib']), totals['reporting'],
                  totals['hosts'], totals['unreachable'], totals['no_ksm'], totals['failed'])]
    lines += _group_table(entries, top) + ['']
    return '\n'.join(lines)


def ksm_fleet_report(results, generated=None, title='KSM fleet report', top=3):
    if not isinstance(results, dict):
        raise AnsibleFilterError('ksm_fleet_report: expected a mapping of host name to ksm_info result, got %s'
                                 % type(results).__name__)
    if not isinstance(top, int) or isinstance(top, bool) or top < 0:
        raise AnsibleFilterError('ksm_fleet_report: top must be a whole number >= 0, got %r' % (top,))
    entries = [host_entry(str(host), results[host]) for host in sorted(results, key=str)]
    totals = fleet_totals(entries)
    generated = str(generated) if generated is not None else None
    document = {'generated': generated, 'totals': totals, 'hosts': entries}
    return {
        'markdown': render_markdown(entries, totals, generated, title, top),
        'json': json.dumps(document, indent=2, sort_keys=True) + '\n',
        'totals': totals,
        'hosts': entries,
    }


class FilterModule(object):
    def filters(self):
        return {'ksm_fleet_report': ksm_fleet_report}
