"""The reference profile of a model version's inputs: what training writes and the
predictor counts served rows against (docs/serving.md "Feature drift").

The contract:

- the file sits at `PROFILE_FILE` in the model folder (MLflow's `extra_files`, as the ONNX
  copy does), so it is downloaded with the version and the version pins it;
- `metadata["drift_profile"]` in the MLmodel file names it (`file`, `sha256`,
  `format_version`): the predictor reads only that place, and only a file whose hash
  matches;
- the file is JSON: `format_version`, the rows it was computed on (the training split),
  and per feature, in the signature's order, its inner bin `edges` and each bin's `shares`.

Bins: for edges e_0 < e_1 < ... < e_{k-2}, bin 0 is (-inf, e_0], bin i is
(e_{i-1}, e_i], the last bin is (e_{k-2}, +inf): open at both ends, so every finite
served value falls in exactly one bin. The bin of a value is the number of edges below
it (`np.searchsorted(edges, value, side="left")`). Edges are the training split's
quantiles (deciles by default) taken as data values (`inverted_cdf`) and deduplicated, so
a discrete feature (0/1) gets one bin per value instead of empty bins between them; an
edge at the feature's maximum is dropped (the bin above it would be empty by
construction), except for a constant feature, which keeps its one edge so that served
values above it show.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

FORMAT_VERSION = 1
PROFILE_FILE = "extra_files/drift_profile.json"
"""Where the file sits inside the model version's MLflow model folder."""
METADATA_KEY = "drift_profile"
DEFAULT_BINS = 10
"""Deciles: each bin holds about a tenth of the training rows."""
MAX_BINS = 20
"""Bins per feature are label values of a Prometheus series: kept few on purpose."""
SPLIT = "train"


class InvalidProfile(ValueError):
    """The profile file is not one this contract describes."""


@dataclass(frozen=True)
class FeatureProfile:
    name: str
    edges: tuple[float, ...]
    """Inner bin edges, strictly increasing; `len(edges) + 1` bins."""
    shares: tuple[float, ...]
    """Share of the training rows in each bin; sums to 1."""

    @property
    def bins(self) -> int:
        return len(self.shares)


@dataclass(frozen=True)
class DriftProfile:
    features: tuple[FeatureProfile, ...]
    rows: int
    """Training rows the shares were counted on."""
    format_version: int = FORMAT_VERSION
    split: str = SPLIT

    @property
    def feature_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.features)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format_version": self.format_version,
                "split": self.split,
                "rows": self.rows,
                "features": [
                    {"name": f.name, "edges": list(f.edges), "shares": list(f.shares)}
                    for f in self.features
                ],
            },
            indent=1,
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> DriftProfile:
        """Parse and check a profile file; `InvalidProfile` says what is wrong."""
        try:
            raw = json.loads(text)
        except ValueError as e:
            raise InvalidProfile(f"the drift profile is not JSON: {e}") from e
        if not isinstance(raw, Mapping):
            raise InvalidProfile("the drift profile is not a JSON object")
        version = raw.get("format_version")
        if version != FORMAT_VERSION:
            raise InvalidProfile(
                f"the drift profile has format_version {version!r}; this predictor reads "
                f"{FORMAT_VERSION} (re-train, or update the predictor)"
            )
        entries = raw.get("features")
        rows = raw.get("rows")
        if not isinstance(entries, list) or not entries:
            raise InvalidProfile("the drift profile lists no features")
        if not isinstance(rows, int) or rows < 1:
            raise InvalidProfile(f"the drift profile's rows must be a positive count, got {rows!r}")
        features = tuple(_feature(entry, index) for index, entry in enumerate(entries))
        return cls(features, rows, FORMAT_VERSION, str(raw.get("split", SPLIT)))


