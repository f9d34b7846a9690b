#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r'''
---
module: ksm_optin_info
short_description: Find which whole-process KSM opt-in works on a host, by trying it
version_added: 1.0.0
description:
  - Proves, by running a short-lived process, which mechanism can opt a service's processes
    into KSM on this host, before anything is installed or written.
  - "C(prctl): a forked child calls C(prctl(PR_SET_MEMORY_MERGE, 1)) and execs C(cat /proc/self/ksm_stat);
    it works when the exec'd program still shows C(ksm_merge_any: yes) (Linux 6.4 and later). This is
    what the C(samepage-ksm-merge) launcher and O(samepage.ksm.ld_preload#module:method=prctl) rely on."
  - "C(memoryksm): only when systemd is the running init (C(/run/systemd/system) exists), a transient
    unit C(systemd-run --wait --pipe -p MemoryKSM=yes cat /proc/self/ksm_stat) must start and show
    C(ksm_merge_any: yes). A version number proves nothing: systemd 254 and 255 fail every unit with
    C(MemoryKSM=yes) (C(EXIT_KSM)), older versions ignore the key."
  - "With O(name), also reports for each service the opt-in its startup already has from this
    collection (RV(services)): the same detection that makes
    O(samepage.ksm.ld_preload#module:method=auto) keep a service's method, so that a caller choosing
    automatically (the C(samepage.ksm.container) role) keeps it too instead of switching after an upgrade."
  - Never changes anything on the host; the transient unit and the child exit at once.
author:
  - samepage.ksm maintainers (@samepage)
extends_documentation_fragment:
  - samepage.ksm._attributes
  - samepage.ksm._attributes.info_module
  - samepage.ksm._attributes.platform
options:
  memoryksm_probe:
    description:
      - Run the transient C(MemoryKSM=yes) unit. With V(false), RV(memoryksm.works) is V(false) and
        the reason says it was not probed.
    type: bool
    default: true
  name:
    description:
      - "Services whose existing opt-in to report in RV(services), named as in O(samepage.ksm.ld_preload#module:name)
        (C(mysql) or C(mysqld.service))."
    type: list
    elements: str
    default: []
    aliases: [service]
  dropin_name:
    description: File name of the systemd drop-in, as O(samepage.ksm.ld_preload#module:dropin_name).
    type: str
    default: samepage-ksm.conf
  init_dir:
    description: Directory of SysV init scripts, as O(samepage.ksm.ld_preload#module:init_dir).
    type: path
    default: /etc/init.d
  envfile_dirs:
    description: Directories of environment files, as O(samepage.ksm.ld_preload#module:envfile_dirs).
    type: list
    elements: path
    default: [/etc/sysconfig, /etc/default]
  systemd_dir:
    description: Where the drop-in directory is, as O(samepage.ksm.ld_preload#module:systemd_dir).
    type: path
    default: /etc/systemd/system
  unit_dirs:
    description: Where unit files are looked for, as O(samepage.ksm.ld_preload#module:unit_dirs).
    type: list
    elements: path
    default: [/etc/systemd/system, /run/systemd/system, /usr/lib/systemd/system, /lib/systemd/system]
notes:
  - Needs root for the transient unit (C(become)).
seealso:
  - module: samepage.ksm.ld_preload
'''

EXAMPLES = r'''
- name: Which opt-in works here?
  samepage.ksm.ksm_optin_info:
  register: optin

- name: Use MemoryKSM where it is proven, else the prctl launcher, else the preload library
  samepage.ksm.ld_preload:
    name: mariadb
    method: "{{ 'memoryksm' if optin.memoryksm.works else ('prctl' if optin.prctl.works else 'auto') }}"

- name: Which services already opted in, and how?
  samepage.ksm.ksm_optin_info:
    name: [mariadb, apache2]
    memoryksm_probe: false
  register: optin

- name: Show the services that have no opt-in yet
  ansible.builtin.debug:
    msg: "{{ optin.services | dict2items | rejectattr('value.method') | map(attribute='key') | list }}"
'''

RETURN = r'''
kernel_release:
  description: The running kernel's release (C(uname -r)).
  returned: always
  type: str
  sample: 6.18.44
systemd_running:
  description: Whether systemd is the running init (C(/run/systemd/system) exists).
  returned: always
  type: bool
  sample: false
systemd_version:
  description: The running systemd's version (C(systemctl --version)); V(null) when systemd does not run.
  returned: always
  type: int
  sample: 257
prctl:
  description: Whether a process keeps C(PR_SET_MEMORY_MERGE) across exec on this kernel.
  returned: always
  type: dict
  contains:
    works:
      description: "The probe child's exec'd program showed C(ksm_merge_any: yes)."
      type: bool
      returned: always
    reason:
      description: What the probe saw.
      type: str
      returned: always
  sample: {works: true, reason: "prctl(PR_SET_MEMORY_MERGE) set in a child survived exec"}
memoryksm:
  description: Whether a systemd unit with C(MemoryKSM=yes) starts and gets C(ksm_merge_any) here.
  returned: always
  type: dict
  contains:
    works:
      description: "A transient unit with C(MemoryKSM=yes) ran and showed C(ksm_merge_any: yes)."
      type: bool
      returned: always
    reason:
      description: What the probe saw, or why it did not run.
      type: str
      returned: always
  sample: {works: false, reason: "systemd is not the running init (/run/systemd/system does not exist)"}
services:
  description:
    - For each service in O(name), the opt-in its startup already has from this collection; empty without O(name).
    - All three values are V(null) for a service without one.
  returned: always
  type: dict
  contains:
    method:
      description:
        - The O(samepage.ksm.ld_preload#module:method) of the artefact found, V(null) when there is none.
        - V(memoryksm) or V(systemd) (our drop-in), V(prctl) or V(sysv) (our block in the SysV init script),
          V(envfile) (our block in an environment file).
      type: str
      returned: always
    optin:
      description:
        - "The mechanism it belongs to, as the C(samepage.ksm.container) role's C(ksm_container_optin) names it:
          V(memoryksm), V(prctl) or V(preload) (methods V(systemd), V(sysv), V(envfile))."
      type: str
      returned: always
    path:
      description: The file that holds the artefact.
      type: str
      returned: always
  sample:
    mariadb: {method: sysv, optin: preload, path: /etc/init.d/mariadb}
    apache2: {method: null, optin: null, path: null}
'''

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.samepage.ksm.plugins.module_utils._fileplan import FilePlanError
from ansible_collections.samepage.ksm.plugins.module_utils._ld_preload import LdPreloadError
from ansible_collections.samepage.ksm.plugins.module_utils._ld_preload_plan import existing_artefact, location_spec
from ansible_collections.samepage.ksm.plugins.module_utils._optin import optin_facts, services_facts

LOCATIONS = tuple(sorted(location_spec()))


def argument_spec():
    spec = dict(
        memoryksm_probe=dict(type='bool', default=True),
        name=dict(type='list', elements='str', default=[], aliases=['service']),
    )
    # ld_preload's own location options: the same artefacts are looked for in the same places.
    spec.update(location_spec())
    return spec


def main():
    module = AnsibleModule(argument_spec=argument_spec(), supports_check_mode=True)
    locations = dict((option, module.params[option]) for option in LOCATIONS)

    def detect(name):
        try:
            return existing_artefact(module, name, locations)
        except (LdPreloadError, FilePlanError) as exc:
            module.fail_json(msg='name %r: %s' % (name, exc))

    services = services_facts(module.params['name'], detect)
    facts = optin_facts(module, probe_memoryksm_unit=module.params['memoryksm_probe'])
    module.exit_json(changed=False, services=services, **facts)


if __name__ == '__main__':
    main()
