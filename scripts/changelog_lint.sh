#!/usr/bin/env bash
# antsibull-changelog lint: checks changelogs/config.yaml, changelogs/changelog.yaml and every
# fragment in changelogs/fragments/.
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv

cd "$REPO_ROOT"
[ -f changelogs/config.yaml ] || die "changelogs/config.yaml is missing"
antsibull-changelog lint "$@"
fragments="$(find changelogs/fragments -maxdepth 1 -type f \( -name '*.yml' -o -name '*.yaml' \) | wc -l)"
note "changelog files and ${fragments} fragment(s) are valid"
