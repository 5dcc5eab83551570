# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one ownership rule (model/ownership.py), operation by operation."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from ansible_collections.sltv.core.plugins.module_utils.errors import DiskStateError
from ansible_collections.sltv.core.plugins.module_utils.model import ownership as O

U1 = "11111111-1111-1111-1111-111111111111"
U2 = "22222222-2222-2222-2222-222222222222"
W = "disk d1 in VG vg0"


def claim(host, uuid, mode=O.EXCLUSIVE, name="web"):
    return O.Claim(host, uuid, mode, name)


def test_claim_value_round_trip_and_legacy_tags_read_exclusive():
    c = claim("hv1", U1, O.SHAREABLE, "web:01")
    back = O.Claim.parse(c.value)
    assert (back.host, back.uuid, back.mode, back.name) == ("hv1", U1, O.SHAREABLE, "web:01")
    legacy = O.Claim.parse("hv1:%s" % U1)
    assert legacy.exclusive and legacy.raw == "hv1:%s" % U1 and legacy.host == "hv1"
    assert O.Claim.parse("hv1:%s:bogus:x" % U1).exclusive
    assert "web (%s) on host hv1" % U1 in claim("hv1", U1).describe()


def test_attach_free_disk_claims_it_with_mode_and_name():
    d = O.decide(O.ATTACH, W, [], "hv1", U1, "web", shareable=False)
    assert d.claim == claim("hv1", U1) and d.claim.name == "web" and d.stale == []
    d = O.decide(O.ATTACH, W, [], "hv1", U1, "web", shareable=True)
    assert d.claim.mode == O.SHAREABLE


def test_attach_already_claimed_here_is_a_no_op():
    d = O.decide(O.ATTACH, W, [claim("hv1", U1)], "hv1", U1, "web")
    assert d.claim is None and d.stale == []
    legacy = [O.Claim.parse("hv1:%s" % U1)]
    assert O.decide(O.ATTACH, W, legacy, "hv1", U1, "web").claim is None


def test_attach_refuses_a_disk_another_domain_holds_naming_host_and_domain():
    with pytest.raises(DiskStateError) as info:
        O.decide(O.ATTACH, W, [claim("hv2", U2, name="db")], "hv1", U1, "web")
    assert "db (%s) on host hv2" % U2 in str(info.value)


def test_a_shareable_attach_never_joins_an_exclusive_claim():
    with pytest.raises(DiskStateError) as info:
        O.decide(O.ATTACH, W, [claim("hv2", U2)], "hv1", U1, "web", shareable=True)
    assert "hv2" in str(info.value)


def test_an_exclusive_attach_never_joins_a_shareable_claim():
    with pytest.raises(DiskStateError) as info:
        O.decide(O.ATTACH, W, [claim("hv2", U2, O.SHAREABLE)], "hv1", U1, "web", shareable=False)
    assert "shareable=true on every attachment" in str(info.value)


def test_shareable_joins_shareable():
    d = O.decide(O.ATTACH, W, [claim("hv2", U2, O.SHAREABLE)], "hv1", U1, "web", shareable=True)
    assert d.claim == claim("hv1", U1, O.SHAREABLE)


def test_same_domain_claimed_on_another_host_moves_only_when_it_runs_here():
    old = claim("hv1", U1)
    with pytest.raises(DiskStateError) as info:
        O.decide(O.ATTACH, W, [old], "hv2", U1, "web", running_here=False)
    assert "detach it on host hv1" in str(info.value)
    d = O.decide(O.ATTACH, W, [old], "hv2", U1, "web", running_here=True)
    assert d.claim == claim("hv2", U1) and d.stale == [old]


def test_detach_drops_this_domains_claims_only():
    mine, other = claim("hv1", U1), claim("hv2", U2, O.SHAREABLE)
    assert O.decide(O.DETACH, W, [mine, other], "hv1", U1).stale == [mine]


def test_extend_refuses_a_disk_claimed_on_another_host():
    with pytest.raises(DiskStateError) as info:
        O.decide(O.EXTEND, W, [claim("hv2", U1)], "hv1")
    assert "delegate_to: hv2" in str(info.value)
    assert O.decide(O.EXTEND, W, [claim("hv1", U1)], "hv1").owned_here
    assert not O.decide(O.EXTEND, W, [], "hv1").owned_here


