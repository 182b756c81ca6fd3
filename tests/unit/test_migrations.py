from pathlib import Path

import pytest

from deploy.local import paths
from services.runtime import migrations
from services.runtime.topology import SERVICES


def test_migrations_are_discovered_in_version_order(tmp_path: Path) -> None:
    (tmp_path / "002_more.sql").write_text("SELECT 2;")
    (tmp_path / "001_first.sql").write_text("SELECT 1;")
    assert [(m.version, m.name) for m in migrations.discover(tmp_path)] == [(1, "001_first"), (2, "002_more")]


def test_a_badly_named_migration_is_refused(tmp_path: Path) -> None:
    (tmp_path / "first.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="NNN_snake_case"):
        migrations.discover(tmp_path)


def test_duplicate_versions_are_refused(tmp_path: Path) -> None:
    (tmp_path / "001_a.sql").write_text("SELECT 1;")
    (tmp_path / "001_b.sql").write_text("SELECT 1;")
    with pytest.raises(ValueError, match="duplicate"):
        migrations.discover(tmp_path)


def test_every_service_with_a_database_has_migrations() -> None:
    for spec in SERVICES:
        if spec.database:
            assert migrations.discover(paths.REPO / "services" / spec.name / "schema")
