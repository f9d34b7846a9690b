# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import annotations

DOCUMENTATION = r'''
name: ksm_estimate_report
short_description: Rank nodes by the memory KSM would save, from per-host ksm_estimate results
version_added: 1.0.0
author:
  - samepage.ksm maintainers (@samepage)
description:
  - Takes a mapping of inventory host name to the registered result of M(samepage.ksm.ksm_estimate)
    and builds a Markdown report that ranks the nodes by estimated saving (MiB and percent of RAM),
    with each node's top containers, units or processes, and the same data as JSON.
  - Unreachable hosts and hosts where the estimate failed are listed after the ranked ones, as
    such, never as zeros. An estimate cut short by its time budget is marked as partial.
  - Runs on the controller.
positional: generated
options:
  _input:
    description:
      - Inventory host name mapped to the registered result of M(samepage.ksm.ksm_estimate) on that
        host (register it with C(ignore_unreachable) so unreachable hosts have a result too).
      - V(null) as a result means the host produced none; it is reported as failed.
    type: dict
    required: true
  generated:
    description: When the data was gathered, shown under the title and stored in the JSON.
    type: str
  title:
    description: The Markdown heading.
    type: str
    default: Where to enable KSM - estimated savings per node
  top:
    description: How many of each node's groups the Markdown shows (the JSON keeps every group the module returned).
    type: int
    default: 3
'''

EXAMPLES = r'''
- name: Build the report from every host's ksm_estimate result
  ansible.builtin.set_fact:
    estimate_report: >-
      {{ dict(ansible_play_hosts_all | zip(ansible_play_hosts_all | map('extract', hostvars, 'estimate')))
         | samepage.ksm.ksm_estimate_report(now(utc=true).isoformat()) }}
  run_once: true
'''

RETURN = r'''
_value:
  description: The report.
  type: dict
  contains:
    markdown:
      description: A Markdown document, nodes ranked by estimated saving, then a fleet total line.
      type: str
    json:
      description: The same data as a JSON document (C(generated), C(totals), C(hosts)).
      type: str
    totals:
      description: Fleet totals over the hosts that were estimated.
      type: dict
      contains:
        hosts:
          description: Hosts in the report.
          type: int
        estimated:
          description: Hosts with an estimate.
          type: int
        unreachable:
          description: Hosts that could not be reached.
          type: int
        failed:
          description: Hosts where the estimate failed.
          type: int
        saving_bytes:
          description: Estimated saving over the estimated hosts.
          type: int
        saving_mib:
          description: RV(_value.totals.saving_bytes) in MiB.
          type: float
        scanned_mib:
          description: Memory read over the estimated hosts, in MiB.
          type: float
    hosts:
      description: One entry per host, highest estimated saving first, then unreachable and failed hosts by name.
      type: list
      elements: dict
'''

import json

from ansible.errors import AnsibleFilterError

MIB = 1024 * 1024


def _first_line(text):
    text = str(text or '').strip()
    return text.splitlines()[0] if text else ''


def _cell(text):
    return str(text).replace('|', '\\|').replace('\n', ' ')


def host_entry(host, result):
    entry = {'host': host, 'status': 'failed', 'reason': None, 'hostname': None, 'saving_bytes': None,
             'saving_mib': None, 'saving_percent_of_ram': None, 'scanned_mib': None, 'mem_total_bytes': None,
             'candidates': None, 'complete': None, 'groups': []}
    if not isinstance(result, dict):
        entry['reason'] = 'no result'
        return entry
    if result.get('unreachable'):
        entry['status'] = 'unreachable'
        entry['reason'] = _first_line(result.get('msg')) or 'host unreachable'
        return entry
    estimate = result.get('estimate')
    if result.get('failed') or not isinstance(estimate, dict):
        entry['reason'] = _first_line(result.get('msg')) or 'ksm_estimate returned no data'
        return entry
    entry.update(status='ok', hostname=estimate.get('host'), saving_bytes=estimate.get('saving_bytes'),
                 saving_mib=estimate.get('saving_mib'), saving_percent_of_ram=estimate.get('saving_percent_of_ram'),
                 scanned_mib=estimate.get('scanned_mib'), mem_total_bytes=estimate.get('mem_total_bytes'),
                 candidates=estimate.get('candidates'), complete=estimate.get('complete'),
                 groups=list(estimate.get('groups') or []),
                 sample=(estimate.get('sample') or {}).get('final'),
                 cpu_seconds=estimate.get('cpu_seconds'), elapsed_seconds=estimate.get('elapsed_seconds'))
    return entry


