"""The migration job of the compose and Kubernetes deployments: one role and one database
per service (database-per-service), then each service's versioned migrations. Every
step is idempotent, so the job can be retried until PostgreSQL answers.

Locally `ridectl up` does the same against loopback (ridectl/stack/provision.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import psycopg
from psycopg import sql

import services
from services.shared import config, migrations
from services.shared.topology import SERVICES


def ensure_databases(admin: str) -> None:
    with psycopg.connect(admin, autocommit=True) as conn:
        for spec in SERVICES:
            if spec.database is None:
                continue
            name = sql.Identifier(spec.database)
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (spec.database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(name))
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (spec.database,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(name, name))


def main() -> int:
    settings = config.load("trip")  # every service's database lives on the one server
    try:
        ensure_databases(f"host={settings.postgres_host} port={settings.postgres_port} dbname=postgres user=postgres")
        for spec in SERVICES:
            if spec.database is None:
                continue
            found = migrations.discover(Path(services.__file__).parent / spec.name / "schema")
            applied = migrations.apply(settings.postgres_dsn(spec.database), found)
            print(f"migrate: {spec.database}: {len(found)} migrations, {len(applied)} applied now", flush=True)
    except psycopg.Error as error:
        print(f"migrate: error: {error}".strip(), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
