"""Load a downloaded MLflow model with the runtime it may be served with, the V2 spec
from its signature, and a warm-up call.

Runtimes (docs/serving.md "Runtimes"): ONNX Runtime, when the version carries an ONNX
copy that passed training's parity gate (`contract.onnx_format`) and it is intact; then
the skops file is never read. Otherwise scikit-learn: the estimator loaded with *our*
skops allow-list (`contract.model_format.TRUSTED_TYPES`, never the list the file
declares about itself). `MODEL_RUNTIME` forces either; the choice and its reason are
logged, shown in the model's metadata and labelled on `inference_model_info`."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from contract import drift_profile, onnx_format, upstream
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


AUTO = "auto"
RUNTIME_CHOICES = (AUTO, onnx_format.ONNX, onnx_format.SKLEARN)
"""`MODEL_RUNTIME`: `auto` (ONNX Runtime where the version's ONNX copy passed parity and is
intact, else scikit-learn), or one of them forced (`serving.settings.MODEL_RUNTIMES`)."""


class LoadedModel:
    """A model ready to predict, with what the registry said about it and the runtime
    it runs on."""

    def __init__(
        self,
        estimator: Any,
        spec: ModelSpec,
        version: str,
        run_id: str,
        model_uri: str,
        load_seconds: float = 0.0,
        onnx: onnx_format.OnnxClassifier | None = None,
        runtime_reason: str = "",
    ) -> None:
        self.estimator = estimator
        """The scikit-learn estimator; None when ONNX Runtime serves (never loaded)."""
        self.spec = spec
        self.version = version
        self.run_id = run_id
        self.model_uri = model_uri
        """The concrete `models:/NAME/VERSION` this was loaded from."""
        self.load_seconds = load_seconds
        self.runtime = onnx_format.SKLEARN if onnx is None else onnx_format.ONNX
        """`onnx` or `sklearn`: what answers `predict`."""
        self.runtime_reason = runtime_reason
        """Why this runtime, in one line."""
        if onnx is not None:
            self._predict_proba: Any = onnx.predict_proba
            self._configured = None
        else:
            self._predict_proba = upstream.predict_proba_of(estimator)
            self._configured = threading.local()
        self._names = spec.class_names
        self.profile: drift_profile.DriftProfile | None = None
        """The training split's bins of every feature (contract.drift_profile), if the
        version carries a usable one."""
        self.profile_reason = "not read"
        """Where the profile came from, or why there is none, in one line."""
        self.profile_broken = False
        """A profile training wrote that does not arrive intact (worth a warning)."""

    def predict(self, features: np.ndarray[Any, np.dtype[np.float64]]) -> Prediction:
        """Predict a validated float64 batch `[rows, n_features]` (finite, non-empty)."""
        configured = self._configured
        if configured is not None and not getattr(configured, "done", False):
            upstream.assume_finite_in_this_thread()  # the codec checked every value
            configured.done = True
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


def load_model_dir(
    model_dir: Path, version: str, run_id: str, model_uri: str, runtime: str = AUTO
) -> LoadedModel:
    """Load a model folder with the runtime `runtime` allows (module doc), and its drift
    profile if it has a usable one; raise `InvalidModel` if it cannot serve."""
    mlmodel = read_mlmodel(model_dir)
    loaded = _load_model_dir(model_dir, mlmodel, version, run_id, model_uri, runtime)
    loaded.profile, loaded.profile_reason, loaded.profile_broken = read_profile(
        model_dir, mlmodel, loaded.spec
    )
    return loaded


def read_profile(
    model_dir: Path, mlmodel: dict[str, Any], spec: ModelSpec
) -> tuple[drift_profile.DriftProfile | None, str, bool]:
    """The version's drift profile, if it is there, intact and of this model's features;
    else None. Either way, the reason in one line, and whether a profile training wrote
    is broken. A model is served without one: drift is a signal, not a gate."""
    record = drift_profile.ProfileRecord.from_metadata(mlmodel.get("metadata"))
    if record is None:
        return None, "the version has no drift profile (trained before profiles were made)", False
    if record.file != drift_profile.PROFILE_FILE:
        return None, f"its drift profile record names {record.file!r}, not the contract's", True
    try:
        text = (model_dir / drift_profile.PROFILE_FILE).read_bytes()
    except OSError as e:
        return None, f"its drift profile is missing or unreadable ({e})", True
    digest = onnx_format.sha256_of(text)
    if digest != record.sha256:
        return None, f"its drift profile is corrupt: SHA-256 {digest[:12]}... differs", True
    try:
        profile = drift_profile.DriftProfile.from_json(text)
    except drift_profile.InvalidProfile as e:
        return None, str(e), True
    names = spec.feature_names
    if len(profile.features) != spec.n_features or (names and profile.feature_names != names):
        return None, "its drift profile's features differ from the model's signature", True
    return profile, f"its drift profile of {profile.rows} training rows", False


def _load_model_dir(
    model_dir: Path,
    mlmodel: dict[str, Any],
    version: str,
    run_id: str,
    model_uri: str,
    runtime: str,
) -> LoadedModel:
    if runtime == onnx_format.SKLEARN:
        return load_with_sklearn(
            model_dir, mlmodel, version, run_id, model_uri, "MODEL_RUNTIME=sklearn forces it"
        )
    runner, reason, broken = open_onnx_copy(model_dir, mlmodel)
    if runner is None:
        if runtime == onnx_format.ONNX:
            raise InvalidModel(
                f"MODEL_RUNTIME=onnx, but {model_uri} cannot be served with ONNX Runtime: "
                f"{reason}. Re-train it, or set MODEL_RUNTIME=auto to serve it with "
                "scikit-learn"
            )
        # A copy training made that does not arrive intact is a fault worth a warning; a
        # version without one (older, or one that failed parity) is served as intended.
        logger.log(
            logging.WARNING if broken else logging.INFO,
            "%s: serving with scikit-learn, not ONNX Runtime: %s",
            model_uri,
            reason,
        )
        return load_with_sklearn(model_dir, mlmodel, version, run_id, model_uri, reason)
    spec = spec_from_mlmodel(mlmodel, _GraphDeclares(runner))
    loaded = LoadedModel(
        None,
        spec,
        version=version,
        run_id=run_id,
        model_uri=model_uri,
        onnx=runner,
        runtime_reason=reason,
    )
    warm_up(loaded)
    return loaded


def open_onnx_copy(
    model_dir: Path, mlmodel: dict[str, Any]
) -> tuple[onnx_format.OnnxClassifier | None, str, bool]:
    """The version's ONNX copy in an InferenceSession, if it passed parity and is intact;
    else None. Either way, the reason in one line, and whether a copy that should serve
    is broken (missing, corrupt, unloadable)."""
    record = onnx_format.OnnxRecord.from_metadata(mlmodel.get("metadata"))
    if record is None:
        return None, "the version has no ONNX copy (trained before ONNX copies were made)", False
    if record.serving_runtime != onnx_format.ONNX:
        reason = f"its ONNX copy is not to be served ({record.parity}: {record.reason})"
        return None, reason, False
    # Only the contract's place is read, whatever the record names: a path from a file is
    # not followed.
    if record.file != onnx_format.ONNX_FILE or not record.sha256:
        return None, f"its ONNX record names {record.file!r}, not {onnx_format.ONNX_FILE!r}", True
    path = model_dir / onnx_format.ONNX_FILE
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, f"its ONNX file {onnx_format.ONNX_FILE} is missing or unreadable ({e})", True
    digest = onnx_format.sha256_of(data)
    if digest != record.sha256:
        reason = (
            f"its ONNX file is corrupt: SHA-256 {digest[:12]}... differs from the "
            f"{record.sha256[:12]}... training recorded"
        )
        return None, reason, True
    try:
        runner = onnx_format.OnnxClassifier(data)
    except Exception as e:  # onnxruntime's own error types, or the interface check
        return None, f"ONNX Runtime cannot load its ONNX file: {type(e).__name__}: {e}", True
    return runner, f"its ONNX copy passed training's parity gate ({record.reason})", False


class _GraphDeclares:
    """What `spec_from_mlmodel` checks an estimator for, as the ONNX graph declares it."""

    def __init__(self, runner: onnx_format.OnnxClassifier) -> None:
        if runner.n_features is not None:
            self.n_features_in_ = runner.n_features
        self.classes_ = list(range(runner.n_classes))
        self.predict_proba = runner.predict_proba


def load_with_sklearn(
    model_dir: Path,
    mlmodel: dict[str, Any],
    version: str,
    run_id: str,
    model_uri: str,
    reason: str,
) -> LoadedModel:
    """The estimator from the skops file, with our allow-list."""
    from contract.model_format import TRUSTED_TYPES, UntrustedModel, load_estimator
    from contract.tree_check import MalformedModel

    try:
        estimator = load_estimator(model_dir, trusted_types=TRUSTED_TYPES, mlmodel=mlmodel)
    except UntrustedModel as e:
        raise InvalidModel(
            f"{model_uri} holds types outside the predictor's allow-list: {e}"
        ) from e
    except MalformedModel as e:
        raise InvalidModel(
            f"{model_uri} is refused, its trees would crash the predictor: {e}"
        ) from e
    except (ValueError, OSError, KeyError) as e:
        raise InvalidModel(f"{model_uri} cannot be loaded: {e}") from e
    spec = spec_from_mlmodel(mlmodel, estimator)
    loaded = LoadedModel(
        estimator,
        spec,
        version=version,
        run_id=run_id,
        model_uri=model_uri,
        runtime_reason=reason,
    )
    warm_up(loaded)
    return loaded


def warm_up(model: LoadedModel) -> None:
    """One prediction before the model turns ready: the first call of a freshly loaded
    model allocates and imports lazily, which should not land on a client."""
    try:
        # The runtime's own call: `predict` would also change this thread's scikit-learn
        # settings (`assume_finite`), and the loading thread is not a request thread.
        model._predict_proba(np.zeros((1, model.spec.n_features)))
    except Exception as e:
        raise InvalidModel(f"{model.model_uri} fails to predict a row of zeros: {e}") from e
