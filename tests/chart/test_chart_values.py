"""values.yaml, values.schema.json and the chart README agree, and the schema refuses typos."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import pytest
import yaml

from tests.chart.render import CHART_DIR, render
from tests.chart.values_docs import README_FILE, VALUES_FILE, documented_keys, values_table

pytestmark = pytest.mark.chart

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def leaves(values: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(values, dict) and values:
        found: dict[str, Any] = {}
        for key, value in values.items():
            found.update(leaves(value, f"{prefix}.{key}" if prefix else key))
        return found
    return {prefix: values}


def test_every_value_has_a_description() -> None:
    documented = documented_keys()
    values = yaml.safe_load(VALUES_FILE.read_text())
    undocumented = [
        leaf
        for leaf in leaves(values)
        if not any(leaf == key or leaf.startswith(key + ".") for key in documented)
    ]
    assert undocumented == []
    assert all(description for description in documented.values())


def test_the_readme_lists_every_documented_value_with_its_default() -> None:
    readme = README_FILE.read_text()
    assert readme.endswith(values_table()), "run `python -m tests.chart.values_docs`"
    rows = dict(re.findall(r"^\| `([^`]+)` \| `([^|]*)` \|", readme, flags=re.MULTILINE))
    documented = documented_keys()
    assert sorted(rows) == sorted(documented)
    values = yaml.safe_load(VALUES_FILE.read_text())
    for key, shown in rows.items():
        value: Any = values
        for part in key.split("."):
            value = value[part]
        assert shown == json.dumps(value, separators=(",", ":")), key


def schema_paths(schema: dict[str, Any], prefix: str = "") -> set[str]:
    paths = set()
    for key, sub in schema.get("properties", {}).items():
        dotted = f"{prefix}.{key}" if prefix else key
        paths.add(dotted)
        paths |= schema_paths(sub, dotted)
    return paths


def test_the_schema_knows_every_value_and_closes_every_group() -> None:
    known = schema_paths(SCHEMA)
    documented = documented_keys()
    assert sorted(set(documented) - known) == []

    def check(schema: dict[str, Any], where: str) -> None:
        if "properties" in schema:
            assert schema.get("additionalProperties") is False, f"{where or '(root)'} is open"
            for key, sub in schema["properties"].items():
                check(sub, f"{where}.{key}" if where else key)

    check(SCHEMA, "")


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"predictr": {"enabled": True}}, "predictr"),
        ({"predictor": {"canaryTraficPercent": 10}}, "canaryTraficPercent"),
        ({"predictor": {"canaryTrafficPercent": 150}}, "maximum"),
        ({"predictor": {"canaryTrafficPercent": "10%"}}, "canaryTrafficPercent"),
        ({"image": {"tag": "latest"}}, "tag"),
        ({"training": {"settings": {"SEEDS": 1}}}, "SEEDS"),
        ({"training": {"settings": {"CV_FOLDS": 1}}}, "minimum"),
        ({"training": {"settings": {"CANDIDATES": "logreg,svm"}}}, "CANDIDATES"),
        ({"mlflow": {"backend": {"type": "mysql"}}}, "type"),
        ({"monitoring": {"prometheusRule": {"for": "five minutes"}}}, "for"),
        ({"modelName": "Breast_Cancer"}, "modelName"),
    ],
)
def test_the_schema_refuses_typos_and_bad_values(values: dict[str, Any], complaint: str) -> None:
    with helm.Chart.load(CHART_DIR) as chart, pytest.raises(helm.HelmValuesError, match=complaint):
        chart.validate_schema(values)


def test_the_defaults_and_every_scenario_pass_the_schema() -> None:
    with helm.Chart.load(CHART_DIR) as chart:
        chart.validate_schema({})
        for path in sorted((CHART_DIR / "ci").glob("*-values.yaml")):
            chart.validate_schema(yaml.safe_load(path.read_text()) or {})


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"mlflow": {"backend": {"type": "postgresql"}}}, "existingSecret is required"),
        ({"mlflow": {"artifacts": {"type": "s3"}}}, "existingSecret are required"),
        ({"mlflow": {"enabled": False}}, "externalTrackingUri is required"),
    ],
)
def test_settings_that_need_a_secret_or_a_uri_fail_with_a_reason(
    values: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(helm.HelmRenderError, match=complaint):
        render(values)
