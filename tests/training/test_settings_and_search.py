from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from training.errors import ConfigError
from training.search import SearchResult, choose, critical_recall
from training.settings import TrainingSettings, build_parser, settings_from_args


def parse(argv: list[str], env: dict[str, str] | None = None) -> TrainingSettings:
    return settings_from_args(build_parser(env or {}).parse_args(argv))


def test_environment_sets_defaults_and_flags_override_them() -> None:
    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "SEED": "7", "SMOKE": "true"}
    settings = parse(["--seed", "9"], env)
    assert (settings.tracking_uri, settings.seed, settings.smoke) == ("http://mlflow:5000", 9, True)
    assert parse([], {}).seed == TrainingSettings().seed


def test_candidates_come_from_a_comma_separated_list() -> None:
    assert parse(["--candidates", "logreg, random_forest"]).candidates == (
        "logreg",
        "random_forest",
    )


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--cv-folds", "1"], "--cv-folds must be at least 2, got 1"),
        (["--candidates", "svm"], "--candidates svm: choose from logreg"),
        (["--min-malignant-recall", "1.5"], "--min-malignant-recall must be within"),
        (["--test-size", "0"], "--test-size must be between 0 and 1"),
    ],
)
def test_bad_settings_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(argv)


def result(family: str, score: float, latency: float) -> SearchResult:
    empty: dict[str, Any] = {}
    return SearchResult(family, empty, score, 0.0, 0.9, 0.01, latency, None, [])


def test_choose_takes_the_best_score_when_no_one_is_close() -> None:
    chosen = choose([result("slow", 0.99, 5.0), result("fast", 0.97, 0.3)], latency_margin=0.005)
    assert chosen.family == "slow"


def test_choose_prefers_the_faster_of_near_ties() -> None:
    candidates = [result("forest", 0.992, 5.0), result("logreg", 0.990, 0.3)]
    assert choose(candidates, latency_margin=0.005).family == "logreg"
    assert choose(candidates, latency_margin=0.001).family == "forest"


def test_choose_treats_latencies_within_noise_as_equal() -> None:
    candidates = [result("a", 0.992, 0.50), result("b", 0.990, 0.45)]
    assert choose(candidates, latency_margin=0.005).family == "a"


def test_critical_recall_of_one_class_and_of_the_worst_class() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    assert critical_recall(y_true, y_pred, 0) == 0.75
    assert critical_recall(y_true, y_pred, None) == 0.5
