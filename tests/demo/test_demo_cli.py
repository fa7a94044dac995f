"""`python -m demo` refusing what it must refuse, before it starts anything: a busy port,
clashing settings, and a state folder that holds files the demo did not write."""

from __future__ import annotations

import io
import socket
import subprocess
from pathlib import Path

import pytest

from demo.flow import Demo
from demo.processes import DemoError
from demo.settings import DemoSettings
from tests.support import PYTHON, REPO_ROOT, free_port


def test_a_busy_port_stops_the_demo_before_it_starts_anything(tmp_path: Path) -> None:
    state = tmp_path / "state"
    ports = [str(free_port()) for _ in range(8)]
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        command = [PYTHON, "-m", "demo", "up", "--dir", str(state), "--mlflow-port", str(busy)]
        command += ["--predictor-port", ports[0], "--predictor-grpc-port", ports[1]]
        command += ["--canary-port", ports[2], "--canary-grpc-port", ports[3]]
        command += ["--slot-b-port", ports[4], "--slot-b-grpc-port", ports[5]]
        command += ["--controller-port", ports[6], "--prometheus-port", ports[7]]
        result = subprocess.run(
            command,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"port {busy} (mlflow) is in use by a process this demo did not start" in result.stderr
    assert "make demo MLFLOW_PORT=..." in result.stderr
    assert "==> [1/" not in result.stdout
    assert list((state / "run").glob("*.json")) == []


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"predictor_port": 5000}, "the ports must differ"),
        ({"canary_port": 70000}, "CANARY_PORT=70000 is not a port"),
        ({"slot_b_port": 8082}, "the ports must differ"),
        ({"canary_weight": 100}, "the canary weight must be within 1..99"),
        ({"model_name": "a/b"}, "must be a name without '/'"),
    ],
)
def test_clashing_settings_are_refused(overrides: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DemoSettings(**overrides)  # type: ignore[arg-type]


def test_clean_deletes_a_demo_folder_but_refuses_one_holding_other_files(
    tmp_path: Path,
) -> None:
    demo_state = tmp_path / "demo"
    (demo_state / "mlflow").mkdir(parents=True)
    (demo_state / "mlflow" / "mlflow.db").write_bytes(b"registry")
    (demo_state / "logs").mkdir()
    mistyped = tmp_path / "home"
    (mistyped / "logs").mkdir(parents=True)
    (mistyped / "thesis.tex").write_text("years of work")

    out = io.StringIO()
    Demo(DemoSettings(state_dir=demo_state), out).down(clean=True)
    with pytest.raises(DemoError, match=r"holds \['thesis.tex'\], which the demo did not make"):
        Demo(DemoSettings(state_dir=mistyped), out).down(clean=True)

    assert not demo_state.exists()
    assert (mistyped / "thesis.tex").read_text() == "years of work"
    assert "nothing to stop" in out.getvalue()
