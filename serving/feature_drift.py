"""Served rows counted into the bins of the version's drift profile (contract.drift_profile),
exported as `inference_feature_bin_total` with the reference shares beside them as
`inference_feature_reference_share` (docs/serving.md "Feature drift").

Why not one prometheus_client counter per (feature, bin): a row touches 30 of them, and
30 `.inc()` calls cost more than the whole prediction. Rows are copied into a numpy
buffer instead (about a microsecond); a full buffer, and every scrape, bins the buffered
rows at once (`np.searchsorted` per feature, one `np.bincount`) into one array of counts,
which the collector reads when Prometheus scrapes. A scrape therefore always sees every
row answered before it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from contract import metric_names as names
from contract.drift_profile import DriftProfile, bin_indices

BUFFER_ROWS = 1024
"""Rows held before they are binned; a batch larger than this is binned on arrival."""


def bin_label(index: int) -> str:
    """The `bin` label value: the bin's index, 0 being the lowest (contract.drift_profile)."""
    return str(index)


class FeatureCounter:
    """The bin counts of one model version's served rows. Thread-safe: the REST path runs
    on the event loop, gRPC on its own threads."""

    def __init__(self, profile: DriftProfile) -> None:
        self.profile = profile
        self._edges = [np.asarray(f.edges, dtype=np.float64) for f in profile.features]
        self._stride = max(f.bins for f in profile.features)
        """Counts of feature j, bin b sit at `j * stride + b`."""
        self._offsets = np.arange(len(self._edges), dtype=np.intp) * self._stride
        self._counts = np.zeros(len(self._edges) * self._stride, dtype=np.int64)
        self._buffer = np.empty((BUFFER_ROWS, len(self._edges)), dtype=np.float64)
        self._buffered = 0
        self._lock = threading.Lock()

    def count(self, rows: npt.NDArray[np.float64]) -> None:
        """Count validated rows `[n, n_features]` (finite; the codec checked)."""
        n = rows.shape[0]
        with self._lock:
            if self._buffered + n > BUFFER_ROWS:
                self._flush()
                if n > BUFFER_ROWS:
                    self._add(rows)
                    return
            self._buffer[self._buffered : self._buffered + n] = rows
            self._buffered += n

    def counts(self) -> npt.NDArray[np.int64]:
        """Rows per bin, `[n_features, stride]` (bins a feature lacks stay 0)."""
        with self._lock:
            self._flush()
            return self._counts.reshape(len(self._edges), self._stride).copy()

    def _flush(self) -> None:
        if self._buffered:
            self._add(self._buffer[: self._buffered])
            self._buffered = 0

    def _add(self, rows: npt.NDArray[np.float64]) -> None:
        bins = np.empty(rows.shape, dtype=np.intp)
        for j, edges in enumerate(self._edges):
            bins[:, j] = bin_indices(rows[:, j], edges)
        self._counts += np.bincount((bins + self._offsets).ravel(), minlength=self._counts.size)


class FeatureDriftCollector:
    """Exports every counted version's bins and reference shares on each scrape."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._versions: dict[tuple[str, str], FeatureCounter] = {}
        self._lock = threading.Lock()
        if registry is not None:
            registry.register(self)

    def counter(self, model_name: str, model_version: str, profile: DriftProfile) -> FeatureCounter:
        """The counter of a version (the same one again if the version is loaded again)."""
        with self._lock:
            key = (model_name, model_version)
            existing = self._versions.get(key)
            if existing is None or existing.profile != profile:
                existing = self._versions[key] = FeatureCounter(profile)
            return existing

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        served, reference = self._families()
        with self._lock:
            versions = list(self._versions.items())
        for (model_name, model_version), counter in versions:
            counts = counter.counts().tolist()
            for j, feature in enumerate(counter.profile.features):
                for b, share in enumerate(feature.shares):
                    labels = [model_name, model_version, feature.name, bin_label(b)]
                    served.add_metric(labels, counts[j][b])
                    reference.add_metric(labels, share)
        yield served
        yield reference

    @staticmethod
    def _families() -> tuple[Any, Any]:
        labels = [*names.VERSION_LABELS, names.FEATURE, names.BIN]
        served = CounterMetricFamily(
            names.FEATURE_BIN,
            "Served rows by feature and bin of the version's drift profile (bin 0 lowest).",
            labels=labels,
        )
        reference = GaugeMetricFamily(
            names.FEATURE_REFERENCE_SHARE,
            "Share of the training split's rows in each bin of the version's drift profile.",
            labels=labels,
        )
        return served, reference
