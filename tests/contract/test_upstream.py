"""Each workaround in `contract.upstream` is still needed: a test per item fails when an
upgrade makes it stale (upstream no longer does what the workaround answers)."""

from __future__ import annotations

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
from tests.serving.conftest import Data, scaled_logreg
from tests.support import REPO_ROOT


@pytest.fixture(scope="module")
def data() -> Data:
    from sklearn.datasets import load_breast_cancer

    bunch = load_breast_cancer()
    return Data(bunch.data, bunch.target, list(bunch.feature_names), ["malignant", "benign"])


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
