"""KServe's `InferRequest` / `InferResponse`: what its data plane hands `predict()`
and what the binary tensor extension parses into."""

from __future__ import annotations

from typing import Any

import numpy as np

from serving.codec.tensors import (
    NUMERIC_DATATYPES,
    DecodedRequest,
    Tensor,
    assemble,
    output_tensors,
    requested_outputs,
)
from serving.errors import InvalidRequest, quoted
from serving.loader import Prediction
from serving.metadata import ModelSpec


def decode_infer_request(request: Any, spec: ModelSpec, max_batch: int) -> DecodedRequest:
    """A KServe `InferRequest` → the same validated matrix."""
    from kserve.errors import InvalidInput

    tensors = []
    for tensor in request.inputs:
        if tensor.datatype not in NUMERIC_DATATYPES:
            # Checked before as_numpy(): KServe raises a bare error for unknown types.
            tensors.append(Tensor(tensor.name, tensor.datatype, list(tensor.shape), []))
            continue
        try:
            data = np.asarray(tensor.as_numpy()).ravel()
        except (ValueError, TypeError, InvalidInput) as e:
            raise InvalidRequest(
                f"input {quoted(tensor.name)}: its data does not fit shape {quoted(tensor.shape)} "
                f"and datatype {quoted(tensor.datatype)}"
            ) from e
        tensors.append(Tensor(tensor.name, tensor.datatype, list(tensor.shape), data))
    outputs = [o.name for o in request.request_outputs or []]
    return DecodedRequest(
        features=assemble(tensors, spec, max_batch),
        outputs=requested_outputs(outputs),
        request_id=request.id,
    )


def to_infer_response(
    prediction: Prediction, decoded: DecodedRequest, model_name: str, version: str
) -> Any:
    from kserve.protocol.infer_type import InferOutput, InferResponse

    return InferResponse(
        response_id=decoded.request_id or "",
        model_name=model_name,
        model_version=version,
        infer_outputs=[
            InferOutput(t.name, t.shape, t.datatype, np.asarray(t.data).tolist())
            for t in output_tensors(prediction, decoded.outputs)
        ],
    )