def _feature(entry: Any, index: int) -> FeatureProfile:
    where = f"the drift profile's feature {index}"
    if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
        raise InvalidProfile(f"{where} is not an object with a name")
    try:
        edges = tuple(float(e) for e in entry["edges"])
        shares = tuple(float(s) for s in entry["shares"])
    except (KeyError, TypeError, ValueError) as e:
        raise InvalidProfile(f"{where} ({entry['name']}) needs numeric edges and shares") from e
    name = entry["name"]
    if len(shares) != len(edges) + 1 or len(shares) > MAX_BINS + 1:
        raise InvalidProfile(
            f"{where} ({name}): {len(edges)} edges need {len(edges) + 1} shares, got "
            f"{len(shares)} (at most {MAX_BINS + 1} bins)"
        )
    increasing = all(b > a for a, b in itertools.pairwise(edges))
    if not all(math.isfinite(e) for e in edges) or not increasing:
        raise InvalidProfile(f"{where} ({name}): edges must be finite and strictly increasing")
    if any(not 0 <= s <= 1 for s in shares) or abs(sum(shares) - 1) > 1e-6:
        raise InvalidProfile(f"{where} ({name}): shares must be in [0, 1] and sum to 1")
    return FeatureProfile(name, edges, shares)


def quantile_edges(column: npt.NDArray[np.float64], bins: int = DEFAULT_BINS) -> tuple[float, ...]:
    """The inner edges of one feature (module doc: quantiles, deduplicated, open ends)."""
    if not 2 <= bins <= MAX_BINS:
        raise ValueError(f"bins must be within [2, {MAX_BINS}], got {bins}")
    levels = np.linspace(0, 1, bins + 1)[1:-1]
    edges = np.unique(np.quantile(column, levels, method="inverted_cdf"))
    top = float(column.max())
    below_top = edges[edges < top]
    kept = below_top if below_top.size else edges[:1]  # a constant feature keeps its value
    return tuple(float(e) for e in kept)


def bin_indices(
    column: npt.NDArray[np.float64], edges: Sequence[float] | npt.NDArray[np.float64]
) -> npt.NDArray[np.intp]:
    """The bin of each value: the number of edges below it."""
    return np.searchsorted(np.asarray(edges, dtype=np.float64), column, side="left")


def build_profile(
    features: npt.NDArray[np.float64], names: Sequence[str], bins: int = DEFAULT_BINS
) -> DriftProfile:
    """The profile of the rows `features` (`[rows, len(names)]`), usually the training split."""
    rows, width = features.shape
    if width != len(names) or rows < 1:
        raise ValueError(f"need rows of {len(names)} features, got shape {features.shape}")
    profiles = []
    for index, name in enumerate(names):
        column = np.asarray(features[:, index], dtype=np.float64)
        edges = quantile_edges(column, bins)
        counts = np.bincount(bin_indices(column, edges), minlength=len(edges) + 1)
        profiles.append(
            FeatureProfile(str(name), edges, tuple(float(c) / rows for c in counts.tolist()))
        )
    return DriftProfile(tuple(profiles), rows)


@dataclass(frozen=True)
class ProfileRecord:
    """`metadata["drift_profile"]` of a version: where its profile is and its hash."""

    file: str
    sha256: str
    format_version: int = FORMAT_VERSION

    def as_metadata(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "format_version": self.format_version}

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any] | None) -> ProfileRecord | None:
        """The record of a parsed MLmodel `metadata`; None when there is none (a version
        trained before profiles) or it is not a record."""
        raw = (metadata or {}).get(METADATA_KEY)
        if not isinstance(raw, Mapping):
            return None
        file, digest, version = raw.get("file"), raw.get("sha256"), raw.get("format_version")
        if not isinstance(file, str) or not isinstance(digest, str) or not isinstance(version, int):
            return None
        return cls(file, digest, version)


def record_of(text: str) -> ProfileRecord:
    return ProfileRecord(PROFILE_FILE, hashlib.sha256(text.encode()).hexdigest())
