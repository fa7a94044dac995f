from __future__ import annotations

import math

import pytest

from rollout.analysis import (
    Thresholds,
    Verdict,
    VersionStats,
    combine,
    evaluate,
)

MIX = {"malignant": 37.0, "benign": 63.0}
T = Thresholds(
    min_requests=100,
    max_success_drop=0.01,
    max_p99_ratio=1.5,
    p99_slack_seconds=0.01,
    max_class_drift=0.1,
)


def stats(
    version: str,
    *,
    ok: float = 1000,
    invalid: float = 0,
    error: float = 0,
    p99: float | None = 0.005,
    classes: dict[str, float] | None = None,
) -> VersionStats:
    scale = (ok + invalid + error) / 100
    return VersionStats(
        version=version,
        outcomes={"ok": ok, "invalid": invalid, "error": error},
        p99_seconds=p99,
        classes=classes if classes is not None else {k: v * scale for k, v in MIX.items()},
    )


def statuses(stable: VersionStats, canary: VersionStats, t: Thresholds = T) -> dict[str, str]:
    analysis = evaluate(stable, canary, t)
    return {"verdict": analysis.verdict.value} | {c.name: c.status.value for c in analysis.checks}


def test_healthy_canary_passes_every_check() -> None:
    assert statuses(stats("1"), stats("2", ok=200)) == {
        "verdict": "pass",
        "requests": "pass",
        "success_ratio": "pass",
        "p99_latency": "pass",
        "class_drift": "pass",
    }


def test_too_few_canary_requests_is_inconclusive_even_when_everything_else_looks_fine() -> None:
    result = statuses(stats("1"), stats("2", ok=99))
    assert result == {
        "verdict": "inconclusive",
        "requests": "inconclusive",
        "success_ratio": "inconclusive",
        "p99_latency": "inconclusive",
        "class_drift": "inconclusive",
    }


def test_too_few_requests_is_inconclusive_even_when_the_few_all_failed() -> None:
    analysis = evaluate(stats("1"), stats("2", ok=0, error=20), T)
    assert analysis.verdict is Verdict.INCONCLUSIVE
    assert "too few requests" in analysis.check("success_ratio").detail
    assert "canary answered 20 < 100 requests" in analysis.reason


def test_too_few_stable_requests_is_inconclusive_too() -> None:
    assert statuses(stats("1", ok=50), stats("2", ok=500))["verdict"] == "inconclusive"


def test_exactly_min_requests_is_enough() -> None:
    assert statuses(stats("1"), stats("2", ok=100))["requests"] == "pass"


@pytest.mark.parametrize(
    "canary",
    [
        # 1e308 + 1e308 overflows to inf; ok / inf = 0 and inf / inf = nan
        VersionStats("2", {"ok": 1e308, "invalid": 1e308}, 0.005, {"a": 1e308, "b": 1e308}),
        VersionStats("2", {"ok": 1e308}, 0.005, {"a": 1e308, "b": 1e308}),
        VersionStats("2", {"ok": math.inf}, 0.005, {"a": 500.0, "b": 500.0}),
        VersionStats("2", {"ok": 1000.0, "error": math.nan}, 0.005, {"a": 500.0, "b": 500.0}),
        VersionStats("2", {"ok": 1000.0, "error": -900.0}, 0.005, {"a": 500.0, "b": 500.0}),
    ],
    ids=["overflowing-sum", "overflowing-classes", "inf", "nan", "negative"],
)
def test_counts_that_overflow_or_are_no_counts_never_pass(canary: VersionStats) -> None:
    stable = VersionStats("1", {"ok": 1000.0}, 0.005, {"a": 500.0, "b": 500.0})
    analysis = evaluate(stable, canary, T)
    assert analysis.verdict is not Verdict.PASS
    assert "canary counts are not finite non-negative numbers" in analysis.reason
    assert all(c.status is not Verdict.PASS for c in analysis.checks)


