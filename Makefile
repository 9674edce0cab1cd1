# djdeploy: deploy Django to plain Debian servers with Ansible.
# `make help` lists the targets.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(CURDIR)/$(VENV)/bin
export PATH := $(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg
DISTRO ?= debian12

.PHONY: help setup engine images lint lint-workflows unit docs test molecule demo demo-down bench clean

help: ## List the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(VENV)/.installed: requirements-dev.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements-dev.txt
	touch $@

.cache/collections.stamp: requirements.yml $(VENV)/.installed
	@mkdir -p .cache/collections
	@# Galaxy when reachable; collections already bundled with the `ansible` package satisfy
	@# the requirements offline, so nothing is fetched then.
	ansible-galaxy collection install -r requirements.yml -p .cache/collections \
	  || { echo "setup: a collection in requirements.yml is neither bundled with the pinned 'ansible' package nor reachable on Galaxy" >&2; exit 1; }
	touch $@

# The `djdeploy` command: a shim that runs this checkout's CLI (python -m djdeploy) with the
# venv's interpreter, so nothing is built or fetched (no editable install, works offline).
$(BIN)/djdeploy: Makefile | $(VENV)/.installed
	@printf '%s\n' '#!/bin/sh' '# Written by make setup: the djdeploy CLI of $(CURDIR).' \
	  'PYTHONPATH="$(CURDIR)$${PYTHONPATH:+:$$PYTHONPATH}" exec "$(BIN)/python" -m djdeploy "$$@"' > $@.tmp
	chmod 0755 $@.tmp
	mv -f $@.tmp $@

setup: $(VENV)/.installed .cache/collections.stamp $(BIN)/djdeploy ## Project venv with the pinned tools, the collections and the djdeploy command (idempotent)

engine: ## Make sure a Docker engine answers (starts dockerd on Debian/Ubuntu as root)
	$(BIN)/python -m tools.engine

images: setup engine ## Build (or reuse) the systemd test images for Debian 12 and 13
	$(BIN)/python -m tools.images

lint: setup ## yamllint, ansible-lint (production profile), ruff, mypy
	yamllint -s .
	ansible-lint
	ruff check .
	ruff format --check .
	mypy

# The project's workflows and the copyable deploy workflow for an app's repository.
WORKFLOWS := $(wildcard .github/workflows/*.yml) docs/ci/github-deploy.yml

$(VENV)/.installed-ci: requirements-ci.txt | $(VENV)/.installed
	$(BIN)/python -m pip install -q -r requirements-ci.txt
	touch $@

lint-workflows: setup $(VENV)/.installed-ci ## actionlint over the GitHub workflows (installing it needs github.com)
	actionlint $(WORKFLOWS)

unit: setup ## pytest unit tests (no containers)
	pytest tests/unit -q

docs: setup ## Write the role READMEs' variable tables from meta/argument_specs.yml
	$(BIN)/python -m tools.role_docs

test: setup engine ## Everything: lint, unit tests, every Molecule scenario on both distros
	$(BIN)/python -m tools.run_tests

molecule: setup engine ## One scenario: make molecule S=base DISTRO=debian13 [CMD=converge]
	$(BIN)/python -m tools.images $(DISTRO)
	MOLECULE_DISTRO=$(DISTRO) MOLECULE_EPHEMERAL_DIRECTORY=$(CURDIR)/.cache/molecule/$(S)-$(DISTRO) \
	  molecule $(or $(CMD),test) -s $(S)

demo: setup engine ## Deploy the demo Django app to local containers over SSH and print its URL
	$(BIN)/python -m tools.demo up

bench: setup engine images ## Benchmark: releases and rollbacks under load, ours vs naive (JSON in .cache/bench/)
	$(BIN)/python -m tools.bench $(BENCH_ARGS)

demo-down: setup ## Tear the demo down
	$(BIN)/python -m tools.demo down

clean: ## Remove the venv and caches (images stay; docker rmi djdeploy-systemd:* to drop them)
	rm -rf $(VENV) .cache
