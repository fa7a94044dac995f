"""One training Job from data to registry: split, search every family, pick one, score
it once on the held-out split, gate it, log everything and register a version.

`run` reads as the Job's story; each step below it is one function."""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.model_selection import train_test_split
from threadpoolctl import threadpool_limits

from contract import drift_profile, model_format, onnx_format, registry_tags
from training import onnx_export, registry
from training.candidates import build_candidates
from training.data import Dataset, load_dataset
from training.errors import ConfigError
from training.evaluate import (
    Evaluation,
    critical_label_of,
    critical_metric_name,
    evaluate,
    test_metrics,
    write_report_artifacts,
)
from training.gates import (
    ChampionComparison,
    GateResult,
    champion_gate,
    critical_recall_gate,
    cv_stability_gate,
    failed,
)
from training.search import Predict, SearchResult, choose, measure_latencies, search
from training.settings import TrainingSettings

logger = logging.getLogger(__name__)


@dataclass
class Summary:
    """What the Job prints as its last line, and logs as `run_summary.json`."""

    status: str  # "registered" or "rejected"
    model_name: str
    run_id: str
    version: str | None
    model_uri: str | None
    candidate: str
    params: dict[str, Any]
    metrics: dict[str, float]
    gates: list[dict[str, Any]]
    aliases_set: list[str]
    data_sha256: str
    dataset: str
    reasons: list[str] = field(default_factory=list)
    serving_runtime: str = onnx_format.SKLEARN
    """The runtime the version may be served with (`onnx` once its ONNX copy passed)."""
    onnx_parity: str = onnx_format.NOT_CONVERTED
    duration_seconds: float = 0.0
    resumed: bool = False
    """True when this run finished the registration of an earlier attempt of its Job."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass(frozen=True)
class Split:
    """The stratified train/test split; the test rows are scored once, at the end."""

    x_train: npt.NDArray[np.float64]
    x_test: npt.NDArray[np.float64]
    y_train: npt.NDArray[np.int64]
    y_test: npt.NDArray[np.int64]


@dataclass(frozen=True)
class Critical:
    """The class whose recall is gated: its label (None: the worst class counts) and the
    metric name it is logged under (`malignant_recall`, `worst_class_recall`)."""

    label: int | None
    name: str


@dataclass(frozen=True)
class Tested:
    """The chosen family, its held-out scores and every metric logged for it."""

    chosen: SearchResult
    evaluation: Evaluation
    metrics: dict[str, float]


@dataclass(frozen=True)
class Verdict:
    """The gates' outcome, and the `@champion` they compared against."""

    gates: list[GateResult]
    champion: registry.RegisteredVersion | None
    comparison: ChampionComparison | None

    @property
    def reasons(self) -> list[str]:
        return [gate.detail for gate in failed(self.gates)]

    @property
    def passed(self) -> bool:
        return not self.reasons


def run(settings: TrainingSettings) -> Summary:
    """The Job: data -> search -> choose -> test -> gate -> register. Every MLflow call
    runs in a named step: a registry failure exits 4 saying which one."""
    started = time.monotonic()
    data = load_data(settings)
    critical = Critical(
        critical_label_of(data.class_names, settings.critical_class),
        critical_metric_name(data.class_names, settings.critical_class),
    )
    client = connect_registry(settings)
    step = functools.partial(registry.step, tracking_uri=settings.tracking_uri)
    key = registry.attempt_key(settings.job_uid, data.sha256, _identity(settings))
    if key is not None:
        with step("look for an earlier attempt of this Job"):
            earlier = registry.find_attempt(client, settings.model_name, key)
        if earlier is not None:
            return finish_earlier_attempt(client, earlier, settings, started)
    split = split_data(data, settings)

    with training_run(settings, data, key) as run_id:
        with step("log the run's settings"):
            log_run_settings(data, split, settings)
        with step("log the candidates"):
            results, conversions = search_families(split, settings, critical)
        with step("log the chosen family"):
            chosen = choose_family(results, settings)
        with step("log the test metrics"):
            tested = score_on_test_split(chosen, split, critical)
        with step("log the ONNX copy's parity"):
            onnx_copy = prove_onnx_copy(chosen, conversions.get(chosen.family), split, settings)
        with step("read and score @champion"):
            verdict = gate(client, tested, split, settings, critical)
        with step("log the report"):
            log_report(tested.evaluation, data, critical)
        return register(
            client,
            run_id,
            data,
            split,
            tested,
            verdict,
            settings,
            critical,
            onnx_copy,
            key,
            started,
        )


