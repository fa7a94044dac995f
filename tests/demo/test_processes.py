"""The demo's process bookkeeping on real processes: start, reuse, restart on new settings,
stop a whole session by its recorded PID, and never touch a PID that is no longer ours."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from demo.processes import (
    DemoError,
    PortBusy,
    Service,
    Supervisor,
    http_ok,
    is_alive,
    session_members,
    session_pids,
)
from tests.support import free_port

pytestmark = pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads sessions from /proc")


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[Supervisor]:
    supervisor = Supervisor(tmp_path / "run", tmp_path / "logs", tmp_path)
    yield supervisor
    for record in supervisor.records():
        supervisor.stop(record.name)


def http_server(port: int, name: str = "web", extra: tuple[str, ...] = ()) -> Service:
    """A tiny real HTTP server; `extra` arguments only change its fingerprint."""
    argv = (sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", *extra)
    return Service(name=name, argv=argv, ports=(port,), ready_url=f"http://127.0.0.1:{port}/")


def test_a_service_is_started_then_reused_while_it_runs_with_the_same_settings(
    supervisor: Supervisor,
) -> None:
    service = http_server(free_port())

    first, reused_first = supervisor.ensure(service, timeout=30)
    second, reused_second = supervisor.ensure(service, timeout=30)

    assert (reused_first, reused_second) == (False, True)
    assert second.pid == first.pid
    assert is_alive(first)
    assert supervisor.record("web") == first
    assert first.ports == list(service.ports)


def test_new_settings_restart_the_service_and_stop_the_old_process(
    supervisor: Supervisor,
) -> None:
    service = http_server(free_port())
    old, _ = supervisor.ensure(service, timeout=30)

    new, reused = supervisor.ensure(replace(service, env={"CHANGED": "1"}), timeout=30)

    assert reused is False
    assert new.pid != old.pid
    assert not is_alive(old)
    assert session_pids(old) == []


def test_stop_ends_every_process_of_the_session_and_forgets_the_record(
    supervisor: Supervisor,
) -> None:
    port = free_port()
    # A leader with a child in its session, as `mlflow server` has its uvicorn worker.
    script = f"{sys.executable} -m http.server {port} --bind 127.0.0.1 & sleep 600"
    service = Service("family", ("sh", "-c", script), (port,), f"http://127.0.0.1:{port}/")
    record, _ = supervisor.ensure(service, timeout=30)
    assert len(session_members(record.pid)) >= 3  # sh, python, sleep

    assert supervisor.stop("family") is True

    assert session_members(record.pid) == []
    assert supervisor.record("family") is None
    assert supervisor.stop("family") is False


def test_a_record_whose_pid_now_belongs_to_another_process_is_left_alone(
    supervisor: Supervisor,
) -> None:
    stranger = subprocess.Popen(["sleep", "600"], start_new_session=True)
    try:
        service = http_server(free_port(), name="gone")
        record, _ = supervisor.ensure(service, timeout=30)
        supervisor.stop("gone")
        # Pretend the system gave the recorded PID to `stranger`: same PID, other start time.
        fake = replace(record, pid=stranger.pid, start_ticks=(record.start_ticks or 0) + 1)
        (supervisor.run_dir / "gone.json").write_text(json.dumps(asdict(fake)))

        assert not is_alive(fake)
        assert session_pids(fake) == []
        assert supervisor.stop("gone") is False
        assert stranger.poll() is None, "a process the demo did not start was signalled"
    finally:
        os.killpg(stranger.pid, signal.SIGKILL)
        stranger.wait(10)


def test_a_port_taken_by_another_process_is_refused_before_starting(
    supervisor: Supervisor,
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        with pytest.raises(PortBusy, match=f"port {port} \\(web\\) is in use"):
            supervisor.ensure(http_server(port), timeout=5)
        assert supervisor.busy_ports([("web", [port])]) == [f"port {port} (web) is in use"]

    assert supervisor.records() == []


def test_a_service_that_dies_while_starting_is_reported_with_its_log(
    supervisor: Supervisor,
) -> None:
    port = free_port()
    crash = Service(
        "crash",
        (sys.executable, "-c", "import sys; print('no model here'); sys.exit(3)"),
        (port,),
        f"http://127.0.0.1:{port}/",
    )

    with pytest.raises(DemoError, match="crash exited while starting") as raised:
        supervisor.ensure(crash, timeout=30)

    assert "no model here" in str(raised.value)


def test_http_ok_is_true_only_for_a_200() -> None:
    import http.server
    import threading

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ready?probe=1" else 503)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        assert http_ok(f"{url}/ready?probe=1")
        assert not http_ok(f"{url}/ready")
    finally:
        server.shutdown()
        server.server_close()
    assert not http_ok(f"http://127.0.0.1:{free_port()}/ready")  # nothing listens
