from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.data import data_sha256, load_dataset
from training.errors import ConfigError


def write_csv(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_breast_cancer_is_the_documented_dataset() -> None:
    data = load_dataset("breast-cancer")
    assert data.features.shape == (569, 30)
    assert data.class_names == ("malignant", "benign")
    assert np.bincount(data.labels).tolist() == [212, 357]  # 0 = malignant


def test_hash_is_stable_and_changes_with_any_value() -> None:
    data = load_dataset("breast_cancer")
    assert load_dataset("breast_cancer").sha256 == data.sha256
    changed = data.features.copy()
    changed[100, 7] += 1e-9
    assert data_sha256(changed, data.labels, data.feature_names, data.class_names) != data.sha256
    relabelled = data.labels.copy()
    relabelled[0] = 1 - relabelled[0]
    assert (
        data_sha256(data.features, relabelled, data.feature_names, data.class_names) != data.sha256
    )


def test_the_same_data_from_a_csv_hashes_the_same(tmp_path: Path) -> None:
    iris = load_dataset("iris")
    rows = [",".join([*iris.feature_names, "target"])]
    for features, label in zip(iris.features, iris.labels, strict=True):
        rows.append(",".join([*map(repr, features.tolist()), iris.class_names[label]]))
    csv = load_dataset(str(write_csv(tmp_path / "iris.csv", "\n".join(rows) + "\n")))
    assert csv.class_names == iris.class_names
    assert csv.sha256 == iris.sha256


def test_unknown_dataset_name_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"unknown dataset 'mnist'.*breast_cancer, iris"):
        load_dataset("mnist")


def test_missing_csv_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_dataset(str(tmp_path / "absent.csv"))


def test_csv_without_target_column_names_the_columns(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,label\n1,2,0\n3,4,1\n")
    with pytest.raises(ConfigError, match="no target column 'target'; its columns are a, b, label"):
        load_dataset(str(path))


def test_csv_with_non_numeric_features_names_them(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,colour,target\n1,red,0\n3,blue,1\n")
    with pytest.raises(ConfigError, match="not numeric: colour"):
        load_dataset(str(path))


def test_csv_with_empty_cells_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,target\n1,,0\n3,4,1\n")
    with pytest.raises(ConfigError, match="empty cells in b"):
        load_dataset(str(path))


def test_csv_with_a_single_class_is_refused(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,target\n1,yes\n2,yes\n")
    with pytest.raises(ConfigError, match="single class"):
        load_dataset(str(path))


def test_csv_with_another_target_column(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", "a,b,label\n1,2,no\n3,4,yes\n5,6,no\n")
    data = load_dataset(str(path), target_column="label")
    assert data.feature_names == ("a", "b")
    assert data.class_names == ("no", "yes")
    assert data.labels.tolist() == [0, 1, 0]


@pytest.mark.parametrize(
    ("cell", "problem"),
    [
        ("inf", "not finite"),
        ("-inf", "not finite"),
        ("1e309", "not finite"),  # beyond float64: read as inf
        ("1e308", "beyond"),  # finite, but its square is not
        ("-1e200", "beyond"),
    ],
)
def test_csv_with_values_float64_cannot_work_with_names_the_column(
    tmp_path: Path, cell: str, problem: str
) -> None:
    path = write_csv(tmp_path / "d.csv", f"a,size,target\n1,2,0\n3,{cell},1\n5,6,0\n")
    with pytest.raises(ConfigError, match=rf"columns size hold values .*{problem}"):
        load_dataset(str(path))


def test_the_largest_value_a_scaler_can_square_and_sum_is_accepted(tmp_path: Path) -> None:
    from sklearn.preprocessing import StandardScaler

    from training.data import largest_safe_value

    big = largest_safe_value(3) * 0.99
    path = write_csv(tmp_path / "d.csv", f"a,target\n{big!r},0\n{-big!r},1\n{big!r},0\n")
    data = load_dataset(str(path))
    assert np.isfinite(StandardScaler().fit_transform(data.features)).all()
