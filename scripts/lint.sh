#!/usr/bin/env bash
# ansible-lint of the whole collection with the production profile (settings: .ansible-lint).
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv

cd "$REPO_ROOT"
# Playbooks call sltv.core.* modules: make this checkout resolvable as the collection sltv.core.
# (In offline mode ansible-lint does not install the collection into its own cache.)
link_collection

note "$(ansible-lint --nocolor --version 2>/dev/null | awk 'NR == 1')"
# --offline (also in .ansible-lint): no version check and no galaxy installs; only PyPI is reachable
run_logged ansible-lint ansible-lint --offline --profile production --nocolor "$@"
note "$(grep -E '^Passed' "${LOG_DIR}/ansible-lint.log" | tail -n 1)"
