# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The device writes of sltv_disk (wipe, qcow2 header) on a real block device: a loop device.

On a hypervisor these run on an activated LV; here no LV can be activated (no device-mapper), so
the same functions run on a loop device, which is a real block device to blkdiscard and qemu-img.
"""
from __future__ import absolute_import, division, print_function

__metaclass__ = type

import os
import subprocess

import pytest

from lvmtest import need_root_and_lvm

from ansible_collections.sltv.core.plugins.module_utils.infra.blockdev import qcow2_info, wipe_device, write_qcow2_header
from ansible_collections.sltv.core.plugins.module_utils.errors import CommandError

MIB = 1024 ** 2


@pytest.fixture
def loop_device(tmp_path):
    need_root_and_lvm()
    image = tmp_path / "disk.img"
    with open(str(image), "wb") as handle:
        handle.truncate(32 * MIB)
    device = subprocess.check_output(["losetup", "-f", "--show", str(image)], universal_newlines=True).strip()
    yield device
    subprocess.call(["losetup", "-d", device])


def read_device(device):
    with open(device, "rb") as handle:
        return handle.read()


def test_wipe_zero_leaves_nothing_readable(loop_device):
    pattern = os.urandom(MIB) * 32
    with open(loop_device, "r+b") as handle:
        handle.write(pattern)
        handle.flush()
        os.fsync(handle.fileno())
    assert read_device(loop_device) == pattern
    wipe_device(loop_device, "zero")
    assert read_device(loop_device) == b"\0" * (32 * MIB)


def test_wipe_none_keeps_data(loop_device):
    with open(loop_device, "r+b") as handle:
        handle.write(b"x" * MIB)
    wipe_device(loop_device, "none")
    assert read_device(loop_device)[:MIB] == b"x" * MIB


def test_qcow2_header_on_a_block_device(loop_device):
    write_qcow2_header(loop_device, 8 * 1024 ** 3)
    info = qcow2_info(loop_device)
    assert info["format"] == "qcow2" and info["virtual-size"] == 8 * 1024 ** 3


def test_failed_device_command_carries_argv_and_stderr():
    with pytest.raises(CommandError) as err:
        wipe_device("/dev/sltv-no-such-device", "zero")
    assert err.value.argv[0] == "blkdiscard" and err.value.rc != 0 and err.value.stderr
    assert "/dev/sltv-no-such-device" in str(err.value)
