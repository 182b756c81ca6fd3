#!/bin/sh
# The image's entrypoint: the first argument names the process to run.
set -eu
# A Kubernetes StatefulSet pod's ordinal (0, 1, ...) is its replica number minus one: the
# replica number keeps per-process Kafka transactional ids apart and stable over restarts.
if [ -n "${RIDESAGA_POD_INDEX:-}" ]; then
  RIDESAGA_REPLICA=$((RIDESAGA_POD_INDEX + 1))
  export RIDESAGA_REPLICA
fi
what="${1:-help}"
[ $# -gt 0 ] && shift
case "$what" in
  rider|trip|driver|payment|psp) exec python -m "services.$what.entrypoint" "$@" ;;
  sweeper) exec python -m services.trip.sweeper "$@" ;;
  fleet) exec python -m services.fleet.main "$@" ;;
  migrate) exec python -m deploy.docker.migrate "$@" ;;
  health) exec python -m deploy.docker.healthcheck "$@" ;;
  locust) exec locust -f /app/loadtests/locustfile.py "$@" ;;
  ridectl) exec ridectl "$@" ;;
  help)
    echo "usage: ridesaga rider|trip|driver|payment|psp|sweeper|fleet|migrate|locust|ridectl [ARGS]"
    echo "       ridesaga health PORT GRPC_SERVICE"
    ;;
  *) echo "ridesaga: unknown process '$what'; try 'ridesaga help'" >&2; exit 2 ;;
esac
