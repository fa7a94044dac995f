"""How far the canary's predicted-class mix drifts from stable's: Jensen-Shannon distance;
and how far each version's inputs drift from its training split: the population
stability index (PSI), as the chart's recording rule computes it.

For the class shares P (stable) and Q (canary) over the union of classes seen by
either, with M = (P + Q) / 2 and logarithms to base 2:

    JSD(P, Q) = 1/2 * sum_i P_i log2(P_i / M_i) + 1/2 * sum_i Q_i log2(Q_i / M_i)
    distance  = sqrt(JSD(P, Q))

Why this measure rather than the population stability index: it is symmetric,
bounded in [0, 1] (0 = the same mix, 1 = no class in common), and defined when a
class is missing on one side (M_i > 0 wherever P_i or Q_i is), so it needs no
smoothing constant, which PSI does (its log(P_i / Q_i) is infinite for an empty
bin). Its square root is a metric, so thresholds read as distances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

PSI_FLOOR = 0.0001
"""Both shares of a bin are floored at this before the PSI sum (the chart's rule does the
same): an empty bin adds a large, finite term instead of an infinite one."""


def class_shares(counts: Mapping[str, float], classes: list[str]) -> list[float]:
    """Shares of `classes` in `counts` (missing classes count 0); empty counts are an error."""
    total = sum(max(counts.get(name, 0.0), 0.0) for name in classes)
    if total <= 0:
        raise ValueError("no predictions to take shares of")
    return [max(counts.get(name, 0.0), 0.0) / total for name in classes]


def jensen_shannon_distance(stable: Mapping[str, float], canary: Mapping[str, float]) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two class-count mappings."""
    classes = sorted(set(stable) | set(canary))
    p = class_shares(stable, classes)
    q = class_shares(canary, classes)
    divergence = 0.0
    for p_i, q_i in zip(p, q, strict=True):
        m_i = (p_i + q_i) / 2
        if p_i > 0:
            divergence += 0.5 * p_i * math.log2(p_i / m_i)
        if q_i > 0:
            divergence += 0.5 * q_i * math.log2(q_i / m_i)
    # Rounding can leave a tiny negative (identical mixes) or a hair above 1.
    return math.sqrt(min(max(divergence, 0.0), 1.0))


def population_stability_index(
    served: Mapping[str, float], reference: Mapping[str, float], floor: float = PSI_FLOOR
) -> float:
    """PSI of served row counts by bin against the reference shares by bin:
    sum over bins (p - q) * ln(p / q), with p and q floored at `floor`."""
    total = sum(max(v, 0.0) for v in served.values())
    if total <= 0:
        raise ValueError("no served rows to take shares of")
    psi = 0.0
    for name in set(served) | set(reference):
        p = max(max(served.get(name, 0.0), 0.0) / total, floor)
        q = max(reference.get(name, 0.0), floor)
        psi += (p - q) * math.log(p / q)
    return psi


def feature_psi(
    served: Mapping[tuple[str, str], float], reference: Mapping[tuple[str, str], float]
) -> dict[str, float]:
    """PSI per feature from counts and shares keyed by (feature, bin); features without
    served rows or without a reference are left out."""
    by_feature: dict[str, tuple[dict[str, float], dict[str, float]]] = {}
    for (feature, bin_), value in served.items():
        by_feature.setdefault(feature, ({}, {}))[0][bin_] = value
    for (feature, bin_), value in reference.items():
        by_feature.setdefault(feature, ({}, {}))[1][bin_] = value
    return {
        feature: population_stability_index(counts, shares)
        for feature, (counts, shares) in sorted(by_feature.items())
        if shares and sum(counts.values()) > 0
    }
