"""Short headless locust runs (seconds, bounded in time and count) against real
predictors: the exit code is the SLO verdict, and the answers are counted per version."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.loadtest.helpers import Predictor, Registered, run_locust

pytestmark = pytest.mark.integration


def test_a_run_against_a_real_predictor_passes_with_its_version_counted(
    predictors: tuple[Predictor, Predictor], registered: Registered, tmp_path: Path
) -> None:
    stable, _ = predictors

    run = run_locust(stable.url, tmp_path / "report")

    assert run.returncode == 0, run.stdout + run.stderr
    summary = run.summary
    assert summary["verdict"] == "pass"
    assert summary["failures"] == 0
    assert summary["requests"] > 0
    # Every infer answer passed the checks and came from version 1 (metadata is not counted).
    assert list(summary["versions"]) == [registered.versions[0]]
    assert 0 < summary["versions"][registered.versions[0]] <= summary["requests"]
    assert f"version {registered.versions[0]}" in run.stdout
    assert "SLO verdict: PASS (exit code 0)" in run.stdout
    stats = (run.out / "locust_stats.csv").read_text()
    version = registered.versions[0]
    assert f"infer 1 row @v{version}" in stats and f"infer 16 rows @v{version}" in stats
    assert "metadata" in stats
    assert (run.out / "report.html").stat().st_size > 0


def test_a_split_run_counts_both_versions_in_about_the_weighted_share(
    predictors: tuple[Predictor, Predictor], registered: Registered, tmp_path: Path
) -> None:
    stable, canary = predictors
    first, second = registered.versions

    run = run_locust(
        stable.url, tmp_path / "split", "--canary-host", canary.url, "--canary-weight", "20"
    )

    assert run.returncode == 0, run.stdout + run.stderr
    versions = run.summary["versions"]
    assert set(versions) == {first, second}
    answers = versions[first] + versions[second]
    assert answers >= 100, f"too few answers to judge a split: {versions}"
    # 20 % asked; with >= 100 answers, 10..30 % is more than four standard deviations wide.
    assert 0.10 <= versions[second] / answers <= 0.30, versions
    assert run.summary["version_share"][second] == pytest.approx(versions[second] / answers)
    # The report gives each answering version rows of its own.
    rows = {
        line.split(",")[1].strip('"'): int(line.split(",")[2])
        for line in (run.out / "locust_stats.csv").read_text().splitlines()[1:]
    }
    per_version = {
        version: sum(n for name, n in rows.items() if name.endswith(f" @v{version}"))
        for version in (first, second)
    }
    assert all(per_version.values()), rows
    # The CSV is written as locust quits, the summary a moment before: a request apart.
    assert abs(sum(per_version.values()) - answers) <= 0.02 * answers + 2, (per_version, versions)


def test_a_predictor_answering_errors_fails_the_slo_with_a_non_zero_exit(
    failing_predictor: Predictor, tmp_path: Path
) -> None:
    run = run_locust(failing_predictor.url, tmp_path / "errors", seconds=3)

    assert run.returncode == 1, run.stdout + run.stderr
    assert run.summary["verdict"] == "fail"
    assert run.summary["requests"] > 0
    assert run.summary["failures"] == run.summary["requests"]
    assert run.summary["versions"] == {}
    assert "SLO failure_ratio  FAIL" in run.stdout
    assert "HTTP 503" in (run.out / "locust_failures.csv").read_text()


def test_a_p99_above_its_limit_fails_a_run_without_failures(
    predictors: tuple[Predictor, Predictor], tmp_path: Path
) -> None:
    stable, _ = predictors

    run = run_locust(stable.url, tmp_path / "slow", "--slo-p99-ms", "0.001", seconds=3)

    assert run.returncode == 1, run.stdout + run.stderr
    assert run.summary["failures"] == 0
    checks = {c["name"]: c["passed"] for c in run.summary["checks"]}
    assert checks == {"requests": True, "failure_ratio": True, "p99_latency": False}


def test_max_requests_ends_the_run_before_its_time_limit(
    predictors: tuple[Predictor, Predictor], tmp_path: Path
) -> None:
    stable, _ = predictors

    run = run_locust(stable.url, tmp_path / "count", seconds=60, max_requests=40)

    assert run.returncode == 0, run.stdout + run.stderr
    # The limit counts requests sent; each of the 4 users may have had one in flight when
    # the run ended (not recorded) or may send one more before the stop takes effect.
    assert 36 <= run.summary["requests"] <= 44


def test_bad_flags_stop_locust_before_any_request(tmp_path: Path) -> None:
    # No predictor is needed: the flags are checked before the first user starts.
    run = run_locust("http://127.0.0.1:9", tmp_path / "flags", "--canary-weight", "10")

    assert run.returncode == 2
    assert "--canary-weight needs --canary-host" in run.stderr
    assert run.summary == {}
