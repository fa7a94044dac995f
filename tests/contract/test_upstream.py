"""Each workaround in `contract.upstream` is still needed: a test per item fails when an
upgrade makes it stale (upstream no longer does what the workaround answers)."""

from __future__ import annotations

import asyncio
import importlib
import json
import subprocess
import sys
import threading
from importlib.metadata import version
from typing import Any

import numpy as np
import pytest

from contract import upstream
from tests.serving.conftest import Data, breast_cancer, scaled_logreg
from tests.support import REPO_ROOT


@pytest.fixture(scope="module")
def data() -> Data:
    return breast_cancer()


def fresh_interpreter(code: str) -> Any:
    """Run `code` in a new interpreter (nothing imported yet); its last line is JSON."""
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("package", "checked"), sorted(upstream.CHECKED_AGAINST.items()))
def test_every_patched_package_is_at_a_version_the_workarounds_were_checked_against(
    package: str, checked: str
) -> None:
    installed = version(package)
    assert installed == checked or installed.startswith(f"{checked}."), (
        f"{package} {installed} is not the {checked} that contract/upstream.py was checked "
        "against: re-check each item there, then update CHECKED_AGAINST"
    )


def test_pandas_still_imports_pyarrow_so_leaving_it_out_still_saves() -> None:
    pytest.importorskip("pyarrow")
    loaded = fresh_interpreter(
        "import sys, json, pandas; print(json.dumps('pyarrow' in sys.modules))"
    )
    assert loaded is True


def test_kserve_still_imports_its_kubernetes_client_and_pandas_at_its_top() -> None:
    modules = fresh_interpreter(
        "import sys, json, kserve\n"
        "print(json.dumps(sorted(m for m in ('kserve.api.kserve_client', 'kubernetes', 'pandas')"
        " if m in sys.modules)))"
    )
    assert modules == ["kserve.api.kserve_client", "kubernetes", "pandas"]


def test_the_placeholders_keep_kserve_importable_and_refuse_use() -> None:
    result = fresh_interpreter(
        "import sys, json\n"
        "from contract import upstream\n"
        "upstream.leave_out_imports()\n"
        "import kserve, pandas\n"
        "try:\n"
        "    pandas.DataFrame()\n"
        "    refused = None\n"
        "except RuntimeError as e:\n"
        "    refused = str(e)\n"
        "print(json.dumps([refused, 'kubernetes' in sys.modules, 'pyarrow' in sys.modules]))"
    )
    assert result == ["pandas.DataFrame is left out of the predictor process", False, False]


def test_scikit_learn_still_asks_narwhals_about_arrays_on_the_request_path(
    monkeypatch: pytest.MonkeyPatch, data: Data
) -> None:
    from narwhals.stable.v2 import dependencies

    for name in upstream.DATAFRAME_CHECKS:
        monkeypatch.setattr(dependencies, name, getattr(dependencies, name))  # restored after
    model = scaled_logreg().fit(data.x, data.y)
    upstream.answer_ndarrays_first()
    answered: list[str] = []
    for name in upstream.DATAFRAME_CHECKS:
        installed = getattr(dependencies, name)

        def counting(obj: Any, _installed: Any = installed, _name: str = name) -> bool:
            answered.append(_name)
            return bool(_installed(obj))

        monkeypatch.setattr(dependencies, name, counting)

    upstream.predict_proba_of(model)(data.x[:1])

    # Both questions are still asked for a plain array on the path the predictor runs.
    assert set(answered) == set(upstream.DATAFRAME_CHECKS)


def test_assume_finite_is_per_thread_in_scikit_learn() -> None:
    """Each check runs in a fresh thread: the test process's own threads may have set
    the option already (in-process predictors set it where they predict)."""
    import sklearn
    from sklearn.utils.validation import check_array

    bad = np.array([[np.nan]])
    seen: dict[str, Any] = {}

    def configured_thread() -> None:
        upstream.assume_finite_in_this_thread()
        check_array(bad)  # no ValueError: scikit-learn skips its finite-values pass
        seen["configured"] = sklearn.get_config()["assume_finite"]

    def next_thread() -> None:
        seen["next"] = sklearn.get_config()["assume_finite"]
        try:
            check_array(bad)
        except ValueError as e:
            seen["refused"] = "NaN" in str(e)

    for target in (configured_thread, next_thread):
        thread = threading.Thread(target=target)
        thread.start()
        thread.join()

    # Set once per thread: a new thread starts from the default again.
    assert seen == {"configured": True, "next": False, "refused": True}


def test_a_pipeline_still_checks_itself_on_every_call_which_its_steps_skip(
    monkeypatch: pytest.MonkeyPatch, data: Data
) -> None:
    from sklearn import pipeline as pipeline_module

    model = scaled_logreg().fit(data.x, data.y)
    checks: list[object] = []
    original = pipeline_module.check_is_fitted
    monkeypatch.setattr(
        pipeline_module,
        "check_is_fitted",
        lambda *a, **k: checks.append(a) or original(*a, **k),
    )

    model.predict_proba(data.x[:1])
    asked_by_pipeline = len(checks)
    upstream.predict_proba_of(model)(data.x[:1])

    assert asked_by_pipeline > 0
    assert len(checks) == asked_by_pipeline


