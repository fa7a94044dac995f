from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from rollout import queries
from tests.support import require_binary


def test_the_queries_select_by_model_name_and_version_only() -> None:
    selector = queries.version_selector("breast-cancer", "7")
    assert selector == 'model_name="breast-cancer", model_version="7"'
    assert queries.requests_by_outcome(selector, "5m") == (
        "sum by (outcome) (increase(inference_requests_total"
        '{model_name="breast-cancer", model_version="7"}[5m]))'
    )
    assert queries.latency_quantile(selector, "5m") == (
        "histogram_quantile(0.99, sum by (le) (rate(inference_request_duration_seconds_bucket"
        '{model_name="breast-cancer", model_version="7"}[5m])))'
    )
    assert queries.predictions_by_class(selector, "90s") == (
        "sum by (class_name) (increase(inference_predictions_total"
        '{model_name="breast-cancer", model_version="7"}[90s]))'
    )


def test_label_values_are_escaped() -> None:
    assert queries.label_value('a"b\\c\nd') == '"a\\"b\\\\c\\nd"'


@pytest.mark.parametrize("window", ["5m", "90s", "1h30m", "500ms", "2d"])
def test_prometheus_durations_are_accepted(window: str) -> None:
    assert queries.validate_window(window) == window


@pytest.mark.parametrize("window", ["", "5", "5 m", "m5", "0s", "-5m", "5m;drop"])
def test_other_windows_are_refused(window: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        queries.validate_window(window)


@pytest.mark.integration
def test_promtool_parses_every_query(tmp_path: Path) -> None:
    """The exact strings, with awkward label values, are valid PromQL for Prometheus itself."""
    promtool = require_binary("promtool")
    selector = queries.version_selector('model "x"\\y', "12", 'namespace=~"ml.*", pod!=""')
    exprs = [
        queries.requests_by_outcome(selector, "5m"),
        queries.latency_quantile(selector, "1h30m"),
        queries.predictions_by_class(selector, "90s"),
        queries.requests_served(selector),
    ]
    rules = {
        "groups": [
            {
                "name": "rollout-queries",
                "rules": [{"record": f"rollout:query{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "SUCCESS: 4 rules found" in checked.stdout


def test_extra_matchers_narrow_every_query() -> None:
    extra = queries.validate_matchers('namespace="mlops", job=~".*predictor"')
    selector = queries.version_selector("breast-cancer", "7", extra)
    assert selector == (
        'model_name="breast-cancer", model_version="7", namespace="mlops", job=~".*predictor"'
    )


@pytest.mark.parametrize(
    "matchers", ["namespace=mlops", 'namespace="mlops"}', '"mlops"', 'a="1",', 'x="1" or y="2"']
)
def test_malformed_extra_matchers_are_refused(matchers: str) -> None:
    with pytest.raises(ValueError, match="not a list of PromQL label matchers"):
        queries.validate_matchers(matchers)