def load_data(settings: TrainingSettings) -> Dataset:
    """Load the dataset and refuse what the split and the folds cannot work with."""
    data = load_dataset(settings.dataset, settings.target_column)
    check_data(data, settings)
    logger.info(
        "dataset %s: %d rows, %d features, classes %s, sha256 %s",
        data.name,
        len(data.labels),
        len(data.feature_names),
        ", ".join(data.class_names),
        data.sha256[:12],
    )
    return data


def check_data(data: Dataset, settings: TrainingSettings) -> None:
    """Refuse data the split and the folds cannot work with, naming the problem."""
    counts = np.bincount(data.labels)
    test_rows = round(len(data.labels) * settings.test_size)
    smallest = int(counts.min())
    if smallest < settings.cv_folds + 1 or test_rows < len(counts):
        raise ConfigError(
            f"dataset {data.name}: the smallest class has {smallest} rows, too few for a "
            f"{settings.test_size:.0%} test split and {settings.cv_folds}-fold CV "
            "(lower --cv-folds or add rows)"
        )


def connect_registry(settings: TrainingSettings) -> Any:
    """Wait for the tracking server (it may start after the Job), point MLflow at it and
    at the experiment; the client for the registry calls."""
    registry.limit_client_retries()
    registry.wait_for_registry(settings.tracking_uri, settings.registry_timeout)
    import mlflow
    from mlflow import MlflowClient

    mlflow.set_tracking_uri(settings.tracking_uri)
    with registry.step(f"set the experiment {settings.experiment!r}", settings.tracking_uri):
        mlflow.set_experiment(settings.experiment)
    return MlflowClient(settings.tracking_uri)


@contextlib.contextmanager
def training_run(settings: TrainingSettings, data: Dataset, key: str | None) -> Iterator[str]:
    """The Job's MLflow run, by id. Ended by hand, not by `mlflow.start_run`'s context:
    when MLflow fails, marking the run failed fails too, and must not hide why."""
    import mlflow

    tags = {registry_tags.ATTEMPT_KEY: key} if key else None
    with registry.step("start the run", settings.tracking_uri):
        run = mlflow.start_run(run_name=run_name(settings, data), tags=tags)
    try:
        yield str(run.info.run_id)
    except BaseException:
        try:
            mlflow.end_run("FAILED")
        except Exception as e:  # the error that brought us here is the one to report
            logger.warning("could not mark run %s failed: %s", run.info.run_id, e)
        raise
    with registry.step("end the run", settings.tracking_uri):
        mlflow.end_run()


