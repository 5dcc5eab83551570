#!/usr/bin/env bash
# `make molecule`: the multi-host scenario (extensions/molecule/default) in the test-bed VMs.
#
#   scripts/molecule.sh [ARGS]          molecule test -s default ARGS (the whole scenario)
#   scripts/molecule.sh part PART...    on the test bed that is up: each verify_PART.yml alone
#                                       (`make molecule-part PART=attach`); PART may also be `all`
#                                       (verify.yml) or `idempotence`. With SLTV_MOLECULE_CONVERGE=1
#                                       (CONVERGE=1) converge first, booting the test bed if none
#                                       is up. The test bed stays up: `make molecule-down`.
#   scripts/molecule.sh down            the test bed down (testbed.py down)
#
# create/destroy call tests/testbed/testbed.py; SLTV_TESTBED_KEEP=1 leaves the VMs up after
# `molecule test`. The SLTV_TESTBED_* settings (state dir, ports) reach testbed.py and the
# inventory path of molecule.yml through the environment.
#
# Nothing outside the checkout: the checkout itself is the collection sltv.core
# (build/collections, first on ANSIBLE_COLLECTIONS_PATH; molecule.yml has prerun: false, so
# molecule installs no copy into ~/.ansible/collections), and ANSIBLE_HOME=build/ansible-home
# holds molecule's ephemeral directory (its ansible.cfg, state) and ansible's local tmp.
# The callback callback_plugins/sltv_timings.py writes the time of each step and verify part to
# build/logs/molecule-timings.txt, printed at the end.
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv

cd "$REPO_ROOT"
export ANSIBLE_FORCE_COLOR=0 PY_COLORS=0 NO_COLOR=1
export ANSIBLE_HOME="${REPO_ROOT}/build/ansible-home"
link_collection
mkdir -p "$LOG_DIR" "$ANSIBLE_HOME"
export SLTV_MOLECULE_TIMINGS="${LOG_DIR}/molecule-timings.txt"
SCENARIO_DIR="${REPO_ROOT}/extensions/molecule/default"
TESTBED=(python3 "${REPO_ROOT}/tests/testbed/testbed.py")

# Mitogen's strategies keep one Python per VM and send each module once: a task costs ~1.5 s
# instead of ~4 s under TCG (README, "Tests"). SLTV_MOLECULE_MITOGEN=0: the plain ssh/AnsiballZ
# path (the local tests cover that path in every run). Plays that must run in parallel on one host
# say `strategy: "{{ lookup('ansible.builtin.env', 'SLTV_MOLECULE_FREE_STRATEGY') }}"`; plays with
# async module tasks pin ansible.builtin.linear: under mitogen 0.3.54 and ansible-core 2.19 an
# async job of our modules never finishes (seen with sltv_disk and sltv_info; `command` works).
use_mitogen() {
    export SLTV_MOLECULE_FREE_STRATEGY=free
    case "${SLTV_MOLECULE_MITOGEN:-1}" in
        0 | no | false) return 0 ;;
    esac
    local plugins
    plugins="$(python -c 'import ansible_mitogen, os; print(os.path.join(os.path.dirname(ansible_mitogen.__file__), "plugins", "strategy"))')" \
        || die "mitogen is not in ${VENV}: run 'make deps' (or SLTV_MOLECULE_MITOGEN=0 for plain ssh)"
    export ANSIBLE_STRATEGY_PLUGINS="$plugins" ANSIBLE_STRATEGY=mitogen_linear SLTV_MOLECULE_FREE_STRATEGY=mitogen_free
    note "tasks through mitogen $(python -c 'import mitogen; print(".".join(map(str, mitogen.__version__)))') (SLTV_MOLECULE_MITOGEN=0: plain ssh)"
}

print_timings() {
    [ -s "$SLTV_MOLECULE_TIMINGS" ] || return 0
    printf '\n==== molecule timings (%s)\n' "${SLTV_MOLECULE_TIMINGS#"${REPO_ROOT}"/}"
    cat "$SLTV_MOLECULE_TIMINGS"
    local tasks="${SLTV_MOLECULE_TIMINGS%.txt}-tasks.txt"
    [ -s "$tasks" ] || return 0
    printf '\n==== the 20 slowest molecule tasks (all in %s)\n' "${tasks#"${REPO_ROOT}"/}"
    # awk reads to the end: head would close the pipe early and sort would die of SIGPIPE (exit 141 under pipefail)
    sort -rn "$tasks" | awk 'NR <= 20'
}

converge_asked() {
    case "${SLTV_MOLECULE_CONVERGE:-}" in
        "" | 0 | no | false) return 1 ;;
    esac
}

testbed_up() {
    local status
    status="$("${TESTBED[@]}" status 2>/dev/null || true)"
    grep -q '^vm[0-9]* running' <<<"$status"
}

# verify_attach.yml for attach, verify_attach or verify_attach.yml
part_playbook() {
    local name="${1#verify_}"
    printf 'verify_%s.yml' "${name%.yml}"
}

known_parts() {
    local path names=""
    for path in "${SCENARIO_DIR}"/verify_*.yml; do
        path="${path##*/verify_}"
        names="${names} ${path%.yml}"
    done
    printf '%s' "${names# }"
}

run_parts() {
    [ "$#" -ge 1 ] || die "usage: $0 part PART... (PART: $(known_parts), all, idempotence)"
    local part
    for part in "$@"; do
        case "$part" in
            all | idempotence) ;;
            *) [ -f "${SCENARIO_DIR}/$(part_playbook "$part")" ] || die "no verify part '${part}' (known: $(known_parts), all, idempotence)" ;;
        esac
    done
    if ! testbed_up; then
        converge_asked || die "no test bed is up (state ${SLTV_TESTBED_DIR:-/var/tmp/sltv-testbed}): add CONVERGE=1 to boot one and converge, or keep one with SLTV_TESTBED_KEEP=1 make molecule"
        note "no test bed up: booting ${SLTV_TESTBED_VMS:-2} VMs on an empty shared LUN"
        "${TESTBED[@]}" up "${SLTV_TESTBED_VMS:-2}" --wipe-shared >/dev/null
    fi
    if converge_asked; then
        # create (when molecule's state says not created) only re-reads the VMs that are up
        SLTV_TESTBED_REUSE=1 molecule converge -s default
    fi
    for part in "$@"; do
        case "$part" in
            idempotence) molecule idempotence -s default ;;
            all) SLTV_MOLECULE_VERIFY=verify.yml molecule verify -s default ;;
            *) SLTV_MOLECULE_VERIFY="$(part_playbook "$part")" molecule verify -s default ;;
        esac
    done
}

use_mitogen
rm -f "$SLTV_MOLECULE_TIMINGS" "${SLTV_MOLECULE_TIMINGS%.txt}-tasks.txt"
trap print_timings EXIT
case "${1:-}" in
    part)
        shift
        run_parts "$@"
        ;;
    down) "${TESTBED[@]}" down ;;
    *) molecule test -s default "$@" ;;
esac
