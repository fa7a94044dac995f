"""The drift profile's format: bins with open ends, discrete and constant features, and a
file the predictor refuses when it is not what the contract describes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from contract.drift_profile import (
    FORMAT_VERSION,
    DriftProfile,
    InvalidProfile,
    ProfileRecord,
    bin_indices,
    build_profile,
    quantile_edges,
    record_of,
)
from tests.serving.conftest import breast_cancer


def test_deciles_of_a_continuous_feature_hold_a_tenth_of_the_rows_each() -> None:
    data = breast_cancer()
    profile = build_profile(data.x, data.feature_names)
    assert profile.rows == 569 and profile.feature_names == tuple(data.feature_names)
    radius = profile.features[0]
    assert radius.bins == 10
    assert list(radius.edges) == sorted(set(radius.edges))
    assert sum(radius.shares) == pytest.approx(1)
    assert max(abs(s - 0.1) for s in radius.shares) < 0.01


def test_every_value_falls_in_a_bin_open_at_both_ends() -> None:
    column = np.arange(100, dtype=np.float64)
    edges = quantile_edges(column)
    far = np.array([-1e300, column.min(), column.max(), 1e300])
    assert bin_indices(far, edges).tolist() == [0, 0, len(edges), len(edges)]
    # Right-closed bins: a value equal to an edge belongs to the bin below it.
    assert bin_indices(np.array(edges[:1]), edges).tolist() == [0]
    assert bin_indices(np.array([edges[0] + 1e-9]), edges).tolist() == [1]


def test_a_discrete_feature_gets_one_bin_per_value_and_no_empty_ones() -> None:
    column = np.array([0.0] * 70 + [1.0] * 30)
    profile = build_profile(column[:, None], ["flag"])
    assert profile.features[0].edges == (0.0,)
    assert profile.features[0].shares == pytest.approx((0.7, 0.3))
    three = np.repeat([1.0, 2.0, 3.0], [50, 30, 20])
    assert build_profile(three[:, None], ["level"]).features[0].shares == pytest.approx(
        (0.5, 0.3, 0.2)
    )


def test_a_constant_feature_keeps_its_value_so_larger_served_values_show() -> None:
    profile = build_profile(np.full((10, 1), 5.0), ["constant"])
    assert profile.features[0].edges == (5.0,)
    assert profile.features[0].shares == (1.0, 0.0)
    assert bin_indices(np.array([5.0, 6.0]), profile.features[0].edges).tolist() == [0, 1]


def test_the_profile_round_trips_through_its_json_with_its_hash() -> None:
    data = breast_cancer()
    profile = build_profile(data.x, data.feature_names)
    text = profile.to_json()
    assert json.loads(text)["format_version"] == FORMAT_VERSION
    assert DriftProfile.from_json(text) == profile
    record = record_of(text)
    assert ProfileRecord.from_metadata({"drift_profile": record.as_metadata()}) == record
    assert ProfileRecord.from_metadata({}) is None
    assert ProfileRecord.from_metadata({"drift_profile": "yes"}) is None


def _one_feature(**changes: object) -> str:
    raw: dict[str, object] = {
        "format_version": FORMAT_VERSION,
        "rows": 10,
        "features": [{"name": "a", "edges": [1.0, 2.0], "shares": [0.3, 0.3, 0.4]}],
    }
    feature = dict(raw["features"][0])  # type: ignore[index]
    for key in ("edges", "shares", "name"):
        if key in changes:
            feature[key] = changes.pop(key)
    raw["features"] = [feature]
    raw.update(changes)
    return json.dumps(raw)


def test_a_well_formed_file_parses() -> None:
    assert DriftProfile.from_json(_one_feature()).features[0].bins == 3


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("not json", "not JSON"),
        ("[]", "not a JSON object"),
        (_one_feature(format_version=2), "format_version 2"),
        (_one_feature(features=[]), "lists no features"),
        (_one_feature(rows=0), "positive count"),
        (_one_feature(edges=[2.0, 1.0]), "strictly increasing"),
        (_one_feature(edges=[1.0, float("inf")]), "finite"),
        (_one_feature(shares=[0.5, 0.5]), "need 3 shares"),
        (_one_feature(shares=[0.5, 0.5, 0.5]), "sum to 1"),
        (_one_feature(edges="1,2"), "numeric edges"),
        (_one_feature(name=3), "with a name"),
    ],
)
def test_a_file_outside_the_contract_is_refused_saying_why(text: str, message: str) -> None:
    with pytest.raises(InvalidProfile, match=message):
        DriftProfile.from_json(text)


def test_bins_outside_the_range_are_refused() -> None:
    with pytest.raises(ValueError, match="bins must be within"):
        quantile_edges(np.arange(10.0), bins=50)
