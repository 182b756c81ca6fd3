"""The migration job of the compose and Kubernetes deployments: one role and one database
per service (database-per-service), then each service's versioned migrations. Every
step is idempotent, so the job can be retried until PostgreSQL answers.

Locally `ridectl up` runs the same provisioning against loopback (deploy/local/provision.py)."""

from __future__ import annotations

import sys

import psycopg

from services.runtime import config, migrations


def main() -> int:
    settings = config.load("trip")  # every service's database lives on the one server
    try:
        migrations.provision(
            settings.postgres_host, settings.postgres_port, lambda line: print(f"migrate: {line}", flush=True)
        )
    except psycopg.Error as error:
        print(f"migrate: error: {error}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
