"""Loading a downloaded model folder natively: our allow-list, skops only, a warm-up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from serving.errors import InvalidModel
from serving.loader import load_model_dir
from tests.serving.conftest import Data, save_mlflow_model, scaled_logreg


def double(x: Any) -> Any:
    return x * 2


@pytest.mark.parametrize("family", ["logreg", "forest"])
def test_a_saved_model_predicts_like_its_estimator(
    family: str, serving_saved_models: dict[str, Path], serving_data: Data
) -> None:
    import skops.io

    from contract.model_format import TRUSTED_TYPES

    folder = serving_saved_models[family]
    reference = skops.io.load(folder / "model.skops", trusted=list(TRUSTED_TYPES))
    rows = serving_data.x[:5]

    loaded = load_model_dir(folder, version="3", run_id="r", model_uri="models:/bc/3")
    prediction = loaded.predict(rows)

    expected = reference.predict_proba(rows)
    assert prediction.probabilities.dtype == np.float64
    # The same scikit-learn calls, to the bit (a Pipeline's steps are called directly).
    np.testing.assert_array_equal(prediction.probabilities, expected)
    np.testing.assert_array_equal(prediction.labels, expected.argmax(axis=1))
    assert prediction.class_names == [["malignant", "benign"][i] for i in expected.argmax(axis=1)]
    assert (loaded.version, loaded.run_id, loaded.model_uri) == ("3", "r", "models:/bc/3")


def test_a_pipeline_predicts_through_its_steps_skipping_passthrough(serving_data: Data) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler

    from contract.upstream import predict_proba_of

    pipeline = Pipeline(
        [("minmax", MinMaxScaler()), ("none", "passthrough"), ("model", scaled_logreg())]
    ).fit(serving_data.x, serving_data.y)
    rows = serving_data.x[:7]

    np.testing.assert_array_equal(predict_proba_of(pipeline)(rows), pipeline.predict_proba(rows))
    # The min-max step counts: the last step (itself a pipeline) alone answers otherwise.
    assert not np.array_equal(predict_proba_of(pipeline[-1])(rows), pipeline.predict_proba(rows))


def test_ndarray_first_answers_for_arrays_and_asks_about_anything_else() -> None:
    import pandas as pd
    from narwhals.stable.v2 import dependencies

    from contract.upstream import ndarray_first

    asked: list[Any] = []

    def is_into_dataframe(obj: Any) -> bool:
        asked.append(obj)
        return bool(dependencies.is_into_dataframe(obj))

    check = ndarray_first(is_into_dataframe)
    frame = pd.DataFrame({"a": [1.0]})
    masked = np.ma.zeros((1, 2))  # an ndarray subclass: asked, not assumed

    assert check(np.zeros((2, 30))) is False
    assert asked == []
    assert check(frame) is True
    assert check([[1.0, 2.0]]) is False
    assert check(masked) is False
    assert len(asked) == 3 and asked[0] is frame and asked[2] is masked


def test_answering_arrays_first_is_installed_once_and_keeps_scikit_learn_s_answers(
    monkeypatch: pytest.MonkeyPatch, serving_data: Data
) -> None:
    import pandas as pd
    from narwhals.stable.v2 import dependencies

    from contract.upstream import answer_ndarrays_first

    originals = {n: getattr(dependencies, n) for n in ("is_into_dataframe", "is_into_series")}
    for name, check in originals.items():
        monkeypatch.setattr(dependencies, name, check)  # restored after the test
    model = scaled_logreg().fit(serving_data.x, serving_data.y)
    frame = pd.DataFrame(serving_data.x[:3], columns=serving_data.feature_names)
    before = model.predict_proba(serving_data.x[:3])

    answer_ndarrays_first()
    installed = {n: getattr(dependencies, n) for n in originals}
    answer_ndarrays_first()

    assert {n: getattr(dependencies, n) for n in originals} == installed
    assert all(installed[n] is not originals[n] for n in originals)
    assert dependencies.is_into_dataframe(frame) and dependencies.is_into_series(frame.iloc[:, 0])
    np.testing.assert_array_equal(model.predict_proba(serving_data.x[:3]), before)


def test_a_pickled_model_is_refused(serving_data: Data, tmp_path: Path) -> None:
    estimator = scaled_logreg().fit(serving_data.x, serving_data.y)
    folder = save_mlflow_model(estimator, tmp_path / "m", serving_data, "cloudpickle")

    with pytest.raises(InvalidModel, match="serialized as 'cloudpickle'; only 'skops' is loaded"):
        load_model_dir(folder, "1", "r", "models:/bc/1")


def test_types_outside_our_allow_list_are_refused(serving_data: Data, tmp_path: Path) -> None:
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    estimator = make_pipeline(FunctionTransformer(double), scaled_logreg())
    estimator.fit(serving_data.x, serving_data.y)
    # The file declares the function trusted; the predictor's own list decides.
    folder = save_mlflow_model(
        estimator, tmp_path / "m", serving_data, declared_trusted_types=(f"{__name__}.double",)
    )

    with pytest.raises(InvalidModel, match="outside the predictor's allow-list") as caught:
        load_model_dir(folder, "1", "r", "models:/bc/1")
    assert "test_loader.double" in caught.value.message


def test_a_classifier_without_probabilities_is_refused(serving_data: Data, tmp_path: Path) -> None:
    import mlflow.sklearn
    import pandas as pd
    from mlflow.models import infer_signature
    from sklearn.linear_model import RidgeClassifier

    estimator = RidgeClassifier().fit(serving_data.x, serving_data.y)
    example = pd.DataFrame(serving_data.x[:3], columns=serving_data.feature_names)
    signature = infer_signature(example, estimator.predict(serving_data.x[:3]))
    mlflow.sklearn.save_model(
        estimator,
        str(tmp_path / "m"),
        signature=signature,
        serialization_format="skops",
        pip_requirements=[],
    )

    with pytest.raises(InvalidModel, match="not a fitted classifier with predict_proba"):
        load_model_dir(tmp_path / "m", "1", "r", "models:/bc/1")


def test_a_model_without_signature_is_refused(serving_data: Data, tmp_path: Path) -> None:
    import mlflow.sklearn

    estimator = scaled_logreg().fit(serving_data.x, serving_data.y)
    mlflow.sklearn.save_model(
        estimator, str(tmp_path / "m"), serialization_format="skops", pip_requirements=[]
    )

    with pytest.raises(InvalidModel, match="has no input signature"):
        load_model_dir(tmp_path / "m", "1", "r", "models:/bc/1")


def test_a_folder_without_mlmodel_is_an_invalid_model(tmp_path: Path) -> None:
    with pytest.raises(InvalidModel, match="cannot read"):
        load_model_dir(tmp_path, "1", "r", "models:/bc/1")
