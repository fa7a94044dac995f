"""Typed settings of the training Job: every flag has an environment variable of the
same name (upper case, dashes to underscores), which is what the Helm chart sets."""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from dataclasses import dataclass

from contract.flags import FlagParser
from contract.onnx_format import DEFAULT_TOLERANCE
from contract.uris import DEFAULT_MODEL_NAME
from training.errors import ConfigError

CANDIDATE_FAMILIES = ("logreg", "random_forest", "hist_gradient_boosting")


@dataclass(frozen=True)
class TrainingSettings:
    tracking_uri: str = "http://127.0.0.1:5000"
    """MLflow tracking server (`MLFLOW_TRACKING_URI`)."""
    model_name: str = DEFAULT_MODEL_NAME
    """Registered model name; also the served V2 model name."""
    experiment: str = ""
    """MLflow experiment the runs are logged under; empty means the model name."""
    dataset: str = "breast_cancer"
    """`breast_cancer`, `iris`, or a path to a CSV file with a target column."""
    target_column: str = "target"
    """Target column of a CSV dataset."""
    critical_class: str = "malignant"
    """Class whose recall is gated; on data without it, the worst per-class recall is."""
    seed: int = 42
    cv_folds: int = 5
    test_size: float = 0.2
    candidates: tuple[str, ...] = CANDIDATE_FAMILIES
    """Model families to search."""
    min_malignant_recall: float = 0.95
    """Gate: recall of the critical class on the held-out test split."""
    max_cv_recall_std: float = 0.05
    """Gate: standard deviation of the critical recall across CV folds."""
    max_regression: float = 0.0
    """Gate: how far test ROC AUC or critical recall may fall below `@champion`'s."""
    latency_margin: float = 0.005
    """Candidates whose CV score is within this of the best are ranked by predict latency."""
    smoke: bool = False
    """A small search for CI and demos."""
    registry_timeout: float = 120.0
    """Seconds to wait for MLflow to answer before giving up with exit code 4."""
    onnx_parity_tolerance: float = DEFAULT_TOLERANCE
    """Largest difference of any probability allowed between the model's ONNX copy (run
    by ONNX Runtime) and scikit-learn on the test split; beyond it (or with any label
    different) the version is served with scikit-learn."""
    job_uid: str = ""
    """What every retry of one Job shares (`TRAINING_JOB_UID`; the chart passes the Job's
    uid): a retry finishes its earlier attempt's version instead of registering another.
    Empty: every run is a new attempt."""
    n_jobs: int = 1
    """Parallel CV fits, and the native threads of each fit (OpenMP, BLAS): 1 keeps a
    Kubernetes pod within its CPU limit instead of oversubscribing the node's cores."""

    def __post_init__(self) -> None:
        problems = []
        if self.cv_folds < 2:
            problems.append(f"--cv-folds must be at least 2, got {self.cv_folds}")
        if not 0 < self.test_size < 1:
            problems.append(f"--test-size must be between 0 and 1, got {self.test_size}")
        unknown = sorted(set(self.candidates) - set(CANDIDATE_FAMILIES))
        if unknown or not self.candidates:
            problems.append(
                f"--candidates {','.join(self.candidates) or '(empty)'}: "
                f"choose from {', '.join(CANDIDATE_FAMILIES)}"
            )
        for name in ("min_malignant_recall", "max_cv_recall_std", "max_regression"):
            value = getattr(self, name)
            if not 0 <= value <= 1:
                problems.append(f"--{name.replace('_', '-')} must be within [0, 1], got {value}")
        if not 0 <= self.onnx_parity_tolerance < 1:
            problems.append(
                f"--onnx-parity-tolerance must be within [0, 1), got {self.onnx_parity_tolerance}"
            )
        if self.registry_timeout <= 0:
            problems.append("--registry-timeout must be positive")
        if problems:
            raise ConfigError("; ".join(problems))


def _env_flag(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


def build_parser(env: Mapping[str, str] | None = None) -> argparse.ArgumentParser:
    """The CLI; each default comes from the environment variable named in its help."""
    env = os.environ if env is None else env
    defaults = TrainingSettings()
    parser = FlagParser(
        prog="python -m training",
        description="Train, gate and register a scikit-learn classifier in MLflow.",
    )

    def add(flag: str, kind: type, help_text: str, env_name: str | None = None) -> None:
        field = flag.lstrip("-").replace("-", "_")
        variable = env_name or field.upper()
        default = getattr(defaults, field)
        if isinstance(default, tuple):
            default = ",".join(default)
        parser.add_argument(
            flag,
            type=kind,
            default=env.get(variable, default),
            help=f"{help_text} (env {variable}; default {default})",
        )

    add("--tracking-uri", str, "MLflow tracking URI", "MLFLOW_TRACKING_URI")
    add("--model-name", str, "registered model name")
    add("--experiment", str, "MLflow experiment name", "MLFLOW_EXPERIMENT_NAME")
    add("--dataset", str, "breast_cancer, iris, or a CSV path")
    add("--target-column", str, "target column of a CSV dataset")
    add("--critical-class", str, "class whose recall is gated")
    add("--seed", int, "random seed of splits and models")
    add("--cv-folds", int, "stratified CV folds")
    add("--test-size", float, "held-out test fraction")
    add("--candidates", str, f"comma-separated model families of {', '.join(CANDIDATE_FAMILIES)}")
    add("--min-malignant-recall", float, "gate: minimum critical-class recall on test")
    add("--max-cv-recall-std", float, "gate: maximum std of critical recall across folds")
    add("--max-regression", float, "gate: allowed drop of ROC AUC / recall vs @champion")
    add("--latency-margin", float, "CV-score margin within which the faster candidate wins")
    add("--registry-timeout", float, "seconds to wait for MLflow before exit 4")
    add("--n-jobs", int, "parallel CV fits")
    add(
        "--job-uid",
        str,
        "identity of the Job, shared by its retries: a retry finishes the earlier "
        "attempt's version",
        "TRAINING_JOB_UID",
    )
    add(
        "--onnx-parity-tolerance",
        float,
        "largest ONNX-vs-scikit-learn probability difference for serving with ONNX Runtime",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        default=_env_flag(env.get("SMOKE", "false")),
        help="small search for CI and demos (env SMOKE)",
    )
    return parser


def settings_from_args(args: argparse.Namespace) -> TrainingSettings:
    values = vars(args).copy()
    values["candidates"] = tuple(c.strip() for c in str(values["candidates"]).split(",") if c)
    values["experiment"] = values["experiment"] or values["model_name"]
    try:
        return TrainingSettings(**values)
    except (TypeError, ValueError) as e:
        raise ConfigError(str(e)) from e
