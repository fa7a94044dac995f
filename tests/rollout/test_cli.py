"""The command line: flags, exit codes, output format, and a light import."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import pytest

from rollout.__main__ import main
from tests.rollout.fake_prometheus import (
    ERRORING,
    GARBAGE,
    HEALTHY,
    QUIET,
    CannedPrometheus,
    VersionNumbers,
)
from tests.support import REPO_ROOT, free_port


def test_importing_the_rollout_stays_light() -> None:
    """No KServe, MLflow, Kubernetes client or numpy on import, and nothing of the
    predictor: the URIs and names both read come from the contract."""
    probe = (
        "import sys, rollout, rollout.__main__, rollout.commands\n"
        "heavy = {'kserve', 'mlflow', 'kubernetes', 'numpy', 'sklearn', 'fastapi'}\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & heavy))\n"
        "print(sorted(m for m in sys.modules if m.startswith('serving.')"
        " and not m.startswith('rollout')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO_ROOT, check=True
    )
    assert result.stdout.splitlines() == ["[]", "[]"]


def test_the_old_module_name_still_runs_and_warns() -> None:
    """`python -m serving.rollout` is the deprecated alias of `python -m rollout`."""
    result = subprocess.run(
        [sys.executable, "-m", "serving.rollout", "--help"],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        check=False,
    )
    assert result.returncode == 0
    assert "status" in result.stdout
    assert "`python -m serving.rollout` is deprecated" in result.stderr
    assert "run `python -m rollout`" in result.stderr


def test_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in ("status", "start", "analyze", "promote", "rollback", "auto"):
        assert command in out
    assert "3 inconclusive" in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["start", "--version", "seven"], "--version must be a registry version number"),
        (["start", "--percent", "0"], "--percent must be within 1..99"),
        (["start", "--percent", "100"], "100 is `promote`"),
        (["auto", "--steps", "10,50"], "last step must be 100"),
        (["auto", "--steps", "10,x,100"], "comma-separated integers"),
        (["auto", "--soak", "60", "--step-timeout", "30"], "--step-timeout must be at least"),
        (["analyze", "--window", "5"], "not a Prometheus duration"),
        (["analyze", "--stable", "1"], "--stable needs --canary"),
        (["analyze", "--min-requests", "0", "--canary", "2"], "--min-requests must be at least 1"),
        (["analyze", "--max-class-drift", "1.5", "--canary", "2"], "--max-class-drift"),
        (["status", "--model-name", " "], "--model-name is empty"),
    ],
)
def test_bad_flags_are_exit_2_with_a_reason(
    argv: list[str], message: str, caplog: pytest.LogCaptureFixture
) -> None:
    assert main(argv) == 2
    assert message in caplog.text


def test_comparing_a_version_with_itself_is_refused(caplog: pytest.LogCaptureFixture) -> None:
    assert main(["analyze", "--stable", "3", "--canary", "3"]) == 2
    assert "same version" in caplog.text


def test_an_unreachable_prometheus_is_exit_4(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["analyze", "--stable", "1", "--canary", "2", "--prometheus-url", url]) == 4
    assert f"Prometheus at {url} is unreachable" in caplog.text


@pytest.fixture
def prometheus_with() -> Iterator[object]:
    contexts = []

    def make(canary: VersionNumbers) -> CannedPrometheus:
        context = CannedPrometheus({"1": HEALTHY, "2": canary}).running()
        contexts.append(context)
        return context.__enter__()

    yield make
    for context in contexts:
        context.__exit__(None, None, None)


@pytest.mark.parametrize(
    ("canary", "code", "verdict"),
    [(HEALTHY, 0, "pass"), (ERRORING, 1, "fail"), (QUIET, 3, "inconclusive")],
)
def test_analyze_exit_code_table_and_json_line(
    prometheus_with: object,
    capsys: pytest.CaptureFixture[str],
    canary: VersionNumbers,
    code: int,
    verdict: str,
) -> None:
    prometheus = prometheus_with(canary)  # type: ignore[operator]
    argv = ["analyze", "--stable", "1", "--canary", "2", "--prometheus-url", prometheus.url]
    assert main([*argv, "--model-name", "breast-cancer", "--window", "10m"]) == code
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "canary analysis of breast-cancer: stable v1 vs canary v2, window 10m"
    assert lines[1].split() == ["check", "stable", "canary", "threshold", "result"]
    assert [line.split()[0] for line in lines[2:6]] == [
        "requests",
        "success_ratio",
        "p99_latency",
        "class_drift",
    ]
    assert lines[-2].startswith(f"verdict: {verdict.upper()}")
    report = json.loads(lines[-1])
    assert (report["verdict"], report["stable_version"], report["canary_version"]) == (
        verdict,
        "1",
        "2",
    )
    assert set(report["checks"]) == {"requests", "success_ratio", "p99_latency", "class_drift"}
    assert report["canary"]["requests"] == canary.outcomes


def test_an_unreachable_registry_is_exit_4(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    url = f"http://127.0.0.1:{free_port()}"
    assert main(["analyze", "--stable", "champion", "--canary", "2", "--tracking-uri", url]) == 4
    assert f"MLflow at {url} failed to read the registered model" in caplog.text


@pytest.mark.parametrize("case", sorted(GARBAGE))
def test_a_prometheus_answering_garbage_is_exit_4_with_a_one_line_reason(
    case: str, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    answer, reason = GARBAGE[case]
    with CannedPrometheus({}, garbage=answer).running() as prometheus:
        code = main(
            ["analyze", "--stable", "1", "--canary", "2", "--prometheus-url", prometheus.url]
        )
    assert code == 4
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, caplog.text
    message = errors[0].getMessage()
    assert reason in message
    assert f"Prometheus at {prometheus.url}" in message
    assert "\n" not in message and errors[0].exc_info is None
    assert capsys.readouterr().out == ""  # no verdict printed from garbage


def test_a_huge_garbage_answer_is_quoted_short(caplog: pytest.LogCaptureFixture) -> None:
    answer = {"status": "success", "data": {"resultType": "vector", "result": "x" * 100_000}}
    with CannedPrometheus({}, garbage=answer).running() as prometheus:
        code = main(
            ["analyze", "--stable", "1", "--canary", "2", "--prometheus-url", prometheus.url]
        )
    assert code == 4
    assert "not a list" in caplog.text
    assert len(caplog.text) < 2_000
