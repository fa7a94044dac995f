"""The chart's PrometheusRule with Prometheus' own tooling: `promtool check rules`, and
`promtool test rules` with a firing and a quiet case for every alert."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.render import Rendered
from tests.support import require_binary

pytestmark = pytest.mark.chart

ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def write_rules(rendered: Rendered, folder: Path) -> Path:
    """The PrometheusRule's spec is a Prometheus rule file."""
    rule = rendered.one("PrometheusRule")
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def alert_names(rendered: Rendered) -> set[str]:
    rule = rendered.one("PrometheusRule")
    return {r["alert"] for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r}


def test_the_issue_s_alerts_are_there(default_render: Rendered) -> None:
    assert alert_names(default_render) >= {
        "InferenceErrorRatioHigh",
        "InferenceLatencyP99High",
        "InferencePredictorDown",
        "InferenceModelNotLoaded",
        "InferenceCanaryErrorRatioWorse",
        "InferenceCanaryLatencyWorse",
    }


def test_promtool_check_rules_accepts_the_rendered_rules(
    default_render: Rendered, tmp_path: Path
) -> None:
    promtool = require_binary("promtool")
    rules = write_rules(default_render, tmp_path)
    done = subprocess.run(
        [promtool, "check", "rules", str(rules)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 9 rules found" in done.stdout


def test_promtool_unit_tests_pass(default_render: Rendered, tmp_path: Path) -> None:
    promtool = require_binary("promtool")
    write_rules(default_render, tmp_path)
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    done = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case(default_render: Rendered) -> None:
    cases: dict[str, dict[str, int]] = {}
    spec: dict[str, Any] = yaml.safe_load(ALERT_TESTS.read_text())
    for group in spec["tests"]:
        for case in group.get("alert_rule_test", []):
            counts = cases.setdefault(case["alertname"], {"firing": 0, "quiet": 0})
            counts["firing" if case.get("exp_alerts") else "quiet"] += 1
    for alert in alert_names(default_render):
        assert cases.get(alert, {}).get("firing"), f"{alert} is never tested firing"
        assert cases.get(alert, {}).get("quiet"), f"{alert} is never tested quiet"


def test_promtool_tests_fail_when_an_expectation_is_wrong(
    default_render: Rendered, tmp_path: Path
) -> None:
    """The unit tests can fail: a threshold change is caught."""
    promtool = require_binary("promtool")
    rule = default_render.one("PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            if r.get("alert") == "InferenceErrorRatioHigh":
                r["expr"] = r["expr"].replace("> 0.05", "> 0.2")
    (tmp_path / "rules.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    shutil.copy(ALERT_TESTS, tmp_path / ALERT_TESTS.name)
    done = subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode != 0
    assert "InferenceErrorRatioHigh" in done.stdout + done.stderr
