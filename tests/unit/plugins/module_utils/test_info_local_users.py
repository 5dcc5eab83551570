# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv_info's view of this host's domains: one entry per domain and target, saying whether the
running domain (live) and its saved definition (persistent) have the disk; and its name checks."""

from __future__ import absolute_import, division, print_function

import collections

from ansible_collections.sltv.core.plugins.module_utils.errors import ValidationError
from ansible_collections.sltv.core.plugins.module_utils.infra.libvirt_domain import LibvirtError
from ansible_collections.sltv.core.plugins.module_utils.ops import info

DomainDisk = collections.namedtuple("DomainDisk", "target bus")


class FakeDomain(object):
    def __init__(self, name, uuid, block_info=None):
        self.name, self.uuid, self.info = name, uuid, block_info

    def block_info(self, target):
        if self.info is None:
            raise LibvirtError("domain %s: blockInfo of %s failed" % (self.name, target))
        return self.info


class FakeHypervisor(object):
    def __init__(self, users):
        self.users = users

    def users_of(self, paths, disk_users=None):
        return list(self.users)


def test_a_running_persistent_domain_is_listed_once_with_both_flags_and_the_guest_view():
    web = FakeDomain("web01", "uuid-web", block_info=(50, 10, 20))
    vdb = DomainDisk("vdb", "virtio")
    users = info._local_users(FakeHypervisor([(web, vdb, True), (web, vdb, False)]), {}, "vg0", "d1", [])
    assert users == [dict(domain="web01", domain_uuid="uuid-web", target="vdb", bus="virtio", live=True, persistent=True,
                          capacity=50, allocation=10, physical=20)]


def test_transient_shut_off_and_two_targets_stay_apart():
    running = FakeDomain("run", "uuid-run", block_info=(1, 2, 3))
    stopped = FakeDomain("off", "uuid-off")
    users = info._local_users(FakeHypervisor([
        (running, DomainDisk("vdb", "virtio"), True),   # transient: no persistent definition
        (stopped, DomainDisk("sda", "scsi"), False),
        (stopped, DomainDisk("sdb", "scsi"), False),    # the same disk twice in one domain
    ]), {}, "vg0", "d1", [])
    assert [(u["domain"], u["target"], u["live"], u["persistent"]) for u in users] == [
        ("run", "vdb", True, False), ("off", "sda", False, True), ("off", "sdb", False, True)]
    assert "capacity" not in users[1]


def test_a_failed_block_info_is_a_warning_and_the_entry_stays():
    warnings = []
    broken = FakeDomain("web01", "uuid-web")
    users = info._local_users(FakeHypervisor([(broken, DomainDisk("vdb", "virtio"), True)]), {}, "vg0", "d1", warnings)
    assert users[0]["live"] and "capacity" not in users[0]
    assert warnings == ["domain web01: blockInfo of vdb failed"]


class NoCommandRunner(object):
    def read_vgs(self, names=None):
        raise AssertionError("lvm ran for a bad name: %r" % (names,))


def test_bad_vg_or_disk_names_are_refused_before_any_command():
    for kwargs, fragment in ((dict(vgs=["vg0", "a/b"]), "'a/b'"), (dict(disk="d1\n"), "'d1\\n'")):
        try:
            info.gather(NoCommandRunner(), "hostA", **kwargs)
        except ValidationError as exc:
            assert fragment in str(exc) and "only A-Z" in str(exc)
        else:
            raise AssertionError("gather took %r" % (kwargs,))
