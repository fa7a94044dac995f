"""Render the chart with Helm's own engine (helm-python-sdk embeds Helm's Go SDK)."""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml
from helm_python import _native

from tests.chart.validation import parse_documents
from tests.support import REPO_ROOT, under_ci

CHART_DIR = REPO_ROOT / "charts" / "mlops"
MANIFESTS_DIR = REPO_ROOT / "manifests"
SCENARIO_FILES = sorted((CHART_DIR / "ci").glob("*-values.yaml"))
# The real CRDs of KServe and the Prometheus Operator are outside data: a folder of CRD
# files named by this variable (`.ci/run` sets it; a user fills one from a cluster).
CRDS_DIR_VARIABLE = "MLOPS_CRDS_DIR"
CRDS_HOWTO = (
    f"set {CRDS_DIR_VARIABLE} to a folder of the real CRD files, e.g. from a cluster with KServe"
    " and the Prometheus Operator: mkdir crds && for crd in inferenceservices.serving.kserve.io"
    " podmonitors.monitoring.coreos.com prometheusrules.monitoring.coreos.com"
    " servicemonitors.monitoring.coreos.com; do kubectl get crd $crd -o yaml > crds/$crd.yaml;"
    f" done && export {CRDS_DIR_VARIABLE}=$PWD/crds"
)
RELEASE = "mlops"
NAMESPACE = "mlops"


@dataclass(frozen=True)
class Rendered:
    """One `helm template`: the objects of every template file, and NOTES.txt."""

    files: dict[str, str]
    values: dict[str, Any]

    @property
    def objects(self) -> list[dict[str, Any]]:
        objects: list[dict[str, Any]] = []
        for name, text in sorted(self.files.items()):
            if name.endswith(".yaml"):
                objects.extend(parse_documents(text, name))
        return objects

    @property
    def notes(self) -> str:
        return next((text for name, text in self.files.items() if name.endswith("NOTES.txt")), "")

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [obj for obj in self.objects if obj["kind"] == kind]

    def one(self, kind: str, name_suffix: str = "") -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"].endswith(name_suffix)]
        assert len(found) == 1, f"expected one {kind} *{name_suffix}, found {len(found)}"
        return found[0]

    def template(self, file_name: str) -> list[dict[str, Any]]:
        text = self.files[f"mlops/templates/{file_name}"]
        return parse_documents(text, file_name)


def scenario_values(path: Path) -> dict[str, Any]:
    values = yaml.safe_load(path.read_text()) or {}
    assert isinstance(values, dict), f"{path} is not a values mapping"
    return values


def render(
    values: dict[str, Any] | None = None,
    *,
    release: str = RELEASE,
    namespace: str = NAMESPACE,
    kube_version: str | None = None,
    is_install: bool = True,
    is_upgrade: bool = False,
) -> Rendered:
    """`helm template` offline; the values are checked against values.schema.json first."""
    options: dict[str, Any] = {
        "name": release,
        "namespace": namespace,
        "is_install": is_install,
        "is_upgrade": is_upgrade,
    }
    if kube_version:
        # Chart.render() has no kube_version keyword although the library takes it
        # (`.Capabilities.KubeVersion`): call the same native function with it.
        options["kube_version"] = f"v{kube_version.lstrip('v')}"
    with helm.Chart.load(CHART_DIR) as chart:
        payload = _native.call_string(
            "helm_render", chart._raw(), json.dumps(values or {}), json.dumps(options)
        )
        merged = chart.merge_values(values or {})
    files: dict[str, str] = json.loads(payload)
    return Rendered(files=files, values=merged)


def lint(values: dict[str, Any], kube_version: str) -> dict[str, Any]:
    return helm.lint(
        CHART_DIR, values, strict=True, namespace=NAMESPACE, kube_version=f"v{kube_version}"
    )


