"""The wire formats at the edge, in-process: the binary tensor extension both ways,
gzip bodies, media types, `GET /v2/`, and malformed input that used to answer 5xx or be
accepted wrongly (each a 400/415 with a short, bounded V2 error body)."""

from __future__ import annotations

import gzip
import json
import logging
import struct
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from serving import codec
from tests.serving.conftest import MODEL_NAME, Data, predictor_app

INFER = f"/v2/models/{MODEL_NAME}/infer"
OCTET = "application/octet-stream"


def binary_body(header: dict[str, Any], *raw: bytes) -> tuple[bytes, dict[str, str]]:
    json_part = json.dumps(header).encode()
    headers = {"inference-header-content-length": str(len(json_part)), "content-type": OCTET}
    return json_part + b"".join(raw), headers


def raw_features(
    rows: np.ndarray[Any, Any], datatype: str = "FP64"
) -> tuple[dict[str, Any], bytes]:
    dtype = {"FP64": "<f8", "FP32": "<f4"}[datatype]
    raw = rows.astype(dtype).tobytes()
    tensor = {
        "name": "features",
        "shape": list(rows.shape),
        "datatype": datatype,
        "parameters": {"binary_data_size": len(raw)},
    }
    return tensor, raw


def split_response(response: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The JSON part, and each binary output decoded as the extension defines."""
    length = int(response.headers["inference-header-content-length"])
    header = json.loads(response.content[:length])
    offset, values = length, {}
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        raw = response.content[offset : offset + size]
        offset += size
        if output["datatype"] == "BYTES":
            values[output["name"]] = [b.decode() for b in codec.bytes_elements(raw, "")]
        else:
            dtype = {"INT64": "<i8", "FP64": "<f8"}[output["datatype"]]
            values[output["name"]] = np.frombuffer(raw, dtype=dtype).reshape(output["shape"])
    assert offset == len(response.content)
    return header, values


@pytest.mark.parametrize("datatype", ["FP64", "FP32"])
def test_binary_in_and_out_answers_what_the_estimator_predicts(
    datatype: str, serving_client: TestClient, serving_data: Data, serving_model_factory: Any
) -> None:
    rows = serving_data.x[:5]
    tensor, raw = raw_features(rows, datatype)
    body, headers = binary_body(
        {"id": "b-1", "inputs": [tensor], "parameters": {"binary_data_output": True}}, raw
    )

    response = serving_client.post(INFER, content=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == OCTET
    header, values = split_response(response)
    assert header["id"] == "b-1"
    assert [o["name"] for o in header["outputs"]] == ["label", "probabilities", "class_name"]
    assert all("data" not in o for o in header["outputs"])
    estimator = serving_model_factory("logreg").active().model.estimator
    expected = estimator.predict_proba(rows.astype(tensor_dtype(datatype)).astype(np.float64))
    np.testing.assert_array_equal(values["probabilities"], expected)
    np.testing.assert_array_equal(values["label"], expected.argmax(axis=1))
    assert values["class_name"] == [serving_data.class_names[i] for i in expected.argmax(axis=1)]


def tensor_dtype(datatype: str) -> str:
    return {"FP64": "<f8", "FP32": "<f4"}[datatype]


def test_a_json_request_may_ask_for_one_output_in_binary(
    serving_client: TestClient, serving_data: Data
) -> None:
    rows = serving_data.x[:2]
    request = {
        "inputs": [
            {"name": "features", "shape": [2, 30], "datatype": "FP64", "data": rows.tolist()}
        ],
        "outputs": [
            {"name": "label"},
            {"name": "probabilities", "parameters": {"binary_data": True}},
        ],
    }

    response = serving_client.post(INFER, json=request)

    header, values = split_response(response)
    assert header["outputs"][0]["data"] == values_label(response)
    assert header["outputs"][1]["parameters"] == {"binary_data_size": 2 * 2 * 8}
    assert values["probabilities"].shape == (2, 2)
    assert "id" not in header


def values_label(response: Any) -> list[int]:
    length = int(response.headers["inference-header-content-length"])
    return list(json.loads(response.content[:length])["outputs"][0]["data"])


def test_the_binary_path_and_the_json_path_agree_on_a_missing_id(
    serving_client: TestClient, serving_data: Data
) -> None:
    tensor, raw = raw_features(serving_data.x[:1])
    body, headers = binary_body({"inputs": [tensor]}, raw)

    response = serving_client.post(INFER, content=body, headers=headers)

    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert "id" not in response.json()


def test_a_gzip_body_is_read_and_its_limit_holds_after_decompression(
    serving_client: TestClient, serving_data: Data
) -> None:
    request = {
        "inputs": [
            {
                "name": "features",
                "shape": [1, 30],
                "datatype": "FP64",
                "data": serving_data.x[:1].tolist(),
            }
        ]
    }
    ok = serving_client.post(
        INFER,
        content=gzip.compress(json.dumps(request).encode()),
        headers={"content-encoding": "gzip", "content-type": "application/json"},
    )
    bomb = serving_client.post(
        INFER,
        content=gzip.compress(b" " * (50 * 1024 * 1024)),  # ~50 kB that inflates to 50 MB
        headers={"content-encoding": "gzip"},
    )
    brotli = serving_client.post(INFER, content=b"x", headers={"content-encoding": "br"})

    assert ok.status_code == 200
    assert ok.json()["outputs"][0]["name"] == "label"
    assert bomb.status_code == 413
    assert "decompresses to more than this server's limit" in bomb.json()["error"]
    assert (brotli.status_code, list(brotli.json())) == (415, ["error"])


def test_server_metadata_is_served_with_and_without_the_slash_and_lists_binary(
    serving_client: TestClient,
) -> None:
    bare = serving_client.get("/v2", follow_redirects=False)
    slash = serving_client.get("/v2/", follow_redirects=False)

    assert (bare.status_code, slash.status_code) == (200, 200)
    assert bare.json() == slash.json()
    assert "binary_tensor_data" in bare.json()["extensions"]


def features_json(data: Any, shape: list[int], datatype: str = "FP64", **extra: Any) -> bytes:
    tensor = {"name": "features", "shape": shape, "datatype": datatype, "data": data}
    return json.dumps({"inputs": [tensor], **extra}).encode()


ROW = [1.0] * 30
NAN_ROW = ", ".join(["NaN"] + ["1.0"] * 29)
RAW_ROW = np.ones(30, "<f8").tobytes()

# (id, body, headers, status, part of the message); each answered 5xx or 200 before.
BAD: list[tuple[str, bytes, dict[str, str], int, str]] = [
    (
        "nested deeper than orjson allows, with a NaN",
        b'{"inputs": [' + b"[" * 5000 + b"NaN" + b"]" * 5000 + b"]}",
        {},
        400,
        # Refused before any parse: far more arrays than a request of 64 rows holds.
        "JSON arrays and objects",
    ),
    (
        "lone surrogate in id",
        f'{{"id": "\\ud800", "inputs": [{{"name": "features", "shape": [1, 30], '
        f'"datatype": "FP64", "data": [{NAN_ROW}]}}]}}'.encode(),
        {},
        400,
        "'id' is not valid Unicode text",
    ),
    (
        "FP16 given 1e300",
        features_json([1e300, *ROW[1:]], [1, 30], "FP16"),
        {},
        400,
        "beyond the range",
    ),
    (
        "INT8 given 1e300",
        features_json([1e300, *ROW[1:]], [1, 30], "INT8"),
        {},
        400,
        "beyond the range",
    ),
    (
        "INT64 given 2.5",
        features_json([2.5, *ROW[1:]], [1, 30], "INT64"),
        {},
        400,
        "not an integer",
    ),
    (
        "parameters not an object",
        features_json(ROW, [1, 30], parameters=[1]),
        {},
        400,
        "'parameters' must be an object",
    ),
    (
        "text/plain body",
        features_json(ROW, [1, 30]),
        {"content-type": "text/plain"},
        415,
        "Content-Type 'text/plain' is not an inference request",
    ),
    (
        "binary header: inputs of the wrong type",
        *binary_body({"inputs": {"name": "features"}}, RAW_ROW),
        400,
        "'inputs' must be a non-empty list",
    ),
    (
        "binary header: parameters of the wrong type",
        *binary_body(
            {
                "inputs": [
                    {"name": "features", "shape": [1, 30], "datatype": "FP64", "parameters": 7}
                ]
            },
            RAW_ROW,
        ),
        400,
        "'parameters' must be an object",
    ),
    (
        "binary: negative shape",
        *binary_body(
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [-1, 30],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 240},
                    }
                ]
            },
            RAW_ROW,
        ),
        400,
        "shape must be a list of non-negative integers",
    ),
    (
        "binary: BYTES whose length prefix overruns",
        *binary_body(
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1],
                        "datatype": "BYTES",
                        "parameters": {"binary_data_size": 6},
                    }
                ]
            },
            struct.pack("<I", 1000) + b"ab",
        ),
        400,
        "declares an element of 1000 bytes",
    ),
    (
        "binary: header length beyond the body",
        features_json(ROW, [1, 30]),
        {"inference-header-content-length": "999999"},
        400,
        "inference-header-content-length is '999999'",
    ),
    (
        "binary: fewer raw bytes than declared",
        *binary_body(
            {
                "inputs": [
                    {
                        "name": "features",
                        "shape": [1, 30],
                        "datatype": "FP64",
                        "parameters": {"binary_data_size": 240},
                    }
                ]
            },
            RAW_ROW[:100],
        ),
        400,
        "only 100 raw bytes follow",
    ),
]


@pytest.mark.parametrize(
    ("body", "headers", "status", "message"),
    [case[1:] for case in BAD],
    ids=[case[0] for case in BAD],
)
def test_malformed_input_is_a_4xx_with_a_v2_error_body(
    serving_client: TestClient,
    serving_data: Data,
    body: bytes,
    headers: dict[str, str],
    status: int,
    message: str,
) -> None:
    response = serving_client.post(INFER, content=body, headers=headers)

    assert response.status_code == status, response.text
    assert list(response.json()) == ["error"]
    assert message in response.json()["error"]
    assert (
        serving_client.post(
            INFER, content=features_json(serving_data.x[0].tolist(), [1, 30])
        ).status_code
        == 200
    )


def test_per_column_tensors_of_shape_minus_one_are_refused(
    serving_client: TestClient, serving_data: Data
) -> None:
    json_inputs = [
        {"name": name, "shape": [-1], "datatype": "FP64", "data": [1.0]}
        for name in serving_data.feature_names
    ]
    raw_inputs = [
        {"name": name, "shape": [-1], "datatype": "FP64", "parameters": {"binary_data_size": 8}}
        for name in serving_data.feature_names
    ]
    body, headers = binary_body({"inputs": raw_inputs}, np.ones(30, "<f8").tobytes())

    as_json = serving_client.post(INFER, json={"inputs": json_inputs})
    as_binary = serving_client.post(INFER, content=body, headers=headers)

    assert as_json.status_code == 400
    assert as_binary.status_code == 400
    assert "non-negative" in as_binary.json()["error"]


def test_error_messages_quote_a_short_prefix_of_what_the_client_sent(
    serving_model_factory: Any, caplog: pytest.LogCaptureFixture
) -> None:
    name = "n" * 1_000_000
    app = predictor_app(serving_model_factory("logreg"), max_body_bytes=8 * 1024 * 1024)
    with TestClient(app) as serving_client, caplog.at_level(logging.WARNING, logger="serving"):
        tensor = serving_client.post(
            INFER, content=features_json(ROW, [1, 30]).replace(b'"features"', f'"{name}"'.encode())
        )
        output = serving_client.post(
            INFER, content=features_json(ROW, [1, 30], outputs=[{"name": name}])
        )
        shape = serving_client.post(INFER, content=features_json(ROW, [1] * 100_000))
        model = serving_client.post(
            f"/v2/models/{name[:20_000]}/infer", content=features_json(ROW, [1, 30])
        )

    for response in (tensor, output, shape, model):
        assert response.status_code in (400, 404)
        assert len(response.content) < 1000, response.content[:200]
    assert caplog.records
    assert all(len(r.getMessage()) < 2000 for r in caplog.records)


def test_json_answers_in_process_conform_to_the_open_inference_protocol_schema(
    serving_client: TestClient, serving_data: Data, oip_schema: Any
) -> None:
    """The schema's infer and metadata operations are the versioned ones; answers of the
    in-process app, good and bad, validate against them (statuses the schema declares)."""
    infer = oip_schema[f"/v2/models/{MODEL_NAME}/versions/{{MODEL_VERSION}}/infer"]["POST"]
    versioned = f"/v2/models/{MODEL_NAME}/versions/3"
    answers = [
        serving_client.post(
            f"{versioned}/infer",
            content=features_json(serving_data.x[:3].tolist(), [3, 30], id="x"),
        ),
        *(
            serving_client.post(f"{versioned}/infer", content=body, headers=headers)
            for _, body, headers, status, _ in BAD
            if status == 400 and "inference-header-content-length" not in headers
        ),
    ]

    assert [a.status_code for a in answers] == [200] + [400] * (len(answers) - 1)
    for answer in answers:
        infer.validate_response(answer)
    server = oip_schema["/v2/"]["GET"]
    server.validate_response(serving_client.get("/v2/"))
    model = oip_schema[f"/v2/models/{MODEL_NAME}/versions/{{MODEL_VERSION}}"]["GET"]
    model.validate_response(serving_client.get(versioned))
