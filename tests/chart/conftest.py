"""Fixtures of the chart tier: every scenario of `charts/mlops/ci/`, rendered once."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.chart.render import SCENARIO_FILES, Rendered, render, scenario_values


def scenario_id(path: Path) -> str:
    return path.name.removesuffix("-values.yaml")


SCENARIOS = [pytest.param(path, id=scenario_id(path)) for path in SCENARIO_FILES]


@pytest.fixture(scope="session")
def rendered_scenarios() -> dict[str, Rendered]:
    """Each ci/*-values.yaml rendered as a first install, by scenario name."""
    return {scenario_id(path): render(scenario_values(path)) for path in SCENARIO_FILES}


@pytest.fixture(scope="session")
def default_render(rendered_scenarios: dict[str, Rendered]) -> Rendered:
    return rendered_scenarios["default"]
