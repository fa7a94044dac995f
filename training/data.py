"""Datasets: the built-in ones (shipped inside scikit-learn, nothing is downloaded) and a
user's CSV, each returned with a SHA-256 that identifies exactly what was trained on."""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from sklearn import datasets

from training.errors import ConfigError

BUILT_IN = ("breast_cancer", "iris")


@dataclass(frozen=True)
class Dataset:
    name: str
    features: npt.NDArray[np.float64]
    """Shape (rows, columns), float64."""
    labels: npt.NDArray[np.int64]
    """Encoded 0..n_classes-1; `class_names[i]` names label i."""
    feature_names: tuple[str, ...]
    class_names: tuple[str, ...]
    sha256: str


def data_sha256(
    features: npt.NDArray[np.float64],
    labels: npt.NDArray[np.int64],
    feature_names: tuple[str, ...],
    class_names: tuple[str, ...],
) -> str:
    """Hash of the canonical form (little-endian float64 / int64, names in order), so the
    same data hashes the same whether it came from scikit-learn or a CSV file."""
    digest = hashlib.sha256()
    for names in (feature_names, class_names):
        digest.update("\x1f".join(names).encode())
        digest.update(b"\x1e")
    digest.update(np.ascontiguousarray(features, dtype="<f8").tobytes())
    digest.update(np.ascontiguousarray(labels, dtype="<i8").tobytes())
    return digest.hexdigest()


def _make(
    name: str,
    features: npt.ArrayLike,
    labels: npt.ArrayLike,
    feature_names: tuple[str, ...],
    class_names: tuple[str, ...],
) -> Dataset:
    x = np.asarray(features, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    return Dataset(
        name, x, y, feature_names, class_names, data_sha256(x, y, feature_names, class_names)
    )


def load_dataset(source: str, target_column: str = "target") -> Dataset:
    """`breast_cancer` (or `breast-cancer`), `iris`, or the path of a CSV file."""
    key = source.strip().lower().replace("-", "_")
    if key in BUILT_IN:
        bunch = getattr(datasets, f"load_{key}")()
        return _make(
            key,
            bunch.data,
            bunch.target,
            tuple(str(n) for n in bunch.feature_names),
            tuple(str(n) for n in bunch.target_names),
        )
    path = Path(source)
    if path.suffix.lower() != ".csv" and not path.exists():
        raise ConfigError(
            f"unknown dataset {source!r}: use one of {', '.join(BUILT_IN)} "
            "or the path of a CSV file"
        )
    return load_csv(path, target_column)


def largest_safe_value(rows: int) -> float:
    """The largest magnitude a feature may hold: the scaler sums the squares of a column,
    which must stay finite in float64 (about 1.3e154 / sqrt(rows))."""
    return math.sqrt(float(np.finfo(np.float64).max) / max(1, rows))


def check_finite(path: Path, features: npt.NDArray[np.float64], columns: tuple[str, ...]) -> None:
    """Refuse `inf`, `-inf` (or a number too large for float64, which reads as inf) and
    values so large that the models' arithmetic overflows, naming the columns."""
    finite = np.asarray(np.isfinite(features).all(axis=0)).tolist()
    infinite = [c for c, ok in zip(columns, finite, strict=True) if not ok]
    if infinite:
        raise ConfigError(
            f"dataset {path}: columns {', '.join(infinite)} hold values that are not finite "
            "(inf, -inf, or beyond float64's range); replace or drop them first"
        )
    limit = largest_safe_value(len(features))
    largest = np.asarray(np.abs(features).max(axis=0)).tolist()
    huge = [c for c, m in zip(columns, largest, strict=True) if m > limit]
    if huge:
        raise ConfigError(
            f"dataset {path}: columns {', '.join(huge)} hold values beyond ±{limit:.3g}, "
            "where float64 arithmetic (the scaler's sum of squares) overflows; rescale them"
        )


def load_csv(path: Path, target_column: str) -> Dataset:
    import pandas as pd  # only CSV datasets need pandas

    if not path.is_file():
        raise ConfigError(f"dataset file {path} does not exist")
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise ConfigError(f"dataset file {path} is not a readable CSV: {e}") from e
    if target_column not in frame.columns:
        raise ConfigError(
            f"dataset {path} has no target column {target_column!r}; its columns are "
            f"{', '.join(map(str, frame.columns))} (set --target-column)"
        )
    feature_frame = frame.drop(columns=[target_column])
    if feature_frame.shape[1] == 0:
        raise ConfigError(f"dataset {path} has no feature columns besides {target_column!r}")
    for column in feature_frame.columns:
        if not pd.api.types.is_numeric_dtype(feature_frame[column]):
            # pandas' parser leaves a number beyond float64 (1e309) as text; Python's float
            # reads it as inf, which check_finite then names.
            with contextlib.suppress(ValueError, TypeError):
                feature_frame[column] = feature_frame[column].astype(np.float64)
    non_numeric = [
        str(c) for c in feature_frame.columns if not pd.api.types.is_numeric_dtype(feature_frame[c])
    ]
    if non_numeric:
        raise ConfigError(
            f"dataset {path}: feature columns must be numeric; "
            f"not numeric: {', '.join(non_numeric)}"
        )
    missing = [str(c) for c in feature_frame.columns if feature_frame[c].isna().any()]
    if missing or frame[target_column].isna().any():
        raise ConfigError(
            f"dataset {path} has empty cells in {', '.join(missing or [target_column])}; "
            "fill or drop them first"
        )
    target = frame[target_column]
    # Sorted unique target values name the classes; their index is the label.
    classes = sorted(target.unique(), key=lambda v: (str(type(v)), v))
    if len(classes) < 2:
        raise ConfigError(f"dataset {path}: the target {target_column!r} has a single class")
    index = {value: i for i, value in enumerate(classes)}
    features = feature_frame.to_numpy(dtype=np.float64)
    check_finite(path, features, tuple(str(c) for c in feature_frame.columns))
    return _make(
        path.stem,
        features,
        target.map(index).to_numpy(),
        tuple(str(c) for c in feature_frame.columns),
        tuple(str(c) for c in classes),
    )
