"""Every scenario lints in strict mode and every object validates against its real schema."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from tests.chart.conftest import SCENARIOS, scenario_id
from tests.chart.render import (
    CRDS_DIR_VARIABLE,
    SCENARIO_FILES,
    Rendered,
    claimed_kube_versions,
    lint,
    real_crds_dir,
    render,
    scenario_values,
)
from tests.chart.validation import (
    InvalidObject,
    is_builtin,
    validate_against_crd,
    validate_builtin,
    validate_kserve,
    validate_object,
)

pytestmark = pytest.mark.chart

KUBE_VERSIONS = [pytest.param(v, id=f"k8s-{v}") for v in claimed_kube_versions()]


def test_the_four_scenarios_of_the_issue_exist() -> None:
    assert {scenario_id(p) for p in SCENARIO_FILES} >= {
        "default",
        "postgresql-s3",
        "canary",
        "monitoring-off",
    }


def test_the_claimed_kubernetes_range_is_checked_at_both_ends() -> None:
    oldest, newest = claimed_kube_versions()
    assert oldest == "1.33"
    assert tuple(map(int, newest.split("."))) > (1, 33)


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario_lints_clean_in_strict_mode(scenario: Path, kube_version: str) -> None:
    report = lint(scenario_values(scenario), kube_version)
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert report["total_charts_linted"] == 1
    assert problems == [], problems
    assert report["errors"] == []


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("scenario", SCENARIOS)
def test_every_object_validates_strictly(scenario: Path, kube_version: str) -> None:
    rendered = render(scenario_values(scenario), kube_version=kube_version)
    assert rendered.objects, "the scenario rendered nothing"
    for obj in rendered.objects:
        validate_object(obj, kube_version)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_custom_objects_match_the_real_crds(
    scenario: Path, rendered_scenarios: dict[str, Rendered]
) -> None:
    crds = real_crds_dir()
    custom = [o for o in rendered_scenarios[scenario_id(scenario)].objects if not is_builtin(o)]
    for obj in custom:
        validate_against_crd(obj, crds)


# The validators themselves must be able to fail, or the tests above prove nothing.


def test_kserve_validation_refuses_a_misspelled_field(default_render: Rendered) -> None:
    isvc = copy.deepcopy(default_render.one("InferenceService"))
    validate_kserve(isvc)
    isvc["spec"]["predictor"]["canaryTraficPercent"] = 10
    with pytest.raises(InvalidObject, match="canaryTraficPercent"):
        validate_kserve(isvc)


def test_kserve_validation_refuses_an_unknown_container_field(default_render: Rendered) -> None:
    isvc = copy.deepcopy(default_render.one("InferenceService"))
    isvc["spec"]["predictor"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(InvalidObject, match="imagePullPolicyy"):
        validate_kserve(isvc)


def test_kserve_validation_refuses_a_wrong_type_and_a_missing_required_field(
    default_render: Rendered,
) -> None:
    isvc = copy.deepcopy(default_render.one("InferenceService"))
    isvc["spec"]["predictor"]["minReplicas"] = "one"
    with pytest.raises(InvalidObject, match="minReplicas"):
        validate_kserve(isvc)
    isvc = copy.deepcopy(default_render.one("InferenceService"))
    del isvc["spec"]["predictor"]["containers"][0]["name"]
    with pytest.raises(InvalidObject, match="name"):
        validate_kserve(isvc)


def test_builtin_validation_refuses_a_misspelled_field(default_render: Rendered) -> None:
    deployment = copy.deepcopy(default_render.one("Deployment", "-mlflow"))
    oldest, _ = claimed_kube_versions()
    validate_builtin(deployment, oldest)
    deployment["spec"]["template"]["spec"]["containers"][0]["securityContex"] = {}
    with pytest.raises(InvalidObject, match="securityContex"):
        validate_builtin(deployment, oldest)


def test_crd_validation_refuses_a_misspelled_field(default_render: Rendered) -> None:
    crds = real_crds_dir()
    monitor = copy.deepcopy(default_render.one("PodMonitor", "-predictor"))
    monitor["spec"]["podMetricsEndpoints"][0]["portNumbr"] = 8080
    with pytest.raises(InvalidObject, match="portNumbr"):
        validate_against_crd(monitor, crds)


def test_missing_real_crds_skip_with_how_to_get_them(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv(CRDS_DIR_VARIABLE, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"set {CRDS_DIR_VARIABLE} .*kubectl get crd"):
        real_crds_dir()
    monkeypatch.setenv(CRDS_DIR_VARIABLE, str(tmp_path / "absent"))
    with pytest.raises(pytest.skip.Exception, match="is not a folder"):
        real_crds_dir()
    monkeypatch.setenv(CRDS_DIR_VARIABLE, str(tmp_path))
    with pytest.raises(pytest.skip.Exception, match=r"holds no \.yaml file"):
        real_crds_dir()
    (tmp_path / "crd.yaml").write_text("kind: CustomResourceDefinition\n")
    assert real_crds_dir() == tmp_path


def test_missing_real_crds_fail_under_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    monkeypatch.delenv(CRDS_DIR_VARIABLE, raising=False)
    with pytest.raises(pytest.fail.Exception, match="CI must set it"):
        real_crds_dir()