def run_name(settings: TrainingSettings, data: Dataset) -> str:
    """Tells runs apart in the UI: the model, the data's hash and when it started."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return f"train-{settings.model_name}-{data.sha256[:8]}-{stamp}"


def _identity(settings: TrainingSettings) -> dict[str, Any]:
    """The settings that make two runs the same training (not where or how fast)."""
    ignored = {"tracking_uri", "registry_timeout", "n_jobs", "job_uid"}
    return {k: v for k, v in asdict(settings).items() if k not in ignored}


def split_data(data: Dataset, settings: TrainingSettings) -> Split:
    x_train, x_test, y_train, y_test = train_test_split(
        data.features,
        data.labels,
        test_size=settings.test_size,
        stratify=data.labels,
        random_state=settings.seed,
    )
    return Split(x_train, x_test, y_train, y_test)


def log_run_settings(data: Dataset, split: Split, settings: TrainingSettings) -> None:
    import mlflow
    from mlflow.data.numpy_dataset import from_numpy

    mlflow.set_tags(
        {
            registry_tags.DATA_SHA256: data.sha256,
            registry_tags.DATASET: data.name,
            registry_tags.MODEL_NAME: settings.model_name,
        }
    )
    mlflow.log_params(
        {
            "dataset": data.name,
            "data_sha256": data.sha256,
            "seed": settings.seed,
            "cv_folds": settings.cv_folds,
            "test_size": settings.test_size,
            "candidates": ",".join(settings.candidates),
            "smoke": settings.smoke,
            "latency_margin": settings.latency_margin,
            "n_train": len(split.y_train),
            "n_test": len(split.y_test),
            # The gates' limits: a version's verdict means nothing without them.
            "min_malignant_recall": settings.min_malignant_recall,
            "max_cv_recall_std": settings.max_cv_recall_std,
            "max_regression": settings.max_regression,
            "onnx_parity_tolerance": settings.onnx_parity_tolerance,
        }
    )
    # The data the run trained on, for the UI's Dataset column (its digest is MLflow's;
    # the project's own hash is the data_sha256 tag and param).
    dataset = from_numpy(data.features, targets=data.labels, name=data.name)
    mlflow.log_input(dataset, context="training")


def search_families(
    split: Split, settings: TrainingSettings, critical: Critical
) -> tuple[list[SearchResult], dict[str, bytes]]:
    """Search every candidate family's grid with CV, convert each one to ONNX, time each
    one's predictions with the runtime it would be served with, and log each family in a
    nested run. The families' ONNX conversions, by family (those that converted)."""
    searched = [
        _search(candidate, split, settings, critical)
        for candidate in build_candidates(settings.candidates, settings.smoke, settings.seed)
    ]
    # Parity on training rows here: the choice never looks at the test split. The chosen
    # family's copy is proven again on the test split (`prove_onnx_copy`).
    copies = [
        onnx_export.export(result.estimator, split.x_train, settings.onnx_parity_tolerance)
        for result, _ in searched
    ]
    predictors: list[tuple[str, Predict]] = [
        (onnx_format.ONNX, onnx_format.OnnxClassifier(copy.model).predict_proba)
        if copy.servable and copy.model is not None
        else (onnx_format.SKLEARN, result.estimator.predict_proba)
        for (result, _), copy in zip(searched, copies, strict=True)
    ]
    # One native thread, as the predictor runs them.
    with threadpool_limits(limits=1):
        results = measure_latencies(
            [result for result, _ in searched],
            split.x_train[:1],
            50 if settings.smoke else 200,
            predictors=predictors,
        )
    for result, (_, seconds), copy in zip(results, searched, copies, strict=True):
        _log_candidate(result, seconds, critical.name, copy)
    conversions = {
        result.family: copy.model
        for result, copy in zip(results, copies, strict=True)
        if copy.model is not None
    }
    return results, conversions


def choose_family(results: list[SearchResult], settings: TrainingSettings) -> SearchResult:
    import mlflow

    chosen = choose(results, settings.latency_margin)
    logger.info(
        "chose %s (CV ROC AUC %.4f, predict %.3f ms/row with %s)",
        chosen.family,
        chosen.cv_score_mean,
        chosen.predict_latency_ms,
        chosen.serving_runtime,
    )
    mlflow.log_params({"chosen_family": chosen.family})
    mlflow.log_params({f"best_{k}": v for k, v in chosen.best_params.items()})
    return chosen


def score_on_test_split(chosen: SearchResult, split: Split, critical: Critical) -> Tested:
    """Score the chosen model once on the held-out split, and log its metrics."""
    import mlflow

    evaluation = evaluate(chosen.estimator, split.x_test, split.y_test, critical.label)
    metrics = {
        "cv_roc_auc_mean": chosen.cv_score_mean,
        "cv_roc_auc_std": chosen.cv_score_std,
        f"cv_{critical.name}_mean": chosen.cv_recall_mean,
        f"cv_{critical.name}_std": chosen.cv_recall_std,
        "predict_latency_ms": chosen.predict_latency_ms,
        **test_metrics(evaluation, critical.name),
    }
    mlflow.log_metrics(metrics)
    return Tested(chosen, evaluation, metrics)


