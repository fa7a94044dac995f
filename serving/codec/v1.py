"""KServe's V1 protocol (`instances` in, `predictions` out), for the V1 route."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.codec.tensors import FloatMatrix, Tensor, check_batch, finite, tensor_values
from serving.errors import InvalidRequest, quoted
from serving.loader import Prediction
from serving.metadata import OUTPUTS, ModelSpec


def decode_v1(payload: Any, spec: ModelSpec, max_batch: int) -> FloatMatrix:
    """KServe's V1 body: `{"instances": [[f1, ..., fn], ...]}`, or rows as objects
    keyed by the signature's column names."""
    values = ", ".join(["f"] * min(spec.n_features, 3) + ["..."])
    example = f'{{"instances": [[{values}]]}}'
    if not isinstance(payload, dict) or "instances" not in payload:
        raise InvalidRequest(f"a V1 request needs 'instances', e.g. {example}")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise InvalidRequest(f"'instances' must be a list of rows, e.g. {example}")
    rows = len(instances)
    check_batch(rows, max_batch)
    if all(isinstance(row, dict) for row in instances):
        names = spec.feature_names
        if names is None:
            raise InvalidRequest(
                f"this model's features have no names: send rows as lists, e.g. {example}"
            )
        try:
            instances = [[row[n] for n in names] for row in instances]
        except KeyError as e:
            raise InvalidRequest(f"an instance lacks feature {quoted(e.args[0])}") from e
    tensor = Tensor("instances", "FP64", [rows, spec.n_features], instances)
    return finite(tensor_values(tensor, (rows, spec.n_features)), spec)


def encode_v1(prediction: Prediction, model_name: str, model_version: str) -> dict[str, Any]:
    """One object per row, holding that row of every output in `OUTPUTS`."""
    columns = {}
    for output in OUTPUTS:
        column = getattr(prediction, output.field)
        columns[output.name] = column.tolist() if isinstance(column, np.ndarray) else column
    rows = [dict(zip(columns, row, strict=True)) for row in zip(*columns.values(), strict=True)]
    return {"model_name": model_name, "model_version": model_version, "predictions": rows}
