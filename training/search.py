"""Hyper-parameter search per model family, scored by stratified k-fold CV, and the
choice between families: best CV score, with predict latency breaking near-ties."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import make_scorer, recall_score
from sklearn.model_selection import GridSearchCV, StratifiedKFold

from training.candidates import Candidate


def critical_recall(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, critical_label: int | None
) -> float:
    """Recall of the critical class; with none, the worst recall over all classes."""
    labels = None if critical_label is None else [critical_label]
    per_class = recall_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    return float(np.min(per_class))


def primary_scoring(n_classes: int) -> str:
    return "roc_auc" if n_classes == 2 else "roc_auc_ovr"


@dataclass(frozen=True)
class SearchResult:
    family: str
    best_params: dict[str, Any]
    cv_score_mean: float
    """Mean CV ROC AUC of the best grid point."""
    cv_score_std: float
    cv_recall_mean: float
    """Mean CV recall of the critical class at the best grid point."""
    cv_recall_std: float
    estimator: Any
    """The best grid point refitted on the whole training split."""
    trials: list[dict[str, Any]]
    """Every grid point with its CV scores, for the run's artifact."""
    predict_latency_ms: float = float("nan")
    """Fastest of repeated one-row predictions with the runtime the family would be
    served with: the model's own cost per request, and (unlike a mean or median) barely
    moved by a busy machine. Set by `measure_latencies`, which times all families in
    turns."""
    serving_runtime: str = "sklearn"
    """The runtime `predict_latency_ms` was measured with: `onnx` where the family's ONNX
    copy passed parity (it would be served with ONNX Runtime), else `sklearn`."""


def search(
    candidate: Candidate,
    x_train: npt.NDArray[np.float64],
    y_train: npt.NDArray[np.int64],
    *,
    folds: int,
    seed: int,
    critical_label: int | None,
    n_jobs: int,
) -> SearchResult:
    n_classes = int(np.unique(y_train).size)
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    grid = GridSearchCV(
        candidate.estimator,
        candidate.param_grid,
        scoring={
            "auc": primary_scoring(n_classes),
            "critical_recall": make_scorer(critical_recall, critical_label=critical_label),
        },
        refit="auc",
        cv=cv,
        n_jobs=n_jobs,
    )
    grid.fit(x_train, y_train)
    results = grid.cv_results_
    best = int(grid.best_index_)
    trials: list[dict[str, Any]] = [
        {
            "params": {k: _plain(v) for k, v in results["params"][i].items()},
            "cv_auc_mean": float(results["mean_test_auc"][i]),
            "cv_auc_std": float(results["std_test_auc"][i]),
            "cv_critical_recall_mean": float(results["mean_test_critical_recall"][i]),
            "cv_critical_recall_std": float(results["std_test_critical_recall"][i]),
            "rank": int(results["rank_test_auc"][i]),
        }
        for i in range(len(results["params"]))
    ]
    return SearchResult(
        family=candidate.family,
        best_params=trials[best]["params"],
        cv_score_mean=trials[best]["cv_auc_mean"],
        cv_score_std=trials[best]["cv_auc_std"],
        cv_recall_mean=trials[best]["cv_critical_recall_mean"],
        cv_recall_std=trials[best]["cv_critical_recall_std"],
        estimator=grid.best_estimator_,
        trials=trials,
    )


Predict = Callable[[npt.NDArray[np.float64]], object]
"""Class probabilities of some rows, with one runtime."""


def measure_latencies(
    results: Sequence[SearchResult],
    row: npt.NDArray[np.float64],
    repeats: int,
    rounds: int = 5,
    predictors: Sequence[tuple[str, Predict]] | None = None,
) -> list[SearchResult]:
    """Each family's single-row prediction latency, timed in turns (a few calls of each,
    `rounds` times over): a busy spell then slows every family alike, and their ratio,
    which decides the choice, holds. Timed one family after another, a run under load
    once chose another family than the same run on a quiet machine.

    `predictors` gives, per family, the runtime it would be served with and its predict
    function; by default scikit-learn's `predict_proba`."""
    if predictors is None:
        predictors = [("sklearn", r.estimator.predict_proba) for r in results]
    for _, predict in predictors:
        predict(row)  # warm-up: first calls pay one-off allocations
    fastest = [float("inf")] * len(results)
    for _ in range(rounds):
        for i, (_, predict) in enumerate(predictors):
            for _ in range(max(1, repeats // rounds)):
                start = time.perf_counter()
                predict(row)
                fastest[i] = min(fastest[i], time.perf_counter() - start)
    return [
        replace(r, predict_latency_ms=s * 1000, serving_runtime=runtime)
        for r, s, (runtime, _) in zip(results, fastest, predictors, strict=True)
    ]


# Latencies closer than this factor count as equal, so timing noise cannot flip a choice.
SAME_SPEED_FACTOR = 1.25
# Latencies closer than this (ms) count as equal too: under ONNX Runtime every family
# predicts a row in 10-50 µs, where a few µs of timing noise flipped the choice from run
# to run, and a request's own path costs about 1 ms, so such differences serve no one.
SAME_SPEED_MS = 0.1


def choose(results: list[SearchResult], latency_margin: float) -> SearchResult:
    """The best CV score wins, unless others score within `latency_margin` of it: then the
    fastest of those wins, because serving pays the latency on every request. Near-ties
    of speed (within `SAME_SPEED_FACTOR`, or `SAME_SPEED_MS`) go back to the score."""
    if not results:
        raise ValueError("no candidate was searched")
    best_score = max(r.cv_score_mean for r in results)
    near_best = [r for r in results if r.cv_score_mean >= best_score - latency_margin]
    fastest = min(r.predict_latency_ms for r in near_best)
    bound = max(fastest * SAME_SPEED_FACTOR, fastest + SAME_SPEED_MS)
    as_fast = [r for r in near_best if r.predict_latency_ms <= bound]
    return max(as_fast, key=lambda r: r.cv_score_mean)


def _plain(value: Any) -> Any:
    """JSON- and MLflow-friendly parameter values (numpy scalars become Python ones)."""
    return value.item() if isinstance(value, np.generic) else value
