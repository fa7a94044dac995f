"""The one codec of the predictor: every wire format decoded into one validated float64
matrix, and every answer encoded from the one output table (`serving.metadata.OUTPUTS`).

- `tensors`: what the formats share (validation into the matrix, the output tensors);
- `v2_rest`: V2 REST bodies, JSON and the binary tensor extension (`binary`: raw
  tensor bytes, shared with gRPC's raw contents); `v1`: KServe's V1 `instances`;
- `protobuf`: V2 gRPC messages; `infer_types`: KServe's `InferRequest`/`InferResponse`.

The REST and gRPC handlers only convert and call.
"""

from serving.codec.binary import bytes_elements, raw_output
from serving.codec.infer_types import decode_infer_request, to_infer_response
from serving.codec.protobuf import decode_grpc, encode_grpc
from serving.codec.tensors import (
    NUMERIC_DATATYPES,
    DecodedRequest,
    FloatMatrix,
    Output,
    Tensor,
    assemble,
    output_tensors,
    requested_outputs,
)
from serving.codec.v1 import decode_v1, encode_v1
from serving.codec.v2_rest import decode_v2, encode_v2, parse_json

__all__ = [
    "NUMERIC_DATATYPES",
    "DecodedRequest",
    "FloatMatrix",
    "Output",
    "Tensor",
    "assemble",
    "bytes_elements",
    "decode_grpc",
    "decode_infer_request",
    "decode_v1",
    "decode_v2",
    "encode_grpc",
    "encode_v1",
    "encode_v2",
    "output_tensors",
    "parse_json",
    "raw_output",
    "requested_outputs",
    "to_infer_response",
]