def prove_onnx_copy(
    chosen: SearchResult, converted: bytes | None, split: Split, settings: TrainingSettings
) -> onnx_export.OnnxExport:
    """The parity gate of the chosen model's ONNX copy, on the held-out split: its figures
    are logged as metrics; a copy that converted but failed is kept with the run (not the
    model) for whoever looks into it."""
    import mlflow

    copy = onnx_export.export(
        chosen.estimator, split.x_test, settings.onnx_parity_tolerance, model=converted
    )
    record = copy.record
    mlflow.log_metrics(
        {**(copy.parity.metrics() if copy.parity else {}), "onnx_export_seconds": copy.seconds}
    )
    mlflow.set_tags(
        {
            registry_tags.SERVING_RUNTIME: record.serving_runtime,
            registry_tags.ONNX_PARITY: record.parity,
        }
    )
    if copy.model is not None and not copy.servable:
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / Path(onnx_format.ONNX_FILE).name
            path.write_bytes(copy.model)
            mlflow.log_artifact(str(path), artifact_path="onnx_failed_parity")
    log = logger.info if copy.servable else logger.warning
    log("%s: serves with %s (%s)", chosen.family, record.serving_runtime, record.reason)
    return copy


def gate(
    client: Any,
    tested: Tested,
    split: Split,
    settings: TrainingSettings,
    critical: Critical,
) -> Verdict:
    """The three gates: the critical class's recall, its CV stability, and no regression
    against `@champion` scored on the same test rows."""
    champion = registry.current_champion(client, settings.model_name)
    comparison = _score_champion(champion, split, critical)
    gates = [
        critical_recall_gate(tested.evaluation, settings.min_malignant_recall, critical.name),
        cv_stability_gate(tested.chosen.cv_recall_std, settings.max_cv_recall_std, critical.name),
        champion_gate(tested.evaluation, comparison, settings.max_regression),
    ]
    return Verdict(gates, champion, comparison)


def log_report(evaluation: Evaluation, data: Dataset, critical: Critical) -> None:
    """The confusion matrix, ROC curve and classification report, as run artifacts."""
    import mlflow

    with tempfile.TemporaryDirectory() as folder:
        for path in write_report_artifacts(
            evaluation, data.class_names, critical.label, Path(folder)
        ):
            mlflow.log_artifact(str(path))


MODEL_DESCRIPTION = (
    "A scikit-learn classifier, trained, gated and registered by the project's training Job "
    "(python -m training). Every version carries gate_status (pending, passed, rejected) and "
    "a description naming each gate and its limit. @challenger is the newest version that "
    "passed the gates; @champion is what the stable revision serves, moved only by a "
    "promotion (python -m rollout) or by the first version to pass."
)
"""The registered model's own description (docs/training.md)."""


@dataclass(frozen=True)
class Registration:
    """What an attempt means to do once its version exists: logged to its run before the
    version is created (registry.PLAN_ARTIFACT), so that a retry can finish it."""

    passed: bool
    final_tags: dict[str, str]
    description: str
    summary: Summary

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, plan: dict[str, Any]) -> Registration:
        return cls(
            passed=bool(plan["passed"]),
            final_tags=dict(plan["final_tags"]),
            description=str(plan["description"]),
            summary=Summary(**plan["summary"]),
        )


