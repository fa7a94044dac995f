"""Scores on the held-out test split and the pictures and report a reviewer looks at."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import (
    accuracy_score,
    classification_report,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
    roc_curve,
)

from training.search import critical_recall


@dataclass(frozen=True)
class Evaluation:
    accuracy: float
    precision: float
    """Macro average over classes (as are recall and f1)."""
    recall: float
    f1: float
    roc_auc: float
    critical_recall: float
    y_true: npt.NDArray[np.int64]
    y_pred: npt.NDArray[np.int64]
    probabilities: npt.NDArray[np.float64]


def critical_label_of(class_names: tuple[str, ...], critical_class: str) -> int | None:
    return class_names.index(critical_class) if critical_class in class_names else None


def critical_metric_name(class_names: tuple[str, ...], critical_class: str) -> str:
    """`malignant_recall` on breast-cancer; `worst_class_recall` where the class is absent."""
    if critical_label_of(class_names, critical_class) is None:
        return "worst_class_recall"
    return f"{re.sub(r'[^a-z0-9]+', '_', critical_class.lower()).strip('_')}_recall"


def evaluate(
    estimator: Any,
    x_test: npt.NDArray[np.float64],
    y_test: npt.NDArray[np.int64],
    critical_label: int | None,
) -> Evaluation:
    probabilities = np.asarray(estimator.predict_proba(x_test), dtype=np.float64)
    y_pred = np.argmax(probabilities, axis=1).astype(np.int64)
    if probabilities.shape[1] == 2:
        auc = roc_auc_score(y_test, probabilities[:, 1])
    else:
        auc = roc_auc_score(
            y_test, probabilities, multi_class="ovr", labels=range(probabilities.shape[1])
        )
    return Evaluation(
        accuracy=float(accuracy_score(y_test, y_pred)),
        precision=float(precision_score(y_test, y_pred, average="macro", zero_division=0)),
        recall=float(recall_score(y_test, y_pred, average="macro", zero_division=0)),
        f1=float(f1_score(y_test, y_pred, average="macro", zero_division=0)),
        roc_auc=float(auc),
        critical_recall=critical_recall(y_test, y_pred, critical_label),
        y_true=y_test,
        y_pred=y_pred,
        probabilities=probabilities,
    )


def test_metrics(evaluation: Evaluation, critical_name: str) -> dict[str, float]:
    return {
        "test_accuracy": evaluation.accuracy,
        "test_precision": evaluation.precision,
        "test_recall": evaluation.recall,
        "test_f1": evaluation.f1,
        "test_roc_auc": evaluation.roc_auc,
        f"test_{critical_name}": evaluation.critical_recall,
    }


def write_report_artifacts(
    evaluation: Evaluation,
    class_names: tuple[str, ...],
    critical_label: int | None,
    folder: Path,
) -> list[Path]:
    """confusion_matrix.png, roc_curve.png and classification_report.txt in `folder`."""
    import matplotlib

    matplotlib.use("Agg")  # no display in a Job
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    labels = list(range(len(class_names)))

    matrix = confusion_matrix(evaluation.y_true, evaluation.y_pred, labels=labels)
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(labels, class_names, rotation=30, ha="right")
    ax.set_yticks(labels, class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), count in np.ndenumerate(matrix):
        color = "white" if count > matrix.max() / 2 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=color)
    ax.set_title("Confusion matrix (test split)")
    fig.tight_layout()
    confusion_path = folder / "confusion_matrix.png"
    fig.savefig(confusion_path, dpi=100)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(4.5, 4))
    # Binary: one curve with the critical class as positive; otherwise one-vs-rest.
    curve_classes = [critical_label if critical_label is not None else 1]
    if len(class_names) > 2:
        curve_classes = labels
    for label in curve_classes:
        fpr, tpr, _ = roc_curve(evaluation.y_true == label, evaluation.probabilities[:, label])
        ax.plot(fpr, tpr, label=f"{class_names[label]} vs rest")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"ROC (test AUC {evaluation.roc_auc:.3f})")
    ax.legend(loc="lower right")
    fig.tight_layout()
    roc_path = folder / "roc_curve.png"
    fig.savefig(roc_path, dpi=100)
    plt.close(fig)

    report_path = folder / "classification_report.txt"
    report_path.write_text(
        str(
            classification_report(
                evaluation.y_true,
                evaluation.y_pred,
                labels=labels,
                target_names=list(class_names),
                digits=4,
                zero_division=0,
            )
        )
    )
    return [confusion_path, roc_path, report_path]
