"""`ridesaga health PORT SERVICE` in a container: exit 0 only if the gRPC health check of
SERVICE on loopback PORT answers SERVING (compose health checks, Kubernetes probes)."""

from __future__ import annotations

import sys

from deploy.local.health import grpc_serving


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        print("usage: ridesaga health PORT GRPC_SERVICE", file=sys.stderr)
        return 2
    return 0 if grpc_serving(int(argv[0]), argv[1]) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
