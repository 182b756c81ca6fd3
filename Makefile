# ridesaga: every target bootstraps what it needs (idempotently) before it runs.
PYTHON ?= python3
VENV := .venv
RIDECTL := $(VENV)/bin/ridectl
# `make up ZK_NODES=3` runs ZooKeeper as a three-node ensemble (for quorum drills);
# `make up REPLICAS=payment=2` runs two payment replicas behind the mesh;
# the driver service runs as a three-replica cluster; `make up DRIVERS=1` runs one (docs/gossip.md).
export ZK_NODES KAFKA_CONTROLLERS REPLICAS DRIVERS QUORUM QUORUM_SLOPPY

.PHONY: bootstrap up down status demo test lint protos bench load load-ui drill quorum-lab compose-up compose-down deploy-render

bootstrap:
	@$(PYTHON) -m deploy.local.bootstrap

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
	@$(VENV)/bin/mypy services deploy drills bench ridectl scripts tests loadtests

test: bootstrap
	@scripts/test.sh

# Benchmarks measure; they never pass or fail a build. Results go to docs/ with this command.
# `ridectl bench all` writes docs/benchmarks.md; `ridectl bench tracing` measures tracing's cost.
bench: up
	@$(RIDECTL) bench all
	@$(VENV)/bin/python -m bench.detectors

# Locust, headless: CSV files and the HTML report in results/load, then `ridectl check`.
LOAD_USERS ?= 20
LOAD_SPAWN_RATE ?= 5
LOAD_DURATION ?= 60s
load: up
	@$(VENV)/bin/python -m loadtests.run --users $(LOAD_USERS) --spawn-rate $(LOAD_SPAWN_RATE) --duration $(LOAD_DURATION)

# Locust's web UI on http://127.0.0.1:8089.
load-ui: up
	@$(VENV)/bin/python -m loadtests.run --ui

# Every fault drill, each with rides in flight; ZooKeeper runs as a three-node ensemble and
# Kafka's KRaft controllers as a three-voter quorum so that kill-zk-leader and
# kill-kraft-leader kill a real leader, and the driver service as a cluster of three for
# its membership drills. Reports go to reports/drills/.
drill: bootstrap
	@ZK_NODES=$${ZK_NODES:-3} KAFKA_CONTROLLERS=$${KAFKA_CONTROLLERS:-3} DRIVERS=$${DRIVERS:-3} $(RIDECTL) up
	@$(RIDECTL) drill suite --report reports/drills

# The quorum lab (docs/quorum.md): ours on the running driver cluster, then a real
# three-node Cassandra (fetched the first time, started and stopped by the lab).
quorum-lab: up
	@$(RIDECTL) quorum drill --report reports/quorum
	@$(RIDECTL) quorum cassandra --report reports/quorum

# KAFKA_CONTROLLERS=3 adds the override with three KRaft controller voters beside the broker.
COMPOSE := docker compose -f deploy/compose/compose.yaml $(if $(filter 3,$(KAFKA_CONTROLLERS)),-f deploy/compose/compose.kraft-quorum.yaml)
compose-up:
	@$(COMPOSE) up -d --build
	@$(COMPOSE) ps

compose-down:
	@$(COMPOSE) down -v

deploy-render: bootstrap
	@$(VENV)/bin/python -m deploy.render
