"""Datasets: the built-in ones (shipped inside scikit-learn, nothing is downloaded) and a
user's CSV, each returned with a SHA-256 that identifies exactly what was trained on."""

from __future__ import annotations

import hashlib
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
    return _make(
        path.stem,
        feature_frame.to_numpy(dtype=np.float64),
        target.map(index).to_numpy(),
        tuple(str(c) for c in feature_frame.columns),
        tuple(str(c) for c in classes),
    )
