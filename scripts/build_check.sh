#!/usr/bin/env bash
# Build the collection tarball, install it into an empty collections path, and check that
# ansible-doc shows the documentation of every module from the installed copy.
#
# GNU General Public License v3.0+ (see LICENSE or https://www.gnu.org/licenses/gpl-3.0.txt)
set -euo pipefail

# shellcheck source=scripts/lib.sh
. "$(dirname "$0")/lib.sh"
use_venv

# modules whose docs must be there even if someone deletes the file
REQUIRED_MODULES="${REQUIRED_MODULES:-sltv_disk}"

out="${REPO_ROOT}/build/collection"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

# ansible-galaxy and ansible-doc keep their caches and local tmp (galaxy_cache, tmp) under
# ANSIBLE_HOME (default ~/.ansible): keep them in the temporary directory, out of the user's home.
export ANSIBLE_HOME="${tmp}/ansible-home"

cd "$REPO_ROOT"
version="$(python -c 'import yaml; g = yaml.safe_load(open("galaxy.yml")); print(g["namespace"], g["name"], g["version"])')"
read -r namespace name version <<<"$version"
fqcn_prefix="${namespace}.${name}"

rm -rf "$out"
mkdir -p "$out"
run_logged galaxy-build ansible-galaxy collection build --force --output-path "$out" "$REPO_ROOT"
tarball="${out}/${namespace}-${name}-${version}.tar.gz"
[ -f "$tarball" ] || die "ansible-galaxy did not write ${tarball#"${REPO_ROOT}"/}"
note "built ${tarball#"${REPO_ROOT}"/} ($(du -k "$tarball" | cut -f1) KiB)"

# nothing from the harness or from test runs may end up in the artifact
junk="$(tar -tzf "$tarball" | grep -E '^(\./)?(\.venv|\.ci|build|bench|tests/output|\.pytest_cache)(/|$)|__pycache__|\.pyc$' || true)"
[ -z "$junk" ] || die "the tarball contains files that build_ignore should exclude:
${junk}"

run_logged galaxy-install ansible-galaxy collection install --force -p "${tmp}/collections" "$tarball"

# Only the installed copy may be visible: no other collections path, no sys.path scanning,
# and a working directory outside this checkout.
export ANSIBLE_COLLECTIONS_PATH="${tmp}/collections"
export ANSIBLE_COLLECTIONS_SCAN_SYS_PATH=false
cd "$tmp"

listed="$(ansible-doc -t module -l "$fqcn_prefix" 2>"${tmp}/list.err" | awk '{print $1}' || true)"
for module in $REQUIRED_MODULES; do
    grep -qx "${fqcn_prefix}.${module}" <<<"$listed" \
        || die "ansible-doc -l ${fqcn_prefix} does not list ${fqcn_prefix}.${module}: $(cat "${tmp}/list.err")"
done
[ -n "$listed" ] || die "ansible-doc lists no module in the installed ${fqcn_prefix}: $(cat "${tmp}/list.err")"

count=0
for fqcn in $listed; do
    if ! ansible-doc -t module "$fqcn" >"${tmp}/doc.txt" 2>"${tmp}/doc.err"; then
        cat "${tmp}/doc.err" >&2
        die "ansible-doc ${fqcn} failed on the installed collection"
    fi
    # text form: "> MODULE <fqcn> (<path>)" (ansible-core 2.19; "> <FQCN> (<path>)" before)
    grep -qi -E "^> (MODULE )?${fqcn}[[:space:]]" "${tmp}/doc.txt" \
        || { cat "${tmp}/doc.txt" >&2; die "ansible-doc ${fqcn}: no module header"; }
    # JSON form: the documentation, examples and return values must all have been parsed
    ansible-doc -t module --json "$fqcn" >"${tmp}/doc.json" 2>>"${tmp}/doc.err" \
        || { cat "${tmp}/doc.err" >&2; die "ansible-doc --json ${fqcn} failed"; }
    python "${REPO_ROOT}/scripts/check_doc_json.py" "$fqcn" "${tmp}/doc.json" \
        || die "ansible-doc --json ${fqcn}: incomplete documentation"
    if [ -s "${tmp}/doc.err" ]; then
        cat "${tmp}/doc.err" >&2
        die "ansible-doc ${fqcn} printed warnings"
    fi
    count=$((count + 1))
done
note "ansible-doc shows the docs of ${count} module(s) from the installed tarball: $(tr '\n' ' ' <<<"$listed")"
