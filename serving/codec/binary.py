"""The binary tensor data extension (Triton's `extension_binary_data.md`, which KServe
implements in `kserve/protocol/infer_type.py`): tensors as raw little-endian bytes after
the JSON part of a body, row major, no padding; a BYTES element is a 4-byte
little-endian length followed by its bytes.

Every size the client declares is checked against the bytes that came, so a malformed
body is an `InvalidRequest`, never an exception from numpy or struct.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from serving.codec.tensors import NUMERIC_DATATYPES, Output
from serving.errors import InvalidRequest, quoted

HEADER = "inference-header-content-length"
"""The length of the JSON part, when raw tensors follow it (request and response)."""
OCTET_STREAM = "application/octet-stream"
_LENGTH = np.dtype("<u4")


def split(body: bytes, header_length: str) -> tuple[bytes, memoryview]:
    """The JSON part and the raw part of a body, as `Inference-Header-Content-Length`
    divides it."""
    if not header_length.isdigit() or int(header_length) > len(body):
        raise InvalidRequest(
            f"{HEADER} is {quoted(header_length)}; expected the length in bytes of the JSON "
            f"part of the body (at most the body's {len(body)} bytes), raw tensors after it"
        )
    length = int(header_length)
    return body[:length], memoryview(body)[length:]


def raw_tensor(name: str, datatype: str, shape: list[int], raw: memoryview) -> Any:
    """The values of a tensor sent as `raw` bytes: a flat numpy array, or the elements
    of a BYTES tensor; the byte count must match the shape."""
    count = prod(shape)
    if datatype == "BYTES":
        elements = bytes_elements(raw, name)
        if len(elements) != count:
            raise InvalidRequest(
                f"input {quoted(name)} has shape {quoted(shape)}, which needs {count} BYTES "
                f"elements, but its raw data holds {len(elements)}"
            )
        return elements
    if datatype not in NUMERIC_DATATYPES:
        return np.empty(0)  # refused by name and datatype later, with the accepted types
    dtype = np.dtype(NUMERIC_DATATYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise InvalidRequest(
            f"input {quoted(name)} has shape {quoted(shape)} and datatype {datatype}, which "
            f"need {count * dtype.itemsize} bytes, but its raw data holds {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype)


def bytes_elements(raw: memoryview | bytes, name: str) -> list[bytes]:
    """Split BYTES raw data into its elements, each a 4-byte length then the bytes."""
    elements = []
    offset, end = 0, len(raw)
    while offset < end:
        if end - offset < 4:
            raise InvalidRequest(
                f"raw BYTES data of {quoted(name)} ends inside an element's 4-byte length "
                f"prefix (at byte {offset} of {end})"
            )
        length = int(np.frombuffer(raw, dtype=_LENGTH, count=1, offset=offset)[0])
        offset += 4
        if length > end - offset:
            raise InvalidRequest(
                f"raw BYTES data of {quoted(name)} declares an element of {length} bytes at "
                f"byte {offset - 4}, but only {end - offset} bytes follow"
            )
        elements.append(bytes(raw[offset : offset + length]))
        offset += length
    return elements


def raw_output(tensor: Output) -> bytes:
    """An output tensor's values as the extension (and gRPC raw contents) carry them."""
    if tensor.datatype == "BYTES":
        encoded = [str(value).encode() for value in tensor.data]
        return b"".join(len(e).to_bytes(4, "little") + e for e in encoded)
    dtype = np.dtype(NUMERIC_DATATYPES[tensor.datatype])
    return np.ascontiguousarray(tensor.data, dtype=dtype).tobytes()
