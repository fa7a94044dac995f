"""Crafted trees made only of allow-listed types: refused when loaded, before scikit-learn
walks them (a node reading feature 10,000,000 crashed the predictor with SIGSEGV)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io

from contract.model_format import TRUSTED_TYPES, load_estimator
from contract.tree_check import MalformedModel, check_trees
from serving.errors import InvalidModel
from serving.loader import load_model_dir
from tests.serving.conftest import Data, breast_cancer, save_mlflow_model, scaled_logreg


@pytest.fixture(scope="module")
def serving_data() -> Data:
    return breast_cancer()


def forest(data: Data) -> Any:
    from sklearn.ensemble import RandomForestClassifier

    return RandomForestClassifier(n_estimators=3, random_state=0, n_jobs=1).fit(data.x, data.y)


def boosting(data: Data) -> Any:
    from sklearn.ensemble import HistGradientBoostingClassifier

    return HistGradientBoostingClassifier(max_iter=3, random_state=0).fit(data.x, data.y)


def edit_tree(estimator: Any, field: str, node: int, value: Any) -> Any:
    """Set one field of one node of the forest's last tree, as a crafted file holds it."""
    tree = estimator.estimators_[-1].tree_
    state = tree.__getstate__()
    nodes = state["nodes"].copy()
    nodes[field][node] = value
    tree.__setstate__({**state, "nodes": nodes})
    return estimator


def edit_predictor(estimator: Any, field: str, node: int, value: Any) -> Any:
    predictor = estimator._predictors[-1][0]
    predictor.nodes = predictor.nodes.copy()
    predictor.nodes[field][node] = value
    return estimator


CRAFTED: dict[str, tuple[Callable[[Data], Any], Callable[[Any], Any], str]] = {
    "forest reads feature 10,000,000": (
        forest,
        lambda e: edit_tree(e, "feature", 0, 10_000_000),
        "tree 2 of the forest: node 0 reads a feature outside 0..29",
    ),
    "forest reads feature -1 of a split": (
        forest,
        lambda e: edit_tree(e, "feature", 0, -3),
        "node 0 reads a feature outside 0..29",
    ),
    "forest child past the end": (
        forest,
        lambda e: edit_tree(e, "right_child", 0, 1_000_000),
        "node 0 has a right child not after it",
    ),
    "forest child loops back to the root": (
        forest,
        lambda e: edit_tree(e, "left_child", 0, 0),
        "node 0 has a left child not after it",
    ),
    "forest threshold NaN": (
        forest,
        lambda e: edit_tree(e, "threshold", 0, np.nan),
        "node 0 has a threshold that is not finite",
    ),
    "boosting reads feature 10,000,000": (
        boosting,
        lambda e: edit_predictor(e, "feature_idx", 0, 10_000_000),
        "tree 0 of boosting iteration 2: node 0 reads a feature outside 0..29",
    ),
    "boosting child past the end": (
        boosting,
        lambda e: edit_predictor(e, "left", 0, 4_000_000_000),
        "node 0 has a left child not after it",
    ),
    "boosting threshold NaN": (
        boosting,
        lambda e: edit_predictor(e, "num_threshold", 0, np.nan),
        "node 0 has a threshold that is not finite",
    ),
}


def crafted_folder(good: Any, crafted: Any, data: Data, folder: Path) -> Path:
    """An MLflow model folder saved from the good estimator, its skops file replaced by
    one of the crafted estimator (saving would predict, and crash, on the crafted one)."""
    save_mlflow_model(good, folder, data)
    skops.io.dump(crafted, folder / "model.skops")
    return folder


@pytest.mark.parametrize("case", list(CRAFTED))
def test_a_crafted_tree_is_refused_when_loaded(
    case: str, serving_data: Data, tmp_path: Path
) -> None:
    build, craft, message = CRAFTED[case]
    good = build(serving_data)
    crafted = craft(build(serving_data))
    folder = crafted_folder(good, crafted, serving_data, tmp_path / "model")

    with pytest.raises(MalformedModel, match=message):
        load_estimator(folder, TRUSTED_TYPES)
    with pytest.raises(InvalidModel, match="its trees would crash the predictor") as refused:
        load_model_dir(folder, "7", "r", "models:/bc/7", runtime="sklearn")
    assert message in str(refused.value)


def test_a_crafted_tree_in_a_pipeline_names_its_step(serving_data: Data) -> None:
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = Pipeline([("scale", StandardScaler()), ("trees", forest(serving_data))])
    pipeline.fit(serving_data.x, serving_data.y)
    edit_tree(pipeline[-1], "feature", 0, 31)
    with pytest.raises(MalformedModel, match="step 'trees': tree 2 of the forest: node 0"):
        check_trees(pipeline)


@pytest.mark.parametrize("build", [forest, boosting, lambda d: scaled_logreg().fit(d.x, d.y)])
def test_every_trained_family_passes(build: Callable[[Data], Any], serving_data: Data) -> None:
    check_trees(build(serving_data))


def test_without_the_check_the_crafted_tree_crashes_scikit_learn(
    serving_data: Data, tmp_path: Path
) -> None:
    """Why the check exists: in a child process (the crash would take pytest with it),
    scikit-learn predicting with the crafted forest dies by a signal."""
    path = tmp_path / "crafted.skops"
    skops.io.dump(edit_tree(forest(serving_data), "feature", 0, 10_000_000), path)
    code = (
        "import sys, numpy as np, skops.io\n"
        f"model = skops.io.load({str(path)!r}, trusted={list(TRUSTED_TYPES)!r})\n"
        "model.predict_proba(np.zeros((64, 30)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, timeout=120, check=False
    )
    assert done.returncode < 0, (done.returncode, done.stderr[-2000:])


def test_a_crafted_folder_copies_cleanly(serving_data: Data, tmp_path: Path) -> None:
    # The helper's own check: the good folder loads, so the refusals above are the tree's.
    good = forest(serving_data)
    folder = crafted_folder(good, good, serving_data, tmp_path / "m")
    shutil.copytree(folder, tmp_path / "copy")
    assert load_model_dir(tmp_path / "copy", "1", "r", "models:/bc/1", runtime="sklearn")