def test_no_traffic_at_all_is_inconclusive() -> None:
    empty = VersionStats(version="2")
    analysis = evaluate(stats("1"), empty, T)
    assert analysis.verdict is Verdict.INCONCLUSIVE
    assert analysis.canary.success_ratio is None


def test_canary_rejecting_requests_as_invalid_fails_the_success_ratio() -> None:
    # A schema-incompatible canary answers 400 to the requests stable serves: `invalid`.
    analysis = evaluate(stats("1"), stats("2", ok=0, invalid=300), T)
    check = analysis.check("success_ratio")
    assert (analysis.verdict, check.status) == (Verdict.FAIL, Verdict.FAIL)
    assert (check.stable, check.canary) == (1.0, 0.0)
    assert check.limit == pytest.approx(0.99)
    assert "invalid 300" in check.detail


def test_server_errors_fail_the_success_ratio() -> None:
    assert statuses(stats("1"), stats("2", ok=180, error=20))["success_ratio"] == "fail"


def test_success_ratio_is_judged_against_stable_so_client_garbage_does_not_fail_a_canary() -> None:
    # 5 % of the clients' requests are malformed on both versions alike.
    assert statuses(stats("1", ok=950, invalid=50), stats("2", ok=190, invalid=10)) == {
        "verdict": "pass",
        "requests": "pass",
        "success_ratio": "pass",
        "p99_latency": "pass",
        "class_drift": "pass",
    }


@pytest.mark.parametrize(
    ("canary_ok", "canary_bad", "expected"),
    [(990, 10, "pass"), (989, 11, "fail")],
)
def test_success_ratio_threshold_is_inclusive(
    canary_ok: float, canary_bad: float, expected: str
) -> None:
    t = Thresholds(min_requests=100, max_success_drop=0.01)
    result = statuses(stats("1"), stats("2", ok=canary_ok, error=canary_bad), t)
    assert result["success_ratio"] == expected


@pytest.mark.parametrize(
    ("canary_p99", "expected"),
    [(0.0174, "pass"), (0.0175, "pass"), (0.0176, "fail"), (0.5, "fail")],
)
def test_p99_may_grow_by_the_ratio_plus_the_slack(canary_p99: float, expected: str) -> None:
    # stable 5 ms: allowed 5 ms * 1.5 + 10 ms = 17.5 ms
    result = statuses(stats("1", p99=0.005), stats("2", ok=200, p99=canary_p99))
    assert result["p99_latency"] == expected
    assert result["verdict"] == expected


def test_p99_without_latency_samples_is_inconclusive_not_a_pass() -> None:
    for stable_p99, canary_p99 in [(0.005, None), (None, 0.005), (0.005, math.nan)]:
        analysis = evaluate(stats("1", p99=stable_p99), stats("2", ok=200, p99=canary_p99), T)
        assert analysis.check("p99_latency").status is Verdict.INCONCLUSIVE
        assert analysis.verdict is Verdict.INCONCLUSIVE


def test_flipped_class_mix_fails_the_drift_check_alone() -> None:
    flipped = {"malignant": 126.0, "benign": 74.0}
    analysis = evaluate(stats("1"), stats("2", ok=200, classes=flipped), T)
    assert {c.name: c.status for c in analysis.checks} == {
        "requests": Verdict.PASS,
        "success_ratio": Verdict.PASS,
        "p99_latency": Verdict.PASS,
        "class_drift": Verdict.FAIL,
    }
    drift = analysis.check("class_drift")
    assert drift.canary is not None and drift.canary > 0.2
    assert "malignant 0.37->0.63" in drift.detail
    assert analysis.reason.startswith("class_drift: distance")


def test_small_sampling_wobble_in_the_mix_passes() -> None:
    wobble = {"malignant": 82.0, "benign": 118.0}  # 41 % vs 37 %
    assert statuses(stats("1"), stats("2", ok=200, classes=wobble))["class_drift"] == "pass"


