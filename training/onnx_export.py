"""The chosen model (pipeline included) converted to ONNX with skl2onnx, and proven
equal to scikit-learn before any predictor may serve it with ONNX Runtime.

Parity is measured, never assumed: ONNX Runtime runs the file on held-out rows and its
probabilities must be within the tolerance of `predict_proba`'s (default 1e-6), its
labels identical. A model that cannot be converted, or fails, still registers and is
served with scikit-learn; its record says why (`contract.onnx_format.OnnxRecord`).

What the conversion changes in skl2onnx's graph, and why (each checked by the parity
gate, and by tests/training/test_onnx_export.py on every family):

- Trees compare float32 features: scikit-learn's trees cast the rows to float32, and
  skl2onnx sets each threshold so that a float32 comparison splits exactly as
  scikit-learn does. With double input (skl2onnx 1.20) it writes float32 thresholds
  meant for double comparisons instead, and a forest's probabilities then differed by
  up to 0.027 here. So tree models are converted for float input.
- The graph's input is double whatever the model: a `Cast` to float32 goes inside it, so
  the predictor binds its float64 rows as they are (linear models stay double throughout:
  1e-16 from scikit-learn).
- ONNX Runtime sums a tree ensemble's leaves in the precision of the ensemble's input:
  in float32 a 150-tree forest drifted 7.8e-7 from scikit-learn's float64 mean, close to
  the bound. A `Cast` to double in front of each ensemble makes it sum in double
  (5e-8); the comparisons are unchanged, as a float32 value is exact in double.
- `probabilities` leaves the graph as double (a `Cast` where the model's is float32), so
  ONNX Runtime writes it straight into the float64 array the predictor answers with.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from contract.onnx_format import (
    DEFAULT_TOLERANCE,
    FAILED,
    INPUT_NAME,
    LABEL,
    NOT_CONVERTED,
    ONNX,
    ONNX_FILE,
    PASSED,
    PROBABILITIES,
    SKLEARN,
    OnnxClassifier,
    OnnxRecord,
    sha256_of,
)

logger = logging.getLogger(__name__)

# ONNX operator sets the graph is written for: the standard domain at opset 18 (ONNX
# Runtime 1.20 and later run it), the ML domain at 3.
TARGET_OPSET = {"": 18, "ai.onnx.ml": 3}
TREE_ENSEMBLES = ("TreeEnsembleClassifier", "TreeEnsembleRegressor")


class ConversionError(ValueError):
    """The model cannot be converted to ONNX, or ONNX Runtime cannot load the result."""


@dataclass(frozen=True)
class Parity:
    """ONNX Runtime against scikit-learn on the same rows."""

    max_abs_probability_diff: float
    labels_equal: bool
    rows: int
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.labels_equal and self.max_abs_probability_diff <= self.tolerance

    def describe(self) -> str:
        verdict = "passed" if self.passed else "FAILED"
        labels = "identical labels" if self.labels_equal else "labels DIFFER"
        return (
            f"ONNX parity {verdict} on {self.rows} held-out rows: largest probability "
            f"difference {self.max_abs_probability_diff:.3g} (bound {self.tolerance:g}), "
            f"{labels}"
        )

    def metrics(self) -> dict[str, float]:
        return {
            "onnx_parity_max_abs_diff": self.max_abs_probability_diff,
            "onnx_parity_labels_equal": float(self.labels_equal),
            "onnx_parity_rows": float(self.rows),
        }


@dataclass(frozen=True)
class OnnxExport:
    """The converted model (if it converted) and its record for the version."""

    record: OnnxRecord
    model: bytes | None
    """The serialized graph; also when parity failed (logged with the run to inspect)."""
    parity: Parity | None = None
    seconds: float = 0.0
    """Conversion and parity check, wall time."""

    @property
    def servable(self) -> bool:
        return self.record.serving_runtime == ONNX


def is_tree_model(estimator: Any) -> bool:
    """Whether the model's last step is a tree model (scikit-learn casts its rows to
    float32); the candidates never put a tree behind a transform."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    final = estimator.steps[-1][1] if isinstance(estimator, Pipeline) else estimator
    return isinstance(
        final, RandomForestClassifier | HistGradientBoostingClassifier | DecisionTreeClassifier
    )


def convert(estimator: Any) -> bytes:
    """The fitted classifier as a serialized ONNX graph: input `features` double
    `[N, n_features]`, outputs `label` and `probabilities` double `[N, n_classes]`."""
    import onnx
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import DoubleTensorType, FloatTensorType

    n_features = getattr(estimator, "n_features_in_", None)
    if not isinstance(n_features, int | np.integer):
        raise ConversionError(f"{type(estimator).__name__} is not fitted (no n_features_in_)")
    tree = is_tree_model(estimator)
    input_type = FloatTensorType if tree else DoubleTensorType
    try:
        with warnings.catch_warnings():
            # skl2onnx warns about scikit-learn versions newer than those it lists.
            warnings.simplefilter("ignore")
            graph = to_onnx(
                estimator,
                initial_types=[(INPUT_NAME, input_type([None, int(n_features)]))],
                target_opset=TARGET_OPSET,
                options={"zipmap": False},
            )
        _double_interface(graph)
        onnx.checker.check_model(graph, full_check=True)
    except Exception as e:  # skl2onnx raises whatever its converters raise
        raise ConversionError(
            f"skl2onnx cannot convert {type(estimator).__name__}: {type(e).__name__}: {e}"
        ) from e
    return bytes(graph.SerializeToString())


