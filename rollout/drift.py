"""How far the canary's predicted-class mix drifts from stable's: Jensen-Shannon distance.

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
