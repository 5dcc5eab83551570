#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
---
module: sltv_attachment
short_description: Attach sltv disks to libvirt domains, and detach them
version_added: 1.0.0
description:
  - Attaches a disk made by sltv.core.sltv_disk to a libvirt domain on this host, or detaches it.
  - The target name (for example C(vdb)) is the first one that is free in the domain's live and
    persistent definitions, unless O(target) names one.
  - The driver type follows the disk, C(raw) for thick disks and C(qcow2) for thin ones. Thin disks
    get C(error_policy=stop), so a guest that fills the LV before the sltv agent grows it is paused
    and then resumed, instead of seeing I/O errors.
  - The attachment is recorded in the disk's LV tags as a claim,
    C(sltv_attached=HOST:DOMAIN-UUID:MODE:DOMAIN-NAME) (MODE V(exclusive) or V(shareable)), under the
    VG lock and decided again on a fresh read there, before the disk is attached. A disk claimed by
    another domain, on this or any other host, is refused, naming the host and the domain. Only
    shareable attachments share a disk - a shareable attach never joins an exclusive claim, nor an
    exclusive attach a shareable one.
  - After a live migration the sltv agent on the new host moves the claim there (at the start event,
    or its next sweep). The same domain claimed on another host is only re-claimed here once it runs here.
  - On a running domain the LV is activated on this host before the attach, and deactivated after
    the detach. On a domain that is shut off, only the persistent definition changes; the libvirt
    hook of sltv.core activates the LV when the domain starts.
  - A detach from a running domain waits until libvirt reports that QEMU released the device. If the
    guest does not release it within O(detach_timeout) seconds, the module fails and leaves the disk
    attached, active and tagged, which is the truth.
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
    details: The diff shows the domain XML (live if it runs, persistent otherwise) before and after.
  platform:
    platforms: posix
options:
  disk:
    description: Disk name (the LV name).
    type: str
    required: true
  vg:
    description:
      - Volume group that holds the disk.
      - Left out, the C(vg) of the host config (O(host_config)); one of the two is required.
    type: str
  domain:
    description: Name or UUID of the libvirt domain on this host.
    type: str
    required: true
  state:
    description:
      - Whether the disk should be attached to the domain.
      - V(absent) for a domain that is not defined on this host (undefined without a detach, or its
        host lost) drops the disk's claims that name it by name or UUID; a claim that names another
        host is dropped only with O(force=true).
    type: str
    choices: [present, absent]
    default: present
  target:
    description:
      - Target device name in the guest, for example V(vdc) (virtio) or V(sdb) (scsi).
      - By default the first name of the bus that no disk of the domain uses, live or persistent.
      - A target already used by another disk is an error. An attached disk keeps its target.
    type: str
  bus:
    description:
      - Disk bus. V(scsi) needs a virtio-scsi controller in the domain.
      - Hot-unplug on V(virtio) needs the guest's cooperation; V(scsi) does not.
    type: str
    choices: [virtio, scsi]
    default: virtio
  live:
    description: Change the running domain. Ignored while the domain is shut off.
    type: bool
    default: true
  persistent:
    description: Change the persistent definition too. Ignored for a transient domain.
    type: bool
    default: true
  cache:
    description: QEMU cache mode. Shared storage needs V(none) (or V(directsync)).
    type: str
    choices: [none, writethrough, writeback, directsync, unsafe]
    default: none
  io:
    description: QEMU I/O mode. V(native) needs O(cache=none) or O(cache=directsync).
    type: str
    choices: [native, threads, io_uring]
    default: native
  discard:
    description: Pass the guest's discard (TRIM) requests to the LV (V(unmap)) or not (V(ignore)).
    type: str
    choices: [unmap, ignore]
  serial:
    description: Serial number shown to the guest (up to 20 characters), for stable /dev/disk/by-id names.
    type: str
  shareable:
    description:
      - Allow the disk to be attached to several domains at once (cluster file systems). Thick disks
        only. The LV is then activated shared on an lvmlockd VG.
      - Every attachment of the disk must be shareable; the claim records the mode.
    type: bool
    default: false
  force:
    description:
      - With O(state=absent), drop the claims of a domain that is not defined on this host even when
        they name another host - only when that host is gone for good (its domain will never run
        there again), since the claim is what stops another host from starting it on this disk.
      - Has no effect when the domain is defined here (a normal detach). Not allowed with O(state=present).
    type: bool
    default: false
  detach_timeout:
    description: Seconds to wait for the guest to release the disk on a live detach.
    type: float
    default: 30
  uri:
    description: libvirt connection URI.
    type: str
    default: qemu:///system
notes:
  - Runs on the hypervisor. Needs lvm2, libvirt and its Python bindings (C(python3-libvirt)).
  - After a live migration the tag still names the source host until the next run of this module
    on the destination, which updates it; the domain UUID is what identifies the attachment.
seealso:
  - module: sltv.core.sltv_disk
  - module: sltv.core.sltv_extend
