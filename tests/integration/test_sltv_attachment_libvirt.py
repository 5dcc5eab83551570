# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""sltv_attachment, sltv_extend and sltv_info against a REAL libvirtd + QEMU and real lvm2 on a
loop-backed VG. This machine has no device-mapper, so an LV cannot be activated here: these tests
take every path that needs no active LV (shut-off domains, claims, refusals, check and diff mode,
the bad-input table). Live attach, blockResize and migration run in the test bed (molecule)."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import socket
import xml.etree.ElementTree as ET

import pytest

import libvirttest
from lvmtest import lvm, run_module, warning_texts, write_commands

pytestmark = pytest.mark.lvm
GIB = 1024 ** 3
MIB = 1024 ** 2


def make_disk(vg, name, size="256M", provisioning="thick"):
    result = run_module("sltv_disk", dict(name=name, vg=vg.name, size=size, provisioning=provisioning))
    assert not result.get("failed"), result
    return result


def make_thin_disk(vg, name, virtual=GIB):
    """A thin disk as sltv_disk leaves it on a host with device-mapper (header written)."""
    lvm("lvcreate", "-q", "-an", "-Zn", "--setautoactivation", "n", "-n", name, "-L", "64m",
        "--addtag", "sltv", "--addtag", "sltv_kind=thin", "--addtag", "sltv_format=qcow2",
        "--addtag", "sltv_vsize=%d" % virtual, vg.name)


def inactive_disks(dom):
    import libvirt  # pylint: disable=import-outside-toplevel

    root = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
    return dict((d.find("target").get("dev"), d) for d in root.findall("./devices/disk"))


def state(vg, dom):
    import libvirt  # pylint: disable=import-outside-toplevel

    return vg.snapshot(), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)


def attach_args(vg, name, dom, **kw):
    args = dict(disk=name, vg=vg.name, domain=dom.name())
    args.update(kw)
    return args


def test_attach_to_a_shut_off_domain_check_real_idempotent_detach(loop_vg, nos_domain):
    dom = nos_domain(persistent=True, start=False)
    make_disk(loop_vg, "data1")
    args = attach_args(loop_vg, "data1", dom, serial="data1")
    before = state(loop_vg, dom)

    predicted = run_module("sltv_attachment", args, check=True, diff=True)
    assert predicted["changed"] is True and predicted["actions"] == ["claim", "attach_config"], predicted
    assert predicted["target"] == "vda"
    assert "/dev/%s/data1" % loop_vg.name in predicted["diff"]["after"]
    assert "/dev/%s/data1" % loop_vg.name not in predicted["diff"]["before"]
    assert state(loop_vg, dom) == before, "check mode changed something"

    done = run_module("sltv_attachment", args, diff=True)
    assert done["changed"] is True and done["actions"] == predicted["actions"], done
    disks = inactive_disks(dom)
    assert set(disks) == {"vda"}
    driver = disks["vda"].find("driver")
    assert (driver.get("type"), driver.get("cache"), driver.get("io")) == ("raw", "none", "native")
    assert driver.get("error_policy") is None, "thick disks keep the default error policy"
    assert disks["vda"].find("serial").text == "data1"
    tags = loop_vg.lvs()["data1"]["tags"]
    claim = "%s:%s:exclusive:%s" % (socket.gethostname(), dom.UUIDString(), dom.name())
    assert "sltv_attached=" + claim in tags, (tags, done)
    assert done["disk"]["attachments"] == [claim]
    assert done["disk"]["claims"] == [dict(host=socket.gethostname(), domain_uuid=dom.UUIDString(),
                                           domain_name=dom.name(), mode="exclusive")]

    again = run_module("sltv_attachment", args)
    assert again["changed"] is False and again["actions"] == [] and again["target"] == "vda"
    assert write_commands(again) == []

    gone = run_module("sltv_attachment", dict(args, state="absent"), diff=True)
    assert gone["changed"] is True and gone["actions"] == ["detach_config", "unclaim"], gone
    assert inactive_disks(dom) == {}
    assert not [t for t in loop_vg.lvs()["data1"]["tags"] if t.startswith("sltv_attached")]
    assert run_module("sltv_attachment", dict(args, state="absent"))["changed"] is False


def test_targets_are_taken_from_the_real_xml_and_thin_disks_stop_on_error(loop_vg, nos_domain):
    dom = nos_domain(persistent=True, start=False)
    make_disk(loop_vg, "d1")
    make_thin_disk(loop_vg, "t1")
    first = run_module("sltv_attachment", attach_args(loop_vg, "d1", dom))
    second = run_module("sltv_attachment", attach_args(loop_vg, "t1", dom))
    assert (first["target"], second["target"]) == ("vda", "vdb")
    driver = inactive_disks(dom)["vdb"].find("driver")
    assert (driver.get("type"), driver.get("error_policy")) == ("qcow2", "stop")
    scsi = run_module("sltv_attachment", attach_args(loop_vg, "t1", dom, bus="scsi", state="absent"))
    assert scsi["changed"] is True
    again = run_module("sltv_attachment", attach_args(loop_vg, "t1", dom, bus="scsi"))
    assert again["target"] == "sda"


