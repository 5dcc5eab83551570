#!/usr/bin/env bash
# `make quickstart`: run playbooks/quickstart.yml on this host (connection local) with this
# checkout as the collection sltv.core.  Extra arguments go to ansible-playbook,
# e.g. `make quickstart QUICKSTART_ARGS="-e sltv_quickstart_keep_vg=true"`.
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv
link_collection

cd "$REPO_ROOT"
[ -f playbooks/quickstart.yml ] || die "playbooks/quickstart.yml is missing"
exec ansible-playbook -i localhost, -c local \
    -e ansible_python_interpreter="${VENV}/bin/python" \
    playbooks/quickstart.yml "$@"
