import subprocess
import sys
from pathlib import Path

from deploy.local import paths

PROTOGEN = paths.REPO / "scripts" / "protogen.py"


def _check(out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PROTOGEN), "--check", "--out", str(out)], capture_output=True, text=True, check=False
    )


def test_the_stubs_in_use_match_the_protos() -> None:
    result = _check(paths.GEN)
    assert result.returncode == 0, result.stderr


def test_a_stale_stub_is_detected(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(PROTOGEN), "--out", str(tmp_path)], check=True, capture_output=True)
    stub = tmp_path / "ridesaga" / "rider" / "v1" / "rider_pb2.py"
    stub.write_text(stub.read_text() + "\n# edited by hand\n")
    result = _check(tmp_path)
    assert result.returncode == 1
    assert "stale ridesaga/rider/v1/rider_pb2.py" in result.stderr