def test_sltv_info_shows_disks_attachments_and_overcommit(loop_vg, nos_domain):
    dom = nos_domain(persistent=True, start=False)
    make_disk(loop_vg, "d1", size="1G")
    make_thin_disk(loop_vg, "t1", virtual=16 * GIB)
    run_module("sltv_attachment", attach_args(loop_vg, "t1", dom))
    info = run_module("sltv_info", dict(vg=[loop_vg.name]), check=True)
    assert info["changed"] is False
    disks = dict((d["name"], d) for d in info["disks"])
    assert set(disks) == {"d1", "t1"}
    assert disks["t1"]["kind"] == "thin" and disks["t1"]["virtual_size"] == 16 * GIB
    assert disks["t1"]["attached"][0]["domain_uuid"] == dom.UUIDString()
    assert disks["t1"]["attached"][0]["domain_name"] == dom.name() and disks["t1"]["attached"][0]["here"]
    assert disks["t1"]["local_domains"] == [dict(domain=dom.name(), domain_uuid=dom.UUIDString(), target="vda",
                                                 bus="virtio", live=False, persistent=True)]
    vg = info["vgs"][0]
    assert vg["disks"] == 2 and vg["virtual"] == 17 * GIB
    assert vg["overcommit"] == round(17.0 * GIB / vg["size"], 3)
    only = run_module("sltv_info", dict(vg=[loop_vg.name], domain=dom.name()))
    assert [d["name"] for d in only["disks"]] == ["t1"]


def test_attach_to_a_running_domain_needs_device_mapper_and_changes_nothing(loop_vg, nos_domain):
    dom = nos_domain(persistent=True, start=True)
    make_disk(loop_vg, "d1")
    before = state(loop_vg, dom)
    result = run_module("sltv_attachment", attach_args(loop_vg, "d1", dom))
    assert result.get("failed") and "d1" in result["msg"] and "on host" in result["msg"]
    assert "activation" in result["msg"].lower() or "device-mapper" in result["msg"]
    assert state(loop_vg, dom) == before


BAD_INPUT = [
    ("unknown domain", dict(domain="sltvtest-no-such-domain"), "is not defined on this host"),
    ("unknown disk", dict(disk="nosuchdisk"), "does not exist in VG"),
    ("foreign LV", dict(disk="foreign"), "not managed by sltv"),
    ("target in use", dict(target="vda"), "already used by"),
    ("target of another bus", dict(target="sdb"), "does not fit bus"),
    ("attached elsewhere", dict(disk="elsewhere"), "attached to domain 11111111-2222-3333-4444-555555555555 on host hv9"),
    ("thin disk shareable", dict(disk="t1", shareable=True), "cannot be shared"),
    ("bad disk name", dict(disk="bad/name"), "only A-Z a-z 0-9"),
    ("io native with writeback", dict(cache="writeback"), "io=native needs"),
]


@pytest.mark.parametrize("case,override,message", BAD_INPUT, ids=[c[0] for c in BAD_INPUT])
def test_bad_attachment_input_is_a_clear_error_and_changes_nothing(loop_vg, nos_domain, case, override, message):
    dom = nos_domain(persistent=True, start=False)
    make_disk(loop_vg, "d1")
    make_disk(loop_vg, "d2")
    make_thin_disk(loop_vg, "t1")
    make_disk(loop_vg, "elsewhere")
    lvm("lvchange", "--addtag", "sltv_attached=hv9:11111111-2222-3333-4444-555555555555",
        "%s/elsewhere" % loop_vg.name)
    lvm("lvcreate", "-q", "-an", "-Zn", "-n", "foreign", "-L", "8m", loop_vg.name)
    assert run_module("sltv_attachment", attach_args(loop_vg, "d2", dom, target="vda"))["changed"] is True
    before = state(loop_vg, dom)
    result = run_module("sltv_attachment", attach_args(loop_vg, "d1", dom, **override))
    assert result.get("failed"), result
    assert message in result["msg"], result["msg"]
    assert result["msg"].startswith("sltv_attachment ") and "on host" in result["msg"]
    assert state(loop_vg, dom) == before, "a refused attach changed something"


