"""The load test's response checks: a well-formed V2 answer passes and gives its version;
every way of breaking the contract is caught with a message that names the problem."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from loadtest import v2

CLASSES = ("malignant", "benign")


def answer(rows: int = 2) -> dict[str, Any]:
    """What the predictor sends for `rows` rows (shape of serving's to_rest output)."""
    probabilities = [[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]][:rows]
    labels = [int(np.argmax(p)) for p in probabilities]
    return {
        "model_name": "breast-cancer",
        "model_version": "7",
        "id": "",
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [rows], "data": labels},
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": [rows, 2],
                "data": [x for p in probabilities for x in p],
            },
            {
                "name": "class_name",
                "datatype": "BYTES",
                "shape": [rows],
                "data": [CLASSES[label] for label in labels],
            },
        ],
    }


def output(body: dict[str, Any], name: str) -> dict[str, Any]:
    return next(o for o in body["outputs"] if o["name"] == name)


def check(body: Any, rows: int = 2) -> str:
    return v2.check_infer_response(body, model_name="breast-cancer", rows=rows, class_names=CLASSES)


def test_a_well_formed_answer_passes_and_gives_its_version() -> None:
    assert check(answer()) == "7"
    assert v2.check_infer_response(answer(3), model_name="breast-cancer", rows=3) == "7"


def test_nested_probability_data_is_accepted_as_well_as_flat() -> None:
    body = answer()
    output(body, "probabilities")["data"] = [[0.9, 0.1], [0.2, 0.8]]

    assert check(body) == "7"


def _set(name: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        output(body, name)[key] = value

    return mutate


def _drop(name: str) -> Callable[[dict[str, Any]], None]:
    def mutate(body: dict[str, Any]) -> None:
        body["outputs"] = [o for o in body["outputs"] if o["name"] != name]

    return mutate


BROKEN: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "other model": (lambda b: b.update(model_name="iris"), "model_name 'iris'"),
    "no version": (lambda b: b.pop("model_version"), "model_version must be"),
    "empty version": (lambda b: b.update(model_version=""), "model_version must be"),
    "no outputs": (lambda b: b.pop("outputs"), "'outputs' must be a list"),
    "missing class_name": (_drop("class_name"), "missing outputs ['class_name']"),
    "probabilities as FP32": (_set("probabilities", "datatype", "FP32"), "expected FP64"),
    "one row short": (_set("label", "data", [0]), "1 values for shape [2]"),
    "label shape": (_set("label", "shape", [1, 2]), "label: shape [1, 2], expected [2]"),
    "not summing to 1": (
        _set("probabilities", "data", [0.9, 0.2, 0.2, 0.8]),
        "row 0 sums to 1.1",
    ),
    "negative": (_set("probabilities", "data", [1.1, -0.1, 0.2, 0.8]), "within [0, 1]"),
    "NaN": (_set("probabilities", "data", [float("nan"), 0.1, 0.2, 0.8]), "finite"),
    "text": (_set("probabilities", "data", ["a", "b", "c", "d"]), "not numbers"),
    "label out of range": (_set("label", "data", [0, 2]), "row 1 is 2, expected 0..1"),
    "label as float": (_set("label", "data", [0, 1.0]), "row 1 is 1.0"),
    "label not the argmax": (_set("label", "data", [1, 1]), "row 0 is 1, not its most probable"),
    "wrong class name": (
        _set("class_name", "data", ["malignant", "malignant"]),
        "row 1 is 'malignant' but label 1 is 'benign'",
    ),
    "one class": (_set("probabilities", "shape", [2, 1]), "1 classes, expected at least 2"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_answer_is_a_bad_response_that_says_why(case: str) -> None:
    mutate, message = BROKEN[case]
    body = copy.deepcopy(answer())
    mutate(body)

    with pytest.raises(v2.BadResponse) as raised:
        check(body)

    assert message in str(raised.value)


def test_an_answer_for_another_number_of_rows_is_bad() -> None:
    with pytest.raises(v2.BadResponse, match=r"probabilities: shape \[2, 2\], expected"):
        check(answer(2), rows=3)


def test_a_body_that_is_not_an_object_is_bad() -> None:
    with pytest.raises(v2.BadResponse, match="must be a JSON object, got list"):
        check([1, 2])


def test_metadata_gives_versions_width_and_class_names() -> None:
    body = {
        "name": "breast-cancer",
        "versions": ["3"],
        "platform": "scikit-learn",
        "inputs": [{"name": "features", "datatype": "FP64", "shape": [-1, 30]}],
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [-1]},
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, 2]},
            {"name": "class_name", "datatype": "BYTES", "shape": [-1]},
        ],
        "parameters": {"class_names": ["malignant", "benign"]},
    }

    info = v2.check_metadata(body, model_name="breast-cancer")

    assert info == v2.ModelInfo(versions=("3",), n_features=30, class_names=CLASSES)
    with pytest.raises(v2.BadResponse, match="name 'breast-cancer', expected 'iris'"):
        v2.check_metadata(body, model_name="iris")
    with pytest.raises(v2.BadResponse, match=r"outputs lack \['class_name'\]"):
        v2.check_metadata({**body, "outputs": body["outputs"][:2]}, model_name="breast-cancer")
    with pytest.raises(v2.BadResponse, match="versions must be a non-empty list"):
        v2.check_metadata({**body, "versions": []}, model_name="breast-cancer")


def test_infer_body_sends_fp64_rows_nested_or_flat() -> None:
    rows = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])

    nested = v2.infer_body(rows)
    flat = v2.infer_body(rows, flat=True)

    tensor = {"name": "features", "shape": [2, 3], "datatype": "FP64"}
    assert nested == {"inputs": [{**tensor, "data": [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]}]}
    assert flat == {"inputs": [{**tensor, "data": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]}]}


def test_the_rows_come_from_the_real_dataset() -> None:
    from sklearn.datasets import load_breast_cancer

    rows = v2.load_rows("breast_cancer")

    assert rows.shape == (569, 30)
    np.testing.assert_array_equal(rows, load_breast_cancer().data)
