from __future__ import annotations

import numpy as np
import pytest

from training.evaluate import Evaluation
from training.gates import (
    ChampionComparison,
    GateResult,
    champion_gate,
    critical_recall_gate,
    cv_stability_gate,
    failed,
)


def evaluation(roc_auc: float = 0.99, critical_recall: float = 0.97) -> Evaluation:
    empty = np.zeros(0, dtype=np.int64)
    return Evaluation(
        accuracy=0.97,
        precision=0.97,
        recall=0.97,
        f1=0.97,
        roc_auc=roc_auc,
        critical_recall=critical_recall,
        y_true=empty,
        y_pred=empty,
        probabilities=np.zeros((0, 2)),
    )


def test_recall_gate_passes_at_the_threshold() -> None:
    gate = critical_recall_gate(evaluation(critical_recall=0.95), 0.95, "malignant_recall")
    assert gate == GateResult(
        "min_malignant_recall", True, 0.95, 0.95, "test malignant_recall 0.9500 >= 0.9500"
    )


def test_recall_gate_fails_when_malignant_recall_below_threshold() -> None:
    gate = critical_recall_gate(evaluation(critical_recall=0.9), 0.95, "malignant_recall")
    assert not gate.passed
    assert gate.detail == "test malignant_recall 0.9000 < 0.9500"


def test_stability_gate_fails_when_cv_recall_varies_too_much() -> None:
    gate = cv_stability_gate(0.08, 0.05, "malignant_recall")
    assert (gate.passed, gate.name, gate.value) == (False, "max_cv_malignant_recall_std", 0.08)
    assert cv_stability_gate(0.05, 0.05, "malignant_recall").passed


def test_champion_gate_passes_without_a_champion() -> None:
    gate = champion_gate(evaluation(), None, 0.0)
    assert gate.passed
    assert gate.detail == "no @champion yet"


@pytest.mark.parametrize(
    ("champion_auc", "champion_recall", "failing_metric"),
    [(0.995, 0.97, "roc_auc"), (0.99, 0.99, "critical recall")],
)
def test_champion_gate_fails_on_a_regression_of_either_metric(
    champion_auc: float, champion_recall: float, failing_metric: str
) -> None:
    champion = ChampionComparison("3", champion_auc, champion_recall)
    gate = champion_gate(evaluation(roc_auc=0.99, critical_recall=0.97), champion, 0.0)
    assert not gate.passed
    assert gate.detail.startswith(f"{failing_metric} ")
    assert "(version 3)" in gate.detail


def test_champion_gate_allows_a_drop_within_the_margin() -> None:
    champion = ChampionComparison("3", 0.995, 0.98)
    assert champion_gate(evaluation(roc_auc=0.99, critical_recall=0.97), champion, 0.01).passed
    assert not champion_gate(evaluation(roc_auc=0.99, critical_recall=0.97), champion, 0.005).passed


def test_champion_gate_fails_when_the_champion_cannot_be_scored() -> None:
    champion = ChampionComparison("2", None, None, error="X has 4 features, expecting 30")
    gate = champion_gate(evaluation(), champion, 0.0)
    assert not gate.passed
    assert "X has 4 features" in gate.detail


def test_failed_lists_only_failed_gates() -> None:
    ok = cv_stability_gate(0.01, 0.05, "r")
    bad = cv_stability_gate(0.2, 0.05, "r")
    assert failed([ok, bad, ok]) == [bad]
