# -*- coding: utf-8 -*-
# Copyright: sltv.core contributors
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""lvm2 wrapper: argv lists only, LC_ALL=C, JSON reports in bytes, one host-wide lock file.

Every lvm command on a host runs under one lock file (concurrent lvm commands on one host have
deadlocked in the field, see csilvm). Write commands first call ``fence()`` (the VG lock's
``ensure_held``) so that a holder whose cluster lock expired never changes the metadata.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import json
import os

from ansible_collections.sltv.core.plugins.module_utils.locking.vg_lock import LOCK_DIR, FileLock
from ansible_collections.sltv.core.plugins.module_utils.infra.commands import run
from ansible_collections.sltv.core.plugins.module_utils.model.names import is_lvm_name
from ansible_collections.sltv.core.plugins.module_utils.errors import CommandError, LockTimeout, SltvError

HOST_LOCK_PATH = os.path.join(LOCK_DIR, "lvm-host.lock")
HOST_LOCK_TIMEOUT = 300  # the modules' wait; the agent passes a bound within systemd's watchdog budget
# Every lvm command is bounded: a command stuck on a dead LUN must not hold the VG lock forever.
LVM_COMMAND_TIMEOUT = 120

# Test-only setting for machines without device-mapper: lvm2 runs with --driverloaded n, so
# metadata commands are real but nothing can be activated. Never set on a hypervisor.
NO_ACTIVATION_ENV = "SLTV_TEST_LVM_NO_ACTIVATION"

VG_FIELDS = ("vg_name,vg_uuid,vg_size,vg_free,vg_extent_size,vg_extent_count,vg_free_count,vg_attr,vg_tags,vg_lock_type,"
             "vg_mda_size,vg_mda_free")
LV_FIELDS = "lv_name,lv_uuid,lv_size,lv_attr,lv_tags,lv_path,lv_active_locally,lv_device_open"
REPORT_OPTS = ["--reportformat", "json", "--units", "b", "--nosuffix"]
# A report of a VG (vgs, fullreport) also checks the VG's backup file (/etc/lvm/backup/<vg>): lvm reads
# and parses it whole, to rewrite it when it is older than the metadata. At 10,000 disks that is 3 times
# the report itself (bench/bench_scale.py: 1.5 s instead of 0.5 s). The read needs no backup: every
# write command still archives and backs up the metadata it changes; ``vgcfgbackup`` makes one on demand.
READ_CONFIG = ["--config", "backup { backup = 0 }"]


class VgNotFound(SltvError):
    pass


class HostLockTimeout(LockTimeout):
    """The host-wide lvm lock was not had within ``host_lock_timeout`` (another lvm command holds it)."""


class ActivationUnavailable(SltvError):
    """LVs cannot be activated on this host (no device-mapper, or the test setting is on)."""


class LogicalVolume(object):
    """One row of the report: the facts of an LV, sizes in bytes."""

    def __init__(self, row):
        self.name = row["lv_name"]
        self.uuid = row.get("lv_uuid", "")
        self.size = int(row["lv_size"])
        self.attr = row.get("lv_attr", "")
        self.tags = [t for t in row.get("lv_tags", "").split(",") if t]
        self.path = row.get("lv_path", "")
        # attr[4] is 'a' when active on this host, attr[5] 'o' when open ('X' = unknown, no dm).
        self.active = row.get("lv_active_locally", "") == "active locally" or self.attr[4:5] == "a"
        self.open = row.get("lv_device_open", "") == "open" or self.attr[5:6] == "o"

    @property
    def plain(self):
        """True for a linear/striped LV (not a thin pool, snapshot, cache or RAID volume)."""
        return self.attr[:1] in ("-", "")


