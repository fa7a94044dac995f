"""Every place this project deviates from an upstream library's behaviour, in one module.

Each is an inventory item: what it changes, why, what it saves (measured on this
project's 2-core VM with `python -X importtime`, RSS and py-spy), and the upstream
version it was checked against (`CHECKED_AGAINST`). `tests/contract/test_upstream.py`
has a test per item that fails when an upgrade makes it stale (the upstream code no
longer does what the workaround answers), plus one that fails when a listed package
moves to a version nobody checked. The module imports nothing heavy: each function
imports what it patches when it is called. It lives in the contract package because the
skops item decides what training's champion gate and the predictor trust alike.

Items (what, why; what it saves):

- `LeaveOut("pyarrow")`: pandas imports pyarrow whenever it is installed (MLflow installs
  it); neither the predictor nor its registry child calls it. 0.2 s, 35 MB per process.
- `Placeholders` for `kserve.api.kserve_client`: `import kserve` imports its Kubernetes API
  client (and `kubernetes`), which a model server never calls. 0.4 s of the start.
- `Placeholders` for `pandas`: KServe imports it for DataFrame codecs the predictor
  replaces with numpy's, scikit-learn to recognise DataFrames it is never given.
  0.3 s and 30 MB per replica.
- `answer_ndarrays_first`: scikit-learn 1.9 asks narwhals "is it a dataframe / a series?"
  six times per call of the logreg pipeline, ~50 µs each for a numpy array. ~230 µs of a
  470 µs `predict_proba`.
- `assume_finite_in_this_thread`: the codec checked every value is finite in one pass;
  scikit-learn would check again in each step (its config is per thread). A pass per step.
- `predict_proba_of`: a Pipeline's steps called in turn, without `Pipeline.predict_proba`'s
  per-call fitted and routing checks. 50-70 µs per request, same results to the bit.
- `import_skops`: skops builds its default allow-list (every scikit-learn estimator) at
  import, importing every scikit-learn module; with discovery off, what a model may hold
  is `TRUSTED_TYPES` alone. 0.5 s of the start, and a narrower trust.
- `import_scipy_special_first`: skops finds the module of ~400 SciPy ufuncs by scanning the
  loaded modules in order, sooner with scipy.special early. 0.2 s of the start.
- `freeze_long_lived_objects`: CPython's collector would walk the ~330,000 import-time (and
  model) objects on every full collection, freeing almost nothing. ~0.2 s of CPU a walk.
- `KSERVE_PRIVATE_API`: KServe 0.21 offers no public hook for these; the predictor
  overrides or reads them (`serving/rest.py`, `serving/server.py`,
  `serving/grpc_service.py`, `serving/__main__.py`); each entry says why.
- The ONNX export's changes to skl2onnx's graph (`training/onnx_export.py` lists them:
  trees converted for float32 input, a double `Cast` before each tree ensemble, double at
  the graph's edges): skl2onnx 1.20's double-input tree thresholds are off (0.027 in
  probability) and ONNX Runtime sums a float ensemble in float (7.8e-7 for 150 trees).
  Tested in `tests/training/test_onnx_export.py`, stale checks included.

Hostile traffic (KServe 0.21, uvicorn 0.54, grpcio 1.85; what each one stops is measured
and tested in `tests/serving/test_hostile_traffic.py`):

- The model repository extension is not mounted (`serving/rest.py`,
  `serving/grpc_service.py`, `serving/server.py`): KServe's V2 router and servicer load
  and unload models for anyone who reaches the port (no body needed), and `GET /v2`
  advertises it. The predictor serves one model fixed at start.
- `--host` applies to both servers: KServe binds REST to 0.0.0.0 and gRPC to [::]
  whatever it is asked (`serving/rest.py`, `serving/grpc_service.py`).
- `serving.http_protocol.LimitedHttpToolsProtocol`: uvicorn's httptools protocol takes a
  request head of any size and header count (httptools buffers an unfinished header by
  concatenation: 8 connections of 32 MB raised RSS by 263 MB), and at shutdown closes
  idle keep-alive connections at once (a request already on its way is reset). Here the
  head is bounded (431) and shutdown drains.
- `grpc.server.max_pending_requests` (`serving/grpc_service.py`): gRPC core refuses
  calls waiting to be taken up past 1,000 (some) and 3,000 (all), which the asyncio
  server reports as CANCELLED; the bound is the predictor's `GRPC_MAX_PENDING_CALLS`.
"""

