"""Load a downloaded MLflow model natively: the estimator with *our* skops allow-list
(`contract.model_format.TRUSTED_TYPES`, never the list the file declares about
itself), the V2 spec from its signature, and a warm-up call."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
        self._predict_proba = predict_proba_of(estimator)
        self._names = spec.class_names
        self._configured = threading.local()

    def predict(self, features: np.ndarray[Any, np.dtype[np.float64]]) -> Prediction:
        """Predict a validated float64 batch `[rows, n_features]` (finite, non-empty)."""
        if not getattr(self._configured, "done", False):
            _skip_repeated_checks()
            self._configured.done = True
        probabilities = np.asarray(self._predict_proba(features), dtype=np.float64)
        labels = probabilities.argmax(axis=1)
        names = self._names
        return Prediction(labels, probabilities, [names[i] for i in labels.tolist()])


def predict_proba_of(estimator: Any) -> Callable[[Any], Any]:
    """The estimator's `predict_proba`; for a Pipeline, its steps called in turn, as
    `Pipeline.predict_proba` does without metadata routing. The Pipeline's own checks
    on each call (is its last step fitted, is routing on) cost 50-70 µs here, some 6 %
    of a request; the loaded pipeline is fitted, and routing is never on here."""
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline):
        return estimator.predict_proba  # type: ignore[no-any-return]
    transforms = [step.transform for _, step in estimator.steps[:-1] if step not in SKIPPED]
    final = estimator.steps[-1][1].predict_proba

    def predict_proba(rows: Any) -> Any:
        for transform in transforms:
            rows = transform(rows)
        return final(rows)

    return predict_proba


SKIPPED = (None, "passthrough")
"""What a Pipeline step may be instead of an estimator."""


def _skip_repeated_checks() -> None:
    """The codec already checked every value is finite, in one pass; scikit-learn would
    check again in each pipeline step. Its config is per thread, hence once per thread."""
    import sklearn

    sklearn.set_config(assume_finite=True)


def ndarray_first(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """`check` (is it a dataframe? a series?), answering False at once for a numpy array.

    scikit-learn 1.9 asks narwhals both questions about its input in every validation,
    six times per call of the logistic-regression pipeline. For an array narwhals looks
    for its protocol attribute with `inspect.getattr_static`, and asks each dataframe
    library and plugin in turn: about 50 µs a time, half of the 470 µs `predict_proba`
    takes here. The predictor only ever passes arrays it built itself.
    """

    def answer(obj: Any) -> bool:
        return False if type(obj) is np.ndarray else check(obj)

    return answer


def answer_ndarrays_first() -> None:
    """Put `ndarray_first` in front of the two checks scikit-learn calls, in this process;
    unless narwhals would say an array *is* one (a plugin could), or it is done already."""
    from narwhals.stable.v2 import dependencies

    probe = np.zeros((1, 1))
    for name in ("is_into_dataframe", "is_into_series"):
        check = getattr(dependencies, name)
        if check.__module__ != __name__ and not check(probe):
            setattr(dependencies, name, ndarray_first(check))


def preload() -> None:
    """Import what loading needs: scikit-learn's core, skops, and the MLmodel parser
    (each model's own modules, linear models or ensembles, import as it loads); then
    `answer_ndarrays_first`."""
    # First, so it comes early in sys.modules: skops, as it is imported, finds the module
    # of each of ~400 scipy ufuncs by scanning the loaded modules in import order, and
    # stops sooner (measured: 0.2 s of the start).
    import scipy.special  # noqa: F401
    import yaml  # noqa: F401

    from contract.model_format import import_skops

    import_skops()
    answer_ndarrays_first()


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
