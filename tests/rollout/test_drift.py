from __future__ import annotations

import math

import pytest
from scipy.spatial.distance import jensenshannon

from rollout.drift import jensen_shannon_distance


def test_identical_mixes_are_at_distance_zero() -> None:
    assert jensen_shannon_distance({"a": 30, "b": 70}, {"a": 3, "b": 7}) == pytest.approx(0.0)


def test_mixes_without_a_common_class_are_at_distance_one() -> None:
    assert jensen_shannon_distance({"malignant": 10}, {"benign": 5}) == pytest.approx(1.0)


def test_a_class_missing_on_one_side_needs_no_smoothing() -> None:
    # P = (1/2, 1/2), Q = (1, 0), M = (3/4, 1/4):
    # JSD = 1/2 (1/2 log2(2/3) + 1/2 log2 2) + 1/2 log2(4/3)
    expected = math.sqrt(0.5 * (0.5 * math.log2(2 / 3) + 0.5) + 0.5 * math.log2(4 / 3))
    assert jensen_shannon_distance({"a": 5, "b": 5}, {"a": 8}) == pytest.approx(expected)


@pytest.mark.parametrize(
    ("stable", "canary"),
    [
        ({"malignant": 212, "benign": 357}, {"malignant": 357, "benign": 212}),
        ({"malignant": 40, "benign": 60}, {"malignant": 45, "benign": 55}),
        ({"a": 1, "b": 2, "c": 3}, {"a": 3, "c": 1}),
    ],
)
def test_agrees_with_scipy(stable: dict[str, float], canary: dict[str, float]) -> None:
    classes = sorted(set(stable) | set(canary))
    p = [stable.get(c, 0) for c in classes]
    q = [canary.get(c, 0) for c in classes]
    assert jensen_shannon_distance(stable, canary) == pytest.approx(
        float(jensenshannon(p, q, base=2))
    )


def test_flipped_breast_cancer_mix_is_far_above_the_default_threshold() -> None:
    distance = jensen_shannon_distance(
        {"malignant": 212, "benign": 357}, {"malignant": 357, "benign": 212}
    )
    assert 0.2 < distance < 0.3


def test_no_predictions_is_an_error_not_a_distance() -> None:
    with pytest.raises(ValueError, match="no predictions"):
        jensen_shannon_distance({}, {"a": 1})


def test_psi_of_served_rows_like_the_reference_is_zero() -> None:
    from rollout.drift import population_stability_index

    shares = {"0": 0.25, "1": 0.25, "2": 0.5}
    assert population_stability_index({"0": 25, "1": 25, "2": 50}, shares) == pytest.approx(0)


def test_psi_floors_empty_bins_on_either_side_as_the_chart_s_rule_does() -> None:
    from rollout.drift import PSI_FLOOR, population_stability_index

    # Served: nothing in bin 0, 0.1 in bin 1 and 0.9 in bin 2; the reference has an
    # empty bin 3, where nothing was served either (it adds 0).
    reference = {"0": 0.5, "1": 0.25, "2": 0.25, "3": 0.0}
    expected = sum(
        (p - q) * math.log(p / q)
        for p, q in ((PSI_FLOOR, 0.5), (0.1, 0.25), (0.9, 0.25), (PSI_FLOOR, PSI_FLOOR))
    )
    served = {"0": 0, "1": 10, "2": 90, "3": 0}
    assert population_stability_index(served, reference) == pytest.approx(expected)
    assert expected > 2  # far above the 0.2 "significant shift"
    with pytest.raises(ValueError, match="no served rows"):
        population_stability_index({"0": 0}, reference)


def test_feature_psi_groups_by_feature_and_leaves_out_features_without_rows() -> None:
    from rollout.drift import feature_psi

    served = {("a", "0"): 50.0, ("a", "1"): 50.0, ("b", "0"): 0.0, ("b", "1"): 0.0, ("c", "0"): 9}
    reference = {("a", "0"): 0.5, ("a", "1"): 0.5, ("b", "0"): 0.5, ("b", "1"): 0.5}
    assert feature_psi(served, reference) == {"a": pytest.approx(0.0)}
