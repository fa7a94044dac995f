"""The client side of the V2 contract (docs/design.md, "Predictor contract (V2)"): request bodies
built from real rows, and strict checks of what comes back.

A response that breaks the contract raises `BadResponse`; the locust user turns that
into a failure, so a predictor that answers 200 with garbage fails a load test as
surely as one that answers 500.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FEATURES = "features"
OUTPUTS = ("label", "probabilities", "class_name")
# Probabilities are float64 on the wire; a row may be off 1 by rounding, no more.
SUM_TOLERANCE = 1e-6


class BadResponse(Exception):
    """A response that does not honour the V2 contract; the message says how."""


@dataclass(frozen=True)
class ModelInfo:
    """What `GET /v2/models/NAME` says, as far as the checks need it."""

    versions: tuple[str, ...]
    n_features: int | None
    class_names: tuple[str, ...] | None


def load_rows(dataset: str) -> npt.NDArray[np.float64]:
    """The feature rows of a dataset the training package knows (breast_cancer, iris, a CSV):
    requests carry real rows, so the predicted-class mix is a real one too."""
    from training.data import load_dataset

    return load_dataset(dataset).features


def infer_body(rows: npt.NDArray[np.float64], *, flat: bool = False) -> dict[str, Any]:
    """A V2 infer request with one FP64 tensor `features` of shape [N, columns].

    `flat` sends the data row-major in one list (the protocol's canonical form), else
    nested per row; the predictor must accept both.
    """
    n, columns = rows.shape
    data = rows.ravel().tolist() if flat else rows.tolist()
    return {"inputs": [{"name": FEATURES, "shape": [n, columns], "datatype": "FP64", "data": data}]}


def _outputs_by_name(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    outputs = body.get("outputs")
    if not isinstance(outputs, list):
        raise BadResponse(f"'outputs' must be a list, got {type(outputs).__name__}")
    by_name: dict[str, Mapping[str, Any]] = {}
    for output in outputs:
        if not isinstance(output, Mapping) or not isinstance(output.get("name"), str):
            raise BadResponse(f"every output needs a name, got {output!r:.80}")
        if output["name"] in by_name:
            raise BadResponse(f"output {output['name']!r} appears twice")
        by_name[output["name"]] = output
    missing = [name for name in OUTPUTS if name not in by_name]
    if missing:
        raise BadResponse(f"missing outputs {missing}; expected {list(OUTPUTS)}")
    return by_name


def _tensor(output: Mapping[str, Any], datatype: str, shape: Sequence[int]) -> list[Any]:
    """The tensor's data as a flat list, after checking its datatype, shape and size."""
    name = output["name"]
    if output.get("datatype") != datatype:
        raise BadResponse(f"{name}: datatype {output.get('datatype')!r}, expected {datatype}")
    if list(output.get("shape") or []) != list(shape):
        raise BadResponse(f"{name}: shape {output.get('shape')}, expected {list(shape)}")
    data = output.get("data")
    if not isinstance(data, list):
        raise BadResponse(f"{name}: 'data' must be a list")
    flat = _flatten(data)
    if len(flat) != math.prod(shape):
        raise BadResponse(f"{name}: {len(flat)} values for shape {list(shape)}")
    return flat


def _flatten(data: list[Any]) -> list[Any]:
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def check_infer_response(
    body: Any, *, model_name: str, rows: int, class_names: Sequence[str] | None = None
) -> str:
    """Check a V2 infer response to a request of `rows` rows; return its `model_version`.

    Labels are integers in range and each is its row's most probable class; each
    probability row is finite, within [0, 1] and sums to 1; `class_name` names the
    label (checked against `class_names` when the metadata gave them).
    """
    if not isinstance(body, Mapping):
        raise BadResponse(f"the body must be a JSON object, got {type(body).__name__}")
    if body.get("model_name") != model_name:
        raise BadResponse(f"model_name {body.get('model_name')!r}, expected {model_name!r}")
    version = body.get("model_version")
    if not isinstance(version, str) or not version:
        raise BadResponse(f"model_version must be a non-empty string, got {version!r}")
    outputs = _outputs_by_name(body)
    matrix = _probabilities(outputs["probabilities"], rows)
    labels = _labels(outputs["label"], matrix)
    _check_class_names(outputs["class_name"], labels, matrix.shape[1], class_names)
    return version


def _probabilities(output: Mapping[str, Any], rows: int) -> npt.NDArray[np.float64]:
    shape = output.get("shape")
    if not (isinstance(shape, list) and len(shape) == 2 and isinstance(shape[1], int)):
        raise BadResponse(f"probabilities: shape {shape}, expected [{rows}, n_classes]")
    n_classes = shape[1]
    if n_classes < 2:
        raise BadResponse(f"probabilities: {n_classes} classes, expected at least 2")
    try:
        matrix = np.asarray(_tensor(output, "FP64", [rows, n_classes]), dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise BadResponse(f"probabilities: not numbers ({e})") from e
    matrix = matrix.reshape(rows, n_classes)
    if not np.isfinite(matrix).all() or (matrix < 0).any() or (matrix > 1).any():
        raise BadResponse("probabilities: every value must be a finite number within [0, 1]")
    sums = matrix.sum(axis=1)
    worst = int(np.argmax(np.abs(sums - 1)))
    if abs(sums[worst] - 1) > SUM_TOLERANCE:
        raise BadResponse(f"probabilities: row {worst} sums to {sums[worst]:.6g}, not 1")
    return matrix


def _labels(output: Mapping[str, Any], matrix: npt.NDArray[np.float64]) -> list[int]:
    rows, n_classes = matrix.shape
    labels = _tensor(output, "INT64", [rows])
    for row, label in enumerate(labels):
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < n_classes:
            raise BadResponse(f"label: row {row} is {label!r}, expected 0..{n_classes - 1}")
        if matrix[row, label] < matrix[row].max():
            raise BadResponse(f"label: row {row} is {label}, not its most probable class")
    return labels


def _check_class_names(
    output: Mapping[str, Any],
    labels: list[int],
    n_classes: int,
    class_names: Sequence[str] | None,
) -> None:
    if class_names is not None and len(class_names) != n_classes:
        raise BadResponse(
            f"probabilities: {n_classes} classes, but the metadata names {len(class_names)}"
        )
    names = _tensor(output, "BYTES", [len(labels)])
    for row, (label, name) in enumerate(zip(labels, names, strict=True)):
        if not isinstance(name, str) or not name:
            raise BadResponse(f"class_name: row {row} is {name!r}, expected a class name")
        if class_names is not None and name != class_names[label]:
            raise BadResponse(
                f"class_name: row {row} is {name!r} but label {label} is {class_names[label]!r}"
            )


def check_metadata(body: Any, *, model_name: str) -> ModelInfo:
    """Check `GET /v2/models/NAME`: the name, its versions, the `features` input and the
    three outputs; return what later checks use."""
    if not isinstance(body, Mapping):
        raise BadResponse(f"the body must be a JSON object, got {type(body).__name__}")
    if body.get("name") != model_name:
        raise BadResponse(f"name {body.get('name')!r}, expected {model_name!r}")
    versions = body.get("versions")
    if not (isinstance(versions, list) and versions and all(isinstance(v, str) for v in versions)):
        raise BadResponse(f"versions must be a non-empty list of strings, got {versions!r}")
    inputs = {i.get("name"): i for i in body.get("inputs") or [] if isinstance(i, Mapping)}
    if FEATURES not in inputs:
        raise BadResponse(f"inputs {sorted(map(str, inputs))} lack {FEATURES!r}")
    shape = inputs[FEATURES].get("shape")
    n_features = shape[1] if isinstance(shape, list) and len(shape) == 2 else None
    outputs = {o.get("name") for o in body.get("outputs") or [] if isinstance(o, Mapping)}
    missing = [name for name in OUTPUTS if name not in outputs]
    if missing:
        raise BadResponse(f"outputs lack {missing}")
    parameters = body.get("parameters")
    raw_names = parameters.get("class_names") if isinstance(parameters, Mapping) else None
    class_names = (
        tuple(raw_names)
        if isinstance(raw_names, list) and all(isinstance(n, str) for n in raw_names)
        else None
    )
    return ModelInfo(
        versions=tuple(versions),
        n_features=n_features if isinstance(n_features, int) else None,
        class_names=class_names,
    )
