"""Load a downloaded MLflow model natively: the estimator with *our* skops allow-list
(`contract.model_format.TRUSTED_TYPES`, never the list the file declares about
itself), the V2 spec from its signature, and a warm-up call."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import upstream
from serving.errors import InvalidModel
from serving.metadata import ModelSpec, spec_from_mlmodel

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Prediction:
    labels: np.ndarray[Any, np.dtype[np.int64]]
    """Index of the most probable class, per row."""
    probabilities: np.ndarray[Any, np.dtype[np.float64]]
    """Shape `[rows, n_classes]`, float64 whatever the estimator returns."""
    class_names: list[str]
    """Name of each row's label."""


class LoadedModel:
    """An estimator ready to predict, with what the registry said about it."""

    def __init__(
        self,
        estimator: Any,
        spec: ModelSpec,
        version: str,
        run_id: str,
        model_uri: str,
        load_seconds: float = 0.0,
    ) -> None:
        self.estimator = estimator
        self.spec = spec
        self.version = version
        self.run_id = run_id
        self.model_uri = model_uri
        """The concrete `models:/NAME/VERSION` this was loaded from."""
        self.load_seconds = load_seconds
        self._predict_proba = upstream.predict_proba_of(estimator)
        self._names = spec.class_names
        self._configured = threading.local()

    def predict(self, features: np.ndarray[Any, np.dtype[np.float64]]) -> Prediction:
        """Predict a validated float64 batch `[rows, n_features]` (finite, non-empty)."""
        if not getattr(self._configured, "done", False):
            upstream.assume_finite_in_this_thread()  # the codec checked every value
            self._configured.done = True
        probabilities = np.asarray(self._predict_proba(features), dtype=np.float64)
        labels = probabilities.argmax(axis=1)
        names = self._names
        return Prediction(labels, probabilities, [names[i] for i in labels.tolist()])


def preload() -> None:
    """Import what loading needs: scikit-learn's core, skops, and the MLmodel parser
    (each model's own modules, linear models or ensembles, import as it loads); then
    answer scikit-learn's dataframe checks for arrays first (`contract.upstream`)."""
    upstream.import_scipy_special_first()  # first: see contract.upstream
    import yaml  # noqa: F401

    upstream.import_skops()
    upstream.answer_ndarrays_first()


def read_mlmodel(model_dir: Path) -> dict[str, Any]:
    import yaml

    path = model_dir / "MLmodel"
    try:
        parsed = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise InvalidModel(f"cannot read {path}: {e}") from e
    if not isinstance(parsed, dict):
        raise InvalidModel(f"{path} is not an MLmodel file")
    return parsed


def load_model_dir(model_dir: Path, version: str, run_id: str, model_uri: str) -> LoadedModel:
    """Load the estimator and spec of a model folder; raise `InvalidModel` if it cannot serve."""
    from contract.model_format import TRUSTED_TYPES, UntrustedModel, load_estimator

    mlmodel = read_mlmodel(model_dir)
    try:
        estimator = load_estimator(model_dir, trusted_types=TRUSTED_TYPES, mlmodel=mlmodel)
    except UntrustedModel as e:
        raise InvalidModel(
            f"{model_uri} holds types outside the predictor's allow-list: {e}"
        ) from e
    except (ValueError, OSError, KeyError) as e:
        raise InvalidModel(f"{model_uri} cannot be loaded: {e}") from e
    spec = spec_from_mlmodel(mlmodel, estimator)
    loaded = LoadedModel(estimator, spec, version=version, run_id=run_id, model_uri=model_uri)
    warm_up(loaded)
    return loaded


def warm_up(model: LoadedModel) -> None:
    """One prediction before the model turns ready: the first call of a freshly loaded
    estimator allocates and imports lazily, which should not land on a client."""
    try:
        model.estimator.predict_proba(np.zeros((1, model.spec.n_features)))
    except Exception as e:
        raise InvalidModel(f"{model.model_uri} fails to predict a row of zeros: {e}") from e
