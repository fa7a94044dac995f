"""Served rows counted into the drift profile's bins: the counts are exact whatever the
batch sizes and threads, the collector exports them with the reference shares, and a
version without a (usable) profile serves as before."""

from __future__ import annotations

import logging
import shutil
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contract import metric_names as names
from contract.drift_profile import PROFILE_FILE, build_profile, record_of
from serving import feature_drift
from serving.feature_drift import FeatureCounter, FeatureDriftCollector
from serving.metrics import PredictorMetrics
from tests.serving.conftest import MODEL_NAME, VERSION, Data, local_fetcher, serving_settings


def expected_counts(profile: Any, rows: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """Counts the slow, obvious way: one searchsorted and bincount per feature."""
    stride = max(f.bins for f in profile.features)
    out = np.zeros((len(profile.features), stride), dtype=np.int64)
    for j, feature in enumerate(profile.features):
        bins = np.searchsorted(np.asarray(feature.edges), rows[:, j], side="left")
        out[j, : feature.bins] = np.bincount(bins, minlength=feature.bins)
    return out


def test_counts_are_exact_across_batch_sizes_and_a_full_buffer(serving_data: Data) -> None:
    profile = build_profile(serving_data.x, serving_data.feature_names)
    counter = FeatureCounter(profile)
    rng = np.random.default_rng(0)
    sent = []
    # Single rows, small batches, one larger than the buffer: every path of count().
    for size in [1] * 700 + [7] * 60 + [feature_drift.BUFFER_ROWS + 5, 1, 3]:
        rows = serving_data.x[rng.integers(0, len(serving_data.x), size)] * rng.normal(1, 0.2)
        counter.count(rows)
        sent.append(rows)
    everything = np.concatenate(sent)
    np.testing.assert_array_equal(counter.counts(), expected_counts(profile, everything))
    assert counter.counts().sum() == len(everything) * len(profile.features)


def test_counts_from_many_threads_add_up(serving_data: Data) -> None:
    profile = build_profile(serving_data.x, serving_data.feature_names)
    counter = FeatureCounter(profile)
    rows = serving_data.x[:5]

    def send() -> None:
        for _ in range(300):
            counter.count(rows[:1])
            counter.count(rows)

    threads = [threading.Thread(target=send) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    expected = expected_counts(profile, np.concatenate([rows[:1], rows])) * 1200
    np.testing.assert_array_equal(counter.counts(), expected)


def scraped(registry: CollectorRegistry) -> dict[tuple[str, str, str, str], float]:
    """`{(series, version, feature, bin): value}` of the drift families, as text."""
    found = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for sample in family.samples:
            if sample.name in (names.FEATURE_BIN, names.FEATURE_REFERENCE_SHARE):
                labels = sample.labels
                key = (sample.name, labels["model_version"], labels["feature"], labels["bin"])
                found[key] = sample.value
    return found


def test_the_collector_exports_counts_and_reference_shares(serving_data: Data) -> None:
    registry = CollectorRegistry()
    collector = FeatureDriftCollector(registry)
    profile = build_profile(serving_data.x, serving_data.feature_names)
    counter = collector.counter("m", "4", profile)
    assert collector.counter("m", "4", profile) is counter
    counter.count(serving_data.x[:3])
    series = scraped(registry)
    radius = profile.features[0]
    assert len(series) == 2 * sum(f.bins for f in profile.features)
    served = [series[(names.FEATURE_BIN, "4", radius.name, str(b))] for b in range(radius.bins)]
    assert served == expected_counts(profile, serving_data.x[:3])[0].tolist()
    shares = [
        series[(names.FEATURE_REFERENCE_SHARE, "4", radius.name, str(b))]
        for b in range(radius.bins)
    ]
    assert shares == pytest.approx(radius.shares)


def with_profile(model_dir: Path, target: Path, data: Data, text: str | None = None) -> Path:
    """A copy of a saved model folder carrying a drift profile, as training logs one."""
    shutil.copytree(model_dir, target)
    profile_text = build_profile(data.x, data.feature_names).to_json()
    (target / "extra_files").mkdir(exist_ok=True)
    (target / PROFILE_FILE).write_text(profile_text if text is None else text)
    mlmodel = yaml.safe_load((target / "MLmodel").read_text())
    mlmodel["metadata"]["drift_profile"] = record_of(profile_text).as_metadata()
    (target / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    return target


def registry_model(folder: Path, registry: CollectorRegistry, **overrides: Any) -> Any:
    from serving.model import RegistryModel

    model = RegistryModel(
        serving_settings(**overrides),
        fetcher=local_fetcher(folder),
        metrics=PredictorMetrics(registry),
    )
    assert model.load() is True
    return model


def test_a_version_with_a_profile_counts_every_served_row(
    serving_saved_models: dict[str, Path], serving_data: Data, tmp_path: Path
) -> None:
    folder = with_profile(serving_saved_models["logreg"], tmp_path / "m", serving_data)
    registry = CollectorRegistry()
    model = registry_model(folder, registry)
    active = model.active()
    assert active.model.profile is not None
    model.infer(active, serving_data.x[:1])
    model.infer(active, serving_data.x[1:10])
    series = scraped(registry)
    feature = serving_data.feature_names[3]
    total = sum(v for (n, v_, f, _), v in series.items() if n == names.FEATURE_BIN and f == feature)
    assert total == 10
    assert {k[1] for k in series} == {VERSION}


def test_feature_drift_off_counts_nothing_and_says_so(
    serving_saved_models: dict[str, Path],
    serving_data: Data,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    folder = with_profile(serving_saved_models["logreg"], tmp_path / "m", serving_data)
    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO, logger="serving"):
        model = registry_model(folder, registry, feature_drift=False)
    model.infer(model.active(), serving_data.x[:5])
    assert scraped(registry) == {}
    assert model.active().metrics.features is None
    assert "feature drift: not counted (FEATURE_DRIFT=false)" in caplog.text


def test_a_version_without_a_profile_serves_as_before_saying_so_once(
    serving_saved_models: dict[str, Path],
    serving_data: Data,
    caplog: pytest.LogCaptureFixture,
) -> None:
    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO, logger="serving"):
        model = registry_model(serving_saved_models["logreg"], registry)
    prediction = model.infer(model.active(), serving_data.x[:5])
    assert len(prediction.labels) == 5
    assert scraped(registry) == {}
    lines = [r for r in caplog.records if "feature drift" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO
    assert "no drift profile (trained before profiles were made)" in lines[0].getMessage()
    assert f"models:/{MODEL_NAME}/{VERSION}" in lines[0].getMessage()


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ('{"format_version": 1}', "is corrupt: SHA-256"),
        (None, "features differ from the model's signature"),
    ],
)
def test_a_broken_profile_serves_without_counting_with_a_warning(
    serving_saved_models: dict[str, Path],
    serving_data: Data,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    text: str | None,
    reason: str,
) -> None:
    data = serving_data
    if text is None:  # a valid profile of other features
        data = Data(serving_data.x[:, :5], serving_data.y, serving_data.feature_names[:5], [])
    folder = with_profile(serving_saved_models["logreg"], tmp_path / "m", data, text)
    registry = CollectorRegistry()
    with caplog.at_level(logging.INFO, logger="serving"):
        model = registry_model(folder, registry)
    assert len(model.infer(model.active(), serving_data.x[:2]).labels) == 2
    assert scraped(registry) == {}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("feature drift: not counted" in w and reason in w for w in warnings), warnings
