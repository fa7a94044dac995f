"""Training wall time against a real local `mlflow server`, MLflow logging included
(and every candidate's ONNX conversion and parity check).

Targets (issue: training Job): the default search under 90 s, `--smoke` under 20 s on
a 2-core machine."""

from __future__ import annotations

import os
import subprocess
import tempfile
import time
from pathlib import Path

from demo.services import PYTHON, REPO_ROOT, last_json, running_mlflow

RUNS = (
    ("smoke", ["--smoke"], 20.0),
    ("default search", [], 90.0),
)


def main() -> None:
    print(f"cores: {os.cpu_count()}")
    print(
        f"{'run':<16}{'wall s':>8}{'target s':>10}  {'chosen':<24}{'CV ROC AUC':>11}"
        f"  {'runtime':<8}{'ONNX parity':<12}"
    )
    with tempfile.TemporaryDirectory() as folder, running_mlflow(Path(folder)) as server:
        for label, args, target in RUNS:
            started = time.monotonic()
            done = subprocess.run(
                [PYTHON, "-m", "training", "--tracking-uri", server.url, *args],
                capture_output=True,
                text=True,
                cwd=REPO_ROOT,
                check=False,
            )
            wall = time.monotonic() - started
            summary = last_json(done.stdout)
            auc = summary.get("metrics", {}).get("cv_roc_auc_mean", float("nan"))
            print(
                f"{label:<16}{wall:>8.1f}{target:>10.0f}  "
                f"{summary.get('candidate', summary.get('error', '?')):<24}{auc:>11.4f}"
                f"  {summary.get('serving_runtime', '?'):<8}{summary.get('onnx_parity', '?'):<12}"
                f"{'' if wall <= target else '  OVER TARGET'}",
                flush=True,
            )