from __future__ import annotations

import gc
import importlib.abc
import importlib.util
import sys
from collections.abc import Callable
from importlib.machinery import ModuleSpec
from types import ModuleType
from typing import Any

CHECKED_AGAINST: dict[str, str] = {
    "kserve": "0.21",
    "scikit-learn": "1.9",
    "narwhals": "2",
    "skops": "0.16",
    "pandas": "2",
    "skl2onnx": "1.20",
    "onnxruntime": "1.32",
}
"""Upstream versions (major or major.minor prefix) each item was checked against."""

KSERVE_PRIVATE_API: tuple[tuple[str, str, str], ...] = (
    (
        "kserve.protocol.rest.server.RESTServer",
        "_add_middlewares",
        "overridden: KServe's TimingMiddleware matches every route again and logs two lines "
        "per request; the body limit goes in its place",
    ),
    (
        "kserve.protocol.rest.server.RESTServer",
        "_register_endpoints",
        "overridden: the predictor's own routes go in front of KServe's",
    ),
    (
        "kserve.protocol.rest.server.RESTServer",
        "_add_exception_handlers",
        "overridden: one `{'error': ...}` shape and one log line for every failure",
    ),
    (
        "kserve.protocol.rest.server.RESTServer",
        "create_application",
        "overridden: called by start(); builds the application once",
    ),
    (
        "kserve.model_server.ModelServer",
        "_serve",
        "wrapped: KServe's start() runs asyncio.run, so its --event-loop never applies; the "
        "predictor runs the named loop and then KServe's _serve on it",
    ),
    (
        "kserve.model_server.ModelServer",
        "_rest_server",
        "read and set: KServe's stop() only reaches its multi-process server; ours is told "
        "to exit through uvicorn's `should_exit`",
    ),
    (
        "kserve.protocol.grpc.server.GRPCServer",
        "_data_plane",
        "read: the servicer is built with the predictor's interceptor and options",
    ),
    (
        "kserve.protocol.grpc.server.GRPCServer",
        "_model_repository_extension",
        "read: as `_data_plane`",
    ),
)
"""(upstream class, private attribute, what the predictor does with it)."""


# --- imports the predictor leaves out ---------------------------------------------------

NOT_INSTALLED = ("pyarrow",)

PLACEHOLDERS: dict[str, tuple[str, ...]] = {
    "kserve.api.kserve_client": ("KServeClient",),
    "pandas": ("DataFrame", "Series"),
}
"""Modules served as stand-ins: each listed name is a class nothing is an instance of
(so `isinstance` answers False) that fails loudly if created; any other name fails as
missing."""


