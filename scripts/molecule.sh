#!/usr/bin/env bash
# `make molecule`: the multi-host scenario (extensions/molecule/default) in the test-bed VMs.
# Its create/destroy call tests/testbed/testbed.py; SLTV_TESTBED_KEEP=1 leaves the VMs up.
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv

cd "$REPO_ROOT"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
exec molecule test -s default "$@"
