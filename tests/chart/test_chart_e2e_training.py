"""The e2e tier's flipped-label training Job (tests/e2e/flipped.py), rendered by Helm's
own engine as `make train TRAIN_HELM_ARGS="-f tests/e2e/flipped-values.yaml"` renders it
on kind: the chart's Job mounting the ConfigMap and reading the CSV from it, still
hardened; and the ConfigMap itself a valid object that fits the API server's limit."""

from __future__ import annotations

import io

import pytest
import yaml

from tests.chart.render import claimed_kube_versions, render
from tests.chart.validation import validate_builtin
from tests.e2e import flipped

pytestmark = pytest.mark.chart


def test_the_flipped_training_job_reads_the_csv_from_the_config_map() -> None:
    values = flipped.flipped_values()
    values["training"]["settings"].update(flipped.E2E_TRAINING_SETTINGS)
    values["training"]["runSuffix"] = "20261201000000"  # as make train sets it
    job = render(values).one("Job", "-train-20261201000000")
    pod = job["spec"]["template"]["spec"]
    [container] = pod["containers"]
    volume = next(v for v in pod["volumes"] if v["name"] == "flipped-labels")
    assert volume["configMap"]["name"] == flipped.FLIPPED_CONFIG_MAP
    mount = next(m for m in container["volumeMounts"] if m["name"] == "flipped-labels")
    env = flipped.job_environment(job)
    assert env["DATASET"] == f"{mount['mountPath']}/{flipped.CSV_KEY}" == flipped.mounted_path()
    assert (env["TARGET_COLUMN"], env["SMOKE"], env["LATENCY_MARGIN"]) == ("target", "true", "0")
    # The chart's own volume and hardening stay: /tmp, a read-only root file system.
    assert {"tmp", "flipped-labels"} <= {v["name"] for v in pod["volumes"]}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert mount.get("readOnly") is True
    # Not a hook: `make train` creates it itself.
    assert "helm.sh/hook" not in job["metadata"].get("annotations", {})
    for kube_version in claimed_kube_versions():
        validate_builtin(job, kube_version)


def test_the_config_map_holds_the_flipped_csv_and_fits_one_object() -> None:
    config_map = flipped.config_map("mlops-e2e")
    for kube_version in claimed_kube_versions():
        validate_builtin(config_map, kube_version)
    size = len(yaml.safe_dump(config_map).encode())
    assert size < flipped.CONFIG_MAP_LIMIT // 4, size  # ~125 KB: room to spare
    text = config_map["data"][flipped.CSV_KEY]
    rows = list(io.StringIO(text))
    assert len(rows) == 1 + 569 and rows[0].rstrip().endswith(",target")
    real = flipped.breast_cancer_csv(flip=False).splitlines()
    swapped = {"malignant": "benign", "benign": "malignant"}
    for mine, theirs in zip(text.splitlines()[1:], real[1:], strict=True):
        features, label = mine.rsplit(",", 1)
        assert f"{features},{swapped[label]}" == theirs
