"""The chart's PrometheusRule and Grafana dashboard select only series the contract names
(contract/metric_names.py): the predictor's, the recorded ones, and the few other
exporters' it lists. A typo, or a rename in the predictor that the chart did not follow,
fails here rather than as an alert that can never fire."""

from __future__ import annotations

import json
import re

import promql_parser
import pytest

from contract import metric_names as names
from tests.chart.render import (
    Rendered,
    annotation_expressions,
    dashboard,
    dashboard_expressions,
    rule_expressions,
)

pytestmark = pytest.mark.chart

KNOWN = names.series_names() | names.external_series_names()


def selected_names(expr: str) -> set[str]:
    """The metric name of every vector selector in a PromQL expression, parsed."""
    found: set[str] = set()

    def visit(node: object) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            found.add(node.name)
        elif isinstance(node, promql_parser.MatrixSelector) and node.vector_selector.name:
            found.add(node.vector_selector.name)

    promql_parser.walk(promql_parser.parse(expr), pre_visit=visit)
    return found


def placeholders(rendered: Rendered) -> dict[str, str]:
    """A value for every Grafana variable the dashboard uses, so Prometheus' grammar
    applies: a duration for the interval variables, a plain value for the rest."""
    used = set(re.findall(r"\$\{?\w+", json.dumps(dashboard(rendered))))
    values = {name: "5m" if name.lstrip("${").startswith("__") else "x" for name in used}
    # Longest first, so `$model_name` is never cut by a shorter name.
    return dict(sorted(values.items(), key=lambda item: -len(item[0])))


def dashboard_promql(rendered: Rendered) -> dict[str, str]:
    variables = placeholders(rendered)
    return {
        **dashboard_expressions(rendered, variables),
        **{f"annotation {k}": v for k, v in annotation_expressions(rendered, variables).items()},
    }


def test_the_parser_finds_every_selected_name() -> None:
    expr = (
        'sum by (model_version) (rate(a_total{x="1"}[5m])) / on (pod) group_left () '
        "max(b) unless c offset 5m"
    )
    assert selected_names(expr) == {"a_total", "b", "c"}


def test_the_rules_select_only_names_the_contract_defines(default_render: Rendered) -> None:
    expressions = rule_expressions(default_render)
    assert expressions, "the default render has a PrometheusRule"
    unknown = {rule: sorted(selected_names(expr) - KNOWN) for rule, expr in expressions.items()}
    assert {rule: found for rule, found in unknown.items() if found} == {}


def test_the_rules_record_exactly_the_contract_s_recorded_series(
    default_render: Rendered,
) -> None:
    rule = default_render.one("PrometheusRule")
    recorded = {r["record"] for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r}
    assert recorded == set(names.RECORDED)


def test_the_dashboard_selects_only_names_the_contract_defines(
    default_render: Rendered,
) -> None:
    expressions = dashboard_promql(default_render)
    assert len(expressions) >= 5
    unknown = {panel: sorted(selected_names(expr) - KNOWN) for panel, expr in expressions.items()}
    assert {panel: found for panel, found in unknown.items() if found} == {}


def test_the_dashboard_reads_the_predictor_s_own_families(default_render: Rendered) -> None:
    selected = set().union(*map(selected_names, dashboard_promql(default_render).values()))
    assert {names.REQUESTS, f"{names.REQUEST_DURATION}_bucket", names.PREDICTIONS} <= selected