def _group_label(group):
    name = group.get('name') or group.get('id') or '?'
    kind = group.get('kind')
    if kind in ('container', 'lxc', 'openvz'):
        runtime = group.get('runtime') or kind
        label = '%s %s' % (runtime, name)
    elif kind == 'host':
        label = 'host %s' % (group.get('id') or '/')
    else:
        label = name
    return '%s %.2f MiB' % (label, group.get('saving_mib') or 0)


def ksm_estimate_report(results, generated=None, title='Where to enable KSM - estimated savings per node', top=3):
    if not isinstance(results, dict):
        raise AnsibleFilterError('ksm_estimate_report: expected a dict of host name to ksm_estimate result, got %s'
                                 % type(results).__name__)
    try:
        top = int(top)
    except (TypeError, ValueError):
        raise AnsibleFilterError('ksm_estimate_report: top must be a number of groups, got %r' % (top,))
    entries = [host_entry(host, result) for host, result in results.items()]
    ranked = sorted((e for e in entries if e['status'] == 'ok'), key=lambda e: (-(e['saving_bytes'] or 0), e['host']))
    others = sorted((e for e in entries if e['status'] != 'ok'), key=lambda e: (e['status'], e['host']))
    ordered = ranked + others
    totals = {
        'hosts': len(entries),
        'estimated': len(ranked),
        'unreachable': sum(1 for e in entries if e['status'] == 'unreachable'),
        'failed': sum(1 for e in entries if e['status'] == 'failed'),
        'saving_bytes': sum(e['saving_bytes'] or 0 for e in ranked),
        'scanned_mib': round(sum(e['scanned_mib'] or 0 for e in ranked), 2),
    }
    totals['saving_mib'] = round(totals['saving_bytes'] / MIB, 2)

    lines = ['# %s' % title, '']
    if generated:
        lines += ['Generated %s from %d hosts.' % (generated, len(entries)), '']
    lines += ['| Rank | Host | Status | Estimated saving MiB | % of RAM | Scanned MiB | Candidates | Top groups (estimated saving) |',
              '|--:|---|---|--:|--:|--:|--:|---|']
    for rank, entry in enumerate(ordered, 1):
        if entry['status'] == 'ok':
            status = 'ok' if entry['complete'] else 'partial (time budget)'
            percent = 'n/a' if entry['saving_percent_of_ram'] is None else '%.2f' % entry['saving_percent_of_ram']
            groups = ', '.join(_group_label(g) for g in entry['groups'][:top]) or '-'
            lines.append('| %d | %s | %s | %.2f | %s | %.2f | %d | %s |' % (
                rank, _cell(entry['host']), status, entry['saving_mib'] or 0, percent, entry['scanned_mib'] or 0,
                entry['candidates'] or 0, _cell(groups)))
        else:
            lines.append('| - | %s | %s: %s | n/a | n/a | n/a | n/a | n/a |' % (
                _cell(entry['host']), entry['status'], _cell(entry['reason'])))
    lines += ['', '**Fleet total:** %.2f MiB estimated saving on %d of %d hosts (%d unreachable, %d failed).' % (
        totals['saving_mib'], totals['estimated'], totals['hosts'], totals['unreachable'], totals['failed'])]
    document = {'generated': generated, 'totals': totals, 'hosts': ordered}
    return {'markdown': '\n'.join(lines) + '\n', 'json': json.dumps(document, indent=2, sort_keys=True) + '\n',
            'totals': totals, 'hosts': ordered}


class FilterModule(object):
    def filters(self):
        return {'ksm_estimate_report': ksm_estimate_report}
