"""The promotion gates: pure decisions on numbers, so every way to fail is unit-tested."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from training.evaluate import Evaluation

# Metrics are ratios of counts: 0.98 - 0.97 is 0.010000000000000009 in floating point.
# Comparisons allow this much so a value at the threshold counts as at it.
TOLERANCE = 1e-9


@dataclass(frozen=True)
class GateResult:
    name: str
    passed: bool
    value: float | None
    threshold: float | None
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ChampionComparison:
    """The current `@champion` scored on the same test split as the candidate."""

    version: str
    roc_auc: float | None
    critical_recall: float | None
    error: str | None = None
    """Why the champion could not be scored (for example another feature schema)."""


def critical_recall_gate(evaluation: Evaluation, minimum: float, metric: str) -> GateResult:
    value = evaluation.critical_recall
    passed = value >= minimum - TOLERANCE
    return GateResult(
        f"min_{metric}",
        passed,
        value,
        minimum,
        f"test {metric} {value:.4f} {'>=' if passed else '<'} {minimum:.4f}",
    )


def cv_stability_gate(cv_recall_std: float, maximum: float, metric: str) -> GateResult:
    passed = cv_recall_std <= maximum + TOLERANCE
    return GateResult(
        f"max_cv_{metric}_std",
        passed,
        cv_recall_std,
        maximum,
        f"CV {metric} std {cv_recall_std:.4f} {'<=' if passed else '>'} {maximum:.4f}",
    )


def champion_gate(
    evaluation: Evaluation, champion: ChampionComparison | None, max_regression: float
) -> GateResult:
    if champion is None:
        return GateResult("no_regression_vs_champion", True, None, None, "no @champion yet")
    if champion.error is not None:
        return GateResult(
            "no_regression_vs_champion",
            False,
            None,
            max_regression,
            f"@champion (version {champion.version}) could not be scored on this test split: "
            f"{champion.error}",
        )
    assert champion.roc_auc is not None and champion.critical_recall is not None
    drops = {
        "roc_auc": champion.roc_auc - evaluation.roc_auc,
        "critical recall": champion.critical_recall - evaluation.critical_recall,
    }
    worse = {name: drop for name, drop in drops.items() if drop > max_regression + TOLERANCE}
    worst = max(drops.values())
    if worse:
        detail = "; ".join(
            f"{name} {drop:.4f} below @champion (version {champion.version}), "
            f"more than the allowed {max_regression:.4f}"
            for name, drop in worse.items()
        )
    else:
        detail = (
            f"ROC AUC {evaluation.roc_auc:.4f} vs {champion.roc_auc:.4f}, critical recall "
            f"{evaluation.critical_recall:.4f} vs {champion.critical_recall:.4f} "
            f"(@champion version {champion.version})"
        )
    return GateResult("no_regression_vs_champion", not worse, worst, max_regression, detail)


def failed(gates: list[GateResult]) -> list[GateResult]:
    return [gate for gate in gates if not gate.passed]
