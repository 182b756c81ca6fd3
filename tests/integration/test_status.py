from services.runtime.topology import SERVICES
from tests.support import ridectl, status


def test_every_component_is_up_with_a_pid_and_port() -> None:
    result = ridectl("status", "--json")
    assert result.returncode == 0, result.stdout
    components = status()
    expected = {"kafka", "zookeeper", "postgres", "redis", "jaeger"}
    expected |= {name for s in SERVICES for name in (s.name, s.sidecar)}
    assert expected <= set(components)
    for name in expected:
        assert components[name]["state"] == "up", components[name]
        assert isinstance(components[name]["pid"], int)
        assert isinstance(components[name]["port"], int)