def test_skops_still_discovers_every_estimator_when_imported() -> None:
    counts = fresh_interpreter(
        "import json, sklearn.utils\n"
        "calls = []\n"
        "real = sklearn.utils.all_estimators\n"
        "sklearn.utils.all_estimators = lambda *a, **k: calls.append(1) or real(*a, **k)\n"
        "import skops.io._trusted_types as t\n"
        "print(json.dumps([len(calls), len(t.SKLEARN_ESTIMATOR_TYPE_NAMES)]))"
    )
    calls, trusted_by_default = counts
    assert calls >= 1
    assert trusted_by_default > 100


def test_import_skops_trusts_no_estimator_by_default() -> None:
    trusted_by_default = fresh_interpreter(
        "import json\n"
        "from contract.upstream import import_skops\n"
        "import_skops()\n"
        "import skops.io._trusted_types as t\n"
        "print(json.dumps(len(t.SKLEARN_ESTIMATOR_TYPE_NAMES)))"
    )
    assert trusted_by_default == 0


@pytest.mark.parametrize(
    ("where", "attribute"), [(w, a) for w, a, _ in upstream.KSERVE_PRIVATE_API]
)
def test_every_private_kserve_name_the_predictor_uses_still_exists(
    where: str, attribute: str
) -> None:
    module_name, _, class_name = where.rpartition(".")
    cls = getattr(importlib.import_module(module_name), class_name)
    # Attributes set in __init__ are found on an instance's __init__ source, methods on the class.
    if not hasattr(cls, attribute):
        import inspect

        assert f"self.{attribute}" in inspect.getsource(cls.__init__), (
            f"{where}.{attribute} is gone: re-check the predictor's use of it"
        )


def test_freezing_moves_live_objects_out_of_the_collector_s_walk() -> None:
    import gc

    before = gc.get_freeze_count()
    try:
        upstream.freeze_long_lived_objects()
        assert gc.get_freeze_count() > before
    finally:
        gc.unfreeze()


# --- hostile traffic: what KServe and uvicorn still do without the predictor's changes ---


def test_kserve_still_mounts_the_repository_extension_and_advertises_it() -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient
    from kserve import Model
    from kserve.model_repository import ModelRepository
    from kserve.protocol.dataplane import DataPlane
    from kserve.protocol.model_repository_extension import ModelRepositoryExtension
    from kserve.protocol.rest.v2_endpoints import register_v2_endpoints

    repository = ModelRepository()
    model = Model("m")
    model.ready = True
    repository.update(model)
    app = FastAPI()
    register_v2_endpoints(
        app, DataPlane(repository), ModelRepositoryExtension(model_registry=repository)
    )
    with TestClient(app) as client:
        unloaded = client.post("/v2/repository/models/m/unload")

    assert unloaded.status_code == 200  # no body, no credentials: the model is gone
    assert repository.get_model("m") is None
    assert "model_repository_extension" in DataPlane(repository).metadata()["extensions"]


def test_kserve_still_binds_every_interface_whatever_it_is_asked() -> None:
    import inspect

    from kserve.protocol.grpc.server import GRPCServer
    from kserve.protocol.rest.server import RESTServer

    rest = RESTServer("kserve.model_server:app", None, None, http_port=0)

    assert rest.config.host == "0.0.0.0"
    assert 'f"[::]:{self._port}"' in inspect.getsource(GRPCServer.start)


class RecordingTransport(asyncio.Transport):
    """What a protocol writes, and whether it closed the connection."""

    def __init__(self) -> None:
        super().__init__()
        self.written = b""
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += bytes(data)

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


async def ok_app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def run_protocol(protocol_class: Any, *chunks: bytes, shutdown: bool = False) -> Any:
    """Feed `chunks` to a fresh connection of `protocol_class`, let the app answer, and
    (if asked) begin the server's shutdown; the transport tells what happened."""
    import uvicorn
    from uvicorn.server import ServerState

    async def main() -> RecordingTransport:
        config = uvicorn.Config(ok_app, http=protocol_class, log_config=None)
        config.load()
        protocol = protocol_class(config, ServerState(), app_state={})
        transport = RecordingTransport()
        protocol.connection_made(transport)
        for chunk in chunks:
            protocol.data_received(chunk)
        await asyncio.sleep(0.05)  # the app's task answers
        if shutdown:
            protocol.shutdown()
        return transport

    return asyncio.run(main())


HUGE_HEAD = b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 200_000 + b"\r\n\r\n"


def test_uvicorn_s_httptools_protocol_still_takes_a_head_of_any_size() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    transport = run_protocol(HttpToolsProtocol, HUGE_HEAD)

    assert transport.written.startswith(b"HTTP/1.1 200 ")


def test_the_predictor_s_protocol_refuses_that_head_with_a_431() -> None:
    from serving.http_protocol import protocol_class

    transport = run_protocol(protocol_class(32 * 1024, 100, 2.0), HUGE_HEAD)

    assert transport.written.startswith(b"HTTP/1.1 431 ")
    assert transport.closed


def test_uvicorn_still_closes_an_idle_keep_alive_connection_at_once_on_shutdown() -> None:
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from serving.http_protocol import protocol_class

    request = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    upstream_transport = run_protocol(HttpToolsProtocol, request, shutdown=True)
    draining = run_protocol(protocol_class(32 * 1024, 100, 2.0), request, shutdown=True)

    assert upstream_transport.closed  # a request already on its way would be reset
    assert not draining.closed  # kept open DRAIN_SECONDS for a last request
