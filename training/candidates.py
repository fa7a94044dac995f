"""The model families searched, each with its hyper-parameter grid.

Every estimator is fitted on float64 arrays without column names, so predicting on a
numpy array needs no pandas (the predictor relies on that)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sklearn.base import BaseEstimator
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler


@dataclass(frozen=True)
class Candidate:
    family: str
    estimator: BaseEstimator
    param_grid: dict[str, list[Any]]


def build_candidates(families: tuple[str, ...], smoke: bool, seed: int) -> list[Candidate]:
    builders = {
        "logreg": _logreg,
        "random_forest": _random_forest,
        "hist_gradient_boosting": _hist_gradient_boosting,
    }
    return [builders[family](smoke, seed) for family in families]


def _logreg(smoke: bool, seed: int) -> Candidate:
    # Scaling inside the pipeline: the scaler is fitted per CV fold, never on test data.
    pipeline = Pipeline(
        [
            ("scale", StandardScaler()),
            ("model", LogisticRegression(max_iter=5000, random_state=seed)),
        ]
    )
    grid: dict[str, list[Any]] = (
        {"model__C": [0.1, 1.0]}
        if smoke
        else {"model__C": [0.01, 0.1, 1.0, 10.0, 100.0], "model__class_weight": [None, "balanced"]}
    )
    return Candidate("logreg", pipeline, grid)


def _random_forest(smoke: bool, seed: int) -> Candidate:
    forest = RandomForestClassifier(random_state=seed, n_jobs=1)
    grid: dict[str, list[Any]] = (
        {"n_estimators": [50], "max_depth": [None]}
        if smoke
        else {"n_estimators": [150], "max_depth": [None, 8], "min_samples_leaf": [1, 3]}
    )
    return Candidate("random_forest", forest, grid)


def _hist_gradient_boosting(smoke: bool, seed: int) -> Candidate:
    boosting = HistGradientBoostingClassifier(random_state=seed, early_stopping=False)
    grid: dict[str, list[Any]] = (
        {"max_iter": [50], "learning_rate": [0.1]}
        if smoke
        else {"max_iter": [150], "learning_rate": [0.05, 0.1], "max_leaf_nodes": [15, 31]}
    )
    return Candidate("hist_gradient_boosting", boosting, grid)
