"""The deliberately worse model of the e2e tier: the breast-cancer data with its labels
flipped, as a CSV the training Job reads from a ConfigMap.

Every offline gate passes it: the held-out split carries the same wrong labels, so its
recall and ROC AUC look as good as the real model's, and `@champion` scored on that split
looks far worse. Only live traffic shows it: its predicted-class mix is the mirror image
of the stable version's, which the canary analysis's class-drift check catches.

How the CSV reaches the Job: `make train TRAIN_HELM_ARGS="-f tests/e2e/flipped-values.yaml"`
renders the chart's own Job with `training.extraVolumes` / `extraVolumeMounts` mounting
the ConfigMap `FLIPPED_CONFIG_MAP` and `training.settings.dataset` naming the file in it.
A ConfigMap works on any cluster (no image rebuild, no writable volume, the read-only
root file system untouched); the CSV is about 120 KB, well under the API server's 1 MiB
limit for one object.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

import yaml

VALUES_FILE = Path(__file__).with_name("flipped-values.yaml")
FLIPPED_CONFIG_MAP = "e2e-flipped-labels"
CSV_KEY = "breast-cancer-flipped.csv"
CONFIG_MAP_LIMIT = 1 << 20
"""The API server's limit on one object (etcd's request size); a ConfigMap's data must fit."""
E2E_TRAINING_SETTINGS: dict[str, Any] = {"smoke": True, "latencyMargin": 0}
"""`training.settings` of every e2e run: a short search whose model does not depend on
timing noise, so later runs on the same data reproduce the first and pass no-regression."""


def breast_cancer_csv(columns: int = 30, flip: bool = False) -> str:
    """The breast-cancer data as CSV: the first `columns` features by their names, and a
    `target` column of class names (flipped: every malignant row called benign, and back)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*(str(n) for n in data.feature_names[:columns]), "target"])
    for row, label in zip(data.data, data.target, strict=True):
        malignant = (label == 0) != flip  # target 0 is malignant
        # repr of a float64 is its shortest exact form: the CSV round-trips the data
        writer.writerow([*(repr(float(v)) for v in row[:columns]), _name(malignant)])
    return out.getvalue()


def _name(malignant: bool) -> str:
    return "malignant" if malignant else "benign"


def flipped_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(VALUES_FILE.read_text())
    return values


def config_map(namespace: str) -> dict[str, Any]:
    """The ConfigMap the flipped-label training Job mounts (`kubectl apply -f -`)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": FLIPPED_CONFIG_MAP,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "mlops-e2e"},
        },
        "data": {CSV_KEY: breast_cancer_csv(flip=True)},
    }


def mounted_path() -> str:
    """Where the Job reads the CSV: the dataset setting of the values file."""
    dataset = flipped_values()["training"]["settings"]["dataset"]
    assert isinstance(dataset, str)
    return dataset


def job_environment(job: dict[str, Any], **overrides: str) -> dict[str, str]:
    """The literal environment of a rendered training Job's container (entries taken
    from the pod, `valueFrom`, are left out), with `overrides` on top: what the Job's
    process sees, for running the same training outside the cluster."""
    [container] = job["spec"]["template"]["spec"]["containers"]
    env = {e["name"]: str(e["value"]) for e in container["env"] if "value" in e}
    return {**env, **overrides}
