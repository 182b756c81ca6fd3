import json
import subprocess
from pathlib import Path

import pytest

from deploy.envoy.render import sidecar_config
from deploy.local import paths
from services.runtime.topology import SERVICES, service


def _validate(config: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:  # type: ignore[type-arg]
    path = tmp_path / "envoy.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [str(paths.envoy_binary()), "--mode", "validate", "-c", str(path), "--disable-hot-restart"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )


@pytest.mark.parametrize("name", [s.name for s in SERVICES])
def test_generated_sidecar_config_is_valid_for_the_real_envoy(name: str, tmp_path: Path) -> None:
    result = _validate(sidecar_config(service(name)), tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_envoy_rejects_a_route_to_an_unknown_cluster(tmp_path: Path) -> None:
    config = sidecar_config(service("trip"))
    config["static_resources"]["clusters"] = [
        c for c in config["static_resources"]["clusters"] if c["name"] != "driver"
    ]
    result = _validate(config, tmp_path)
    assert result.returncode != 0
    assert "driver" in result.stdout + result.stderr