class VolumeGroup(object):
    def __init__(self, row, lv_rows):
        self.name = row["vg_name"]
        self.uuid = row.get("vg_uuid", "")
        self.size = int(row["vg_size"])
        self.free = int(row["vg_free"])
        self.extent_size = int(row["vg_extent_size"])
        self.attr = row.get("vg_attr", "")
        self.tags = [t for t in row.get("vg_tags", "").split(",") if t]
        self.lock_type = row.get("vg_lock_type", "") or "none"
        # The metadata area (the smallest in use, per PV): lvm keeps the old copy while it writes the
        # new one, so vg_mda_free already counts half of it as the most the metadata text may take.
        self.mda_size = int(row.get("vg_mda_size") or 0)
        self.mda_free = int(row.get("vg_mda_free") or 0)
        self.lvs = dict((r["lv_name"], LogicalVolume(r)) for r in lv_rows)

    @property
    def shared(self):
        """True for an lvmlockd VG (sanlock/dlm): activation takes -aey/-asy."""
        return self.lock_type in ("sanlock", "dlm", "idm")


class LvmRunner(object):
    """Runs lvm2 commands. ``fence`` is called before every command that writes.

    ``timeout`` bounds each command, ``host_lock_timeout`` the wait for the host lock before it
    (HostLockTimeout): the agent gives both within its watchdog budget."""

    def __init__(self, fence=None, host_lock_path=HOST_LOCK_PATH, environ=None, timeout=LVM_COMMAND_TIMEOUT,
                 host_lock_timeout=HOST_LOCK_TIMEOUT):
        environ = os.environ if environ is None else environ
        self.fence = fence
        self.timeout = timeout
        self.host_lock_timeout = host_lock_timeout
        self.activation_enabled = environ.get(NO_ACTIVATION_ENV, "") not in ("1", "true", "yes")
        self.commands = []  # every argv run, for results and tests
        self._host_lock_path = host_lock_path

    # -- running -------------------------------------------------------------------------------
    def _run(self, argv, write):
        argv = list(argv)
        if not self.activation_enabled:
            at = 2 if argv[0] == "lvm" else 1  # right after the (sub)command name
            argv[at:at] = ["--driverloaded", "n"]
        host_lock = FileLock(self._host_lock_path, self.host_lock_timeout)
        try:
            host_lock.acquire()
        except LockTimeout:
            raise HostLockTimeout("the host's lvm lock %s is still held by another lvm command on this host after "
                                  "%.0f s (see which with 'fuser %s'): %s not run"
                                  % (self._host_lock_path, self.host_lock_timeout, self._host_lock_path, argv[0]))
        try:
            # Fence after the host-lock wait, right before the command: a lease that expired while
            # this process waited for another lvm command on the host stops the write here.
            if write and self.fence is not None:
                self.fence()
            self.commands.append(argv)
            return run(argv, timeout=self.timeout, env={"LVM_SUPPRESS_FD_WARNINGS": "1"},
                       clean_stderr=_strip_warnings)
        finally:
            host_lock.release()

    # -- reads -----------------------------------------------------------------------------------
    def read_vg(self, vg, lv=None):
        """One ``lvm fullreport`` for the VG and all its LVs, or only LV ``lv`` (a validated name, or
        a list of them): the LVs that an operation decides on. Raises VgNotFound."""
        vgs = self.read_vgs([vg], lv)
        if not vgs:
            raise VgNotFound("volume group %s not found on this host" % vg)
        return vgs[0]

    def read_vgs(self, names=None, lv=None):
        """VolumeGroups of ``names`` (all VGs this host sees when None), one ``lvm fullreport``.

        With ``lv`` (a name or a list of names), the LV rows are only those LVs' (none of one that
        does not exist): at 10,000 disks the report then takes 0.40 s instead of 0.46 s, and its
        decoding 1 ms instead of 0.1 s (bench/bench_scale.py). lvm still reads the whole metadata,
        so the VG fields are the same."""
        select = []
        if lv is not None:
            # A name lvm would refuse is no LV of the VG (the hook's come from domain XML): never in the selection.
            wanted = [name for name in ([lv] if isinstance(lv, str) else lv) if is_lvm_name(name)]
            # no name selects no LV (lv_name is never empty)
            select = ["-S", " || ".join('lv_name="%s"' % name for name in wanted) or 'lv_name=""']
        argv = ["lvm", "fullreport"] + READ_CONFIG + REPORT_OPTS + [
            "--configreport", "vg", "-o", VG_FIELDS,
            "--configreport", "lv", "-o", LV_FIELDS] + select + [
            "--configreport", "pv", "-o", "pv_name",
            "--configreport", "seg", "-o", "segtype"] + select + [
            "--configreport", "pvseg", "-o", "pvseg_start"] + select + list(names or [])
        try:
            out = self._run(argv, write=False)
        except CommandError as exc:
            if names and "not found" in exc.stderr:
                raise VgNotFound("volume group %s not found on this host (%s); check the name, "
                                 "and that its PVs are visible here (pvs)"
                                 % (", ".join(names), exc.stderr.splitlines()[0]))
            raise
        return [VolumeGroup(report["vg"][0], report.get("lv", []))
                for report in json.loads(out).get("report", []) if report.get("vg")]

    # -- writes ----------------------------------------------------------------------------------
    def create_lv(self, vg, name, size, tags):
        """Create an inactive plain LV of ``size`` bytes (a multiple of the extent size)."""
        argv = ["lvcreate", "--yes", "-n", name, "-L", "%db" % size,
                "--setautoactivation", "n", "-an", "-Zn", "-Wn"]
        for tag in tags:
            argv += ["--addtag", tag]
        self._run(argv + [vg], write=True)

    def remove_lv(self, vg, name):
        self._run(["lvremove", "--yes", "%s/%s" % (vg, name)], write=True)

    def extend_lv(self, vg, name, size):
        self._run(["lvextend", "-L", "%db" % size, "%s/%s" % (vg, name)], write=True)

    def change_tags(self, vg, name, add=(), delete=()):
        argv = ["lvchange"]
        for tag in add:
            argv += ["--addtag", tag]
        for tag in delete:
            argv += ["--deltag", tag]
        self._run(argv + ["%s/%s" % (vg, name)], write=True)

    def change_vg_tags(self, vg, add=(), delete=()):
        argv = ["vgchange"]
        for tag in add:
            argv += ["--addtag", tag]
        for tag in delete:
            argv += ["--deltag", tag]
        self._run(argv + [vg], write=True)

    # -- activation ------------------------------------------------------------------------------
    def check_activation(self):
        if not self.activation_enabled:
            raise ActivationUnavailable(
                "LV activation is switched off by the test setting %s" % NO_ACTIVATION_ENV)
        if not device_mapper_loaded():
            raise ActivationUnavailable(
                "this host's kernel has no device-mapper (no 'device-mapper' in /proc/misc), so no LV "
                "can be activated here: load the dm_mod kernel module or run on a host that has it")

    def activate(self, vg, name, exclusive=True, shared_vg=False):
        """Activate on this host; lvmlockd VGs take the exclusive (or shared) LV lock."""
        self.check_activation()
        mode = "-ay"
        if shared_vg:
            mode = "-aey" if exclusive else "-asy"
        self._run(["lvchange", mode, "%s/%s" % (vg, name)], write=False)

    def refresh(self, vg, name):
        """Reload an active LV's dm table from the metadata (another host extended it)."""
        self.check_activation()
        self._run(["lvchange", "--refresh", "%s/%s" % (vg, name)], write=False)

    def deactivate(self, vg, name):
        self.check_activation()
        self._run(["lvchange", "-an", "%s/%s" % (vg, name)], write=False)


def device_mapper_loaded(proc_misc="/proc/misc"):
    """True when the kernel has device-mapper (/dev/mapper/control may exist without it)."""
    try:
        with open(proc_misc) as misc:
            return any(line.split()[1:2] == ["device-mapper"] for line in misc)
    except (IOError, OSError):
        return False


def _strip_warnings(stderr):
    """Drop lvm2's noise lines so that error messages show the real cause."""
    keep = [line.strip() for line in (stderr or "").splitlines()
            if line.strip() and "Activation disabled" not in line and "leaked on" not in line]
    return "\n".join(keep)