def register(
    client: Any,
    run_id: str,
    data: Dataset,
    split: Split,
    tested: Tested,
    verdict: Verdict,
    settings: TrainingSettings,
    critical: Critical,
    onnx_copy: onnx_export.OnnxExport,
    key: str | None,
    started: float,
) -> Summary:
    """Log the model, register it as a new version and finish the registration: a version
    that passed is `pending` until its aliases moved; a rejected one is `rejected` from
    its creation (registry.py's docstring)."""
    import mlflow

    step = functools.partial(registry.step, tracking_uri=settings.tracking_uri)
    with step("log the model"):
        model_info = _log_model(tested.chosen, data, split, settings.critical_class, onnx_copy)
    evaluation = tested.evaluation
    final_status = registry_tags.GATE_PASSED if verdict.passed else registry_tags.GATE_REJECTED
    tags = {
        registry_tags.DATA_SHA256: data.sha256,
        registry_tags.DATASET: data.name,
        registry_tags.CANDIDATE: tested.chosen.family,
        registry_tags.GATE_STATUS: (
            registry_tags.GATE_PENDING if verdict.passed else registry_tags.GATE_REJECTED
        ),
        f"test_{critical.name}": f"{evaluation.critical_recall:.4f}",
        "test_roc_auc": f"{evaluation.roc_auc:.4f}",
        # The runtime the predictor may serve this version with, and why.
        registry_tags.SERVING_RUNTIME: onnx_copy.record.serving_runtime,
        registry_tags.ONNX_PARITY: onnx_copy.record.parity,
        registry_tags.ONNX_PARITY_DETAIL: onnx_copy.record.reason[: registry_tags.VALUE_LIMIT],
    }
    if key is not None:
        tags[registry_tags.ATTEMPT_KEY] = key
    if not verdict.passed:
        reasons = "; ".join(verdict.reasons)
        tags[registry_tags.REJECTION_REASON] = reasons[: registry_tags.VALUE_LIMIT]
    plan = Registration(
        passed=verdict.passed,
        final_tags={registry_tags.GATE_STATUS: final_status},
        description=_describe(tested.chosen, evaluation.roc_auc, verdict),
        summary=Summary(
            status="registered" if verdict.passed else "rejected",
            model_name=settings.model_name,
            run_id=run_id,
            version=None,
            model_uri=None,
            candidate=tested.chosen.family,
            params=tested.chosen.best_params,
            metrics={k: round(v, 6) for k, v in tested.metrics.items()},
            gates=[g.as_dict() for g in verdict.gates],
            aliases_set=[],
            data_sha256=data.sha256,
            dataset=data.name,
            reasons=verdict.reasons,
            serving_runtime=onnx_copy.record.serving_runtime,
            onnx_parity=onnx_copy.record.parity,
        ),
    )
    with step("log the registration plan"):
        mlflow.log_dict(plan.as_dict(), registry.PLAN_ARTIFACT)
    with step(f"create a version of {settings.model_name!r}"):
        version = registry.create_version(client, model_info.model_uri, settings.model_name, tags)
    return finish_registration(client, version, plan, settings, started)


def finish_registration(
    client: Any,
    version: registry.RegisteredVersion,
    plan: Registration,
    settings: TrainingSettings,
    started: float,
    resumed: bool = False,
) -> Summary:
    """Move the aliases (when the version passed), then tag and describe the version with
    its final status, then tag the run. Each call is idempotent: a retry repeats them."""
    step = functools.partial(registry.step, tracking_uri=settings.tracking_uri)
    run_id = plan.summary.run_id
    aliases: list[str] = []
    if plan.passed:
        with step(f"move the aliases to version {version.version}"):
            aliases = registry.aliases_to_move(client, version)
            registry.set_aliases(client, version, aliases)
    status = plan.final_tags[registry_tags.GATE_STATUS]
    with step(f"tag version {version.version} {status}"):
        for name, value in plan.final_tags.items():
            client.set_model_version_tag(version.name, version.version, name, value)
        described = plan.description
        if aliases:
            described += "\nAliases moved here: " + ", ".join(f"@{a}" for a in aliases) + "."
        client.update_model_version(version.name, version.version, description=described)
        client.update_registered_model(version.name, description=MODEL_DESCRIPTION)
    summary = dataclasses.replace(
        plan.summary,
        version=version.version,
        model_uri=version.uri,
        aliases_set=aliases,
        duration_seconds=round(time.monotonic() - started, 2),
        resumed=resumed,
    )
    with step(f"tag run {run_id}"):
        client.set_tag(run_id, registry_tags.GATE_STATUS, status)
        client.set_tag(run_id, registry_tags.REGISTERED_VERSION, version.version)
        client.log_dict(run_id, json.loads(summary.to_json()), "run_summary.json")
    return summary


