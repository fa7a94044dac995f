"""The demo's background processes, tracked by PID files, never found by name.

Each service runs in a session of its own (`start_new_session`), so its PID is also its
process group and session id: stopping it signals every process of that session (MLflow's
server and its uvicorn worker, for instance) and nothing else. A record keeps the leader's
start time as well, so a PID the system has since given to another program is never
mistaken for ours.

A service is reused when its record shows it alive and started with the same fingerprint
(command line, environment, configuration); otherwise it is stopped and started afresh.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import json
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

logger = logging.getLogger(__name__)

PROC = Path("/proc")


class DemoError(Exception):
    """A step of the demo failed; the message says what and where to look."""


class PortBusy(DemoError):
    """A port the demo needs is taken by a process the demo did not start."""


@dataclass(frozen=True)
class Service:
    name: str
    argv: tuple[str, ...]
    ports: tuple[int, ...]
    ready_url: str
    env: Mapping[str, str] = field(default_factory=dict)
    """Set on top of the demo's own environment."""
    config: str = ""
    """Content of a configuration file the service reads; part of the fingerprint."""

    @property
    def fingerprint(self) -> str:
        blob = json.dumps([self.argv, sorted(self.env.items()), self.config])
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Record:
    """What a PID file holds (JSON): enough to find, judge and stop the process later."""

    name: str
    pid: int
    start_ticks: int | None
    """Start time of the process in clock ticks since boot (Linux), against PID reuse."""
    fingerprint: str
    argv: list[str]
    ports: list[int]
    log: str
    started_at: float


def _stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/PID/stat after the command name (which may hold spaces)."""
    try:
        raw = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    return raw.rpartition(")")[2].split()


def _start_ticks(pid: int) -> int | None:
    fields = _stat_fields(pid)
    # After the name: state(0) ppid(1) pgrp(2) session(3) ... starttime(19).
    return int(fields[19]) if fields and len(fields) > 19 else None


def session_members(sid: int) -> list[int]:
    """Live (not zombie) processes of session `sid`, from /proc; [] where /proc is missing."""
    members = []
    for entry in PROC.glob("[0-9]*"):
        fields = _stat_fields(int(entry.name))
        if fields and len(fields) > 3 and fields[0] != "Z" and int(fields[3]) == sid:
            members.append(int(entry.name))
    return members


def is_alive(record: Record) -> bool:
    """The recorded process still runs, and is the one we started (not a reused PID)."""
    if PROC.is_dir():
        fields = _stat_fields(record.pid)
        if fields is None or fields[0] == "Z":
            return False
        return record.start_ticks is None or _start_ticks(record.pid) == record.start_ticks
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return False  # someone else's process now holds that PID
    return True


def port_is_free(port: int) -> bool:
    """Nothing listens on `port`, on any interface (0.0.0.0 cannot be bound while another
    process listens on 127.0.0.1 or on every interface)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def http_ok(url: str, timeout: float = 2) -> bool:
    """Does one GET of `url` answer 200? With the standard library: readiness pollers
    call this every few milliseconds, and a `requests` call cost 1.2 ms of CPU here,
    beside the server being started (and, in `make bench`, timed)."""
    parts = urlsplit(url)
    kind = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    connection = kind(parts.hostname or "", parts.port, timeout=timeout)
    try:
        connection.request("GET", urlunsplit(("", "", parts.path or "/", parts.query, "")))
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):  # refused, reset, timed out, garbled
        return False
    finally:
        connection.close()


def log_tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join("    " + line for line in text[-lines:])