@cache
def claimed_kube_versions() -> tuple[str, str]:
    """The oldest and newest Kubernetes minor the chart claims that kubernetes-validate knows.

    Chart.yaml's `kubeVersion` is a lower bound (`>=1.33.0-0`), optionally with an upper one.
    """
    constraint = str(yaml.safe_load((CHART_DIR / "Chart.yaml").read_text())["kubeVersion"])
    lower = re.search(r">=\s*v?(\d+)\.(\d+)", constraint)
    upper = re.search(r"<\s*v?(\d+)\.(\d+)", constraint)
    assert lower, f"Chart.yaml kubeVersion {constraint!r} has no lower bound"
    known = [
        tuple(int(p) for p in v.split(".")[:2]) for v in kubernetes_validate.utils.all_versions()
    ]
    low = (int(lower.group(1)), int(lower.group(2)))
    high = (int(upper.group(1)), int(upper.group(2))) if upper else None
    within = sorted(v for v in known if v >= low and (high is None or v < high))
    assert within, f"kubernetes-validate knows no version within {constraint!r}"
    assert within[0] == low, (
        f"the chart claims Kubernetes {low[0]}.{low[1]}, which kubernetes-validate cannot check"
    )
    oldest, newest = within[0], within[-1]
    return f"{oldest[0]}.{oldest[1]}", f"{newest[0]}.{newest[1]}"


def real_crds_dir() -> Path:
    """The folder of real CRDs; skip with how to get them, or fail under CI where they must be."""
    value = os.environ.get(CRDS_DIR_VARIABLE, "")
    if not value:
        reason = f"the real CRDs are not configured: {CRDS_HOWTO}"
    elif not Path(value).is_dir():
        reason = f"{CRDS_DIR_VARIABLE}={value} is not a folder: {CRDS_HOWTO}"
    elif not any(Path(value).glob("*.yaml")):
        reason = f"{CRDS_DIR_VARIABLE}={value} holds no .yaml file: {CRDS_HOWTO}"
    else:
        return Path(value)
    if under_ci():
        pytest.fail(f"{reason}; CI must set it (.ci/run)", pytrace=False)
    pytest.skip(reason)


def write_rules(rendered: Rendered, folder: Path) -> Path:
    """The PrometheusRule's spec as a Prometheus rule file, `folder/rules.yaml`; its groups
    are a copy, which a test may change without touching the shared render."""
    groups = copy.deepcopy(rendered.one("PrometheusRule")["spec"]["groups"])
    return write_rule_groups(groups, folder)


def write_rule_groups(groups: list[dict[str, Any]], folder: Path) -> Path:
    path = folder / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    return path


def rule_expressions(rendered: Rendered) -> dict[str, str]:
    """Every expression of the PrometheusRule, by alert or recorded series name."""
    rule = rendered.one("PrometheusRule")
    return {
        r.get("alert") or r["record"]: r["expr"]
        for group in rule["spec"]["groups"]
        for r in group["rules"]
    }


def dashboard(rendered: Rendered) -> dict[str, Any]:
    """The Grafana dashboard the chart ships in its ConfigMap, parsed."""
    config_map = rendered.one("ConfigMap", "-dashboard")
    loaded: dict[str, Any] = json.loads(next(iter(config_map["data"].values())))
    return loaded


def substitute(expr: str, variables: Mapping[str, str]) -> str:
    """`expr` with Grafana's variables replaced (pass them longest first, so `$model_name`
    is never cut by a shorter name)."""
    for variable, value in variables.items():
        expr = expr.replace(variable, value)
    return expr


@dataclass(frozen=True)
class PanelQuery:
    expr: str
    unit: str
    """The panel's unit: `percentunit` promises values in [0, 1]."""


def panel_queries(rendered: Rendered, variables: Mapping[str, str]) -> dict[str, PanelQuery]:
    """Every panel target, `<title> / <refId>`, with Grafana's variables filled in."""
    return {
        f"{panel['title']} / {target['refId']}": PanelQuery(
            substitute(target["expr"], variables), panel["fieldConfig"]["defaults"]["unit"]
        )
        for panel in dashboard(rendered)["panels"]
        for target in panel.get("targets", [])  # rows hold no queries
    }


def dashboard_expressions(rendered: Rendered, variables: Mapping[str, str]) -> dict[str, str]:
    """Every panel's and every query variable's PromQL, with Grafana's variables filled in."""
    found = {name: panel.expr for name, panel in panel_queries(rendered, variables).items()}
    for variable in dashboard(rendered)["templating"]["list"]:
        if variable["type"] == "query":
            expr = substitute(variable["query"]["query"], variables)
            # label_values(metric, label) is Grafana's; Prometheus answers the metric part.
            found[f"variable {variable['name']}"] = expr.split("(", 1)[1].rsplit(",", 1)[0]
    return found


def annotation_expressions(rendered: Rendered, variables: Mapping[str, str]) -> dict[str, str]:
    return {
        annotation["name"]: substitute(annotation["expr"], variables)
        for annotation in dashboard(rendered)["annotations"]["list"]
        if "expr" in annotation
    }
