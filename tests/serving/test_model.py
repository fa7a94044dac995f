"""`RegistryModel.load()`: retries with backoff, never blocks KServe, says what it waits for."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from serving.errors import ModelNotReady, ModelVersionMissing, RegistryUnavailable
from serving.model import RegistryModel
from serving.registry import FetchedModel
from tests.serving.conftest import MODEL_NAME, RUN_ID, local_fetcher, serving_settings
from tests.support import wait_until


def flaky(
    fetch: Callable[[Path], FetchedModel], failures: list[Exception]
) -> Callable[[Path], FetchedModel]:
    """Raise each of `failures` once, then fetch."""
    remaining = list(failures)

    def attempt(folder: Path) -> FetchedModel:
        if remaining:
            raise remaining.pop(0)
        return fetch(folder)

    return attempt


def test_load_retries_until_the_registry_answers(
    serving_saved_models: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[Exception] = [
        RegistryUnavailable("the registry at http://mlflow:5000 failed: connection refused"),
        ModelVersionMissing("version 3 of registered model 'breast-cancer' does not exist"),
    ]
    fetcher = flaky(local_fetcher(serving_saved_models["logreg"]), failures)
    model = RegistryModel(serving_settings(), fetcher=fetcher)

    with caplog.at_level(logging.INFO, logger="serving"):
        assert model.load() is True

    assert model.ready
    waits = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(waits) == 2
    assert (
        "waiting for models:/breast-cancer/3: the registry at http://mlflow:5000 failed: "
        "connection refused (attempt 1" in waits[0]
    )
    assert "version 3 of registered model 'breast-cancer' does not exist (attempt 2" in waits[1]
    assert any(
        "serving models:/breast-cancer/3 (run 0123456789abcdef)" in r.getMessage()
        for r in caplog.records
    )


def test_the_loaded_version_is_recorded_in_the_model_info_metrics(
    serving_model_factory: Callable[..., Any],
) -> None:
    serving_model_factory("logreg")

    labels = {"model_name": MODEL_NAME, "model_version": "3"}
    info = REGISTRY.get_sample_value(
        "inference_model_info",
        {**labels, "model_uri": "models:/breast-cancer/3", "run_id": RUN_ID, "runtime": "sklearn"},
    )
    load_seconds = REGISTRY.get_sample_value("inference_model_load_seconds", labels)
    assert info == 1.0
    assert load_seconds is not None and load_seconds > 0


def test_until_loaded_the_model_is_not_ready_and_says_what_it_waits_for(
    serving_saved_models: dict[str, Path],
) -> None:
    release = threading.Event()
    fetch = local_fetcher(serving_saved_models["logreg"])

    def slow_fetch(folder: Path) -> FetchedModel:
        release.wait(30)
        return fetch(folder)

    model = RegistryModel(serving_settings(), fetcher=slow_fetch)
    loader = threading.Thread(target=model.load)
    loader.start()
    try:
        wait_until(model._load_lock.locked, 10, "the load to start")
        with pytest.raises(
            ModelNotReady,
            match="model 'breast-cancer' is not ready: waiting for models:/breast-cancer/3",
        ):
            model.active()
        # KServe's data plane calls load() on a model that is not ready: it must return at once.
        assert model.load() is False
    finally:
        release.set()
        loader.join(30)
    assert model.active().model.version == "3"


def test_stop_ends_a_load_that_waits_for_a_missing_version(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def missing(folder: Path) -> FetchedModel:
        raise ModelVersionMissing(
            "alias @champion of registered model 'breast-cancer' does not exist"
        )

    model = RegistryModel(
        serving_settings(model_uri="models:/breast-cancer@champion", load_retry_max_seconds=0.05),
        fetcher=missing,
    )
    result: list[bool] = []
    loader = threading.Thread(target=lambda: result.append(model.load()))
    with caplog.at_level(logging.WARNING, logger="serving"):
        loader.start()
        wait_until(lambda: len(caplog.records) >= 3, 10, "three load attempts")
        model.stop()
        loader.join(10)

    assert result == [False]
    assert not model.ready
    assert (
        "waiting for models:/breast-cancer@champion: alias @champion"
        in caplog.records[0].getMessage()
    )


def test_a_model_that_cannot_be_served_is_logged_as_an_error_and_retried(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "MLmodel").write_text("flavors: {python_function: {}}\n")
    attempts: list[int] = []

    def unservable(folder: Path) -> FetchedModel:
        attempts.append(1)
        if len(attempts) == 2:
            model.stop()
        return local_fetcher(tmp_path)(folder)

    model = RegistryModel(serving_settings(), fetcher=unservable)
    with caplog.at_level(logging.WARNING, logger="serving"):
        assert model.load() is False

    assert len(attempts) == 2
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "holds no scikit-learn model" in errors[0].getMessage()