def finish_earlier_attempt(
    client: Any,
    earlier: registry.EarlierAttempt,
    settings: TrainingSettings,
    started: float,
) -> Summary:
    """A retry of a Job whose earlier attempt created its version: finish that version's
    registration from the attempt's plan instead of training and registering again."""
    import mlflow.artifacts

    step = functools.partial(registry.step, tracking_uri=settings.tracking_uri)
    logger.info(
        "an earlier attempt of this Job created version %s (run %s, gate_status %s): "
        "finishing its registration instead of registering another",
        earlier.version.version,
        earlier.run_id,
        earlier.gate_status,
    )
    with step(f"read the plan of run {earlier.run_id}"):
        plan = Registration.from_dict(
            mlflow.artifacts.load_dict(f"runs:/{earlier.run_id}/{registry.PLAN_ARTIFACT}")
        )
    summary = finish_registration(client, earlier.version, plan, settings, started, resumed=True)
    with step(f"end run {earlier.run_id}"):
        client.set_terminated(earlier.run_id, "FINISHED")
    return summary


def _search(
    candidate: Any, split: Split, settings: TrainingSettings, critical: Critical
) -> tuple[SearchResult, float]:
    """One family's search, and the seconds it took."""
    started = time.monotonic()
    with threadpool_limits(limits=max(1, settings.n_jobs)):
        result = search(
            candidate,
            split.x_train,
            split.y_train,
            folds=settings.cv_folds,
            seed=settings.seed,
            critical_label=critical.label,
            n_jobs=settings.n_jobs,
        )
    return result, time.monotonic() - started


def _log_candidate(
    result: SearchResult,
    search_seconds: float,
    critical_name: str,
    onnx_copy: onnx_export.OnnxExport,
) -> None:
    """One family in a nested run, so the UI compares families side by side."""
    import mlflow

    with mlflow.start_run(run_name=result.family, nested=True):
        mlflow.set_tags(
            {
                "family": result.family,
                "serving_runtime": result.serving_runtime,
                "onnx_parity": onnx_copy.record.parity,
            }
        )
        mlflow.log_params({"family": result.family, **result.best_params})
        mlflow.log_metrics(
            {
                "cv_roc_auc_mean": result.cv_score_mean,
                "cv_roc_auc_std": result.cv_score_std,
                f"cv_{critical_name}_mean": result.cv_recall_mean,
                f"cv_{critical_name}_std": result.cv_recall_std,
                "predict_latency_ms": result.predict_latency_ms,
                "search_seconds": search_seconds,
                "grid_size": len(result.trials),
                "onnx_export_seconds": onnx_copy.seconds,
                **(
                    {"onnx_train_" + k: v for k, v in onnx_copy.parity.metrics().items()}
                    if onnx_copy.parity
                    else {}
                ),
            }
        )
        mlflow.log_dict({"trials": result.trials}, "cv_results.json")
    logger.info(
        "%s: CV ROC AUC %.4f ± %.4f, %s %.4f ± %.4f, %.3f ms/row with %s, %d grid points",
        result.family,
        result.cv_score_mean,
        result.cv_score_std,
        critical_name,
        result.cv_recall_mean,
        result.cv_recall_std,
        result.predict_latency_ms,
        result.serving_runtime,
        len(result.trials),
    )


