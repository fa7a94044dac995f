"""V2 gRPC messages (KServe's `grpc_predict_v2_pb2`): decode a `ModelInferRequest`
straight into the shared tensors (no InferRequest, no pandas), encode the answer."""

from __future__ import annotations

import numpy as np
from kserve.protocol.grpc import grpc_predict_v2_pb2 as pb

from serving.codec.binary import raw_output, raw_tensor
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
    """Typed `contents` or `raw_input_contents` (one buffer per input), not both."""
    raw = request.raw_input_contents
    if raw and len(raw) != len(request.inputs):
        raise InvalidRequest(
            f"{len(request.inputs)} inputs but {len(raw)} raw_input_contents: "
            "send one raw buffer per input, or none"
        )
    tensors = []
    for index, tensor in enumerate(request.inputs):
        datatype = tensor.datatype
        if raw and tensor.HasField("contents"):
            raise InvalidRequest(
                f"input {quoted(tensor.name)} has typed contents while the request carries "
                "raw_input_contents: send every input one way, raw or typed"
            )
        if raw:
            data = raw_tensor(tensor.name, datatype, list(tensor.shape), memoryview(raw[index]))
        elif datatype not in NUMERIC_DATATYPES:
            data = np.empty(0)  # refused by name and datatype, with the accepted types
        elif datatype == "FP16":
            raise InvalidRequest(
                f"input {quoted(tensor.name)}: FP16 values must come as raw contents"
            )
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
    """Outputs as `raw_output_contents`, what KServe's and Triton's servers answer:
    Triton's client reads only raw contents, KServe's reads both."""
    tensors = output_tensors(prediction, decoded.outputs)
    return pb.ModelInferResponse(
        model_name=model_name,
        model_version=version,
        id=decoded.request_id or "",
        outputs=[
            pb.ModelInferResponse.InferOutputTensor(name=t.name, datatype=t.datatype, shape=t.shape)
            for t in tensors
        ],
        raw_output_contents=[raw_output(t) for t in tensors],
    )
