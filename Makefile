# samepage.ksm: every entry point a newcomer, a developer or CI needs.
#   make site    set up the controller and run playbooks/site.yml against this machine
#   make test    set up everything (apt, venv, images) and run every test
SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
ROOT := $(CURDIR)
VENV := $(ROOT)/.venv
export PATH := $(VENV)/bin:$(PATH)
export ANSIBLE_CONFIG := $(ROOT)/ansible.cfg
export CONTAINERS_CONF := $(ROOT)/tests/podman/containers.conf
# Only this checkout's collection (a copy installed under ~/.ansible must not shadow it).
export ANSIBLE_COLLECTIONS_PATH := $(ROOT)/build/collections
export PIP_DISABLE_PIP_VERSION_CHECK := 1
# Tests that touch the real kernel's KSM knobs take this lock: never two at once.
KERNEL_LOCK := flock /run/lock/samepage-ksm-kernel.lock

.PHONY: site disable bootstrap bootstrap-test images test-images test test-compat test-unit test-lint test-sanity \
	test-integration test-molecule molecule-node molecule-container molecule-fleet \
	test-docs bench-converge bench-merge bench-estimate bench-stack test-stack clean

site: bootstrap
	ansible-playbook playbooks/site.yml

# Undo `make site` on this machine: unmerge, stop ksmd, remove the persistence.
disable: bootstrap
	ansible-playbook playbooks/disable.yml

bootstrap:
	scripts/bootstrap.sh controller

bootstrap-test:
	scripts/bootstrap.sh test

# The stages of `make test`, in order; scripts/stages.sh prints each one's time and a summary.
TEST_STAGES := test-compat test-interpreters test-unit test-lint test-sanity test-matrix test-docs test-integration test-images molecule-node molecule-container molecule-fleet molecule-systemd test-stack test-corpus

test: bootstrap-test
	scripts/stages.sh $(TEST_STAGES)

# Module code runs on old managed hosts: it must parse as Python 3.6 (and 2.7 where cheap).
test-compat:
	python tests/tools/check_py36.py plugins/modules plugins/module_utils

# Controller matrix: ansible-core 2.16, 2.18 and 2.20 (each its own .venv-<v>, cached by
# requirements hash): ansible-test sanity, unit tests, every module run on this machine.
.PHONY: test-matrix test-interpreters molecule-systemd
test-matrix:
	scripts/matrix.sh

# Every module run for real on the targets' interpreters of EL7 and EL8 (pyenv's Python 2.7
# and 3.6) from an ansible-core 2.16 controller: ASCII and non-UTF-8 files, check and diff mode.
test-interpreters: images
	scripts/matrix.sh --interpreters

test-unit:
	python -m pytest -q tests/unit

test-lint:
	ansible-lint --offline

test-sanity:
	scripts/sanity.sh

# The collection's docs as the Ansible docsite renders them (antsibull-docs from the release venv,
# whose ansible-doc reads the plugins): markup, references, RST of every plugin and role; and the
# changelog fragments.
test-docs:
	time env PATH=$(ROOT)/.cache/release-venv/bin:$$PATH antsibull-docs lint-collection-docs --plugin-docs \
		--validate-collection-refs self build/collections/ansible_collections/samepage/ksm
	antsibull-changelog lint

test-integration:
	# the kernel_lock fixture takes the lock itself (flock here would deadlock with it)
	python -m pytest -q -p no:cacheprovider tests/integration

# Real init scripts of ~80 Debian packages (apt-get download + dpkg-deb -x, cached by version under
# .cache/corpus) through ld_preload in private namespaces over overlays: prints the corpus table.
.PHONY: test-corpus
test-corpus:
	python -m pytest -q -p no:cacheprovider tests/corpus

# Each scenario's output ends with its step times (tests/tools/step_times.py).
test-molecule: molecule-node molecule-container molecule-fleet molecule-systemd

# Test images, built locally from the Debian mirror and cached by input hash (no registry).
images:
	tests/images/build.sh

# Smoke test of the images: download-only dnf, rpm -i --nodeps, preload reaching the demo service.
test-images: images
	tests/images/check.sh

# The scenario turns the host's KSM on to measure real merging: it runs under the kernel lock.
molecule-container: images
	$(KERNEL_LOCK) molecule test -s container 2>&1 | python tests/tools/step_times.py

# The container role on systemd 252, 254 (backports) and 257 (trixie): MemoryKSM by proof.
molecule-systemd:
	molecule test -s systemd 2>&1 | python tests/tools/step_times.py

# 20 SSH hosts in namespaces with fake KSM directories: the real kernel is not touched.
molecule-fleet: images
	molecule test -s fleet 2>&1 | python tests/tools/step_times.py

# Privileged containers write the host's KSM knobs: the scenario holds the kernel lock.
molecule-node: images
	$(KERNEL_LOCK) molecule test -s node 2>&1 | python tests/tools/step_times.py

# Benchmarks print measured figures (see benchmarks/README.md); they are not part of `make test`.
bench-converge: bootstrap-test images
	python benchmarks/converge_cost.py

bench-merge: bootstrap-test images
	python benchmarks/merge_efficacy.py

# The real stack (MariaDB, Apache + mod_php, memcached) in N>=8 containers, per opt-in mechanism.
# It takes the kernel lock itself (benchmarks/real_stack.py), like the CI variant below.
bench-stack: bootstrap-test
	tests/images/build.sh stack
	python benchmarks/real_stack.py

# CI variant of the real stack: 4 containers, control + what ksm_container_optin auto picks here.
test-stack:
	tests/images/build.sh stack
	time python benchmarks/real_stack.py --ci

# Estimate vs what KSM really merges, per workload and sampling rate (kernel lock); then CPU s/GiB and
# peak RSS per target Python (2.7, 3.6, 3.11) at 1-16 GiB of candidates (no knob touched).
bench-estimate: bootstrap-test images
	python benchmarks/estimate_accuracy.py
	scripts/matrix.sh --venvs-only 2.16
	python benchmarks/estimate_cost.py

clean:
	rm -rf build .cache tests/output .pytest_cache
