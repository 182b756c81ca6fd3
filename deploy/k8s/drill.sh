#!/usr/bin/env bash
# The Kubernetes fault drill: the same drill engine and checker as `make drill`, but the
# nemesis deletes pods (kubectl delete pod --force) when a ride is observed at each saga
# step, instead of SIGKILLing local processes. Exit code 0 only when every verdict is valid.
#
#   deploy/k8s/drill.sh [SERVICE ...]     default: rider trip driver payment psp
#   RIDES=60 NAMESPACE=ridesaga deploy/k8s/drill.sh payment
#
# Needs kubectl pointed at a cluster where `kubectl apply -k deploy/k8s/overlays/...`
# ran, and ridectl (.venv/bin/ridectl). It port-forwards rider (7001), psp (7005) and
# PostgreSQL (15432) to loopback, the local stack's ports: stop a local stack first.
set -euo pipefail
cd "$(dirname "$0")/../.."
NS="${NAMESPACE:-ridesaga}"
RIDES="${RIDES:-30}"
RIDECTL="${RIDECTL:-.venv/bin/ridectl}"
REPORTS="${REPORTS:-reports/drills-k8s}"
if [ $# -gt 0 ]; then targets=("$@"); else targets=(rider trip driver payment psp); fi
forwards=()
rc=0

cleanup() { for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT

forward() {  # forward SERVICE LOCAL:REMOTE, restarted whenever its pod goes away
  (while true; do kubectl -n "$NS" port-forward "svc/$1" "$2" >/dev/null 2>&1 || true; done) &
  forwards+=("$!")
  local port="${2%%:*}" tries=0
  until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then echo "drill: no port-forward to $1 on $port" >&2; exit 1; fi
    sleep 0.1
  done
}

echo "drill: port-forwarding rider, psp and postgres from namespace $NS"
forward rider 7001:7001
forward psp 7005:7005
forward postgres 15432:5432

for target in "${targets[@]}"; do
  echo "drill: deleting the $target pods at every saga step while $RIDES rides are booked"
  "$RIDECTL" drill run "kill-$target" --k8s "$NS" --rides "$RIDES" --report "$REPORTS" || rc=1
done
echo "drill: reports in $REPORTS"
exit "$rc"
