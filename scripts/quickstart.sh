#!/usr/bin/env bash
# `make quickstart`: run playbooks/quickstart.yml with this checkout as the collection sltv.core.
#  - on a host whose kernel has device-mapper: on this host (connection local), cleaning up after;
#  - otherwise (such as our CI machines): in the test bed, VMs that have it (tests/testbed), on
#    vm1, keeping what it made and leaving the test bed up.
# Extra arguments go to ansible-playbook, e.g. QUICKSTART_ARGS="-e sltv_quickstart_cleanup=false".
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv
link_collection

cd "$REPO_ROOT"
[ -f playbooks/quickstart.yml ] || die "playbooks/quickstart.yml is missing"

if grep -qw device-mapper /proc/misc; then
    exec ansible-playbook -i localhost, -c local \
        -e ansible_python_interpreter="${VENV}/bin/python" \
        playbooks/quickstart.yml "$@"
fi

echo "This host's kernel has no device-mapper: running the quickstart in the test bed (VMs that have it)."
testbed=(python3 tests/testbed/testbed.py)
"${testbed[@]}" up 2
inventory="${SLTV_TESTBED_DIR:-/var/tmp/sltv-testbed}/inventory.ini"
ANSIBLE_PIPELINING=True ANSIBLE_HOST_KEY_CHECKING=False \
    ansible-playbook -i "$inventory" -e sltv_quickstart_hosts=vm1 -e sltv_quickstart_cleanup=false \
    playbooks/quickstart.yml "$@"
cat <<MSG

The quickstart made the disks above on vm1 of the test bed, which is still up:
  look around:  python3 tests/testbed/testbed.py ssh 1 lvs
  tear it down: python3 tests/testbed/testbed.py down
MSG
