"""Versioned schema migrations: each service's schema/NNN_name.sql files are applied in
order, each in its own transaction together with its row in schema_migrations, so a
migration is applied exactly once even if the runner is interrupted."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psycopg
from psycopg import sql

from services.runtime.topology import SERVICES

_NAME = re.compile(r"^(\d{3})_[a-z0-9_]+\.sql$")
SCHEMAS = Path(__file__).resolve().parent.parent
"""services/: each service's migrations are in services/<name>/schema."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def discover(directory: Path) -> list[Migration]:
    migrations = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise ValueError(f"migration file {path} must be named NNN_snake_case.sql")
        migrations.append(Migration(int(match.group(1)), path.stem, path.read_text()))
    versions = [m.version for m in migrations]
    if len(set(versions)) != len(versions):
        raise ValueError(f"duplicate migration version in {directory}")
    return migrations


def apply(conninfo: str, migrations: list[Migration]) -> list[str]:
    """Applies the migrations not yet recorded; returns the names it applied."""
    applied: list[str] = []
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for migration in migrations:
            with conn.transaction():
                conn.execute("LOCK TABLE schema_migrations IN EXCLUSIVE MODE")
                done = conn.execute(
                    "SELECT 1 FROM schema_migrations WHERE version = %s", (migration.version,)
                ).fetchone()
                if done:
                    continue
                conn.execute(migration.sql.encode())
                conn.execute(
                    "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)",
                    (migration.version, migration.name),
                )
                applied.append(migration.name)
    return applied


def provision(host: str, port: int, say: Callable[[str], None]) -> None:
    """Database-per-service on one PostgreSQL server: a login role and a database it owns
    for each service that has one, then that service's migrations, applied as its role.
    Idempotent: run it at every start (locally) or as a retried job (compose, Kubernetes)."""
    owned = [spec.database for spec in SERVICES if spec.database is not None]
    with psycopg.connect(f"host={host} port={port} dbname=postgres user=postgres", autocommit=True) as conn:
        for name in owned:
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)))
            if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone() is None:
                conn.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(name)))
    for spec in SERVICES:
        if spec.database is None:
            continue
        found = discover(SCHEMAS / spec.name / "schema")
        applied = apply(f"host={host} port={port} dbname={spec.database} user={spec.database}", found)
        say(f"{spec.database}: {len(found)} migrations, {len(applied)} applied now")