def test_drift_needs_enough_predicted_rows() -> None:
    # Enough requests, but the canary predicted almost nothing (it rejected most of them).
    analysis = evaluate(stats("1"), stats("2", ok=10, invalid=190, classes={"malignant": 10}), T)
    assert analysis.check("class_drift").status is Verdict.INCONCLUSIVE
    assert analysis.verdict is Verdict.FAIL  # the success ratio already failed


def test_a_failure_outranks_an_inconclusive_check() -> None:
    assert combine([Verdict.PASS, Verdict.INCONCLUSIVE, Verdict.FAIL]) is Verdict.FAIL
    assert combine([Verdict.PASS, Verdict.INCONCLUSIVE]) is Verdict.INCONCLUSIVE
    assert combine([Verdict.PASS, Verdict.PASS]) is Verdict.PASS


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_requests": 0}, "--min-requests"),
        ({"max_success_drop": 1.5}, "--max-success-drop"),
        ({"max_p99_ratio": 0.5}, "--max-p99-ratio"),
        ({"p99_slack_seconds": -1}, "--p99-slack"),
        ({"max_class_drift": 2}, "--max-class-drift"),
    ],
)
def test_thresholds_out_of_range_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Thresholds(**kwargs)  # type: ignore[arg-type]


def with_psi(base: VersionStats, **psi: float) -> VersionStats:
    return VersionStats(base.version, base.outcomes, base.p99_seconds, base.classes, psi)


def test_input_drift_on_both_versions_alike_is_reported_not_failed() -> None:
    stable = with_psi(stats("1"), mean_radius=0.9, mean_area=0.05)
    canary = with_psi(stats("2", ok=200), mean_radius=0.85)
    analysis = evaluate(stable, canary, T)
    assert analysis.verdict is Verdict.PASS
    assert "both versions' inputs drift" in analysis.input_drift
    assert "stable top PSI 0.900 (mean_radius), canary top PSI 0.850" in analysis.input_drift
    assert "not the canary" in analysis.input_drift


def test_only_the_canary_drifting_names_its_training_data_and_still_passes() -> None:
    analysis = evaluate(with_psi(stats("1"), a=0.02), with_psi(stats("2", ok=200), a=0.6, b=0.1), T)
    assert analysis.verdict is Verdict.PASS
    assert analysis.input_drift.startswith("only the canary's inputs drift")
    assert analysis.canary.top_input_psi == ("a", 0.6)


@pytest.mark.parametrize(
    ("stable_psi", "canary_psi", "said"),
    [
        ({}, {}, "not measured: no drift profile"),
        ({"a": 0.01}, {}, "canary not measured; only one version counts"),
        ({"a": 0.01}, {"a": 0.03}, "inputs like training on both"),
        ({"a": 0.5}, {"a": 0.03}, "only the stable's inputs drift"),
        ({"a": 0.2}, {"a": 0.2}, "inputs like training on both"),  # the threshold is "above"
    ],
)
def test_every_input_drift_case_says_what_it_is(
    stable_psi: dict[str, float], canary_psi: dict[str, float], said: str
) -> None:
    analysis = evaluate(with_psi(stats("1"), **stable_psi), with_psi(stats("2"), **canary_psi), T)
    assert said in analysis.input_drift


def test_the_table_and_the_json_show_each_version_s_top_input_psi() -> None:
    from rollout.report import analysis_json, analysis_table

    analysis = evaluate(with_psi(stats("1"), a=0.02, b=0.3), with_psi(stats("2"), b=0.25), T)
    table = analysis_table(analysis, "m", "5m")
    row = next(line for line in table.splitlines() if line.startswith("input_psi (top)"))
    assert row.split() == ["input_psi", "(top)", "0.300", "b", "0.250", "b", "INFO"]
    assert f"  input_drift: {analysis.input_drift}" in table
    payload = analysis_json(analysis, "m", "5m")
    assert payload["stable"]["input_psi"] == {"a": 0.02, "b": 0.3}
    assert payload["input_drift"] == analysis.input_drift
    assert "input_drift" not in payload["checks"]  # reported, never judged