def test_sltv_extend_thick_grows_idempotently_and_refuses_to_shrink(loop_vg):
    make_disk(loop_vg, "d1", size="256M")
    args = dict(disk="d1", vg=loop_vg.name, size="512M")
    predicted = run_module("sltv_extend", args, check=True, diff=True)
    assert predicted["changed"] and predicted["actions"] == ["lvextend", "tag_vsize"], predicted
    assert predicted["diff"]["after"] == dict(size=512 * MIB, virtual_size=512 * MIB)
    assert loop_vg.lvs()["d1"]["size"] == 256 * MIB
    done = run_module("sltv_extend", args)
    assert done["changed"] and done["size"] == 512 * MIB
    lv = loop_vg.lvs()["d1"]
    assert lv["size"] == 512 * MIB and "sltv_vsize=%d" % (512 * MIB) in lv["tags"]
    assert run_module("sltv_extend", args)["changed"] is False
    grown = run_module("sltv_extend", dict(disk="d1", vg=loop_vg.name, delta="100M"))
    assert grown["size"] == 612 * MIB  # 100M is a multiple of the 4 MiB extent
    before = loop_vg.snapshot()
    shrink = run_module("sltv_extend", args)
    assert shrink.get("failed") and "never shrunk" in shrink["msg"] and "d1" in shrink["msg"]
    too_big = run_module("sltv_extend", dict(args, size="100G"))
    assert too_big.get("failed") and "free" in too_big["msg"]
    thin_only = run_module("sltv_extend", dict(disk="d1", vg=loop_vg.name, physical="1G"))
    assert thin_only.get("failed") and "thin disks only" in thin_only["msg"]
    assert loop_vg.snapshot() == before


def test_sltv_extend_thin_physical_and_cap(loop_vg):
    make_thin_disk(loop_vg, "t1", virtual=GIB)
    grown = run_module("sltv_extend", dict(disk="t1", vg=loop_vg.name, physical="512M"))
    assert grown["changed"] and grown["actions"] == ["lvextend"] and grown["size"] == 512 * MIB
    assert grown["virtual_size"] == GIB
    before = loop_vg.snapshot()
    over = run_module("sltv_extend", dict(disk="t1", vg=loop_vg.name, physical="2G"))
    assert over.get("failed") and "cap" in over["msg"]
    shrink = run_module("sltv_extend", dict(disk="t1", vg=loop_vg.name, size="512M"))
    assert shrink.get("failed") and "never shrunk" in shrink["msg"]
    # the virtual size of an unattached thin disk grows with qemu-img on the active LV: not here
    virtual = run_module("sltv_extend", dict(disk="t1", vg=loop_vg.name, size="2G"))
    assert virtual.get("failed") and "activation" in virtual["msg"].lower()
    assert loop_vg.snapshot() == before


def test_sltv_extend_refuses_a_disk_attached_on_another_host(loop_vg):
    make_disk(loop_vg, "d1")
    lvm("lvchange", "--addtag", "sltv_attached=hv9:11111111-2222-3333-4444-555555555555", "%s/d1" % loop_vg.name)
    before = loop_vg.snapshot()
    result = run_module("sltv_extend", dict(disk="d1", vg=loop_vg.name, size="1G"))
    assert result.get("failed") and "on host hv9" in result["msg"] and "delegate_to" in result["msg"]
    assert loop_vg.snapshot() == before


def test_sltv_info_lists_live_agents_and_recent_extends_from_etcd(loop_vg, etcd_server):
    make_disk(loop_vg, "d1")
    prefix = "/sltvtest-%s" % loop_vg.name
    lease = etcd_server.etcdctl("lease", "grant", "30").split()[1]
    etcd_server.etcdctl("put", "--lease=%s" % lease, prefix + "/agents/hv1", '{"host": "hv1", "pid": 812}')
    etcd_server.etcdctl("put", prefix + "/extends/%s/d1" % loop_vg.name,
                        '{"host": "hv1", "vg": "%s", "disk": "d1", "size": 536870912, "seconds": 0.41}' % loop_vg.name)
    etcd_server.etcdctl("put", prefix + "/agentsfoo", "not under the agents/ prefix")
    info = run_module("sltv_info", dict(vg=[loop_vg.name], lock_backend="etcd", etcd_endpoints=[etcd_server.endpoint],
                                        lock_prefix=prefix))
    assert not info.get("failed"), info
    assert info["agents"] == [dict(host="hv1", pid=812, key=prefix + "/agents/hv1")]
    assert [(e["disk"], e["size"]) for e in info["extends"]] == [("d1", 536870912)]
    etcd_server.etcdctl("lease", "revoke", lease)
    assert run_module("sltv_info", dict(vg=[loop_vg.name], lock_backend="etcd", etcd_endpoints=[etcd_server.endpoint],
                                        lock_prefix=prefix))["agents"] == []


