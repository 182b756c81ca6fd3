import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from services.runtime import migrations
from services.runtime.topology import INFRA

ADMIN = f"host=127.0.0.1 port={INFRA.postgres} dbname=postgres user=postgres"


@pytest.fixture
def scratch_db() -> Iterator[str]:
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"'.encode())
    yield f"host=127.0.0.1 port={INFRA.postgres} dbname={name} user=postgres"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)'.encode())


def test_migrations_apply_once(tmp_path: Path, scratch_db: str) -> None:
    (tmp_path / "001_t.sql").write_text("CREATE TABLE t (x int); INSERT INTO t VALUES (1);")
    found = migrations.discover(tmp_path)
    assert migrations.apply(scratch_db, found) == ["001_t"]
    assert migrations.apply(scratch_db, found) == []
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (1,)


def test_a_failing_migration_leaves_no_trace(tmp_path: Path, scratch_db: str) -> None:
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE ok (x int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE half (x int); SELECT no_such_column FROM ok;")
    with pytest.raises(psycopg.errors.UndefinedColumn):
        migrations.apply(scratch_db, migrations.discover(tmp_path))
    with psycopg.connect(scratch_db) as conn:
        assert conn.execute("SELECT version FROM schema_migrations").fetchall() == [(1,)]
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
