"""manifests/: every file validates like the chart's objects, and the plain
InferenceServices are the chart's own spec (stable, and the 10 % canary)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.chart.plain_manifests import PLAIN, plain_inference_service
from tests.chart.render import (
    MANIFESTS_DIR,
    claimed_kube_versions,
    real_crds_dir,
    render,
)
from tests.chart.validation import (
    is_builtin,
    parse_documents,
    validate_against_crd,
    validate_object,
)

pytestmark = pytest.mark.chart

MANIFEST_FILES = sorted(MANIFESTS_DIR.rglob("*.yaml"))
FILES = [pytest.param(p, id=str(p.relative_to(MANIFESTS_DIR))) for p in MANIFEST_FILES]


def objects(path: Path) -> list[dict[str, Any]]:
    return parse_documents(path.read_text(), str(path))


def test_the_manifests_the_issue_asks_for_exist() -> None:
    names = {str(p.relative_to(MANIFESTS_DIR)) for p in MANIFEST_FILES}
    assert {"inferenceservice.yaml", "inferenceservice-canary.yaml"} <= names
    assert any(name.startswith("cluster/") for name in names)


@pytest.mark.parametrize("kube_version", claimed_kube_versions())
@pytest.mark.parametrize("path", FILES)
def test_every_manifest_validates_strictly(path: Path, kube_version: str) -> None:
    found = objects(path)
    assert found, f"{path} holds no object"
    for obj in found:
        validate_object(obj, kube_version)


@pytest.mark.parametrize("path", FILES)
def test_custom_manifests_match_the_real_crds(path: Path) -> None:
    crds = real_crds_dir()
    for obj in objects(path):
        if not is_builtin(obj):
            validate_against_crd(obj, crds)


@pytest.mark.parametrize("file_name", sorted(PLAIN))
def test_plain_inference_services_are_the_chart_s_own(file_name: str) -> None:
    values, header = PLAIN[file_name]
    path = MANIFESTS_DIR / file_name
    [plain] = objects(path)
    assert plain == plain_inference_service(values), "run `python -m tests.chart.plain_manifests`"
    assert path.read_text().startswith(header)
    # The NetworkPolicy in front of MLflow admits the plain predictor's pods too.
    policy = render().one("NetworkPolicy")
    peers = [p["podSelector"]["matchLabels"] for p in policy["spec"]["ingress"][0]["from"]]
    pod_labels = plain["spec"]["predictor"]["labels"]
    assert any(peer.items() <= pod_labels.items() for peer in peers)


def test_the_canary_differs_from_the_stable_only_in_version_and_split() -> None:
    [stable] = objects(MANIFESTS_DIR / "inferenceservice.yaml")
    [canary] = objects(MANIFESTS_DIR / "inferenceservice-canary.yaml")
    assert "canaryTrafficPercent" not in stable["spec"]["predictor"]
    assert canary["spec"]["predictor"].pop("canaryTrafficPercent") == 10
    env_of = lambda isvc: {  # noqa: E731
        e["name"]: e["value"] for e in isvc["spec"]["predictor"]["containers"][0]["env"]
    }
    assert (env_of(stable)["MODEL_URI"], env_of(canary)["MODEL_URI"]) == (
        "models:/breast-cancer/1",
        "models:/breast-cancer/2",
    )
    for isvc in (stable, canary):
        isvc["spec"]["predictor"]["containers"][0]["env"] = [
            e for e in isvc["spec"]["predictor"]["containers"][0]["env"] if e["name"] != "MODEL_URI"
        ]
    assert stable == canary


def test_knative_skips_tag_resolution_for_the_chart_s_image_prefix() -> None:
    [config] = objects(MANIFESTS_DIR / "cluster" / "knative-config-deployment.yaml")
    skipped = config["data"]["registries-skipping-tag-resolving"].split(",")
    repository = yaml.safe_load((MANIFESTS_DIR.parent / "charts/mlops/values.yaml").read_text())[
        "image"
    ]["repository"]
    assert repository.split("/")[0] in skipped


def test_knative_uses_kourier_and_serves_a_routable_domain() -> None:
    [network] = objects(MANIFESTS_DIR / "cluster" / "knative-config-network.yaml")
    assert network["data"]["ingress-class"] == "kourier.ingress.networking.knative.dev"
    [domain] = objects(MANIFESTS_DIR / "cluster" / "knative-config-domain.yaml")
    assert list(domain["data"]) == ["example.com"]
    [features] = objects(MANIFESTS_DIR / "cluster" / "knative-config-features.yaml")
    assert features["data"]["kubernetes.podspec-securitycontext"] == "enabled"
    for config in (network, domain, features):
        assert config["metadata"]["namespace"] == "knative-serving"
