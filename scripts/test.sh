#!/usr/bin/env bash
# Runs every test tier against a freshly started local stack and always tears the stack
# down afterwards, keeping the tests' exit code.
set -u
cd "$(dirname "$0")/.."
VENV=.venv
rc=0
# Tests run against a stack with fresh state, in its own run directory.
export RIDESAGA_RUN_DIR="${RIDESAGA_TEST_RUN_DIR:-/tmp/ridesaga-test}"

teardown() { "$VENV/bin/ridectl" down || rc=1; }
# After a failed tier: the stack's state and each saga process's last warnings, short,
# since CI keeps only the output (the logs go with the machine).
diagnose() {
  echo "test: diagnosis after a failure"
  "$VENV/bin/ridectl" status 2>&1 | grep -v " up " | head -20
  for log in trip trip-sweeper-1 trip-sweeper-2 driver payment; do
    grep -h '"level": "\(warning\|error\)"' "$RIDESAGA_RUN_DIR/logs/$log.log" 2>/dev/null | tail -4 | cut -c1-240 | sed "s/^/  $log: /"
  done
  # The story of up to two rides left unfinished: their saga log says which step waits.
  "$VENV/bin/ridectl" check --json 2>/dev/null | "$VENV/bin/python" -c '
import json, sys
for ride in json.load(sys.stdin)["violations"].get("not_terminal", [])[:2]:
    print(ride["ride_id"])' 2>/dev/null | while read -r ride; do
    "$VENV/bin/ridectl" explain "$ride" 2>&1 | head -30 | cut -c1-200 | sed "s/^/  explain: /"
  done
}

echo "test: lint (ruff, mypy) and generated-stub check"
"$VENV/bin/ruff" check . || rc=1
"$VENV/bin/ruff" format --check . || rc=1
"$VENV/bin/mypy" services deploy drills bench ridectl scripts tests loadtests || rc=1
"$VENV/bin/python" scripts/protogen.py --check || rc=1

echo "test: starting the local stack in $RIDESAGA_RUN_DIR"
trap teardown EXIT
"$VENV/bin/ridectl" down >/dev/null 2>&1
rm -rf "$RIDESAGA_RUN_DIR"
if ! "$VENV/bin/ridectl" up; then
  echo "test: the stack did not come up; logs are in $RIDESAGA_RUN_DIR/logs" >&2
  exit 1
fi

echo "test: unit, integration and end-to-end tiers"
"$VENV/bin/pytest" tests/unit tests/integration tests/e2e || { rc=1; diagnose; }

echo "test: quorum tier (ZooKeeper as a three-node ensemble, two payment replicas, three driver replicas)"
"$VENV/bin/ridectl" down >/dev/null 2>&1
rm -rf "$RIDESAGA_RUN_DIR"
if ZK_NODES=3 REPLICAS=payment=2 DRIVERS=3 "$VENV/bin/ridectl" up; then
  "$VENV/bin/pytest" tests/quorum || rc=1
else
  echo "test: the stack did not come up with ZK_NODES=3 REPLICAS=payment=2 DRIVERS=3; logs are in $RIDESAGA_RUN_DIR/logs" >&2
  rc=1
fi

echo "test: drill tier (make drill: every fault scenario with rides in flight, three-node ZooKeeper and KRaft quorums, three driver replicas)"
"$VENV/bin/ridectl" down >/dev/null 2>&1
rm -rf "$RIDESAGA_RUN_DIR"
if ZK_NODES=3 KAFKA_CONTROLLERS=3 DRIVERS=3 "$VENV/bin/ridectl" up; then
  # The KRaft quorum and its namespaces first, then every drill on the same stack.
  "$VENV/bin/pytest" tests/kraft || rc=1
  "$VENV/bin/ridectl" drill suite --report "$RIDESAGA_RUN_DIR/drills" || { rc=1; diagnose; }
else
  echo "test: the stack did not come up with ZK_NODES=3 KAFKA_CONTROLLERS=3 DRIVERS=3; logs are in $RIDESAGA_RUN_DIR/logs" >&2
  rc=1
fi

# On the drill tier's stack, the largest (three ZooKeeper nodes, three KRaft controllers
# in network namespaces): down must leave no process, port or namespace.
echo "test: lifecycle tier (stops the stack and checks nothing is left)"
"$VENV/bin/pytest" tests/lifecycle || rc=1

trap - EXIT
teardown
exit $rc