def _double_interface(graph: Any) -> None:
    """Double in, double probabilities out, ensembles summing in double (module doc)."""
    from onnx import TensorProto, helper

    nodes = list(graph.graph.node)
    (graph_input,) = graph.graph.input
    added_before: list[Any] = []
    tensor_type = graph_input.type.tensor_type
    if tensor_type.elem_type == TensorProto.FLOAT:
        as_float = f"{INPUT_NAME}_as_float"
        for node in nodes:
            node.input[:] = [as_float if name == INPUT_NAME else name for name in node.input]
        tensor_type.elem_type = TensorProto.DOUBLE
        added_before.append(
            helper.make_node("Cast", [INPUT_NAME], [as_float], to=TensorProto.FLOAT)
        )
    rebuilt = list(added_before)
    for node in nodes:
        if node.op_type in TREE_ENSEMBLES and node.domain == "ai.onnx.ml":
            source, widened = node.input[0], f"{node.input[0]}_as_double_{len(rebuilt)}"
            rebuilt.append(helper.make_node("Cast", [source], [widened], to=TensorProto.DOUBLE))
            node.input[0] = widened
        rebuilt.append(node)
    for output in graph.graph.output:
        if output.name == PROBABILITIES and output.type.tensor_type.elem_type != TensorProto.DOUBLE:
            narrow = f"{PROBABILITIES}_as_float"
            for node in rebuilt:
                node.output[:] = [narrow if n == PROBABILITIES else n for n in node.output]
            rebuilt.append(
                helper.make_node("Cast", [narrow], [PROBABILITIES], to=TensorProto.DOUBLE)
            )
            output.type.tensor_type.elem_type = TensorProto.DOUBLE
    del graph.graph.node[:]
    graph.graph.node.extend(rebuilt)


def check_parity(
    model: bytes | OnnxClassifier,
    estimator: Any,
    rows: npt.NDArray[np.float64],
    tolerance: float = DEFAULT_TOLERANCE,
) -> Parity:
    """Run the ONNX model with ONNX Runtime, as the predictor does, and scikit-learn on the
    same rows. The labels compared are the served ones (the most probable class) and the
    graph's own `label` against `estimator.predict`."""
    try:
        runner = model if isinstance(model, OnnxClassifier) else OnnxClassifier(model)
        probabilities = runner.predict_proba(rows)
        (labels,) = runner.session.run([LABEL], {INPUT_NAME: rows})
    except Exception as e:  # onnxruntime's own error types
        raise ConversionError(f"ONNX Runtime cannot run the model: {e}") from e
    expected = np.asarray(estimator.predict_proba(rows), dtype=np.float64)
    if probabilities.shape != expected.shape:
        return Parity(float("inf"), False, len(rows), tolerance)
    return Parity(
        max_abs_probability_diff=float(np.max(np.abs(probabilities - expected))),
        labels_equal=bool(
            np.array_equal(probabilities.argmax(axis=1), expected.argmax(axis=1))
            and np.array_equal(np.asarray(labels).ravel(), estimator.predict(rows))
        ),
        rows=len(rows),
        tolerance=tolerance,
    )


def export(
    estimator: Any,
    rows: npt.NDArray[np.float64],
    tolerance: float = DEFAULT_TOLERANCE,
    model: bytes | None = None,
) -> OnnxExport:
    """Convert (unless `model`, an earlier conversion of the same estimator, is given) and
    check parity on `rows`; never raises for a model that does not convert."""
    started = time.perf_counter()
    try:
        model = convert(estimator) if model is None else model
        parity = check_parity(model, estimator, rows, tolerance)
    except ConversionError as e:
        logger.warning("no ONNX copy, serving with scikit-learn: %s", e)
        record = OnnxRecord(
            parity=NOT_CONVERTED,
            serving_runtime=SKLEARN,
            reason=str(e)[:1000],
            tolerance=tolerance,
        )
        return OnnxExport(record, None, None, time.perf_counter() - started)
    passed = parity.passed
    record = OnnxRecord(
        parity=PASSED if passed else FAILED,
        serving_runtime=ONNX if passed else SKLEARN,
        reason=parity.describe(),
        tolerance=tolerance,
        max_abs_probability_diff=parity.max_abs_probability_diff,
        labels_equal=parity.labels_equal,
        rows=parity.rows,
        file=ONNX_FILE if passed else None,
        sha256=sha256_of(model) if passed else None,
    )
    return OnnxExport(record, model, parity, time.perf_counter() - started)
