# Test harness of the sltv.core collection.  `make test` is THE test command: from a fresh clone,
# as root, it installs what it needs (apt-get, .venv) and runs every stage in order, stopping at the
# first failing one.  Each stage also has a target of its own.
#
#   make test          deps, then: sanity lint changelog unit integration build molecule; when
#                      molecule is a stage (as root), the test-bed image is built (or found in its
#                      cache) in the background meanwhile: the VM boot of molecule waits for it
#   make test-fast     deps, then: sanity lint changelog unit integration (no VMs, no build;
#                      under 10 min): the check to run before pushing; `make test` is the full one
#   make sanity        ansible-test sanity, all tests, Python 3.11 (on a copy under build/sanity)
#   make lint          ansible-lint, production profile (.ansible-lint)
#   make changelog     antsibull-changelog lint
#   make unit          pytest tests/unit
#   make integration   pytest tests/integration (root: real etcd, LVM on loop devices)
#   make build         ansible-galaxy collection build + install + ansible-doc of every module
#   make molecule      the multi-host scenario in test-bed VMs (root; tests/testbed/testbed.py);
#                      SLTV_TESTBED_KEEP=1 leaves the test bed up for molecule-part
#   make molecule-part PART=attach [CONVERGE=1]
#                      only extensions/molecule/default/verify_PART.yml (several: PART="disks wipe";
#                      also PART=all or idempotence) on the test bed that is up; CONVERGE=1 converges
#                      first (and boots a test bed if none is up). The test bed stays up.
#   make molecule-down the test bed down (after SLTV_TESTBED_KEEP=1 or molecule-part)
#   make deps          only the apt packages and .venv
#   make quickstart    playbooks/quickstart.yml on this host (root; needs device-mapper), not a test
#   make clean         remove build outputs and caches (keeps .venv); `make distclean` also .venv
#
# Variables: PYTHON (interpreter for .venv, default python3), PYTEST_ARGS (extra pytest args),
# STAGES (the stages `make test` runs, e.g. `make test STAGES="unit build"`),
# QUICKSTART_ARGS (extra ansible-playbook args for `make quickstart`), MOLECULE_ARGS (extra
# `molecule test` args), PART and CONVERGE (molecule-part). The SLTV_TESTBED_* environment settings
# (tests/testbed/README.md: state dir, ports) apply to molecule, molecule-part and molecule-down.
# At the end, `make test` prints the time of each stage (build/logs/timings.txt) and of each
# molecule step and verify part (build/logs/molecule-timings.txt).

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := test
MAKEFLAGS += --no-print-directory

PYTHON ?= python3
PYTEST_ARGS ?=
QUICKSTART_ARGS ?=
# pytest-xdist workers of the integration stage (README "Tests"); 0 or 1: one process
SLTV_INTEGRATION_WORKERS ?= 2
export PYTHON

STAGE := scripts/stage.sh
APT := scripts/bootstrap.sh apt

# Debian packages per stage (installed only when missing)
# libvirt-dev, pkg-config and gcc build libvirt-python (tests/requirements.txt) in .venv, and
# libsystemd-dev builds systemd-python (the agent's sd_notify; on Debian 12 it may pull a systemd point release)
APT_BASE := git ca-certificates libvirt-dev libsystemd-dev pkg-config gcc
APT_SANITY := shellcheck
APT_INTEGRATION := lvm2 thin-provisioning-tools dmsetup etcd-server etcd-client qemu-utils \
	openssl util-linux mount libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients qemu-system-x86

STAGES := sanity lint changelog unit integration build molecule
FAST_STAGES := sanity lint changelog unit integration

.PHONY: test test-fast deps venv $(STAGES) molecule-part molecule-down quickstart clean distclean

