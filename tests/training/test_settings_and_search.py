from __future__ import annotations

import time
from typing import Any

import numpy as np
import pytest

from training.errors import ConfigError
from training.search import SearchResult, choose, critical_recall, measure_latencies
from training.settings import TrainingSettings, build_parser, settings_from_args


def parse(argv: list[str], env: dict[str, str] | None = None) -> TrainingSettings:
    return settings_from_args(build_parser(env or {}).parse_args(argv))


def test_environment_sets_defaults_and_flags_override_them() -> None:
    env = {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "SEED": "7", "SMOKE": "true"}
    settings = parse(["--seed", "9"], env)
    assert (settings.tracking_uri, settings.seed, settings.smoke) == ("http://mlflow:5000", 9, True)
    assert parse([], {}).seed == TrainingSettings().seed


def test_onnx_parity_tolerance_defaults_to_1e_6_and_reads_its_variable() -> None:
    assert parse([]).onnx_parity_tolerance == 1e-6
    assert parse([], {"ONNX_PARITY_TOLERANCE": "1e-4"}).onnx_parity_tolerance == 1e-4


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
        (["--onnx-parity-tolerance=-1e-6"], "--onnx-parity-tolerance must be within"),
    ],
)
def test_bad_settings_are_config_errors(argv: list[str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(argv)


def result(family: str, score: float, latency: float, estimator: Any = None) -> SearchResult:
    return SearchResult(
        family=family,
        best_params={},
        cv_score_mean=score,
        cv_score_std=0.0,
        cv_recall_mean=0.9,
        cv_recall_std=0.01,
        estimator=estimator,
        trials=[],
        predict_latency_ms=latency,
    )


class Sleeper:
    """An estimator whose predict_proba takes at least `seconds`."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def predict_proba(self, rows: Any) -> Any:
        self.calls += 1
        deadline = time.perf_counter() + self.seconds
        while time.perf_counter() < deadline:
            pass
        return np.zeros((len(rows), 2))


def test_latencies_are_the_fastest_call_of_each_timed_in_turns() -> None:
    slow, fast = Sleeper(0.004), Sleeper(0.0005)
    searched = [result("slow", 0.99, float("nan"), slow), result("fast", 0.99, float("nan"), fast)]

    timed = measure_latencies(searched, np.zeros((1, 3)), repeats=10, rounds=5)

    assert [r.family for r in timed] == ["slow", "fast"]
    assert 4.0 <= timed[0].predict_latency_ms < 40.0
    assert 0.5 <= timed[1].predict_latency_ms < 4.0
    assert slow.calls == fast.calls == 1 + 10  # a warm-up, then 5 turns of 2 calls


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


def test_latencies_a_tenth_of_a_millisecond_apart_count_as_equal() -> None:
    # Under ONNX Runtime: 0.012 ms against 0.030 ms is 2.5x, and noise; the score decides.
    results = [result("logreg", 0.996, 0.030), result("boosting", 0.994, 0.012)]
    assert choose(results, latency_margin=0.005).family == "logreg"
    # A real difference still wins: 8 ms against 0.03 ms.
    results = [result("forest", 0.996, 8.0), result("logreg", 0.994, 0.030)]
    assert choose(results, latency_margin=0.005).family == "logreg"
