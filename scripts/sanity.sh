#!/usr/bin/env bash
# Run `ansible-test sanity` (every test, Python 3.11) on a copy of the collection.
#
# ansible-test needs the collection at .../ansible_collections/<namespace>/<name>, so the files git
# would commit (tracked + untracked-not-ignored) are copied to
# build/sanity/ansible_collections/sltv/core.  The copy gets an empty `git init` of its own so that
# ansible-test lists its files there instead of walking up to this checkout's .git (where build/ is
# ignored and the copy would look empty).  tests/output of the copy survives between runs, so
# ansible-test's delegation virtualenv is re-used.
#
# Extra arguments go to ansible-test, e.g. `scripts/sanity.sh --test pylint`.
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv

SANITY_PYTHON="${SANITY_PYTHON:-3.11}"
COPY="${REPO_ROOT}/build/sanity/ansible_collections/sltv/core"

command -v git >/dev/null || die "git is needed to list the collection's files"
command -v "python${SANITY_PYTHON}" >/dev/null || die "python${SANITY_PYTHON} not found on PATH"
# without it ansible-test would skip the shellcheck test with only a warning
command -v shellcheck >/dev/null || die "shellcheck not found (scripts/bootstrap.sh apt shellcheck)"

# Files must not be listed in the ignore files: they have to stay empty.
for ignore in "${REPO_ROOT}"/tests/sanity/ignore-*.txt; do
    [ -e "$ignore" ] || continue
    if grep -q '[^[:space:]]' "$ignore"; then
        die "${ignore#"${REPO_ROOT}"/} is not empty; fix the code instead of ignoring sanity errors"
    fi
done

# --- 1. pip bootstrap script -------------------------------------------------------------------
# ansible-test downloads get-pip-<version>.py from ci-files.testing.ansible.com (unreachable here)
# unless it is cached in ~/.ansible/test/cache: put our offline stand-in there.
pip_version="$(python - <<'EOF'
import os
import re
import ansible_test
path = os.path.join(os.path.dirname(ansible_test.__file__), "_internal", "python_requirements.py")
with open(path) as handle:
    match = re.search(r"\bpip='([0-9.]+)'", handle.read())
print(match.group(1) if match else "")
EOF
)"
[ -n "$pip_version" ] || die "cannot find the pip version ansible-test bootstraps; update scripts/sanity.sh"
cache="${HOME}/.ansible/test/cache/get_pip_${pip_version//./_}.py"
if [ ! -f "$cache" ] || grep -q 'sltv-core-get-pip-shim' "$cache"; then
    mkdir -p "$(dirname "$cache")"
    cmp -s "${REPO_ROOT}/scripts/get_pip_shim.py" "$cache" || cp "${REPO_ROOT}/scripts/get_pip_shim.py" "$cache"
fi

# --- 2. fresh copy of the collection -----------------------------------------------------------
mkdir -p "$COPY"
shopt -s dotglob nullglob
for entry in "$COPY"/*; do
    case "${entry##*/}" in
        tests | .git) ;;
        *) rm -rf "$entry" ;;
    esac
done
for entry in "$COPY"/tests/*; do
    [ "${entry##*/}" = output ] || rm -rf "$entry"
done
shopt -u dotglob nullglob
(
    cd "$REPO_ROOT"
    git ls-files -z --cached --others --exclude-standard \
        | while IFS= read -r -d '' path; do
            # skip deleted-but-still-indexed files and directory symlinks git lists as files
            if [ -f "$path" ] || [ -L "$path" ]; then printf '%s\0' "$path"; fi
        done \
        | tar --null --no-recursion -T - -cf -
) | tar -xf - -C "$COPY"
[ -d "${COPY}/.git" ] || git -C "$COPY" init -q
note "copied $(find "$COPY" -path "${COPY}/.git" -prune -o -path "${COPY}/tests/output" -prune -o -type f -print | wc -l) files to ${COPY#"${REPO_ROOT}"/}"

# --- 3. ansible-test sanity --------------------------------------------------------------------
cd "$COPY"
log="${LOG_DIR}/sanity.log"
mkdir -p "$LOG_DIR"
rc=0
ansible-test sanity --python "$SANITY_PYTHON" --venv --color no "$@" >"$log" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
    show_log "$log"
    echo "ansible-test sanity failed (exit $rc); full log: ${log#"${REPO_ROOT}"/}" >&2
    exit "$rc"
fi
tests="$(sed -n 's/^Running sanity test "\([^"]*\)".*/\1/p' "$log" | tr '\n' ' ')"
note "passed: ${tests}"
grep -E '^WARNING: Skipping tests disabled by default' "$log" >&2 || true
# a test ansible-test had to skip (missing tool, unsupported Python, ...) fails the stage
skipped="$(grep -E '^WARNING: (Skipping sanity test|Required program)' "$log" || true)"
if [ -n "$skipped" ]; then
    printf '%s\n' "$skipped" >&2
    die "ansible-test skipped sanity tests (see above); install what they need"
fi
