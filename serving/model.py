"""The `kserve.Model` that serves one registry version.

`load()` keeps trying until the registry answers and the version exists: meanwhile the
server is alive but not ready, and the log says what it waits for. The fast V2 paths
(REST, gRPC) call `active()` and `infer()`; KServe's generic paths (V1 `instances`,
binary V2 via the data plane) reach `predict()`. All of them share the codec, the
estimator call and the metrics.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from time import perf_counter
from typing import Any

import kserve
from kserve.metrics import PREDICT_HIST_TIME

from contract.metric_names import NO_VERSION
from serving import codec
from serving.errors import InvalidModel, LoadError, ModelNotReady, UnknownModel, quoted
from serving.loader import LoadedModel, Prediction, load_model_dir
from serving.metrics import BoundMetrics, PredictorMetrics, default_metrics
from serving.registry import FetchedModel, FetchProcess, Prefetch
from serving.settings import Settings

logger = logging.getLogger(__name__)

RUNTIME_NAMES = {"onnx": "ONNX Runtime", "sklearn": "scikit-learn"}

Fetcher = Callable[[Path], FetchedModel]
"""Downloads the configured model into the given folder."""


@dataclass(frozen=True)
class Active:
    """What a request needs, swapped in one assignment when a load completes."""

    model: LoadedModel
    metrics: BoundMetrics


def one_line(text: str, limit: int = 500) -> str:
    """A message for one log line: whitespace runs (newlines too) as one space, at most
    `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class RegistryModel(kserve.Model):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        fetcher: Fetcher | None = None,
        metrics: PredictorMetrics | None = None,
        prefetch: Prefetch | None = None,
    ) -> None:
        """`prefetch`, a fetch of this model started early, serves the first attempt
        (if it fetches what `settings` ask for; otherwise it is given up)."""
        super().__init__(settings.model_name)
        self.settings = settings
        self.max_batch_size = settings.max_batch_size
        self._fetch = fetcher or self._fetch_from_registry
        self._families = metrics or default_metrics()
        self._active: Active | None = None
        self.metrics: BoundMetrics = self._families.bind(self.name, NO_VERSION)
        """Series of the loaded version; of version "none" until a load succeeds."""
        self.waiting_for = f"{settings.model_uri}: the first load attempt has not finished"
        self._stop = threading.Event()
        self._load_lock = threading.Lock()
        self._fetching: FetchProcess | None = None
        self._prefetch: Prefetch | None = None
        if prefetch is not None:
            if fetcher is None and prefetch.fetches(
                settings.model_ref, settings.tracking_uri, settings.registry_timeout_seconds
            ):
                self._prefetch = prefetch
            else:
                prefetch.close()
        self._kserve_predict_seconds = PREDICT_HIST_TIME.labels(model_name=self.name)

    # --- loading --------------------------------------------------------------------------

    def load(self) -> bool:
        """Load the configured version, retrying with backoff until it works or `stop()`."""
        # KServe's data plane calls load() of a model that is not ready from the event
        # loop; a load already running in the background must not block that call.
        if not self._load_lock.acquire(blocking=False):
            return bool(self.ready)
        try:
            return self._load_with_retries()
        finally:
            self._load_lock.release()

    def _load_with_retries(self) -> bool:
        """Transient failures (the registry down, a version not there yet) retry with the
        usual backoff and a line each; a permanent one (an artifact that cannot be served:
        truncated, refused types, a bad signature) is logged once, in one line, and
        retried slowly, in case the alias moves or the version is fixed."""
        s = self.settings
        delay = s.load_retry_initial_seconds
        attempt = 0
        reported = ""  # the permanent failure already logged, if any
        while not self._stop.is_set():
            attempt += 1
            try:
                self.activate(self.load_once())
                return True
            except InvalidModel as e:
                permanent, cause = True, e.message
            except LoadError as e:
                permanent, cause = False, e.message
            except Exception as e:  # a bug or an unforeseen failure: keep serving /live
                permanent, cause = True, f"unexpected {type(e).__name__}: {e}"
                if cause != reported:
                    logger.debug("unexpected failure loading %s", s.model_uri, exc_info=e)
            self.waiting_for = f"{s.model_uri}: {one_line(cause)}"
            if not permanent:
                reported = ""
                logger.warning(
                    "model '%s' not ready, waiting for %s (attempt %d; next in %.1fs)",
                    self.name,
                    self.waiting_for,
                    attempt,
                    delay,
                )
            else:
                level = logging.DEBUG if cause == reported else logging.ERROR
                reported = cause
                logger.log(
                    level,
                    "model '%s' cannot be served, %s (attempt %d); retrying at most every "
                    "%gs in case the registry changes",
                    self.name,
                    self.waiting_for,
                    attempt,
                    s.load_retry_invalid_max_seconds,
                )
            self._stop.wait(delay)
            cap = s.load_retry_invalid_max_seconds if permanent else s.load_retry_max_seconds
            delay = min(delay * 2, cap)
        return False

    def load_once(self) -> LoadedModel:
        """One attempt: resolve, download into a temporary folder, load, warm up. What
        fails once the artifact is here is the artifact's fault: `InvalidModel`."""
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is None:
            started, folder = perf_counter(), tempfile.TemporaryDirectory(prefix="serving-model-")
        else:
            started, folder = prefetch.started, prefetch.folder
        with folder as path:
            fetched = self._fetch(Path(path)) if prefetch is None else self._await(prefetch.process)
            try:
                loaded = load_model_dir(
                    fetched.path,
                    fetched.version,
                    fetched.run_id,
                    fetched.uri,
                    runtime=self.settings.model_runtime,
                )
            except LoadError:
                raise
            except Exception as e:  # e.g. a truncated zip: BadZipFile, EOFError
                raise InvalidModel(
                    f"{fetched.uri} cannot be loaded ({type(e).__name__}: {e})"
                ) from e
        loaded.load_seconds = perf_counter() - started
        return loaded

    def _fetch_from_registry(self, folder: Path) -> FetchedModel:
        s = self.settings
        return self._await(
            FetchProcess(s.model_ref, s.tracking_uri, folder, s.registry_timeout_seconds)
        )

    def _await(self, pending: FetchProcess) -> FetchedModel:
        self._fetching = pending
        try:
            return pending.result()
        finally:
            self._fetching = None

    def activate(self, loaded: LoadedModel) -> None:
        profile = loaded.profile if self.settings.feature_drift else None
        bound = self._families.bind(self.name, loaded.version, loaded.spec.class_names, profile)
        bound.loaded(loaded.model_uri, loaded.run_id, loaded.load_seconds, loaded.runtime)
        self._active = Active(loaded, bound)
        self.metrics = bound
        self.waiting_for = ""
        self.ready = True
        logger.info(
            "serving %s (run %s) as '%s' with %s (%s): %d features, classes %s; loaded in %.2fs",
            loaded.model_uri,
            loaded.run_id or "unknown",
            self.name,
            RUNTIME_NAMES[loaded.runtime],
            loaded.runtime_reason,
            loaded.spec.n_features,
            ", ".join(loaded.spec.class_names),
            loaded.load_seconds,
        )
        if not self.settings.feature_drift:
            logger.info("feature drift: not counted (FEATURE_DRIFT=false)")
        elif profile is None:
            logger.log(
                logging.WARNING if loaded.profile_broken else logging.INFO,
                "feature drift: not counted for %s: %s",
                loaded.model_uri,
                loaded.profile_reason,
            )
        else:
            logger.info(
                "feature drift: counting served rows into %s (%d features)",
                loaded.profile_reason,
                len(profile.features),
            )

    def stop(self) -> None:
        self._stop.set()
        fetching = self._fetching
        if fetching is not None:
            fetching.kill()
        prefetch, self._prefetch = self._prefetch, None
        if prefetch is not None:
            prefetch.close()
        super().stop()

    # --- the request path ------------------------------------------------------------------

    def active(self) -> Active:
        """The loaded version, or `ModelNotReady` saying what the load waits for."""
        active = self._active
        if active is None or not self.ready:
            raise ModelNotReady(f"model '{self.name}' is not ready: waiting for {self.waiting_for}")
        return active

    def target(self, name: str, version: str | None = None) -> Active:
        """The loaded version, if a request names this model (and, if it names one, the
        loaded version): `UnknownModel` otherwise, `ModelNotReady` before a load."""
        if name != self.name:
            raise UnknownModel(
                f"model {quoted(name)} is not served here; this server serves '{self.name}'"
            )
        active = self.active()
        if version and version != active.model.version:
            raise UnknownModel(
                f"version {quoted(version)} of '{self.name}' is not loaded here; "
                f"the loaded version is {active.model.version}"
            )
        return active

    def infer(self, active: Active, features: codec.FloatMatrix) -> Prediction:
        started = perf_counter()
        prediction = active.model.predict(features)
        self._kserve_predict_seconds.observe(perf_counter() - started)
        metrics = active.metrics
        metrics.predicted(prediction.labels)
        if metrics.features is not None:
            metrics.features.count(features)
        return prediction

    # --- KServe's generic path: V1 `instances`, and V2 through the data plane -------------

    def predict(
        self,
        payload: Any,
        headers: dict[str, str] | None = None,
        response_headers: dict[str, str] | None = None,
    ) -> Any:
        from kserve.protocol.infer_type import InferRequest

        active = self.active()
        spec = active.model.spec
        if isinstance(payload, InferRequest):
            decoded = codec.decode_infer_request(payload, spec, self.max_batch_size)
            prediction = self.infer(active, decoded.features)
            return codec.to_infer_response(prediction, decoded, self.name, active.model.version)
        features = codec.decode_v1(payload, spec, self.max_batch_size)
        return codec.encode_v1(self.infer(active, features), self.name, active.model.version)

    def get_input_types(self) -> list[dict[str, Any]]:
        active = self._active
        return active.model.spec.inputs() if active else []

    def get_output_types(self) -> list[dict[str, Any]]:
        active = self._active
        return active.model.spec.outputs() if active else []