def test_delete_refuses_claimed_disks_unless_forced():
    with pytest.raises(DiskStateError) as info:
        O.decide(O.DELETE, W, [claim("hv2", U1)], "hv1")
    assert "force=true" in str(info.value) and "hv2" in str(info.value)
    O.decide(O.DELETE, W, [claim("hv2", U1)], "hv1", force=True)


def test_hook_activates_its_own_claims_and_unclaimed_disks():
    O.decide(O.ACTIVATE, W, [], "hv1", U1, "web")
    O.decide(O.ACTIVATE, W, [claim("hv1", U1)], "hv1", U1, "web")


def test_hook_refuses_a_disk_claimed_by_another_domain_or_host():
    with pytest.raises(DiskStateError) as info:
        O.decide(O.ACTIVATE, W, [claim("hv1", U2, name="db")], "hv2", U1, "web")
    assert "db (%s) on host hv1" % U2 in str(info.value)
    with pytest.raises(DiskStateError) as info:
        O.decide(O.ACTIVATE, W, [claim("hv1", U1)], "hv2", U1, "web", incoming=False)
    assert "live-migrate it" in str(info.value)


def test_hook_allows_an_incoming_migration_and_shareable_peers():
    O.decide(O.ACTIVATE, W, [claim("hv1", U1)], "hv2", U1, "web", incoming=True)
    O.decide(O.ACTIVATE, W, [claim("hv1", U2, O.SHAREABLE)], "hv2", U1, "web", shareable=True)
    with pytest.raises(DiskStateError):
        O.decide(O.ACTIVATE, W, [claim("hv1", U2, O.EXCLUSIVE)], "hv2", U1, "web", shareable=True)


def test_agent_reclaims_a_migrated_domains_disk_and_leaves_foreign_ones():
    old = claim("hv1", U1, O.EXCLUSIVE, "web")
    d = O.decide(O.RECLAIM, W, [old], "hv2", U1, "web", running_here=True)
    assert d.claim == claim("hv2", U1) and d.stale == [old]
    assert O.decide(O.RECLAIM, W, [claim("hv2", U1)], "hv2", U1, "web", running_here=True).claim is None
    with pytest.raises(DiskStateError):
        O.decide(O.RECLAIM, W, [claim("hv1", U2)], "hv2", U1, "web", running_here=True)
    with pytest.raises(DiskStateError):
        O.decide(O.AGENT_EXTEND, W, [], "hv2", U1, "web", running_here=False)
    O.decide(O.AGENT_EXTEND, W, [], "hv2", U1, "web", running_here=True)


def test_forget_drops_this_hosts_claims_of_a_domain_not_defined_here_by_name_or_uuid():
    mine, other = claim("hv1", U1, O.EXCLUSIVE, "web"), claim("hv1", U2, O.SHAREABLE, "db")
    assert O.decide(O.FORGET, W, [mine, other], "hv1", "web", "web").stale == [mine]
    assert O.decide(O.FORGET, W, [mine, other], "hv1", U1.upper(), U1.upper()).stale == [mine]
    assert O.decide(O.FORGET, W, [mine, other], "hv1", "nosuch", "nosuch").stale == []
    legacy = O.Claim.parse("hv1:%s" % U1)  # 1.0's tags carry no name
    assert O.decide(O.FORGET, W, [legacy], "hv1", "web", "web").stale == []
    assert O.decide(O.FORGET, W, [legacy], "hv1", U1, U1).stale == [legacy]


def test_forget_of_another_hosts_claim_needs_force():
    remote = claim("hv2", U1, O.EXCLUSIVE, "web")
    with pytest.raises(DiskStateError) as info:
        O.decide(O.FORGET, W, [remote], "hv1", "web", "web")
    assert "detach it on host hv2" in str(info.value) and "force=true" in str(info.value)
    assert O.decide(O.FORGET, W, [remote], "hv1", "web", "web", force=True).stale == [remote]