def _score_champion(
    champion: registry.RegisteredVersion | None, split: Split, critical: Critical
) -> ChampionComparison | None:
    if champion is None:
        return None
    try:
        estimator = registry.load_registered_estimator(champion)
        scored = evaluate(estimator, split.x_test, split.y_test, critical.label)
    # Another feature schema or class set, not our format, or types we do not trust:
    # the champion cannot be compared, which fails the gate instead of the whole Job.
    except ValueError as e:
        return ChampionComparison(champion.version, None, None, error=str(e))
    return ChampionComparison(champion.version, scored.roc_auc, scored.critical_recall)


def _log_model(
    chosen: SearchResult,
    data: Dataset,
    split: Split,
    critical_class: str,
    onnx_copy: onnx_export.OnnxExport,
) -> Any:
    """The sklearn flavor in skops, with the ONNX copy (when it passed parity) and the
    training split's drift profile as extra files of the same model folder, and their
    records in the metadata (contract.onnx_format, contract.drift_profile)."""
    with tempfile.TemporaryDirectory() as folder:
        extra_files = []
        if onnx_copy.servable and onnx_copy.model is not None:
            path = Path(folder) / Path(onnx_format.ONNX_FILE).name
            path.write_bytes(onnx_copy.model)
            extra_files.append(str(path))
        profile_text = reference_profile(split, data).to_json()
        profile_path = Path(folder) / Path(drift_profile.PROFILE_FILE).name
        profile_path.write_text(profile_text)
        extra_files.append(str(profile_path))
        metadata = {
            **model_format.model_metadata(data.class_names, critical_class),
            onnx_format.METADATA_KEY: onnx_copy.record.as_metadata(),
            drift_profile.METADATA_KEY: drift_profile.record_of(profile_text).as_metadata(),
        }
        return _log_sklearn_model(chosen, data, split, metadata, extra_files)


def reference_profile(split: Split, data: Dataset) -> drift_profile.DriftProfile:
    """Each feature's bins and shares on the training split: what the predictor counts
    served rows against (contract.drift_profile)."""
    profile = drift_profile.build_profile(split.x_train, data.feature_names)
    logger.info(
        "drift profile: %d features, %d bins at most, from %d training rows",
        len(profile.features),
        max(f.bins for f in profile.features),
        profile.rows,
    )
    return profile


def _log_sklearn_model(
    chosen: SearchResult,
    data: Dataset,
    split: Split,
    metadata: dict[str, Any],
    extra_files: list[str] | None,
) -> Any:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame(split.x_train[:3], columns=list(data.feature_names))
    signature = infer_signature(example, chosen.estimator.predict_proba(split.x_train[:3]))
    with warnings.catch_warnings():
        # MLflow checks the named input example against an estimator fitted on plain
        # arrays (on purpose: serving predicts on arrays, without pandas).
        warnings.filterwarnings("ignore", message="X has feature names", category=UserWarning)
        return mlflow.sklearn.log_model(
            sk_model=chosen.estimator,
            name=model_format.ARTIFACT_PATH,
            signature=signature,
            input_example=example,
            metadata=metadata,
            extra_files=extra_files,
            serialization_format=model_format.SERIALIZATION_FORMAT,
            skops_trusted_types=list(model_format.TRUSTED_TYPES),
            # Stated, not inferred: inference re-loads the model in a subprocess (seconds).
            pip_requirements=model_format.pip_requirements(),
        )


def _describe(chosen: SearchResult, roc_auc: float, verdict: Verdict) -> str:
    """The verdict, and every gate with the limit it applied (or why it applied none)."""
    outcome = "Passed every gate" if verdict.passed else "REJECTED by the gates"
    lines = [
        f"{outcome}: {chosen.family} {json.dumps(chosen.best_params, sort_keys=True)}, "
        f"test ROC AUC {roc_auc:.4f}.",
        *(
            f"- {'pass' if g.passed else 'FAIL'} {g.name} "
            f"({'no limit applied' if g.threshold is None else f'limit {g.threshold:g}'}): "
            f"{g.detail}"
            for g in verdict.gates
        ),
    ]
    return "\n".join(lines)
