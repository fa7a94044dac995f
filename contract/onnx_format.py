"""The ONNX copy of a model version, and how it is run: what training writes and the
predictor reads (docs/serving.md "Runtimes").

A version may carry, inside its MLflow model folder, an ONNX file of the same model
(pipeline included) that training proved equal to scikit-learn on the held-out split.
The contract:

- the file sits at `ONNX_FILE` in the model folder (MLflow's `extra_files`, so it is
  downloaded with the version, nothing else to fetch);
- `metadata["onnx"]` in the MLmodel file describes it (`OnnxRecord`): its SHA-256, the
  parity figures, and `serving_runtime`, the runtime the version may be served with
  (`onnx` only when parity passed and the file is there);
- the graph has one input `features`, double `[N, n_features]`, and one output the
  predictor reads, `probabilities`, double `[N, n_classes]` (plus `label`, int64 `[N]`).

ONNX files are data, not code: running one executes only ONNX Runtime's operators on
numbers, never a Python type the file names (a skops file names the types it needs).
onnxruntime is imported only where an ONNX file is run.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

ONNX_FILE = "extra_files/model.onnx"
"""Where the file sits inside the model version's MLflow model folder."""
METADATA_KEY = "onnx"
INPUT_NAME = "features"
PROBABILITIES = "probabilities"
LABEL = "label"

ONNX = "onnx"
SKLEARN = "sklearn"
RUNTIMES = (ONNX, SKLEARN)
"""The runtimes a version may be served with."""
DEFAULT_TOLERANCE = 1e-6
"""Largest absolute difference of any probability allowed between ONNX Runtime and
scikit-learn's `predict_proba` (labels must be identical)."""

# Parity outcomes, also the `onnx_parity` tag of a version.
PASSED = "passed"
FAILED = "failed"
NOT_CONVERTED = "not_converted"


@dataclass(frozen=True)
class OnnxRecord:
    """`metadata["onnx"]` of a version: whether it may be served with ONNX Runtime, and
    why (or why not)."""

    parity: str
    """`passed`, `failed` or `not_converted`."""
    serving_runtime: str
    """`onnx` when parity passed (and the file is in the model folder), else `sklearn`."""
    reason: str
    """One line: the parity figures, or why there is no usable ONNX file."""
    tolerance: float
    max_abs_probability_diff: float | None = None
    labels_equal: bool | None = None
    rows: int = 0
    """Held-out rows the parity was measured on."""
    file: str | None = None
    """`ONNX_FILE` when the file was logged with the version."""
    sha256: str | None = None

    def as_metadata(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> OnnxRecord | None:
        """The record of a parsed MLmodel `metadata`, or None where there is none (a
        version trained before ONNX) or it is not a record (then nothing is trusted)."""
        raw = (metadata or {}).get(METADATA_KEY)
        if not isinstance(raw, Mapping):
            return None
        fields = cls.__dataclass_fields__
        try:
            return cls(**{k: v for k, v in raw.items() if k in fields})
        except TypeError:
            return None


def sha256_of(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class OnnxClassifier:
    """An ONNX classifier run by ONNX Runtime on one thread, as the predictor serves it.

    The InferenceSession is created once. Each call binds the caller's float64 rows as
    the input (no copy: ONNX Runtime reads the numpy buffer) and a fresh float64 array as
    the `probabilities` output, which ONNX Runtime writes into: that array is what the
    caller gets, nothing is copied out. An I/O binding is not safe to share between
    threads, so each thread has its own.
    """

    def __init__(self, model: bytes) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One request is small: a thread pool inside it would only contend with the
        # event loop and the other requests for the pod's CPUs.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        self.session = ort.InferenceSession(
            model, sess_options=options, providers=["CPUExecutionProvider"]
        )
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        feature_input = inputs.get(INPUT_NAME)
        probabilities = outputs.get(PROBABILITIES)
        if (
            len(inputs) != 1
            or feature_input is None
            or feature_input.type != "tensor(double)"
            or len(feature_input.shape) != 2
        ):
            found = ", ".join(f"{i.name} {i.type} {i.shape}" for i in inputs.values())
            raise ValueError(
                f"the ONNX graph's inputs are [{found}]; expected one "
                f"'{INPUT_NAME}' tensor(double) [N, n_features]"
            )
        if probabilities is None or probabilities.type != "tensor(double)":
            found = ", ".join(f"{o.name} {o.type}" for o in outputs.values())
            raise ValueError(
                f"the ONNX graph's outputs are [{found}]; expected "
                f"'{PROBABILITIES}' tensor(double) [N, n_classes]"
            )
        width, classes = feature_input.shape[1], probabilities.shape[1]
        self.n_features = width if isinstance(width, int) else None
        """Feature count the graph declares (None where it leaves it open)."""
        self.n_classes = int(classes) if isinstance(classes, int) else self._count_classes()
        self._local = threading.local()

    def _count_classes(self) -> int:
        if self.n_features is None:
            raise ValueError("the ONNX graph declares neither its feature nor its class count")
        return int(self.session.run([PROBABILITIES], {INPUT_NAME: self.zeros(1)})[0].shape[1])

    def zeros(self, rows: int) -> npt.NDArray[np.float64]:
        return np.zeros((rows, self.n_features or 0), dtype=np.float64)

    def predict_proba(self, rows: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """Class probabilities of C-contiguous float64 rows `[N, n_features]`."""
        binding = getattr(self._local, "binding", None)
        if binding is None:
            binding = self._local.binding = self.session.io_binding()
        rows = np.ascontiguousarray(rows, dtype=np.float64)  # a no-op for the codec's rows
        probabilities = np.empty((rows.shape[0], self.n_classes), dtype=np.float64)
        binding.bind_cpu_input(INPUT_NAME, rows)
        binding.bind_output(
            PROBABILITIES,
            "cpu",
            0,
            np.float64,
            list(probabilities.shape),
            probabilities.ctypes.data,
        )
        self.session.run_with_iobinding(binding)
        return probabilities