test:
	@start=$$(date +%s); rm -f build/logs/timings.txt build/logs/molecule-timings.txt; \
	printf '==== make test: %s\n' "$(STAGES)"; \
	$(MAKE) deps; \
	image=; case " $(STAGES) " in *" molecule "*) if [ "$$(id -u)" -eq 0 ]; then \
		mkdir -p build/logs && python3 tests/testbed/testbed.py deps && { \
		python3 tests/testbed/testbed.py build >build/logs/testbed-build.log 2>&1 & image=$$!; }; \
		printf '==== test-bed image: built or checked in the background (build/logs/testbed-build.log)\n'; fi ;; esac; \
	rc=0; \
	for stage in $(STAGES); do $(MAKE) $$stage || { rc=$$?; break; }; done; \
	if [ -n "$$image" ]; then wait "$$image" 2>/dev/null; fi; \
	printf '\n==== stage timings\n'; cat build/logs/timings.txt 2>/dev/null || true; \
	if [ -n "$$image" ]; then printf '(test-bed image, in the background: %s)\n' "$$(tail -n 1 build/logs/testbed-build.log)"; fi; \
	if [ -s build/logs/molecule-timings.txt ]; then \
		printf '==== molecule timings (step, or step/verify part)\n'; cat build/logs/molecule-timings.txt; \
	fi; \
	if [ $$rc -eq 0 ]; then \
		printf '==== make test: all stages passed in %ss\n' "$$(( $$(date +%s) - start ))"; \
	else \
		printf '==== make test: FAILED at stage "%s" after %ss\n' "$$stage" "$$(( $$(date +%s) - start ))" >&2; \
	fi; \
	exit $$rc

test-fast:
	@$(MAKE) test STAGES="$(FAST_STAGES)"

deps:
	@$(STAGE) deps bash -c '$(APT) $(APT_BASE) $(APT_SANITY) $(APT_INTEGRATION) && scripts/bootstrap.sh venv'

venv:
	@scripts/bootstrap.sh venv

sanity:
	@$(APT) $(APT_BASE) $(APT_SANITY)
	@scripts/bootstrap.sh venv
	@$(STAGE) sanity scripts/sanity.sh

lint: venv
	@$(STAGE) lint scripts/lint.sh

changelog: venv
	@$(STAGE) changelog scripts/changelog_lint.sh

unit: venv
	@$(STAGE) unit scripts/pytest_stage.sh tests/unit $(PYTEST_ARGS)

integration:
	@[ "$$(id -u)" -eq 0 ] || { echo 'ERROR: make integration must run as root (loop devices, LVM, etcd)' >&2; exit 1; }
	@$(APT) $(APT_INTEGRATION)
	@scripts/bootstrap.sh venv
	@PYTEST_WORKERS='$(SLTV_INTEGRATION_WORKERS)' $(STAGE) integration scripts/pytest_stage.sh tests/integration $(PYTEST_ARGS)

build: venv
	@$(STAGE) build scripts/build_check.sh

molecule:
	@[ "$$(id -u)" -eq 0 ] || { echo 'ERROR: make molecule must run as root (VMs, network namespace)' >&2; exit 1; }
	@python3 tests/testbed/testbed.py deps
	@$(APT) $(APT_INTEGRATION)
	@scripts/bootstrap.sh venv
	@$(STAGE) molecule scripts/molecule.sh $(MOLECULE_ARGS)

molecule-part:
	@[ "$$(id -u)" -eq 0 ] || { echo 'ERROR: make molecule-part must run as root (VMs, network namespace)' >&2; exit 1; }
	@[ -n "$(PART)" ] || { echo 'ERROR: make molecule-part PART=<verify part, e.g. attach> [CONVERGE=1]' >&2; exit 1; }
	@scripts/bootstrap.sh venv
	@SLTV_MOLECULE_CONVERGE=$(CONVERGE) scripts/molecule.sh part $(PART)

molecule-down:
	@[ "$$(id -u)" -eq 0 ] || { echo 'ERROR: make molecule-down must run as root' >&2; exit 1; }
	@python3 tests/testbed/testbed.py down

quickstart:
	@[ "$$(id -u)" -eq 0 ] || { echo 'ERROR: make quickstart must run as root (loop device, LVM)' >&2; exit 1; }
	@$(APT) $(APT_INTEGRATION)
	@scripts/bootstrap.sh venv
	@scripts/quickstart.sh $(QUICKSTART_ARGS)

clean:
	rm -rf build tests/output .pytest_cache sltv-core-*.tar.gz
	find . -path ./.venv -prune -o -path ./.git -prune -o -type d -name __pycache__ -print0 | xargs -0r rm -rf

distclean: clean
	rm -rf .venv
