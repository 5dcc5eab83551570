# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""Issue 14, every bad input refused: sltv_extend, sltv_attachment and sltv_info against real lvm2 on a
loop-backed VG (and a real libvirtd for sltv_attachment). Each case must fail, in check mode and in a
real run, with a message that names the input and what is allowed, and leave the VG (and the domain
XML, live and persistent) exactly as it was. sltv_disk has its own table in test_sltv_disk_lvm.py."""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import pytest

from lvmtest import LoopVG, lvm, run_module, write_commands

pytestmark = pytest.mark.lvm

LONG = "x" * 128
NO_SUCH_VG = "sltvtest_nosuchvg"
MISSING = "/nonexistent/sltv-test/no-such-file.pem"


def case(case_id, override, *fragments, **kw):
    return pytest.param(override, fragments, id=case_id, marks=kw.get("marks", ()))


# options and fragments common to the modules that take the VG lock
LOCK_CASES = [
    ("lock_timeout nan", dict(lock_timeout="nan"), "lock_timeout must be a finite number", "nan"),
    ("lock_timeout inf", dict(lock_timeout="inf"), "lock_timeout must be a finite number", "inf"),
    ("lock_timeout 0", dict(lock_timeout=0), "lock_timeout must be a finite number of seconds greater than 0"),
    ("lock_timeout negative", dict(lock_timeout=-5), "lock_timeout must be a finite number", "-5"),
    ("lock_ttl too small", dict(lock_ttl=1), "lock_ttl must be at least"),
    ("etcd without endpoints", dict(lock_backend="etcd", etcd_endpoints=[]), "etcd_endpoints"),
    ("etcd ca cert missing", dict(lock_backend="etcd", etcd_ca_cert=MISSING), "etcd_ca_cert", "does not exist"),
    ("etcd client cert missing", dict(lock_backend="etcd", etcd_cert=MISSING, etcd_key=MISSING),
     "etcd_cert", "does not exist"),
    ("lock_backend bogus", dict(lock_backend="zookeeper"), "lock_backend", "local, etcd", "zookeeper"),
]

EXTEND_CASES = [
    case("size fullwidth digit", dict(size="５G"), "'５G' is not a valid size", "binary unit"),
    case("size arabic-indic digit", dict(size="٣G"), "'٣G' is not a valid size", "binary unit"),
    case("size fraction of a byte", dict(size="0.1b"), "'0.1b' has a fraction of a byte", "whole bytes"),
    case("size tiny fraction of a byte", dict(size="1.0000000001b"), "'1.0000000001b' has a fraction of a byte"),
    case("size zero", dict(size="0"), "greater than zero", "'0'"),
    case("size negative", dict(size="-1G"), "'-1G' is not a valid size"),
    case("size garbage", dict(size="lots"), "'lots' is not a valid size"),
    case("size bad unit", dict(size="12X"), "'12X' is not a valid size"),
    case("size trailing newline", dict(size="1G\n"), "'1G\\n' is not a valid size"),
    case("delta zero", dict(size=None, delta="0"), "delta of disk d1 must be greater than zero"),
    case("delta negative", dict(size=None, delta="-10M"), "delta of disk d1 '-10M' is not a valid size"),
    case("delta double plus", dict(size=None, delta="++1G"), "'+1G' is not a valid size"),
    case("delta fullwidth digit", dict(size=None, delta="５G"), "'５G' is not a valid size"),
    case("delta fraction of a byte", dict(size=None, delta="0.5b"), "'0.5b' has a fraction of a byte"),
    case("size and delta", dict(size="1G", delta="1G"), "mutually exclusive", "size|delta"),
    case("none of size delta physical", dict(size=None), "one of the following is required", "physical"),
    case("physical zero", dict(disk="t1", size=None, physical="0"), "physical of disk t1 must be greater than zero"),
    case("physical arabic-indic digit", dict(disk="t1", size=None, physical="٣G"), "'٣G' is not a valid size"),
    case("disk trailing newline", dict(disk="d1\n"), "'d1\\n' contains '\\n'", "only A-Z"),
    case("disk with space", dict(disk="bad name"), "'bad name' contains ' '", "only A-Z"),
    case("disk with slash", dict(disk="a/b"), "'a/b' contains '/'", "only A-Z"),
    case("disk too long", dict(disk=LONG), "128 characters long", "at most 127"),
    case("disk leading dash", dict(disk="-d1"), "'-d1' may not start with '-'"),
    case("disk snapshot prefix", dict(disk="snapshot1"), "'snapshot1' may not start with 'snapshot'"),
    case("disk pvmove prefix", dict(disk="pvmove0"), "'pvmove0' may not start with 'pvmove'"),
    case("disk mlog part", dict(disk="d1_mlog"), "'d1_mlog' may not contain '_mlog'"),
    case("vg with slash", dict(vg="a/b"), "volume group name 'a/b'", "only A-Z"),
    case("vg unknown", dict(vg=NO_SUCH_VG), NO_SUCH_VG, "not found"),
    case("disk does not exist", dict(disk="nosuchdisk"), "nosuchdisk", "does not exist"),
    case("disk not managed by sltv", dict(disk="foreign"), "foreign", "not managed by sltv"),
] + [case("extend " + c[0], *c[1:]) for c in LOCK_CASES]

ATTACH_CASES = [
    case("target empty", dict(target=""), "target ''", "such as vdb"),
    case("target trailing newline", dict(target="vdb\n"), "target 'vdb\\n'", "such as vdb"),
    case("target with space", dict(target="vd b"), "target 'vd b'", "such as vdb"),
    case("target with slash", dict(target="vd/b"), "target 'vd/b'", "such as vdb"),
    case("target leading dash", dict(target="-vdb"), "target '-vdb'", "such as vdb"),
    case("target too long", dict(target="vd" + LONG), "target 'vdxxx", "such as vdb"),
    case("target of another bus", dict(target="sdb"), "'sdb' does not fit bus virtio", "vd*"),
    case("serial trailing newline", dict(serial="data1\n"), "serial 'data1\\n'", "1 to 20 characters"),
    case("serial with space", dict(serial="data 1"), "serial 'data 1'", "1 to 20 characters"),
    case("serial with slash", dict(serial="data/1"), "serial 'data/1'", "1 to 20 characters"),
    case("serial too long", dict(serial=LONG), "1 to 20 characters"),
    case("serial empty", dict(serial=""), "serial ''", "1 to 20 characters"),
    case("disk trailing newline", dict(disk="d1\n"), "'d1\\n' contains '\\n'", "only A-Z"),
    case("disk with space", dict(disk="bad name"), "'bad name' contains ' '", "only A-Z"),
    case("disk too long", dict(disk=LONG), "128 characters long", "at most 127"),
    case("disk leading dash", dict(disk="-d1"), "'-d1' may not start with '-'"),
    case("disk snapshot prefix", dict(disk="snapshot-d1"), "may not start with 'snapshot'"),
    case("disk pvmove prefix", dict(disk="pvmove1"), "may not start with 'pvmove'"),
    case("disk mlog part", dict(disk="x_mlog"), "may not contain '_mlog'"),
    case("vg trailing newline", dict(vg="vg\n"), "volume group name 'vg\\n'", "only A-Z"),
    case("vg unknown", dict(vg=NO_SUCH_VG), NO_SUCH_VG, "not found"),
    case("bus ide", dict(bus="ide"), "bus", "virtio, scsi", "ide"),
    case("cache bogus", dict(cache="fast"), "cache", "writeback", "fast"),
    case("io aio", dict(io="aio"), "value of io", "io_uring", "aio"),
    case("discard trim", dict(discard="trim"), "discard", "unmap, ignore", "trim"),
    case("state gone", dict(state="gone"), "state", "present, absent", "gone"),
    case("detach_timeout nan", dict(detach_timeout="nan"), "detach_timeout must be a finite number", "nan"),
    case("detach_timeout inf", dict(detach_timeout="inf"), "detach_timeout must be a finite number", "inf"),
    case("detach_timeout 0", dict(detach_timeout=0), "detach_timeout must be a finite number of seconds greater"),
    case("domain does not exist", dict(domain="sltvtest-no-such-domain"), "sltvtest-no-such-domain",
         "is not defined on this host"),
    case("disk does not exist", dict(disk="nosuchdisk"), "nosuchdisk", "does not exist in VG"),
    case("disk not managed by sltv", dict(disk="foreign"), "foreign", "not managed by sltv"),
] + [case("attach " + c[0], *c[1:]) for c in LOCK_CASES]

INFO_CASES = [
    case("vg with slash", dict(vg=["a/b"]), "'a/b'", "only A-Z"),
    case("vg trailing newline", dict(vg=["vg\n"]), "'vg\\n'", "only A-Z"),
    case("vg with space", dict(vg=["bad vg"]), "'bad vg'", "only A-Z"),
    case("vg second of two bad", dict(vg=["sltvtest_okvg", "x;y"]), "'x;y'", "only A-Z"),
    case("vg leading dash", dict(vg=["-vg"]), "'-vg' may not start with '-'"),
    case("vg too long", dict(vg=[LONG]), "at most 127"),
    case("disk with space", dict(disk="bad name"), "'bad name'", "only A-Z"),
    case("disk with slash", dict(disk="a/b"), "'a/b'", "only A-Z"),
    case("disk trailing newline", dict(disk="d1\n"), "'d1\\n'", "only A-Z"),
    case("disk leading dash", dict(disk="-d1"), "'-d1' may not start with '-'"),
    case("disk too long", dict(disk=LONG), "at most 127"),
    case("disk reserved prefix", dict(disk="snapshot1"), "may not start with 'snapshot'"),
    case("vg unknown", dict(vg=[NO_SUCH_VG]), NO_SUCH_VG, "not found"),
]


def make_disks(vg):
    """d1 (thick), t1 (thin, as sltv_disk leaves it with device-mapper) and foreign (a plain LV)."""
    made = run_module("sltv_disk", dict(name="d1", vg=vg.name, size="256M"))
    assert not made.get("failed"), made
    lvm("lvcreate", "-q", "-an", "-Zn", "--setautoactivation", "n", "-n", "t1", "-L", "64m",
        "--addtag", "sltv", "--addtag", "sltv_kind=thin", "--addtag", "sltv_format=qcow2",
        "--addtag", "sltv_vsize=%d" % 1024 ** 3, vg.name)
    lvm("lvcreate", "-q", "-an", "-Zn", "-n", "foreign", "-L", "8m", vg.name)


@pytest.fixture(scope="module")
def refusing_vg(tmp_path_factory):
    """One VG with make_disks() for every case of this file (per pytest-xdist worker): each case
    asserts that its refusal left the VG as it was, so the next case finds the same disks."""
    vg = LoopVG(str(tmp_path_factory.mktemp("bad-inputs")))
    try:
        make_disks(vg)
        yield vg
    finally:
        vg.destroy()


def refused(module, args, fragments, state, commands=write_commands):
    """Run check mode then for real: both fail with every fragment in msg, no write, state unchanged."""
    args = dict((key, value) for key, value in args.items() if value is not None)
    before = state()
    for check in (True, False):
        result = run_module(module, args, check=check)
        assert result.get("failed") is True, (check, result)
        for fragment in fragments:
            assert fragment in result["msg"], (check, fragment, result["msg"])
        assert commands(result) == [], (check, result.get("commands"))
        assert state() == before, "a refused %s (check=%s) changed something" % (module, check)


@pytest.mark.parametrize("override,fragments", EXTEND_CASES)
def test_sltv_extend_refuses(refusing_vg, override, fragments):
    args = dict(disk="d1", vg=refusing_vg.name, size="512M")
    args.update(override)
    refused("sltv_extend", args, fragments, refusing_vg.snapshot)


@pytest.mark.parametrize("override,fragments", ATTACH_CASES)
def test_sltv_attachment_refuses(refusing_vg, nos_domain, override, fragments):
    import libvirt  # pylint: disable=import-outside-toplevel

    dom = nos_domain(persistent=True, start=False)
    args = dict(disk="d1", vg=refusing_vg.name, domain=dom.name())
    args.update(override)

    def state():
        return refusing_vg.snapshot(), dom.XMLDesc(0), dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)

    refused("sltv_attachment", args, fragments, state)


def lvm_reads(result):
    """Every command an info run ran (it only reads: a refused name must not reach lvm at all)."""
    return result.get("commands", [])


@pytest.mark.parametrize("override,fragments", INFO_CASES)
def test_sltv_info_refuses(refusing_vg, override, fragments):
    args = dict(vg=[refusing_vg.name])
    args.update(override)
    # an unknown VG is only known after the report; a bad name must not get that far
    reads = write_commands if override.get("vg") == [NO_SUCH_VG] else lvm_reads
    refused("sltv_info", args, fragments, refusing_vg.snapshot, commands=reads)
