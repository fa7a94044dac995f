"""Typed settings of the sink: each flag also reads the environment variable of the same
name in upper case (the chart sets those), a flag on the command line winning."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, fields

from contract.flags import FlagParser
from predictionlog.errors import ConfigError
from predictionlog.store import check_schema_name

DEFAULT_PORT = 8082


@dataclass(frozen=True)
class Settings:
    database_url: str
    """libpq URL of the PostgreSQL database (`DATABASE_URL`), e.g.
    `postgresql://user:password@host:5432/mlflow`; MLflow's `postgresql+psycopg://` works."""
    database_schema: str = "predictionlog"
    """Schema of the sink's tables (`DATABASE_SCHEMA`), created on start: the database
    may be MLflow's, whose tables live in `public`."""
    host: str = "0.0.0.0"
    """Address to listen on (`HOST`)."""
    http_port: int = DEFAULT_PORT
    """Port of the events endpoint (`POST /`), the history API and /metrics (`HTTP_PORT`)."""
    retention_days: float = 30.0
    """Rows logged longer ago are deleted (`RETENTION_DAYS`); 0 keeps every row."""
    retention_interval_seconds: float = 3600.0
    """How often the sink applies the retention (`RETENTION_INTERVAL_SECONDS`)."""
    retention_batch_rows: int = 5000
    """Rows deleted per transaction (`RETENTION_BATCH_ROWS`)."""
    max_body_bytes: int = 8 * 1024 * 1024
    """Largest event accepted (`MAX_BODY_BYTES`); more is a 413."""
    max_batch_events: int = 500
    """Most events per database transaction (`MAX_BATCH_EVENTS`)."""
    max_pending_events: int = 10_000
    """Events that may wait for the database before POSTs get a 503 (`MAX_PENDING_EVENTS`)."""
    pool_max_size: int = 4
    """Most database connections (`POOL_MAX_SIZE`)."""
    synchronous_commit: str = "off"
    """PostgreSQL's `synchronous_commit` for the sink's sessions (`SYNCHRONOUS_COMMIT`):
    `off` answers an event once PostgreSQL holds it, before the commit reaches the disk
    (a database crash may lose the last fraction of a second of events, never corrupt
    them); `on` waits for the flush, at the cost of one fsync per batch."""

    def __post_init__(self) -> None:
        problems = []
        if not self.database_url:
            problems.append(
                "no database: set DATABASE_URL (or --database-url), "
                "e.g. postgresql://user:password@127.0.0.1:5432/mlflow"
            )
        try:
            check_schema_name(self.database_schema)
        except ConfigError as e:
            problems.append(str(e))
        if self.retention_days < 0:
            problems.append(f"RETENTION_DAYS must be 0 (keep all) or more: {self.retention_days}")
        if self.retention_interval_seconds <= 0:
            problems.append("RETENTION_INTERVAL_SECONDS must be positive")
        for name in ("retention_batch_rows", "max_batch_events", "max_pending_events"):
            if getattr(self, name) < 1:
                problems.append(f"{name.upper()} must be at least 1")
        if self.pool_max_size < 2:
            problems.append("POOL_MAX_SIZE must be at least 2 (a writer and a reader)")
        if self.synchronous_commit not in ("on", "off", "local", "remote_write", "remote_apply"):
            problems.append(
                f"SYNCHRONOUS_COMMIT {self.synchronous_commit!r}: choose on, off, local, "
                "remote_write or remote_apply (PostgreSQL's values)"
            )
        if self.max_body_bytes < 1024:
            problems.append("MAX_BODY_BYTES must be at least 1024")
        if problems:
            raise ConfigError("; ".join(problems))


_HELP = {
    "database_url": "PostgreSQL URL",
    "database_schema": "schema of the sink's tables",
    "host": "address to listen on",
    "http_port": "HTTP port",
    "retention_days": "delete rows logged longer ago than this; 0 keeps all",
    "retention_interval_seconds": "seconds between retention runs",
    "retention_batch_rows": "rows deleted per transaction",
    "max_body_bytes": "largest event body",
    "max_batch_events": "most events per transaction",
    "max_pending_events": "events waiting for the database before 503s",
    "pool_max_size": "most database connections",
    "synchronous_commit": "PostgreSQL's synchronous_commit for the sink (on waits for the disk)",
}


def build_parser(env: Mapping[str, str] | None = None) -> FlagParser:
    env = os.environ if env is None else env
    parser = FlagParser(
        prog="python -m predictionlog",
        description="Store KServe payload-logger CloudEvents in PostgreSQL and serve them "
        "back (docs/prediction-log.md).",
    )
    parser.add_argument(
        "command",
        nargs="?",
        choices=("serve", "prune"),
        default="serve",
        help="serve (default): the sink; prune: apply the retention once and exit",
    )
    for field in fields(Settings):
        kind = {"str": str, "int": int, "float": float}[str(field.type)]
        variable = field.name.upper()
        raw = env.get(variable)
        builtin = None if field.default is MISSING else field.default
        try:
            default = builtin if raw is None else kind(raw)
        except ValueError as e:
            raise ConfigError(f"{variable}={raw!r} is not a valid {kind.__name__}") from e
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            dest=field.name,
            type=kind,
            default=default,
            help=f"{_HELP[field.name]} (env {variable}; default {builtin or 'none'})",
        )
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    values = {f.name: getattr(args, f.name) for f in fields(Settings)}
    values["database_url"] = values["database_url"] or ""
    return Settings(**values)
