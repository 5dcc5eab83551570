# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
"""The busybox test guest of tests/integration/guesttest.py, bundled for a test-bed VM.

  guest_bundle.py OUT_DIR NAME VM_DIR

Builds (or takes from its cache) the guest's kernel and initramfs on this machine, and writes to
OUT_DIR: ``vmlinuz``, ``initrd.cpio`` and ``NAME.xml``, a ``type='kvm'`` domain (nested KVM works
in the VMs) whose kernel, initrd, console log and command socket live in VM_DIR on the VM. The
kernel is the compressed bzImage: under KVM it unpacks itself in well under a second, and it is
8 MiB to copy instead of the 63 MiB ELF image the TCG guests of the local tests boot.
Prints the bundle as JSON (paths on the VM).
"""
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "integration"))

import guesttest  # noqa: E402  pylint: disable=wrong-import-position


def main(out_dir, name, vm_dir):
    image = guesttest.GuestImage().ensure()
    os.makedirs(out_dir, exist_ok=True)
    shutil.copyfile(os.path.join(image.directory, "vmlinuz"), os.path.join(out_dir, "vmlinuz"))
    shutil.copyfile(image.initrd, os.path.join(out_dir, "initrd.cpio"))
    on_vm = {
        "kernel": os.path.join(vm_dir, "vmlinuz"),
        "initrd": os.path.join(vm_dir, "initrd.cpio"),
        "console": os.path.join(vm_dir, name + ".console"),
        "socket": os.path.join(vm_dir, name + ".sock"),
        "xml": os.path.join(vm_dir, name + ".xml"),
    }
    xml = guesttest.guest_domain_xml(name, on_vm["kernel"], on_vm["initrd"], on_vm["console"], on_vm["socket"],
                                     domain_type="kvm")
    with open(os.path.join(out_dir, name + ".xml"), "w") as handle:
        handle.write(xml)
    print(json.dumps(dict(on_vm, name=name, built_seconds=image.build_seconds)))
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.stderr.write(__doc__)
        sys.exit(2)
    sys.exit(main(*sys.argv[1:]))
