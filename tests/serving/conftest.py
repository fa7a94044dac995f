"""Fixtures of the predictor's tests, each built on the one before (as MLServer's are):
the breast-cancer data → fitted estimators → MLflow model folders (saved exactly as the
training package saves them) → a loaded `RegistryModel` → KServe's app under TestClient.

Names are prefixed so they cannot shadow the rollout tests' fixtures below this folder.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contract import model_format
from serving.registry import FetchedModel, parse_model_uri
from serving.settings import Settings
from tests.support import under_ci

MODEL_NAME = "breast-cancer"
VERSION = "3"
RUN_ID = "0123456789abcdef"


@dataclass(frozen=True)
class Data:
    x: np.ndarray[Any, Any]
    y: np.ndarray[Any, Any]
    feature_names: list[str]
    class_names: list[str]


def breast_cancer() -> Data:
    """The default data set, as the predictor's tests use it (for fixtures elsewhere too)."""
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return Data(
        x=bunch.data.astype(np.float64),
        y=bunch.target,
        feature_names=[str(n) for n in bunch.feature_names],
        class_names=[str(n) for n in bunch.target_names],
    )


@pytest.fixture(scope="session")
def serving_data() -> Data:
    return breast_cancer()


def save_mlflow_model(
    estimator: Any,
    path: Path,
    data: Data,
    serialization_format: str = "skops",
    declared_trusted_types: tuple[str, ...] = (),
) -> Path:
    """Save like `training.pipeline._log_model`: skops, named double columns, class names.

    `declared_trusted_types` are written into the model file as trusted, as an attacker
    (or a careless trainer) could.
    """
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature

    example = pd.DataFrame(data.x[:3], columns=data.feature_names)
    signature = infer_signature(example, estimator.predict_proba(data.x[:3]))
    mlflow.sklearn.save_model(
        estimator,
        str(path),
        signature=signature,
        metadata=model_format.model_metadata(data.class_names, "malignant"),
        serialization_format=serialization_format,
        skops_trusted_types=[*model_format.TRUSTED_TYPES, *declared_trusted_types],
        pip_requirements=[],
    )
    return path


@pytest.fixture(scope="session")
def serving_saved_models(
    serving_data: Data, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """The two model families the training package registers, as MLflow model folders."""
    from sklearn.ensemble import RandomForestClassifier

    root = tmp_path_factory.mktemp("saved-models")
    logreg = scaled_logreg().fit(serving_data.x, serving_data.y)
    forest = RandomForestClassifier(n_estimators=10, random_state=0, n_jobs=1).fit(
        serving_data.x, serving_data.y
    )
    return {
        "logreg": save_mlflow_model(logreg, root / "logreg", serving_data),
        "forest": save_mlflow_model(forest, root / "forest", serving_data),
    }


def scaled_logreg() -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    return Pipeline(
        [("scale", StandardScaler()), ("model", LogisticRegression(max_iter=5000, random_state=0))]
    )


def serving_settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "model_uri": f"models:/{MODEL_NAME}/{VERSION}",
        "tracking_uri": "http://registry.invalid:5000",
        "model_name": MODEL_NAME,
        "max_batch_size": 64,
        "max_body_bytes": 64 * 1024,
        "load_retry_initial_seconds": 0.01,
        "load_retry_max_seconds": 0.05,
    }
    values.update(overrides)
    return Settings(**values)


def local_fetcher(model_dir: Path, version: str = VERSION) -> Callable[[Path], FetchedModel]:
    """A fetcher that "downloads" a saved model folder: what the registry would hand over."""

    def fetch(folder: Path) -> FetchedModel:
        target = folder / "model"
        shutil.copytree(model_dir, target)
        ref = parse_model_uri(f"models:/{MODEL_NAME}/{version}")
        return FetchedModel(ref=ref, version=version, run_id=RUN_ID, path=target)

    return fetch


@pytest.fixture
def serving_model_factory(serving_saved_models: dict[str, Path]) -> Callable[..., Any]:
    """Make a `RegistryModel` of a saved family, loaded unless asked otherwise."""
    from serving.model import RegistryModel

    def make(family: str = "logreg", load: bool = True, **overrides: Any) -> RegistryModel:
        model = RegistryModel(
            serving_settings(**overrides), fetcher=local_fetcher(serving_saved_models[family])
        )
        if load:
            assert model.load() is True
        return model

    return make


def predictor_app(model: Any, max_body_bytes: int = 64 * 1024) -> Any:
    """KServe's FastAPI application with the predictor's routes, as `python -m serving`
    builds it, without listening on a port."""
    from kserve.model_repository import ModelRepository
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension

    from serving.rest import PredictorRESTServer
    from serving.server import ReadyDataPlane

    repository = ModelRepository()
    repository.update(model)
    dataplane = ReadyDataPlane(model_registry=repository)
    server = PredictorRESTServer(
        model,
        dataplane,
        ModelRepositoryExtension(model_registry=repository),
        http_port=0,
        max_body_bytes=max_body_bytes,
    )
    return server.create_application()


@pytest.fixture
def serving_client(serving_model_factory: Callable[..., Any]) -> Iterator[TestClient]:
    """The logistic-regression pipeline loaded as version 3, behind KServe's app."""
    with TestClient(predictor_app(serving_model_factory("logreg"))) as client:
        yield client


# --- the Open Inference Protocol's REST schema ---------------------------------------------

SCHEMA_SETTING = "OIP_REST_SCHEMA"


def oip_schema_text() -> str:
    """The Open Inference Protocol's REST schema with this model's name in its paths."""
    path = os.environ.get(SCHEMA_SETTING)
    if not path:
        reason = (
            f"{SCHEMA_SETTING} is not set: point it at open_inference_rest.yaml from the "
            "kserve/open-inference-protocol repository (specification/protocol/)"
        )
        if under_ci():
            pytest.fail(f"{reason}; .ci/run sets it", pytrace=False)
        pytest.skip(reason)
    # Its paths spell the parameters `${MODEL_NAME}`; the name is pinned, the version a
    # path parameter.
    return (
        Path(path)
        .read_text()
        .replace("${MODEL_NAME}", MODEL_NAME)
        .replace("${MODEL_VERSION}", "{MODEL_VERSION}")
    )


@pytest.fixture(scope="session")
def oip_schema() -> Any:
    import schemathesis
    import yaml

    raw = yaml.safe_load(oip_schema_text())
    for item in raw["paths"].values():  # MODEL_NAME is part of the path now
        item["parameters"] = [p for p in item.get("parameters", []) if p["name"] != "MODEL_NAME"]
    return schemathesis.openapi.from_dict(raw)
