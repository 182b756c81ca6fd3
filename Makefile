# ridesaga: every target bootstraps what it needs (idempotently) before it runs.
PYTHON ?= python3
VENV := .venv
RIDECTL := $(VENV)/bin/ridectl
# `make up ZK_NODES=3` runs ZooKeeper as a three-node ensemble (for quorum drills);
# `make up REPLICAS=payment=2` runs two payment replicas behind the mesh.
export ZK_NODES REPLICAS

.PHONY: bootstrap up down status demo test lint protos bench

bootstrap:
	@$(PYTHON) scripts/bootstrap.py

up: bootstrap
	@$(RIDECTL) up
	@$(RIDECTL) status

down:
	@if [ -x $(RIDECTL) ]; then $(RIDECTL) down; else echo "ridectl: stack is not running"; fi

status:
	@$(RIDECTL) status

demo: up
	@$(RIDECTL) probe
	@$(RIDECTL) demo

protos: bootstrap

lint: bootstrap
	@$(VENV)/bin/ruff check .
	@$(VENV)/bin/ruff format --check .
	@$(VENV)/bin/mypy services ridectl scripts tests

test: bootstrap
	@scripts/test.sh

# Benchmarks measure; they never pass or fail a build. Results go to docs/ with this command.
bench: up
	@$(VENV)/bin/python -m ridectl.detector_bench
	@$(RIDECTL) bench tracing
