"""The demo's prediction log: a throwaway PostgreSQL in the state folder (initdb and
postgres, as the tests run it) and `python -m predictionlog` on it, as two supervised
services. Local serving then gives each predictor `LOGGER_URL`, as KServe's agent would
post for it in the cluster (the InferenceService's `spec.predictor.logger`)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from demo import services
from demo.processes import Service
from demo.settings import DemoSettings

USER = DATABASE = "mlops"


def missing() -> str | None:
    """Why the prediction log cannot run here, or None."""
    if services.postgres_binary("initdb") is None or services.postgres_binary("postgres") is None:
        return "PostgreSQL's initdb is not installed (Debian: apt-get install postgresql)"
    return None


def _run_as() -> list[str]:
    # PostgreSQL refuses to run as root: as root, the cluster belongs to `nobody`.
    return ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []


def cluster_root(s: DemoSettings) -> Path:
    """Where the PostgreSQL cluster lives: the state folder's `postgres/`; as root, whose
    cluster belongs to `nobody`, a folder of its own under the system's temporary folder
    (`nobody` cannot reach into root's home or pytest's folders), one per state folder."""
    if os.geteuid() != 0:
        return s.postgres_dir.resolve()
    key = hashlib.sha256(str(s.state_dir.resolve()).encode()).hexdigest()[:12]
    return Path(tempfile.gettempdir()) / f"mlops-demo-postgres-{key}"


def remove_cluster(s: DemoSettings) -> None:
    """`make demo-down CLEAN=1`: the cluster goes with the state folder."""
    shutil.rmtree(cluster_root(s), ignore_errors=True)


def postgres_service(s: DemoSettings) -> Service:
    """PostgreSQL on 127.0.0.1 with its data in `cluster_root` (initdb on first use)."""
    s.postgres_dir.mkdir(parents=True, exist_ok=True)
    root = cluster_root(s)
    data = root / "data"
    if not (data / "PG_VERSION").exists():
        root.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(root, "nobody")
        initdb = str(services.postgres_binary("initdb"))
        subprocess.run(
            [*_run_as(), initdb, "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8"],
            check=True,
            capture_output=True,
        )
    postgres = str(services.postgres_binary("postgres"))
    argv = (*_run_as(), postgres, "-D", str(data), "-k", str(root), "-h", "127.0.0.1",
            "-p", str(s.postgres_port))  # fmt: skip
    return Service(name="postgres", argv=argv, ports=(s.postgres_port,), ready_url="")


def database_ready(s: DemoSettings) -> bool:
    """PostgreSQL answers; the demo's database is created the first time."""
    import psycopg

    try:
        with psycopg.connect(_url(s, "postgres"), autocommit=True, connect_timeout=2) as conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
            if found.fetchone() is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')
    except psycopg.Error:
        return False
    return True


def sink_service(s: DemoSettings) -> Service:
    argv = (s.python, "-m", "predictionlog", "--host", "127.0.0.1",
            "--http-port", str(s.predictionlog_port))  # fmt: skip
    return Service(
        name="predictionlog",
        argv=argv,
        ports=(s.predictionlog_port,),
        ready_url=f"{s.predictionlog_url}/readyz",
        env={"DATABASE_URL": _url(s, DATABASE)},
    )


def _url(s: DemoSettings, database: str) -> str:
    return f"postgresql://{USER}@127.0.0.1:{s.postgres_port}/{database}"
