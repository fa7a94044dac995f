"""The two servers the predictor is measured against, serving the same model file:

- `kserve`: a minimal `kserve.Model` on a default `kserve.ModelServer` (what a KServe
  user writes first: V2 via KServe's InferRequest, KServe's default logging);
- `starlette`: a bare starlette endpoint around the same `predict_proba`, no logging,
  no validation beyond what numpy does: the floor of a Python V2 server.

`python -m benchmarks.serving_baselines`, configured by environment variables (the
benchmark starts it): BASELINE (kserve|starlette), BASELINE_MODEL_DIR (a downloaded
MLflow model folder), BASELINE_MODEL_NAME, BASELINE_HTTP_PORT, BASELINE_GRPC_PORT.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def load(model_dir: str) -> Any:
    # skops as a user imports it (with its default allow-list), before our loader would.
    import skops.io  # noqa: F401

    from contract.model_format import load_estimator

    return load_estimator(Path(model_dir))


def run_kserve(name: str, model_dir: str, http_port: int, grpc_port: int) -> None:
    import kserve
    import numpy as np
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
    from kserve.utils.utils import generate_uuid

    class MinimalModel(kserve.Model):  # type: ignore[misc]
        def load(self) -> bool:
            self.estimator = load(model_dir)
            self.ready = True
            return True

        def predict(self, payload: InferRequest, headers: Any = None) -> InferResponse:
            features = payload.inputs[0].as_numpy()
            probabilities = np.asarray(self.estimator.predict_proba(features), dtype=np.float64)
            output = InferOutput("probabilities", list(probabilities.shape), "FP64", probabilities)
            # As KServe's own sklearn server answers.
            return InferResponse(payload.id or generate_uuid(), self.name, [output])

    model = MinimalModel(name)
    model.load()
    kserve.ModelServer(http_port=http_port, grpc_port=grpc_port).start([model])


def run_starlette(name: str, model_dir: str, http_port: int) -> None:
    import numpy as np
    import orjson
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    estimator = load(model_dir)

    async def infer(request: Request) -> Response:
        tensor = orjson.loads(await request.body())["inputs"][0]
        features = np.asarray(tensor["data"], dtype=np.float64).reshape(tensor["shape"])
        probabilities = estimator.predict_proba(features)
        body = {
            "model_name": name,
            "outputs": [
                {
                    "name": "probabilities",
                    "datatype": "FP64",
                    "shape": list(probabilities.shape),
                    "data": probabilities.ravel(),
                }
            ],
        }
        return Response(
            orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json"
        )

    async def ready(request: Request) -> Response:
        return Response(b'{"ready": true}', media_type="application/json")

    app = Starlette(
        routes=[
            Route("/v2/models/{name}/infer", infer, methods=["POST"]),
            Route("/v2/health/ready", ready),
        ]
    )
    uvicorn.run(app, host="127.0.0.1", port=http_port, log_level="warning", access_log=False)


if __name__ == "__main__":
    kind = os.environ["BASELINE"]
    model_name = os.environ.get("BASELINE_MODEL_NAME", "breast-cancer")
    folder = os.environ["BASELINE_MODEL_DIR"]
    port = int(os.environ["BASELINE_HTTP_PORT"])
    if kind == "kserve":
        run_kserve(model_name, folder, port, int(os.environ["BASELINE_GRPC_PORT"]))
    elif kind == "starlette":
        run_starlette(model_name, folder, port)
    else:
        raise SystemExit(f"BASELINE={kind!r}: expected kserve or starlette")
