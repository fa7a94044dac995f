"""Settings of `python -m demo` (the Makefile passes each as a flag), and where the demo
keeps its state: everything under one folder, `.demo/` by default."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
# What the demo writes into its state folder; `down --clean` refuses a folder holding
# anything else, so a mistyped DEMO_DIR never deletes someone's files.
STATE_ENTRIES = frozenset(
    {"run", "logs", "mlflow", "prometheus", "loadtest", "cluster", "data", "postgres"}
)


@dataclass(frozen=True)
class DemoSettings:
    state_dir: Path = Path(".demo")
    model_name: str = "breast-cancer"
    mlflow_port: int = 5000
    predictor_port: int = 8080
    """The InferenceService's URL: the local router, split by the traffic in its status."""
    predictor_grpc_port: int = 8081
    """The router's gRPC relay (split per connection)."""
    canary_port: int = 8082
    """Revision slot A (HTTP): stable and canary revisions alternate between slots A and B."""
    canary_grpc_port: int = 8083
    slot_b_port: int = 8084
    slot_b_grpc_port: int = 8085
    controller_port: int = 8086
    """The rollout controller's /metrics, /healthz and /readyz."""
    prometheus_port: int = 9090
    postgres_port: int = 5433
    """The prediction log's throwaway PostgreSQL (when initdb is installed)."""
    predictionlog_port: int = 8087
    """The prediction log (`python -m predictionlog`): events, `GET /predictions`."""
    users: int = 8
    """Locust users of both load tests."""
    load_seconds: int = 10
    """Length of the first load test (stable only)."""
    canary_seconds: int = 12
    """Soak of each rollout step: seconds of traffic before the step's first analysis."""
    canary_weight: int = 10
    """The first step of the rollout schedule (percent of traffic to the canary)."""
    min_requests: int = 50
    """Requests each version needs for the analysis to reach a verdict."""
    python: str = field(default_factory=lambda: sys.executable)

    def __post_init__(self) -> None:
        problems = []
        ports = {
            "MLFLOW_PORT": self.mlflow_port,
            "PREDICTOR_PORT": self.predictor_port,
            "PREDICTOR_GRPC_PORT": self.predictor_grpc_port,
            "CANARY_PORT": self.canary_port,
            "CANARY_GRPC_PORT": self.canary_grpc_port,
            "SLOT_B_PORT": self.slot_b_port,
            "SLOT_B_GRPC_PORT": self.slot_b_grpc_port,
            "CONTROLLER_PORT": self.controller_port,
            "PROMETHEUS_PORT": self.prometheus_port,
            "POSTGRES_PORT": self.postgres_port,
            "PREDICTIONLOG_PORT": self.predictionlog_port,
        }
        problems += [f"{k}={v} is not a port" for k, v in ports.items() if not 0 < v < 65536]
        if len(set(ports.values())) < len(ports):
            problems.append(f"the ports must differ, got {ports}")
        if not self.model_name or "/" in self.model_name:
            problems.append(f"MODEL_NAME {self.model_name!r} must be a name without '/'")
        if self.users < 1 or self.load_seconds < 1 or self.canary_seconds < 1:
            problems.append("users and load-test durations must be at least 1")
        if not 1 <= self.canary_weight <= 99:
            problems.append(f"the canary weight must be within 1..99, got {self.canary_weight}")
        if problems:
            raise ValueError("; ".join(problems))

    # -- where things are ----------------------------------------------------------------

    @property
    def run_dir(self) -> Path:
        """One PID record per running service."""
        return self.state_dir / "run"

    @property
    def log_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def mlflow_dir(self) -> Path:
        """The SQLite registry and the artifact folder."""
        return self.state_dir / "mlflow"

    @property
    def prometheus_dir(self) -> Path:
        return self.state_dir / "prometheus"

    @property
    def postgres_dir(self) -> Path:
        """The prediction log's PostgreSQL cluster (initdb's data folder inside)."""
        return self.state_dir / "postgres"

    @property
    def predictionlog_url(self) -> str:
        return f"http://127.0.0.1:{self.predictionlog_port}"

    @property
    def cluster_dir(self) -> Path:
        """The local cluster: the InferenceService, revisions, the rollout's Lease, Events."""
        return self.state_dir / "cluster"

    @property
    def data_dir(self) -> Path:
        """Data sets the demo writes (the mislabelled export of its bad version)."""
        return self.state_dir / "data"

    @property
    def steps(self) -> str:
        """The rollout schedule: the first step, 50 %, then 100 % (promote)."""
        return ",".join(str(p) for p in sorted({self.canary_weight, 50, 100}))

    @property
    def loadtest_dir(self) -> Path:
        return self.state_dir / "loadtest"

    @property
    def bin_dir(self) -> Path:
        """The virtual environment's scripts (`mlflow`) beside its interpreter."""
        return Path(self.python).parent

    @property
    def mlflow_url(self) -> str:
        return f"http://127.0.0.1:{self.mlflow_port}"

    @property
    def predictor_url(self) -> str:
        return f"http://127.0.0.1:{self.predictor_port}"

    @property
    def slot_urls(self) -> tuple[str, str]:
        return (f"http://127.0.0.1:{self.canary_port}", f"http://127.0.0.1:{self.slot_b_port}")

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"
