"""The chart's PrometheusRule with Prometheus' own tooling: `promtool check rules`, and
`promtool test rules` with a firing and a quiet case for every alert."""

from __future__ import annotations

import copy
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from contract import metric_names as names
from demo import flow
from tests.chart import demo_rules
from tests.chart.render import Rendered, render, write_rule_groups, write_rules
from tests.support import REPO_ROOT, require_binary
from tests.test_docs import anchors

pytestmark = pytest.mark.chart

ALERT_TESTS = Path(__file__).with_name("alerts_test.yaml")


def promtool_test_rules(folder: Path) -> subprocess.CompletedProcess[str]:
    """`promtool test rules` of ALERT_TESTS against `folder/rules.yaml`."""
    promtool = require_binary("promtool")
    shutil.copy(ALERT_TESTS, folder / ALERT_TESTS.name)
    return subprocess.run(
        [promtool, "test", "rules", ALERT_TESTS.name],
        cwd=folder,
        capture_output=True,
        text=True,
        check=False,
    )


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
        "InferenceFeatureDrift",
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
    assert "SUCCESS: 12 rules found" in done.stdout


def test_promtool_unit_tests_pass(default_render: Rendered, tmp_path: Path) -> None:
    write_rules(default_render, tmp_path)
    done = promtool_test_rules(tmp_path)
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
    groups = copy.deepcopy(default_render.one("PrometheusRule")["spec"]["groups"])
    for group in groups:
        for r in group["rules"]:
            if r.get("alert") == "InferenceErrorRatioHigh":
                r["expr"] = r["expr"].replace("> 0.05", "> 0.2")
    write_rule_groups(groups, tmp_path)
    done = promtool_test_rules(tmp_path)
    assert done.returncode != 0
    assert "InferenceErrorRatioHigh" in done.stdout + done.stderr


def test_the_drift_tests_fail_when_the_psi_or_its_floor_is_wrong(
    default_render: Rendered, tmp_path: Path
) -> None:
    """The feature-drift cases catch a PSI without its floor (an empty bin would make it
    infinite) and a threshold the drifted case no longer crosses."""
    for old, new in (("0.0001)", "0)"), ("> 0.2", "> 5")):
        groups = copy.deepcopy(default_render.one("PrometheusRule")["spec"]["groups"])
        for group in groups:
            for r in group["rules"]:
                if r.get("record") == names.RECORDED_FEATURE_PSI or (
                    r.get("alert") == "InferenceFeatureDrift"
                ):
                    r["expr"] = r["expr"].replace(old, new)
        folder = tmp_path / new.strip("> )")
        folder.mkdir()
        write_rule_groups(groups, folder)
        done = promtool_test_rules(folder)
        assert done.returncode != 0, (old, new)
        assert "inference_feature_psi" in done.stdout + done.stderr or (
            "InferenceFeatureDrift" in done.stdout + done.stderr
        )


def test_the_drift_values_reach_the_rules() -> None:
    values = {"featureDriftPsiThreshold": 0.3, "featureDriftMinRows": 50, "featureDriftFor": "1h"}
    rule = render({"monitoring": {"prometheusRule": values}}).one("PrometheusRule")
    rules = {r.get("record") or r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert rules["InferenceFeatureDrift"]["expr"].strip().endswith("> 0.3")
    assert rules["InferenceFeatureDrift"]["for"] == "1h"
    assert rules[names.RECORDED_FEATURE_SERVED_SHARE]["expr"].strip().endswith(">= 50")


def test_every_alert_links_its_own_section_of_the_runbook(default_render: Rendered) -> None:
    runbook = REPO_ROOT / "docs" / "runbook.md"
    base = default_render.values["monitoring"]["prometheusRule"]["runbookUrl"]
    rule = default_render.one("PrometheusRule")
    links = {
        r["alert"]: r["annotations"].get("runbook_url", "")
        for group in rule["spec"]["groups"]
        for r in group["rules"]
        if "alert" in r
    }
    assert links and all(link.startswith(f"{base}#") for link in links.values()), links
    sections = anchors(runbook)
    missing = {alert: link for alert, link in links.items() if link.split("#")[1] not in sections}
    assert missing == {}, f"docs/runbook.md has no section for {missing}"


def test_the_runbook_url_follows_the_value() -> None:
    base = "https://git.example.com/mlops/blob/main/docs/runbook.md"
    rendered = render({"monitoring": {"prometheusRule": {"runbookUrl": base}}})
    rule = rendered.one("PrometheusRule")
    urls = [
        r["annotations"]["runbook_url"]
        for g in rule["spec"]["groups"]
        for r in g["rules"]
        if "alert" in r
    ]
    assert f"{base}#inferencepredictordown" in urls
    assert all(url.startswith(base) for url in urls)


def test_the_demo_loads_the_chart_s_own_rules() -> None:
    """demo/prometheus-rules.yaml is the chart's rendering; its scrapes carry the labels
    those rules select (the job of the chart's PodMonitor, the namespace)."""
    assert demo_rules.DEMO_RULES.read_text() == demo_rules.demo_rules_text(), (
        "demo/prometheus-rules.yaml is stale: python -m tests.chart.demo_rules"
    )
    rendered = render(demo_rules.VALUES, release=demo_rules.RELEASE, namespace=demo_rules.NAMESPACE)
    monitor = rendered.one("PodMonitor", "-predictor")["metadata"]["name"]
    assert f"{demo_rules.NAMESPACE}/{monitor}" == flow.SCRAPE_JOB
    assert flow.SCRAPE_NAMESPACE == demo_rules.NAMESPACE
    assert flow.RULES_FILE == demo_rules.DEMO_RULES
    assert rendered.values["modelName"] == flow.RULES_MODEL_NAME