class Supervisor:
    """Starts, finds and stops the demo's services; one JSON record per service in `run_dir`."""

    def __init__(
        self, run_dir: Path, log_dir: Path, cwd: Path, bin_dir: Path | None = None
    ) -> None:
        self.run_dir = run_dir
        self.log_dir = log_dir
        self.cwd = cwd
        self.bin_dir = bin_dir
        """Put first on the services' PATH (MLflow's server finds uvicorn there); kept out
        of the fingerprint, as PATH differs between shells."""
        self._children: dict[int, subprocess.Popen[bytes]] = {}
        """Processes this object started, so `stop` can reap them (no zombie left behind
        while the starter still runs, as in tests)."""

    def _path(self, name: str) -> Path:
        return self.run_dir / f"{name}.json"

    def record(self, name: str) -> Record | None:
        try:
            return Record(**json.loads(self._path(name).read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def records(self) -> list[Record]:
        found = [self.record(path.stem) for path in sorted(self.run_dir.glob("*.json"))]
        return [r for r in found if r is not None]

    def running(self, name: str) -> Record | None:
        record = self.record(name)
        return record if record is not None and is_alive(record) else None

    def busy_ports(self, services: Sequence[tuple[str, Sequence[int]]]) -> list[str]:
        """Problems with the ports of services that would have to be started."""
        problems = []
        for name, ports in services:
            if self.running(name) is not None:
                continue
            problems += [f"port {p} ({name}) is in use" for p in ports if not port_is_free(p)]
        return problems

    def ensure(
        self, service: Service, timeout: float, ready: Callable[[], bool] | None = None
    ) -> tuple[Record, bool]:
        """Reuse the service when it runs with the same fingerprint, else (re)start it;
        wait until it is ready. Returns (its record, whether it was reused)."""
        ready = ready or (lambda: http_ok(service.ready_url))
        current = self.running(service.name)
        if current is not None and current.fingerprint == service.fingerprint:
            self._wait_ready(current, ready, timeout)
            return current, True
        if current is not None:
            logger.info("%s runs with other settings: restarting it", service.name)
            self.stop(service.name)
        busy = [p for p in service.ports if not port_is_free(p)]
        if busy:
            raise PortBusy(
                f"port {', '.join(map(str, busy))} ({service.name}) is in use by a process "
                "the demo did not start; stop it or choose other ports (see `make help`)"
            )
        record = self._start(service)
        self._wait_ready(record, ready, timeout)
        return record, False

    def _start(self, service: Service) -> Record:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{service.name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen(
                service.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.cwd,
                env=self._environment(service),
                start_new_session=True,  # its own session: stopped as a whole, by its PID
            )
        self._children[popen.pid] = popen
        record = Record(
            name=service.name,
            pid=popen.pid,
            start_ticks=_start_ticks(popen.pid),
            fingerprint=service.fingerprint,
            argv=list(service.argv),
            ports=list(service.ports),
            log=str(log),
            started_at=time.time(),
        )
        self._path(service.name).write_text(json.dumps(asdict(record), indent=2) + "\n")
        return record

    def _environment(self, service: Service) -> dict[str, str]:
        env = {**os.environ, **service.env}
        if self.bin_dir is not None:
            env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        return env

    def _wait_ready(self, record: Record, ready: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready():
                return
            if not is_alive(record):
                raise DemoError(
                    f"{record.name} exited while starting; the end of {record.log}:\n"
                    f"{log_tail(Path(record.log))}"
                )
            time.sleep(0.5)
        raise DemoError(
            f"{record.name} (pid {record.pid}) was not ready after {timeout:.0f}s; "
            f"the end of {record.log}:\n{log_tail(Path(record.log))}"
        )

    def stop(self, name: str, timeout: float = 20) -> bool:
        """Stop the service's whole session: SIGTERM, then SIGKILL after `timeout` seconds.
        Removes its record. Returns whether anything was running."""
        record = self.record(name)
        if record is None:
            return False
        was_running = _signal(record, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while session_pids(record) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _signal(record, signal.SIGKILL):
            logger.warning("%s (pid %d) outlived SIGTERM: killed", name, record.pid)
            deadline = time.monotonic() + 5
            while session_pids(record) and time.monotonic() < deadline:
                time.sleep(0.1)
        child = self._children.pop(record.pid, None)
        if child is not None:
            child.wait(5)
        self._path(name).unlink(missing_ok=True)
        return was_running


def session_pids(record: Record) -> list[int]:
    """Our live processes of a record: with /proc, every member of the session the
    recorded PID leads (a worker that outlived its leader included), unless that PID now
    leads another program's session; without /proc, the leader while it lives."""
    if PROC.is_dir():
        members = session_members(record.pid)
        if record.pid in members and not is_alive(record):
            return []  # the PID was reused: whatever runs there is not ours
        return members
    return [record.pid] if is_alive(record) else []


def _signal(record: Record, sig: signal.Signals) -> bool:
    """Send `sig` to the record's processes; False when none is left."""
    pids = session_pids(record)
    for pid in pids:
        try:
            if PROC.is_dir():
                os.kill(pid, sig)
            else:
                os.killpg(pid, sig)  # the leader's process group
        except ProcessLookupError:
            pass
    return bool(pids)
