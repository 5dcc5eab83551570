#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sltv_vg
short_description: Declare a volume group's lock backend and add its tags, under the VG lock
version_added: 1.1.0
description:
  - Tags an existing volume group, under the same VG lock as every other sltv change to its metadata
    (a C(vgchange --addtag) run by hand while agents extend disks on other hosts can lose a metadata
    write).
  - With O(declare_lock_backend=true) (the default) the VG is tagged C(sltv_lock=<lock_backend>).
    From then on every sltv module and agent refuses to change the VG with a weaker lock backend
    (V(local) on a VG that declares V(etcd)), naming the setting to use.
  - Declaring a weaker backend than the VG already declares is refused.
  - It does not create volume groups; the role sltv.core.sltv_host does, with the tag.
author:
  - sltv.core developers (@sltv-core)
extends_documentation_fragment:
  - sltv.core.lock
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
    details: The diff shows the VG tags and the declared lock backend before and after.
  platform:
    platforms: posix
options:
  name:
    description: Name of the volume group.
    type: str
    required: true
  tags:
    description:
      - Tags the VG must carry (added when missing; other tags are left alone).
      - "lvm's tag alphabet only (C(A-Z a-z 0-9 _ + . - / = ! : & #)); C(sltv_lock=) tags are refused
        here (use O(declare_lock_backend))."
    type: list
    elements: str
    default: []
  declare_lock_backend:
    description: Tag the VG C(sltv_lock=<lock_backend>), the backend this run uses.
    type: bool
    default: true
seealso:
  - module: sltv.core.sltv_disk
"""

EXAMPLES = r"""
- name: Declare that the shared VG is changed under the etcd lock only
  sltv.core.sltv_vg:
    name: vg_san
    lock_backend: etcd
    etcd_endpoints: [https://etcd1.example.com:2379]
    etcd_ca_cert: /etc/sltv/etcd-ca.pem
  run_once: true

- name: Add a tag to a single-host VG (local lock)
  sltv.core.sltv_vg:
    name: vg_sltv
    tags: [site=lab]
"""

RETURN = r"""
vg:
  description: The VG after the run (in check mode, as it would be).
  returned: always
  type: dict
  sample: {name: vg_san, tags: [sltv_lock=etcd], lock_backend: etcd}
actions:
  description: What was done (in check mode, would be done) - V(add_tags), V(declare_lock_backend).
  returned: always
  type: list
  elements: str
  sample: [declare_lock_backend]
command_count:
  description:
    - How many lvm2 commands ran (the reads included).
    - The commands themselves are in RV(commands), returned only with C(-v).
  returned: always
  type: int
  sample: 3
commands:
  description:
    - The lvm2 commands that ran, as argv lists.
    - Only with C(-v) (verbosity 1 or more), on success and on failure; without it the result has
      RV(command_count) and, on failure, RV(last_command).
  returned: with -v (verbosity >= 1)
  type: list
  elements: list
  sample: [[lvm, fullreport, --reportformat, json, vg_san]]
last_command:
  description:
    - On a failure without C(-v), the last lvm2 command that ran, as one shell-quoted line.
    - Left out when no command had run. With C(-v) the failure has the full RV(commands) instead.
  returned: on failure without -v, when a command had run
  type: str
  sample: lvm fullreport --reportformat json vg_san
lock_wait:
  description: Seconds spent waiting for the VG lock (0 when no lock was needed).
  returned: always
  type: float
  sample: 0.004
"""

from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.ops.module_args import (
    exit_with, host_name, lock_factory, run_or_fail, sltv_module,
)
from ansible_collections.sltv.core.plugins.module_utils.ops.vg import VgResult, VgSpec, ensure_vg


def main():
    argument_spec = dict(
        name=dict(type="str", required=True),
        tags=dict(type="list", elements="str", default=[]),
        declare_lock_backend=dict(type="bool", default=True),
    )
    module = sltv_module(argument_spec)
    params = module.params
    runner = LvmRunner()
    where = "sltv_vg %s on host %s" % (params["name"], host_name())
    partial = VgResult()

    def action():
        spec = VgSpec(params["name"], params["tags"], params["declare_lock_backend"], params["lock_backend"])
        return ensure_vg(spec, runner, lock_factory(params, spec.name, "sltv_vg"), module.check_mode, partial)

    result = run_or_fail(module, where, runner, action, partial)
    exit_with(module, result, runner, "VG %s" % params["name"], (result.before, result.after), vg=result.after)


if __name__ == "__main__":
    main()