class LeaveOut(importlib.abc.MetaPathFinder):
    """Makes `import NAME` fail in this process as if NAME were not installed."""

    def __init__(self, *names: str) -> None:
        self.names = frozenset(names)

    def find_spec(self, fullname: str, path: object = None, target: object = None) -> None:
        if fullname.partition(".")[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is left out of the predictor", name=fullname)


class Placeholders(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Serves each listed module as a stand-in whose listed names fail when used: for a
    module a package imports at its top, which this process never uses."""

    def __init__(self, modules: dict[str, tuple[str, ...]]) -> None:
        self.modules = modules

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: ModuleSpec) -> None:
        return None  # the default module

    def exec_module(self, module: ModuleType) -> None:
        for name in self.modules[module.__name__]:
            setattr(module, name, _left_out(module.__name__, name))
        module.__getattr__ = _missing(module.__name__)  # type: ignore[method-assign]


def _left_out(module: str, name: str) -> type:
    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError(f"{module}.{name} is left out of the predictor process")

    return type(name, (), {"__init__": refuse, "__module__": module})


def _missing(module: str) -> Callable[[str], object]:
    """A module-level `__getattr__`: any name not listed is missing, and says why."""

    def missing(name: str) -> object:
        raise AttributeError(f"{module}.{name} is left out of the predictor process")

    return missing


def leave_out_imports(placeholders: bool = True) -> None:
    """Put the finders first on `sys.meta_path`, once; before the imports they affect.
    Without `placeholders` (the registry child: MLflow uses pandas), only leave out."""
    if any(isinstance(f, LeaveOut | Placeholders) for f in sys.meta_path):
        return
    finders: list[importlib.abc.MetaPathFinder] = [LeaveOut(*NOT_INSTALLED)]
    if placeholders:
        finders.append(Placeholders(PLACEHOLDERS))
    sys.meta_path[:0] = finders


# --- scikit-learn's per-call checks -----------------------------------------------------

DATAFRAME_CHECKS = ("is_into_dataframe", "is_into_series")
"""The narwhals questions scikit-learn 1.9 asks about every input it validates."""


def ndarray_first(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """`check` (is it a dataframe? a series?), answering False at once for a numpy array;
    anything else, ndarray subclasses included, is asked as before."""
    import numpy as np

    def answer(obj: Any) -> bool:
        return False if type(obj) is np.ndarray else check(obj)

    answer.__wrapped__ = check  # type: ignore[attr-defined]
    return answer


def answer_ndarrays_first() -> None:
    """Put `ndarray_first` in front of the checks scikit-learn calls, in this process;
    unless narwhals would say an array *is* one (a plugin could), or it is done already."""
    import numpy as np
    from narwhals.stable.v2 import dependencies

    probe = np.zeros((1, 1))
    for name in DATAFRAME_CHECKS:
        check = getattr(dependencies, name)
        if not hasattr(check, "__wrapped__") and not check(probe):
            setattr(dependencies, name, ndarray_first(check))


def assume_finite_in_this_thread() -> None:
    """scikit-learn skips its own finite-values pass in this thread (its config is per
    thread); for callers that checked every value already."""
    import sklearn

    sklearn.set_config(assume_finite=True)


SKIPPED_STEPS = (None, "passthrough")
"""What a Pipeline step may be instead of an estimator."""


def predict_proba_of(estimator: Any) -> Callable[[Any], Any]:
    """The estimator's `predict_proba`; for a Pipeline, its steps called in turn, as
    `Pipeline.predict_proba` does without metadata routing (the loaded pipeline is
    fitted, and routing is never on here)."""
    from sklearn.pipeline import Pipeline

    if not isinstance(estimator, Pipeline):
        return estimator.predict_proba  # type: ignore[no-any-return]
    transforms = [step.transform for _, step in estimator.steps[:-1] if step not in SKIPPED_STEPS]
    final = estimator.steps[-1][1].predict_proba

    def predict_proba(rows: Any) -> Any:
        for transform in transforms:
            rows = transform(rows)
        return final(rows)

    return predict_proba


# --- skops --------------------------------------------------------------------------------


def import_skops() -> ModuleType:
    """`skops.io`, imported (if nothing imported it before) trusting no scikit-learn
    estimator by default, so that what a model may hold is the caller's allow-list.

    Where skops was imported before (by MLflow's logging in training) it keeps its
    defaults; callers pass their own `trusted` list to `skops.io.load` either way.
    """
    if "skops.io" not in sys.modules:
        import sklearn.utils

        discover = sklearn.utils.all_estimators
        sklearn.utils.all_estimators = _no_estimators
        try:
            import skops.io  # noqa: F401 - imported for sys.modules
        finally:
            sklearn.utils.all_estimators = discover
    return sys.modules["skops.io"]


def _no_estimators(*args: object, **kwargs: object) -> list[tuple[str, type]]:
    return []


def import_scipy_special_first() -> None:
    """Import scipy.special early, so it comes early in `sys.modules` for skops's scan."""
    import scipy.special  # noqa: F401


# --- the garbage collector ----------------------------------------------------------------


def freeze_long_lived_objects() -> None:
    """Move every object alive now to the permanent generation, so full collections stop
    walking them again (a pause that would land on some request). Not collected first:
    a full collection takes about 0.2 s here and frees a few thousand objects."""
    gc.freeze()
