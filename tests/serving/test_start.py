"""How the predictor process starts: the registry fetch begins first, in a child; the
process leaves out what it never runs; skops trusts exactly our allow-list."""

from __future__ import annotations

import gc
import json
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from contract.model_format import load_estimator
from serving import __main__ as entry
from serving.errors import RegistryUnavailable
from serving.model import RegistryModel
from serving.registry import Prefetch, parse_model_uri
from tests.serving.conftest import Data, save_mlflow_model, serving_settings
from tests.support import PYTHON, REPO_ROOT, free_port, last_json


def unreachable() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_a_prefetch_of_another_model_is_given_up() -> None:
    prefetch = Prefetch(parse_model_uri("models:/other/1"), unreachable(), 5)
    folder = Path(prefetch.folder.name)

    model = RegistryModel(serving_settings(), prefetch=prefetch)

    assert not folder.exists()
    assert prefetch.process.process.poll() is not None
    assert model._prefetch is None


def test_the_first_attempt_takes_the_prefetch_and_later_ones_fetch_anew() -> None:
    url = unreachable()
    settings = serving_settings(tracking_uri=url, registry_timeout_seconds=5.0)
    prefetch = Prefetch(settings.model_ref, url, 5.0)
    model = RegistryModel(settings, prefetch=prefetch)
    assert model._prefetch is prefetch

    with pytest.raises(RegistryUnavailable, match=f"the registry at {url} failed"):
        model.load_once()

    assert not Path(prefetch.folder.name).exists()
    assert model._prefetch is None
    with pytest.raises(RegistryUnavailable, match=f"the registry at {url} failed"):
        model.load_once()


def test_stopping_the_model_gives_up_a_prefetch_not_taken_yet() -> None:
    url = unreachable()
    settings = serving_settings(tracking_uri=url, registry_timeout_seconds=5.0)
    prefetch = Prefetch(settings.model_ref, url, 5.0)
    model = RegistryModel(settings, prefetch=prefetch)

    model.stop()

    assert not Path(prefetch.folder.name).exists()
    assert prefetch.process.process.poll() is not None


def test_the_prefetch_reads_our_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    url = unreachable()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    monkeypatch.setenv("REGISTRY_TIMEOUT_SECONDS", "7")
    argv = ["--http_port", "9000", "--model_uri", "models:/bc@champion", "--enable_grpc", "false"]

    prefetch = entry.start_prefetch(argv)

    assert prefetch is not None
    try:
        assert prefetch.fetches(parse_model_uri("models:/bc@champion"), url, 7.0)
    finally:
        prefetch.close()


@pytest.mark.parametrize(
    "argv",
    [
        ["--help"],
        ["--model_uri", "models:/bc/latest"],
        ["--model_uri", "models:/bc/1", "--registry_timeout_seconds", "soon"],
        ["--model_uri", "models:/bc/1", "--tracking_uri", ""],
    ],
)
def test_no_prefetch_without_a_valid_model_and_registry(
    argv: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)

    assert entry.start_prefetch(argv) is None


def test_a_configuration_error_gives_up_the_prefetch_and_exits_2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    started: list[Prefetch] = []

    class Recorded(Prefetch):
        def __init__(self, *args: Any) -> None:
            super().__init__(*args)
            started.append(self)

    monkeypatch.setattr(entry, "Prefetch", Recorded)
    # Process-wide import hooks and thread settings are not this test's subject, and
    # would outlive it in the test process.
    monkeypatch.setattr(entry, "prepare_process", lambda: None)
    argv = ["--model_uri", "models:/bc/1", "--tracking_uri", unreachable(), "--workers", "2"]

    try:
        assert entry.main(argv) == 2
    finally:
        frozen = gc.get_freeze_count()
        gc.unfreeze()  # main() froze this test process's objects, as it does the predictor's

    assert len(started) == 1
    assert not Path(started[0].folder.name).exists()
    assert started[0].process.process.poll() is not None
    assert gc.isenabled()
    assert frozen > 0


