# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Everything at a glance, read only: disks with their attachments, VG capacity and over-commit.

The VG metadata (one ``lvm fullreport``) says what exists and where it is attached; this host's
libvirt adds the target and what QEMU reports for domains that run here.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

from ansible_collections.sltv.core.plugins.module_utils.agent.agent_status import status_warning
from ansible_collections.sltv.core.plugins.module_utils.model import tags as T
from ansible_collections.sltv.core.plugins.module_utils.model.disk import Disk
from ansible_collections.sltv.core.plugins.module_utils.model.domain_xml import lv_device_paths
from ansible_collections.sltv.core.plugins.module_utils.model.names import validate_disk_name, validate_vg_name
from ansible_collections.sltv.core.plugins.module_utils.model.metadata_area import metadata_room, metadata_warning
from ansible_collections.sltv.core.plugins.module_utils.model.sizes import human
from ansible_collections.sltv.core.plugins.module_utils.errors import SltvError


def _local_users(hypervisor, disk_users, vg, name, warnings):
    """One entry per domain and target of this host that names the disk: ``live`` when the running
    domain has it, ``persistent`` when its saved definition has it (a running domain would
    otherwise be listed twice, once per XML)."""
    if hypervisor is None:
        return []
    users = {}
    for dom, dd, live in hypervisor.users_of(lv_device_paths(vg, name), disk_users):
        entry = users.setdefault((dom.uuid, dd.target), dict(
            domain=dom.name, domain_uuid=dom.uuid, target=dd.target, bus=dd.bus, live=False, persistent=False))
        if not live:
            entry["persistent"] = True
            continue
        entry["live"] = True
        try:
            capacity, allocation, physical = dom.block_info(dd.target)
            entry.update(capacity=capacity, allocation=allocation, physical=physical)
        except SltvError as exc:
            warnings.append(str(exc))
    return list(users.values())


def gather(runner, host, hypervisor=None, vgs=None, disk=None, domain=None):
    """Return (disks, vg_summaries, warnings); ``domain`` filters by name or UUID. Bad VG or disk
    names raise ValidationError before any command: they must not reach lvm's command line."""
    for name in vgs or []:
        validate_vg_name(name)
    if disk is not None:
        validate_disk_name(disk)
    warnings = []
    agent = status_warning()  # the agent of this host runs degraded (a VG missing, etcd down) or stopped
    if agent:
        warnings.append(agent)
    disks, summaries = [], []
    disk_users = hypervisor.disk_users() if hypervisor is not None else {}  # one scan for all disks
    for vg in runner.read_vgs(vgs):
        managed = []
        for lv in vg.lvs.values():
            if T.MANAGED in lv.tags:
                managed.append(Disk(vg, lv))
        virtual = sum(d.virtual_size for d in managed)
        allocated = sum(d.size for d in managed)
        room = metadata_room(vg)
        summaries.append(dict(
            name=vg.name, size=vg.size, free=vg.free, extent_size=vg.extent_size, lock_type=vg.lock_type,
            disks=len(managed), allocated=allocated, virtual=virtual,
            overcommit=round(float(virtual) / vg.size, 3) if vg.size else 0.0,
            size_human=human(vg.size), free_human=human(vg.free), allocated_human=human(allocated),
            virtual_human=human(virtual), **(room or {})
        ))
        room_warning = metadata_warning(vg, room)
        if room_warning:
            warnings.append(room_warning)
        for item in sorted(managed, key=lambda d: d.name):
            if disk is not None and item.name != disk:
                continue
            entry = _entry(item, host)
            entry["local_domains"] = _local_users(hypervisor, disk_users, vg.name, item.name, warnings)
            if domain is not None and not _matches_domain(entry, domain):
                continue
            disks.append(entry)
    return disks, summaries, warnings


def _entry(disk, host):
    """A disk as sltv_info lists it: its facts, not sltv_disk's result (Disk.to_dict). At 10,000 disks
    the raw tags and the claims written three ways were 40 % of the values that Ansible's exit_json
    walks (sltv_info took 2.04 s, bench/bench_scale.py); ``attached`` holds the claims once."""
    return dict(disk.facts(), active_here=disk.lv.active,
                attached=[dict(claim.to_dict(), here=claim.host == host) for claim in disk.claims])


def _matches_domain(entry, domain):
    if any(domain in (a["domain_uuid"], a["domain_name"]) for a in entry["attached"]):
        return True
    return any(u["domain"] == domain or u["domain_uuid"] == domain for u in entry["local_domains"])