"""

EXAMPLES = r"""
- name: Attach a disk to a running domain (live and persistent), first free virtio target
  sltv.core.sltv_attachment:
    disk: web01-data
    vg: vg_san
    domain: web01

- name: Attach on the SCSI bus as sdb, with a serial for /dev/disk/by-id
  sltv.core.sltv_attachment:
    disk: db01-data
    vg: vg_san
    domain: db01
    bus: scsi
    target: sdb
    serial: db01-data
    discard: unmap
    lock_backend: etcd
    etcd_endpoints: [https://etcd1.example.com:2379]

- name: Detach, waiting up to 60 s for the guest to release it
  sltv.core.sltv_attachment:
    disk: web01-data
    vg: vg_san
    domain: web01
    state: absent
    detach_timeout: 60

# web01 was undefined on hv2 without a detach, and hv2 was then lost for good: its claim still
# stops every other host from starting a domain on the disk. Drop it (from any host).
- name: Drop the claim of a domain that no longer exists
  sltv.core.sltv_attachment:
    disk: web01-data
    domain: web01
    state: absent
    force: true
"""

RETURN = r"""
target:
  description: The disk's target in the domain (in check mode, the one it would get).
  returned: when the disk is or would be attached, or was detached
  type: str
  sample: vdb
domain:
  description: The domain.
  returned: when the domain exists
  type: dict
  contains:
    name:
      description: Domain name.
      type: str
    uuid:
      description: Domain UUID.
      type: str
    state:
      description: V(running), V(paused), V(shutoff), V(shutdown), V(crashed) or V(other).
      type: str
    persistent:
      description: Whether the domain has a persistent definition.
      type: bool
  sample: {name: web01, uuid: 7c1a4a1e-8f0c-4b59-9b1e-2f1d4c7e8a11, state: running, persistent: true}
disk:
  description: The disk after the run, with the fields that sltv.core.sltv_disk returns.
  returned: always
  type: dict
  sample:
    name: web01-data
    vg: vg_san
    kind: thick
    attachments: ["hv1:7c1a4a1e-8f0c-4b59-9b1e-2f1d4c7e8a11"]
actions:
  description: What was done (in check mode, would be done), in order.
  returned: always
  type: list
  elements: str
  sample: [claim, activate, attach_live, attach_config]
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
  description: Seconds spent waiting for the VG lock.
  returned: always
  type: float
  sample: 0.003
"""

from ansible_collections.sltv.core.plugins.module_utils.ops.attachment import AttachResult, AttachSpec, ensure_attachment
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import Hypervisor
from ansible_collections.sltv.core.plugins.module_utils.infra.lvm import LvmRunner
from ansible_collections.sltv.core.plugins.module_utils.ops.module_args import (
    exit_with, host_name, lock_factory, require_libvirt, run_or_fail, sltv_module,
)


def main():
    argument_spec = dict(
        disk=dict(type="str", required=True),
        vg=dict(type="str"),  # else the host config's (sltv_module)
        domain=dict(type="str", required=True),
        state=dict(type="str", default="present", choices=["present", "absent"]),
        target=dict(type="str"),
        bus=dict(type="str", default="virtio", choices=["virtio", "scsi"]),
        live=dict(type="bool", default=True),
        persistent=dict(type="bool", default=True),
        cache=dict(type="str", default="none", choices=["none", "writethrough", "writeback", "directsync", "unsafe"]),
        io=dict(type="str", default="native", choices=["native", "threads", "io_uring"]),
        discard=dict(type="str", choices=["unmap", "ignore"]),
        serial=dict(type="str"),
        shareable=dict(type="bool", default=False),
        detach_timeout=dict(type="float", default=30.0),
        force=dict(type="bool", default=False),
        uri=dict(type="str", default="qemu:///system"),
    )
    module = sltv_module(argument_spec, default_vg=True)
    require_libvirt(module)
    params = module.params

    host = host_name()
    runner = LvmRunner()
    where = "sltv_attachment %s/%s to domain %s on host %s" % (params["vg"], params["disk"], params["domain"], host)
    partial = AttachResult()

    def action():
        spec = AttachSpec(params["disk"], params["vg"], params["domain"], state=params["state"],
                          target=params["target"], bus=params["bus"], live=params["live"],
                          persistent=params["persistent"], cache=params["cache"], io=params["io"],
                          discard=params["discard"], serial=params["serial"], shareable=params["shareable"],
                          detach_timeout=params["detach_timeout"], force=params["force"])
        hypervisor = Hypervisor(params["uri"])
        try:
            return ensure_attachment(spec, runner, hypervisor, lock_factory(params, spec.vg, "sltv_attachment"),
                                     host, module.check_mode, partial)
        finally:
            hypervisor.close()

    result = run_or_fail(module, where, runner, action, partial)
    output = dict(disk=result.disk)
    if result.domain:
        output["domain"] = result.domain
    if result.target:
        output["target"] = result.target
    exit_with(module, result, runner, "domain %s" % params["domain"], (result.xml_before, result.xml_after), **output)


if __name__ == "__main__":
    main()
