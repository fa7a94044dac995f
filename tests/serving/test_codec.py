"""The V2 codec, both ways: requests → one validated float64 matrix, predictions → V2."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import orjson
import pytest

from serving import codec
from serving.errors import InvalidRequest
from serving.loader import Prediction
from serving.metadata import ModelSpec

SPEC = ModelSpec(
    n_features=3,
    input_datatype="FP64",
    feature_names=("radius", "texture", "area"),
    class_names=("malignant", "benign"),
)
ROWS = [[1.0, 2.0, 3.0], [4.0, 5.0, 6.5]]


def features(data: Any, shape: list[int] | None = None, datatype: str = "FP64") -> dict[str, Any]:
    return {"name": "features", "shape": shape or [2, 3], "datatype": datatype, "data": data}


def decode(payload: Any, max_batch: int = 10) -> codec.DecodedRequest:
    return codec.decode_v2(payload, SPEC, max_batch)


def rejected(payload: Any, max_batch: int = 10) -> str:
    with pytest.raises(InvalidRequest) as caught:
        decode(payload, max_batch)
    return caught.value.message


@pytest.mark.parametrize(
    "data",
    [ROWS, [v for row in ROWS for v in row]],
    ids=["nested", "flat"],
)
def test_features_tensor_decodes_to_float64_matrix(data: Any) -> None:
    decoded = decode({"id": "r1", "inputs": [features(data)]})

    assert decoded.features.dtype == np.float64
    np.testing.assert_array_equal(decoded.features, np.array(ROWS))
    assert decoded.outputs == ("label", "probabilities", "class_name")
    assert decoded.request_id == "r1"


@pytest.mark.parametrize("datatype", ["FP32", "FP16", "INT64", "INT32", "UINT8"])
def test_numeric_datatypes_are_accepted(datatype: str) -> None:
    decoded = decode({"inputs": [features([[1, 2, 3], [4, 5, 6]], datatype=datatype)]})

    np.testing.assert_array_equal(decoded.features, [[1, 2, 3], [4, 5, 6]])


def test_one_tensor_per_column_is_assembled_in_signature_order() -> None:
    inputs = [
        {"name": "area", "shape": [2], "datatype": "FP64", "data": [3.0, 6.5]},
        {"name": "radius", "shape": [2], "datatype": "FP64", "data": [1.0, 4.0]},
        {"name": "texture", "shape": [2, 1], "datatype": "FP32", "data": [[2.0], [5.0]]},
    ]

    np.testing.assert_array_equal(decode({"inputs": inputs}).features, np.array(ROWS))


def test_requested_outputs_are_returned_in_the_requested_order() -> None:
    payload = {"inputs": [features(ROWS)], "outputs": [{"name": "class_name"}, {"name": "label"}]}

    assert decode(payload).outputs == ("class_name", "label")


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ([1, 2], "must be a JSON object with 'inputs'"),
        ({"input": []}, "the request has no 'inputs'"),
        ({"inputs": []}, "'inputs' must be a non-empty list"),
        ({"inputs": [{"name": "features"}]}, "lacks 'shape', 'datatype', 'data'"),
        ({"inputs": [features(ROWS, shape=[2, "3"])]}, "shape must be a list of non-negative"),
        ({"inputs": [{**features(ROWS), "name": "pixels"}]}, "unknown input tensor 'pixels'"),
        ({"inputs": [features(ROWS, datatype="BYTES")]}, "datatype 'BYTES'; expected FP32 or FP64"),
        ({"inputs": [features(ROWS, datatype="BOOL")]}, "datatype 'BOOL'"),
        (
            {"inputs": [features([["a", "b", "c"]], shape=[1, 3])]},
            "holds strings; expected numbers",
        ),
        ({"inputs": [features([[1, None, 3]], shape=[1, 3])]}, "holds nulls or mixed values"),
        ({"inputs": [features([[1, 2], [3]], shape=[2, 3])]}, "not a regular array of numbers"),
        ({"inputs": [features(ROWS, shape=[3, 3])]}, "needs 9 values, but its data holds 6"),
        ({"inputs": [features([[1, 2], [3, 4]], shape=[2, 2])]}, "shape [2, 2]; expected [N, 3]"),
        ({"inputs": [features([1, 2, 3], shape=[3])]}, "expected [N, 3]"),
        ({"inputs": [features([], shape=[0, 3])]}, "the batch is empty"),
        (
            {"inputs": [features([[1.0, float("nan"), 3.0]], shape=[1, 3])]},
            "row 0, feature 1 ('texture') is nan",
        ),
        (
            {"inputs": [features([[1.0, 2.0, float("inf")]], shape=[1, 3])]},
            "is inf: every value must be a finite",
        ),
        ({"inputs": [features(ROWS), features(ROWS)]}, "distinct names"),
        ({"inputs": [features(ROWS), {**features(ROWS), "name": "area"}]}, "not both"),
        (
            {"inputs": [{"name": "area", "shape": [1], "datatype": "FP64", "data": [1.0]}]},
            "lacks 2 of the 3 columns",
        ),
        ({"inputs": [features(ROWS)], "outputs": [{"name": "logits"}]}, "unknown output 'logits'"),
        ({"inputs": [features(ROWS)], "outputs": ["label"]}, "'outputs' must be a list of objects"),
        ({"inputs": [features(ROWS)], "id": 7}, "'id' must be a string"),
    ],
)
def test_malformed_requests_say_what_was_wrong_and_expected(payload: Any, expected: str) -> None:
    assert expected in rejected(payload)


def test_columns_with_different_row_counts_are_rejected() -> None:
    inputs = [
        {"name": name, "shape": [rows], "datatype": "FP64", "data": [1.0] * rows}
        for name, rows in (("radius", 2), ("texture", 2), ("area", 1))
    ]

    assert "every column needs the same N" in rejected({"inputs": inputs})


def test_a_batch_above_the_maximum_is_rejected_before_its_data_is_read() -> None:
    message = rejected({"inputs": [features("not even a list", shape=[11, 3])]}, max_batch=10)

    assert "11 rows, more than this server's maximum of 10 (MAX_BATCH_SIZE)" in message


def test_json_with_nan_literals_reaches_the_finite_check() -> None:
    tensor = b'{"name": "features", "shape": [1, 3], "datatype": "FP64", "data": [1, NaN, 2]}'
    body = b'{"inputs": [' + tensor + b"]}"

    with pytest.raises(InvalidRequest, match="is nan: every value must be a finite number"):
        decode(codec.parse_json(body, SPEC))


@pytest.mark.parametrize(
    ("body", "expected"), [(b"", "body is empty"), (b"{'a'", "not valid JSON")]
)
def test_bodies_that_are_not_json_are_rejected(body: bytes, expected: str) -> None:
    with pytest.raises(InvalidRequest, match=expected) as caught:
        codec.parse_json(body, SPEC)
    assert '"shape": [N, 3]' in caught.value.message


def prediction() -> Prediction:
    return Prediction(
        labels=np.array([0, 1], dtype=np.int64),
        probabilities=np.array([[0.9, 0.1], [0.25, 0.75]]),
        class_names=["malignant", "benign"],
    )


def test_encode_v2_writes_every_output_with_datatype_shape_and_version() -> None:
    decoded = codec.DecodedRequest(np.zeros((2, 3)), codec.requested_outputs(None), "r1")
    content, json_length = codec.encode_v2(prediction(), decoded, "bc", "7")
    body = json.loads(content)

    assert json_length is None

    assert body == {
        "model_name": "bc",
        "model_version": "7",
        "id": "r1",
        "outputs": [
            {"name": "label", "datatype": "INT64", "shape": [2], "data": [0, 1]},
            {
                "name": "probabilities",
                "datatype": "FP64",
                "shape": [2, 2],
                "data": [0.9, 0.1, 0.25, 0.75],
            },
            {
                "name": "class_name",
                "datatype": "BYTES",
                "shape": [2],
                "data": ["malignant", "benign"],
            },
        ],
    }


def test_encode_v2_writes_only_the_requested_outputs() -> None:
    decoded = codec.DecodedRequest(np.zeros((2, 3)), ("probabilities",))
    body = orjson.loads(codec.encode_v2(prediction(), decoded, "bc", "7")[0])

    assert [o["name"] for o in body["outputs"]] == ["probabilities"]
    assert "id" not in body


def test_v1_instances_decode_as_rows_or_named_objects() -> None:
    named = [dict(zip(SPEC.feature_names or (), row, strict=True)) for row in ROWS]

    np.testing.assert_array_equal(codec.decode_v1({"instances": ROWS}, SPEC, 10), ROWS)
    np.testing.assert_array_equal(codec.decode_v1({"instances": named}, SPEC, 10), ROWS)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        ({"inputs": ROWS}, "a V1 request needs 'instances'"),
        ({"instances": []}, "the batch is empty"),
        ({"instances": [[1.0, 2.0]]}, "needs 3 values, but its data holds 2"),
        ({"instances": [{"radius": 1.0}]}, "an instance lacks feature 'texture'"),
    ],
)
def test_malformed_v1_requests_are_rejected(payload: Any, expected: str) -> None:
    with pytest.raises(InvalidRequest, match=expected):
        codec.decode_v1(payload, SPEC, 10)


def test_encode_v1_gives_one_prediction_per_instance() -> None:
    assert codec.encode_v1(prediction(), "bc", "7") == {
        "model_name": "bc",
        "model_version": "7",
        "predictions": [
            {"label": 0, "class_name": "malignant", "probabilities": [0.9, 0.1]},
            {"label": 1, "class_name": "benign", "probabilities": [0.25, 0.75]},
        ],
    }


def test_every_encoder_writes_the_outputs_the_metadata_declares() -> None:
    """One table of outputs: JSON, gRPC and KServe's InferResponse answer with the names,
    datatypes and shapes `GET /v2/models/<name>` lists, with the same values."""
    from kserve.protocol.grpc.grpc_predict_v2_pb2 import ModelInferResponse

    decoded = codec.DecodedRequest(np.zeros((2, 3)), codec.requested_outputs(None), "r1")
    declared = [(o["name"], o["datatype"], o["shape"]) for o in SPEC.outputs()]
    expected_values = [[0, 1], [0.9, 0.1, 0.25, 0.75], ["malignant", "benign"]]

    rest = orjson.loads(codec.encode_v2(prediction(), decoded, "bc", "7")[0])
    grpc: ModelInferResponse = codec.encode_grpc(prediction(), decoded, "bc", "7")
    infer_response = codec.to_infer_response(prediction(), decoded, "bc", "7")

    def wildcard(shape: list[int]) -> list[int]:
        return [-1, *shape[1:]]

    assert [(o["name"], o["datatype"], wildcard(o["shape"])) for o in rest["outputs"]] == declared
    assert [(o.name, o.datatype, wildcard(list(o.shape))) for o in grpc.outputs] == declared
    assert [
        (o.name, o.datatype, wildcard(list(o.shape))) for o in infer_response.outputs
    ] == declared
    assert [o["data"] for o in rest["outputs"]] == expected_values
    assert [
        codec.bytes_elements(raw, o.name) if o.datatype == "BYTES" else raw
        for o, raw in zip(grpc.outputs, grpc.raw_output_contents, strict=True)
    ] == [
        np.array(expected_values[0], "<i8").tobytes(),
        np.array(expected_values[1], "<f8").tobytes(),
        [b"malignant", b"benign"],
    ]
    assert [list(o.data) for o in infer_response.outputs] == expected_values
    assert (rest["id"], grpc.id, infer_response.id) == ("r1", "r1", "r1")


def test_json_nested_deeper_than_orjson_allows_is_invalid_not_a_recursion_error() -> None:
    """The standard-library fallback (for NaN literals) never sees a deep body: REST
    refuses such bodies before parsing, and the codec bounds the depth itself too."""
    from serving.codec import parse_json
    from serving.errors import InvalidRequest
    from serving.metadata import ModelSpec

    spec = ModelSpec(30, "FP64", None, ("malignant", "benign"))
    body = b'{"inputs": [' + b"[" * 5000 + b"NaN" + b"]" * 5000 + b"]}"

    with pytest.raises(InvalidRequest, match="not valid JSON"):
        parse_json(body, spec)
