# -*- coding: utf-8 -*-
# Copyright: samepage.ksm contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    """Attribute descriptions shared by the collection's modules.

    Use ``samepage.ksm._attributes`` for check_mode/diff_mode descriptions, then state each
    module's support level in its own ``attributes:``. ``samepage.ksm._attributes.platform``
    adds the platform attribute; ``samepage.ksm._attributes.info_module`` fills in read-only
    modules' support levels.
    """

    # Standard fragment: describes check_mode and diff_mode; modules set "support".
    DOCUMENTATION = r'''
options: {}
attributes:
  check_mode:
    description: Can run in C(check_mode) and return changed status prediction without modifying target.
  diff_mode:
    description: Will return details on what has changed (or possibly needs changing in C(check_mode)), when in diff mode.
'''

    # Every module of this collection manages the Linux kernel's KSM.
    PLATFORM = r'''
options: {}
attributes:
  platform:
    description: Target OS/families that can be operated against.
    support: N/A
    platforms: linux
'''

    # Use together with the standard fragment for modules that never change anything.
    INFO_MODULE = r'''
options: {}
attributes:
  check_mode:
    support: full
    details:
      - This action does not modify state.
  diff_mode:
    support: N/A
    details:
      - This action does not modify state.
'''

    # Use for modules that write files atomically with Ansible's file helpers.
    FILES = r'''
options: {}
attributes:
  safe_file_operations:
    description: Uses Ansible's strict file operation functions to ensure proper permissions and avoid data corruption.
'''
