"""V2 gRPC messages (KServe's `grpc_predict_v2_pb2`): decode a `ModelInferRequest`
straight into the shared tensors (no InferRequest, no pandas), encode the answer."""

from __future__ import annotations

from typing import Any

import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from serving.codec.tensors import (
    NUMERIC_DATATYPES,
    DecodedRequest,
    Output,
    Tensor,
    assemble,
    output_tensors,
    requested_outputs,
)
from serving.errors import InvalidRequest
from serving.loader import Prediction
from serving.metadata import ModelSpec

# Where each V2 datatype's values sit in InferTensorContents.
CONTENTS_FIELD = {
    "FP64": "fp64_contents",
    "FP32": "fp32_contents",
    "INT64": "int64_contents",
    "INT32": "int_contents",
    "INT16": "int_contents",
    "INT8": "int_contents",
    "UINT64": "uint64_contents",
    "UINT32": "uint_contents",
    "UINT16": "uint_contents",
    "UINT8": "uint_contents",
    "BYTES": "bytes_contents",
}


def decode_grpc(request: pb.ModelInferRequest, spec: ModelSpec, max_batch: int) -> DecodedRequest:
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents: "
            "send one raw buffer per input, or none"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        datatype = tensor.datatype
        if datatype not in NUMERIC_DATATYPES:
            data: Any = []
        elif raw:
            itemsize = np.dtype(NUMERIC_DATATYPES[datatype]).itemsize
            if len(raw[index]) % itemsize:
                raise InvalidRequest(
                    f"raw contents of input {tensor.name!r} hold {len(raw[index])} bytes, not a "
                    f"whole number of {datatype} values"
                )
            data = np.frombuffer(raw[index], dtype=NUMERIC_DATATYPES[datatype])
        elif datatype == "FP16":
            raise InvalidRequest(f"input {tensor.name!r}: FP16 values must come as raw contents")
        else:
            data = np.asarray(getattr(tensor.contents, CONTENTS_FIELD[datatype]))
        tensors.append(Tensor(tensor.name, datatype, list(tensor.shape), data))
    if not tensors:
        raise InvalidRequest("the request has no inputs; send one 'features' tensor [N, F]")
    return DecodedRequest(
        features=assemble(tensors, spec, max_batch),
        outputs=requested_outputs([o.name for o in request.outputs]),
        request_id=request.id or None,
    )


def encode_grpc(
    prediction: Prediction, decoded: DecodedRequest, model_name: str, version: str
) -> pb.ModelInferResponse:
    return pb.ModelInferResponse(
        model_name=model_name,
        model_version=version,
        id=decoded.request_id or "",
        outputs=[_grpc_output(t) for t in output_tensors(prediction, decoded.outputs)],
    )


def _grpc_output(tensor: Output) -> pb.ModelInferResponse.InferOutputTensor:
    if tensor.datatype == "BYTES":
        values: list[Any] = [str(v).encode() for v in tensor.data]
    else:
        values = np.asarray(tensor.data).tolist()
    return pb.ModelInferResponse.InferOutputTensor(
        name=tensor.name,
        datatype=tensor.datatype,
        shape=tensor.shape,
        contents=pb.InferTensorContents(**{CONTENTS_FIELD[tensor.datatype]: values}),
    )
