"""The plain InferenceServices of manifests/, written from the chart's own template.

    python -m tests.chart.plain_manifests    # rewrite them after changing the chart

tests/chart/test_manifests.py fails while they differ from what the chart renders.
"""

from __future__ import annotations

from typing import Any

import yaml

from tests.chart.render import MANIFESTS_DIR, render

# No Helm release owns the plain manifests: the labels the NetworkPolicy in front of
# MLflow admits, without Helm's own.
LABELS = {
    "app.kubernetes.io/name": "mlops",
    "app.kubernetes.io/instance": "mlops",
    "app.kubernetes.io/component": "predictor",
    "app.kubernetes.io/part-of": "mlops",
}

PLAIN = {
    "inferenceservice.yaml": (
        {"predictor": {"modelVersion": "1"}},
        """\
# The predictor as a plain InferenceService, for `kubectl apply` without Helm: registry
# version 1 of breast-cancer with all the traffic. It expects the chart's MLflow server and
# ServiceAccount beside it (release `mlops` in namespace `mlops`, `predictor.enabled=false`):
#   kubectl apply -n mlops -f manifests/inferenceservice.yaml
# Written by `python -m tests.chart.plain_manifests` from the chart's own template.
""",
    ),
    "inferenceservice-canary.yaml": (
        {"predictor": {"modelVersion": "2", "canaryTrafficPercent": 10}},
        """\
# The same InferenceService with version 2 as a canary. Applied over the stable one,
# Knative makes a new revision and KServe sends it 10 % of the traffic while the previous
# revision keeps 90 %. Promote by deleting `canaryTrafficPercent`; roll back with 0.
#   kubectl apply -n mlops -f manifests/inferenceservice-canary.yaml
# Written by `python -m tests.chart.plain_manifests` from the chart's own template.
""",
    ),
}


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        super().increase_indent(flow, False)


def plain_inference_service(values: dict[str, Any]) -> dict[str, Any]:
    isvc = render(values).one("InferenceService")
    isvc["metadata"]["labels"] = dict(LABELS)
    isvc["spec"]["predictor"]["labels"] = dict(LABELS)
    return isvc


def main() -> None:
    for file_name, (values, header) in PLAIN.items():
        text = yaml.dump(
            plain_inference_service(values), Dumper=_Dumper, sort_keys=False, width=100
        )
        (MANIFESTS_DIR / file_name).write_text(header + text)


if __name__ == "__main__":
    main()
