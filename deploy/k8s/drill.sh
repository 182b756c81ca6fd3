#!/usr/bin/env bash
# A Kubernetes fault drill: book rides, delete a service's pods while those rides are in
# their sagas, wait for every ride to end, then let `ridectl check` give the verdict
# (nothing lost, nobody charged twice). Exit code 0 only when the check is valid.
#
#   deploy/k8s/drill.sh [SERVICE ...]     default: payment trip driver psp
#
# Needs kubectl pointed at a cluster where `kubectl apply -k deploy/k8s/overlays/...`
# ran, and ridectl (.venv/bin/ridectl). It port-forwards rider (7001), psp (7005) and
# PostgreSQL (15432) to loopback, the local stack's ports: stop a local stack first.
set -euo pipefail
cd "$(dirname "$0")/../.."
NS="${NAMESPACE:-ridesaga}"
RIDES="${RIDES:-10}"
RIDECTL="${RIDECTL:-.venv/bin/ridectl}"
if [ $# -gt 0 ]; then targets=("$@"); else targets=(payment trip driver psp); fi
work="$(mktemp -d)"
forwards=()
late=0

cleanup() {
  for pid in "${forwards[@]}"; do kill "$pid" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

forward() {  # forward RESOURCE LOCAL:REMOTE
  kubectl -n "$NS" port-forward "$1" "$2" >"$work/forward-${1//\//-}.log" 2>&1 &
  forwards+=("$!")
}

book() {  # books $RIDES rides, one new rider each (a rider has at most one live ride)
  for i in $(seq "$RIDES"); do
    rider="$("$RIDECTL" rider create --name "drill-$i")"
    "$RIDECTL" ride request --rider "$rider" --pickup 37.7749,-122.4194 --dropoff 37.7849,-122.4094 \
      | awk '{print $1}' >>"$work/rides"
  done
}

echo "drill: port-forwarding rider, psp and postgres from namespace $NS"
forward svc/rider 7001:7001
forward svc/psp 7005:7005
forward svc/postgres 15432:5432
sleep 3

for target in "${targets[@]}"; do
  echo "drill: booking $RIDES rides and deleting the $target pods mid-saga"
  : >"$work/rides"
  book &
  booking=$!
  sleep 2
  kubectl -n "$NS" delete pod -l "app.kubernetes.io/name=$target" --wait=false
  wait "$booking" || echo "drill: some requests failed while $target was down (refused cleanly, nothing booked)"
  kubectl -n "$NS" rollout status "statefulset/$target" --timeout=180s
  if [ "$target" = psp ]; then  # the forward to psp died with its pod
    forward svc/psp 7005:7005
    sleep 3
  fi
  while read -r ride; do
    if ! "$RIDECTL" ride wait "$ride" --timeout 120 >/dev/null; then
      echo "drill: ride $ride did not end within 120 s" >&2
      late=1
    fi
  done <"$work/rides"
  echo "drill: $(wc -l <"$work/rides") rides booked around the deletion of $target ended"
done

echo "drill: verdict"
"$RIDECTL" check
exit "$late"
