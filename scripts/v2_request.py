"""Send V2 inference requests to a predictor and print the answers (standard library only).

    python scripts/v2_request.py --url http://127.0.0.1:8088 --host-header HOST \\
        --model breast-cancer [--count 1]

Used by `make smoke` through a port-forward to the ingress (Kourier needs the
InferenceService's host name in the Host header), and by the chart's `helm test` pod
(the image holds a copy at /opt/mlops/v2_request.py). The model's V2 metadata gives the
input tensor and its width; for the 30 breast-cancer features the request carries two
real rows of scikit-learn's data set (one malignant, one benign), otherwise zeros.
Exit 0 when every answer is a 200 with the three outputs of the contract.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any

# Rows 0 (malignant) and 19 (benign) of sklearn.datasets.load_breast_cancer().
BREAST_CANCER_ROWS = [
    [17.99, 10.38, 122.8, 1001.0, 0.1184, 0.2776, 0.3001, 0.1471, 0.2419, 0.07871,
     1.095, 0.9053, 8.589, 153.4, 0.006399, 0.04904, 0.05373, 0.01587, 0.03003, 0.006193,
     25.38, 17.33, 184.6, 2019.0, 0.1622, 0.6656, 0.7119, 0.2654, 0.4601, 0.1189],
    [13.54, 14.36, 87.46, 566.3, 0.09779, 0.08129, 0.06664, 0.04781, 0.1885, 0.05766,
     0.2699, 0.7886, 2.058, 23.56, 0.008462, 0.0146, 0.02387, 0.01315, 0.0198, 0.0023,
     15.11, 19.26, 99.7, 711.2, 0.144, 0.1773, 0.239, 0.1288, 0.2977, 0.07259],
]  # fmt: skip
EXPECTED_OUTPUTS = {"label", "probabilities", "class_name"}


def call(url: str, host: str | None, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data)
    request.add_header("Content-Type", "application/json")
    if host:
        request.add_header("Host", host)
    with urllib.request.urlopen(request, timeout=30) as response:
        answer: dict[str, Any] = json.load(response)
    return answer


def request_body(metadata: dict[str, Any]) -> dict[str, Any]:
    """One tensor of rows for a tensor-signature model; one zero per column when the model
    declares a V2 input per column (a CSV's signature)."""
    if len(metadata["inputs"]) > 1:
        return {
            "inputs": [
                {"name": column["name"], "shape": [1], "datatype": "FP64", "data": [0.0]}
                for column in metadata["inputs"]
            ]
        }
    tensor = metadata["inputs"][0]
    width = int(tensor["shape"][-1])
    rows = BREAST_CANCER_ROWS if width == len(BREAST_CANCER_ROWS[0]) else [[0.0] * width]
    return {
        "inputs": [
            {
                "name": tensor["name"],
                "shape": [len(rows), width],
                "datatype": "FP64",
                "data": [value for row in rows for value in row],
            }
        ]
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="base URL, e.g. http://127.0.0.1:8088")
    parser.add_argument("--host-header", default=None, help="Host header for the ingress")
    parser.add_argument("--model", required=True, help="served V2 model name")
    parser.add_argument("--count", type=int, default=1, help="requests to send (1-1000)")
    args = parser.parse_args(argv)
    if not 1 <= args.count <= 1000:
        parser.error("--count must be within 1..1000")
    base = f"{args.url.rstrip('/')}/v2/models/{args.model}"
    try:
        metadata = call(base, args.host_header)
        body = request_body(metadata)
        for _ in range(args.count):
            answer = call(f"{base}/infer", args.host_header, body)
            print(json.dumps(answer))
            missing = EXPECTED_OUTPUTS - {output["name"] for output in answer["outputs"]}
            if missing:
                print(f"answer lacks outputs {sorted(missing)}", file=sys.stderr)
                return 1
    except urllib.error.HTTPError as e:
        print(f"{e.code} from {e.url}: {e.read().decode(errors='replace')}", file=sys.stderr)
        return 1
    except (urllib.error.URLError, OSError) as e:
        print(f"cannot reach {base}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