# In a fresh interpreter, as `python -m serving` prepares itself: what it imports, and
# which of the saved models its skops accepts.
PREDICTOR_PROCESS = """
import json, sys
from serving.__main__ import prepare_process
prepare_process()
from serving.loader import preload
preload()
import kserve, numpy, pandas, skops.io._trusted_types as trusted
from narwhals.stable.v2 import dependencies
from serving.errors import InvalidModel
from serving.loader import load_model_dir
rows = numpy.load(sys.argv[2])
loads, probabilities = {}, {}
for name, folder in json.loads(sys.argv[1]).items():
    try:
        model = load_model_dir(__import__("pathlib").Path(folder), "1", "r", "models:/bc/1")
        loads[name] = "loaded"
        probabilities[name] = model.predict(rows).probabilities.tolist()
    except InvalidModel as e:
        loads[name] = e.message
def refused(create):
    try:
        create()
        return "created"
    except (RuntimeError, AttributeError) as e:
        return str(e)
print(json.dumps({
    "loads": loads,
    "probabilities": probabilities,
    "default_estimators": len(trusted.SKLEARN_ESTIMATOR_TYPE_NAMES),
    "modules": sorted({m.partition(".")[0] for m in sys.modules}),
    "client": refused(kserve.KServeClient),
    "dataframe": refused(lambda: pandas.DataFrame(rows)),
    "read_csv": refused(lambda: pandas.read_csv),
    "pandas_file": getattr(pandas, "__file__", None),
    "dataframe_check": dependencies.is_into_dataframe.__module__,
}))
"""


@pytest.fixture(scope="module")
def predictor_process(
    serving_saved_models: dict[str, Path],
    serving_data: Data,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[str, Any]:
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.neighbors import KNeighborsClassifier

    root = tmp_path_factory.mktemp("families")
    x, y = serving_data.x, serving_data.y
    boosting = HistGradientBoostingClassifier(max_iter=10, random_state=0).fit(x, y)
    # An estimator skops trusts by default, which training never writes; the file
    # declares it trusted, as any file may.
    neighbours = KNeighborsClassifier().fit(x, y)
    declared = ("sklearn.neighbors._classification.KNeighborsClassifier",)
    folders = {
        **{name: str(path) for name, path in serving_saved_models.items()},
        "boosting": str(save_mlflow_model(boosting, root / "boosting", serving_data)),
        "neighbours": str(
            save_mlflow_model(neighbours, root / "neighbours", serving_data, "skops", declared)
        ),
    }
    rows = root / "rows.npy"
    np.save(rows, x[:50])
    done = subprocess.run(
        [PYTHON, "-c", PREDICTOR_PROCESS, json.dumps(folders), str(rows)],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = last_json(done.stdout)
    result["expected"] = {
        "logreg": load_estimator(serving_saved_models["logreg"]).predict_proba(x[:50]),
        "forest": load_estimator(serving_saved_models["forest"]).predict_proba(x[:50]),
        "boosting": boosting.predict_proba(x[:50]),
    }
    return result


def test_the_predictor_loads_every_family_training_writes(
    predictor_process: dict[str, Any],
) -> None:
    loads = predictor_process["loads"]

    assert {loads[name] for name in ("logreg", "forest", "boosting")} == {"loaded"}


def test_the_predictor_trusts_no_estimator_beyond_its_allow_list(
    predictor_process: dict[str, Any],
) -> None:
    assert predictor_process["default_estimators"] == 0
    refused = predictor_process["loads"]["neighbours"]
    assert "outside the predictor's allow-list" in refused
    assert "sklearn.neighbors._classification.KNeighborsClassifier" in refused


def test_the_predictor_leaves_out_what_it_never_runs(predictor_process: dict[str, Any]) -> None:
    modules = set(predictor_process["modules"])

    assert {"kserve", "sklearn", "skops", "pandas"} <= modules
    assert not {"kubernetes", "pyarrow", "mlflow"} & modules
    assert predictor_process["client"] == (
        "kserve.api.kserve_client.KServeClient is left out of the predictor process"
    )
    # pandas is a stand-in: no file behind it, and what KServe would call fails loudly.
    assert predictor_process["pandas_file"] is None
    assert predictor_process["dataframe"] == "pandas.DataFrame is left out of the predictor process"
    assert predictor_process["read_csv"] == "pandas.read_csv is left out of the predictor process"


def test_the_predictor_predicts_as_a_normal_process_does(
    predictor_process: dict[str, Any],
) -> None:
    # Without pandas, and with scikit-learn's dataframe checks answered for arrays first.
    assert predictor_process["dataframe_check"] == "contract.upstream"
    for family, expected in predictor_process["expected"].items():
        np.testing.assert_allclose(
            predictor_process["probabilities"][family], expected, rtol=0, atol=1e-12
        )


def test_the_allow_list_names_real_classes_as_skops_names_them() -> None:
    import importlib

    from skops.io._utils import get_type_name

    from contract.model_format import TRUSTED_TYPES

    for name in TRUSTED_TYPES:
        module, _, attribute = name.rpartition(".")
        assert get_type_name(getattr(importlib.import_module(module), attribute)) == name