def test_a_detach_whose_lock_fails_reports_what_it_did(loop_vg, nos_domain, etcd_factory):
    """Before: the persistent XML changed, the claim stayed, and the message said "Nothing was changed"
    with no ``changed`` (issue 10, hole 9). Now: changed, done, and the message says what was done."""
    server = etcd_factory()
    dom = nos_domain(persistent=True, start=False)
    make_disk(loop_vg, "d1")
    lock = dict(server.client_settings(lock_timeout=3))
    attached = run_module("sltv_attachment", dict(attach_args(loop_vg, "d1", dom), **lock))
    assert attached["changed"] and not attached.get("failed"), attached
    server.stop()
    result = run_module("sltv_attachment", dict(attach_args(loop_vg, "d1", dom, state="absent"), **lock))
    assert result.get("failed") and result["changed"] is True, result
    assert result["done"] == ["detach_config"]
    assert "Done before the failure" in result["msg"] and "detach_config" in result["msg"]
    assert "Nothing was changed" not in result["msg"]
    assert inactive_disks(dom) == {}
    assert [t for t in loop_vg.lvs()["d1"]["tags"] if t.startswith("sltv_attached=")]  # the claim is still there


def test_detach_with_live_false_leaves_the_live_definition_and_the_claim(loop_vg, nos_domain):
    """live=false on a shut-off domain detaches the persistent definition only; on a running one it
    would be told to leave the live disk: nothing is unplugged, deactivated or unclaimed (hole 8)."""
    dom = nos_domain(persistent=True, start=False)
    make_disk(loop_vg, "d1")
    assert run_module("sltv_attachment", attach_args(loop_vg, "d1", dom))["changed"]
    kept = run_module("sltv_attachment", attach_args(loop_vg, "d1", dom, state="absent", persistent=False))
    assert not kept.get("failed") and kept["changed"] is False and kept["actions"] == [], kept
    assert set(inactive_disks(dom)) == {"vda"}
    assert [t for t in loop_vg.lvs()["d1"]["tags"] if t.startswith("sltv_attached=")]


def claims_of(vg, name):
    return [t for t in vg.lvs()[name]["tags"] if t.startswith("sltv_attached=")]


def test_the_claim_of_a_domain_undefined_without_a_detach_is_dropped_by_a_detach(loop_vg, nos_domain, libvirt_session):
    dom = nos_domain(persistent=True, start=False)
    name = dom.name()
    make_disk(loop_vg, "gone1")
    assert run_module("sltv_attachment", attach_args(loop_vg, "gone1", dom))["changed"] is True
    libvirttest.remove_domain(libvirt_session.connection(), name)  # undefined, no detach: the claim stays
    assert len(claims_of(loop_vg, "gone1")) == 1
    refused = run_module("sltv_disk", dict(name="gone1", vg=loop_vg.name, state="absent"))
    assert refused.get("failed") and "detach it first" in refused["msg"], refused

    args = dict(disk="gone1", vg=loop_vg.name, domain=name, state="absent")
    before = loop_vg.snapshot()
    predicted = run_module("sltv_attachment", args, check=True)
    assert predicted["changed"] is True and predicted["actions"] == ["unclaim"], predicted
    assert any("would be dropped" in w for w in warning_texts(predicted)), predicted
    assert loop_vg.snapshot() == before, "check mode changed something"
    dropped = run_module("sltv_attachment", args)
    assert dropped["changed"] is True and dropped["actions"] == ["unclaim"], dropped
    assert claims_of(loop_vg, "gone1") == [] and dropped["disk"]["attachments"] == []
    again = run_module("sltv_attachment", args)
    assert again["changed"] is False and any("nothing to detach" in w for w in warning_texts(again)), again
    deleted = run_module("sltv_disk", dict(name="gone1", vg=loop_vg.name, state="absent", wipe="none"))
    assert deleted["changed"] is True, deleted


def test_the_claim_of_a_domain_on_another_host_is_dropped_only_with_force(loop_vg, libvirt_session):
    make_disk(loop_vg, "gone2")
    claim = "sltv_attached=hv9:11111111-2222-3333-4444-555555555555:exclusive:web9"
    lvm("lvchange", "--addtag", claim, "%s/gone2" % loop_vg.name)
    args = dict(disk="gone2", vg=loop_vg.name, domain="web9", state="absent")
    before = loop_vg.snapshot()
    refused = run_module("sltv_attachment", args)
    assert refused.get("failed") is True, refused
    assert "on host hv9" in refused["msg"] and "detach it on host hv9" in refused["msg"] and "force=true" in refused["msg"]
    assert loop_vg.snapshot() == before
    bad = run_module("sltv_attachment", dict(args, state="present", force=True))
    assert bad.get("failed") and "force=true applies to state=absent only" in bad["msg"], bad
    forced = run_module("sltv_attachment", dict(args, domain="11111111-2222-3333-4444-555555555555", force=True))
    assert forced["changed"] is True and forced["actions"] == ["unclaim"], forced
    assert claims_of(loop_vg, "gone2") == []
