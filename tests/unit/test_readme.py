"""The README's port tables and test command match the code they describe."""

import re

from deploy.local import paths
from services.runtime.topology import INFRA, SERVICES

README = (paths.REPO / "README.md").read_text()


def test_service_ports_in_the_readme_match_the_topology() -> None:
    for spec in SERVICES:
        row = f"| {spec.name} | {spec.ingress_port} | {spec.app_port} | {spec.egress_port} | {spec.admin_port} |"
        assert row in README


def test_infrastructure_ports_in_the_readme_match_the_topology() -> None:
    rows = dict(re.findall(r"^\| (zookeeper|kafka|postgres|redis|jaeger) \| (\d+)", README, re.MULTILINE))
    assert rows == {
        "zookeeper": str(INFRA.zookeeper),
        "kafka": str(INFRA.kafka),
        "postgres": str(INFRA.postgres),
        "redis": str(INFRA.redis),
        "jaeger": str(INFRA.jaeger_query),
    }


def test_ci_runs_exactly_the_readme_test_command() -> None:
    assert "make test" in README
    commands = [line for line in (paths.REPO / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    assert commands[-1] == "make test"
