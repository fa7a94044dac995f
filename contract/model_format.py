"""How a model is written to MLflow, and what the predictor may rely on when it reads one.

The contract between training and serving:

- the sklearn flavor in the skops format (no pickle): the predictor loads it with its
  own allow-list of types (``TRUSTED_TYPES``), never with the list the model file
  declares about itself;
- ``signature``: one named double column per feature, in training order; output the
  class probabilities;
- ``metadata["class_names"]``: the class names, index ``i`` being label ``i``
  (the estimator's ``classes_`` are always ``0..n-1``);
- ``metadata["critical_class"]``: the class whose recall is gated (``malignant``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# skops refuses to load any type not on an allow-list. This one names exactly what the
# candidate families (training/candidates.py) write. Tree ensembles need their node
# types, which skops does not trust by default (docs/training.md, "Model format").
TRUSTED_TYPES: tuple[str, ...] = (
    "sklearn.pipeline.Pipeline",
    "sklearn.preprocessing._data.StandardScaler",
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.ensemble._forest.RandomForestClassifier",
    "sklearn.tree._classes.DecisionTreeClassifier",
    "sklearn.tree._tree.Tree",
    "sklearn.ensemble._hist_gradient_boosting.gradient_boosting.HistGradientBoostingClassifier",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.preprocessing._label.LabelEncoder",
)

ARTIFACT_PATH = "model"
SERIALIZATION_FORMAT = "skops"
CLASS_NAMES_KEY = "class_names"
CRITICAL_CLASS_KEY = "critical_class"


def pip_requirements() -> list[str]:
    """What loading the model needs, pinned to the versions that trained it."""
    from importlib.metadata import version

    return [f"{name}=={version(name)}" for name in ("scikit-learn", "skops", "numpy", "scipy")]


def model_metadata(class_names: Sequence[str], critical_class: str) -> dict[str, Any]:
    return {CLASS_NAMES_KEY: list(class_names), CRITICAL_CLASS_KEY: critical_class}


class UntrustedModel(ValueError):
    """The model holds types outside the allow-list (skops refused to load it)."""


def load_estimator(
    model_dir: str | Path,
    trusted_types: Sequence[str] = TRUSTED_TYPES,
    mlmodel: Mapping[str, Any] | None = None,
) -> Any:
    """Load the estimator of a downloaded MLflow model folder natively, with *our*
    allow-list: the list a model file declares about itself is not a safety control.

    `mlmodel` is the folder's parsed MLmodel file, for callers that read it already.
    Raises `ValueError` when the model is not an sklearn model in the skops format,
    `UntrustedModel` (a `ValueError` too) when it holds a type outside the allow-list, and
    `MalformedModel` (a `ValueError`) when a tree's node arrays would crash scikit-learn.
    """
    from contract.tree_check import check_trees
    from contract.upstream import import_skops

    skops_io = import_skops()
    from skops.io.exceptions import UntrustedTypesFoundException  # after import_skops()

    folder = Path(model_dir)
    if mlmodel is None:
        import yaml

        mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    flavor = (mlmodel.get("flavors") or {}).get("sklearn")
    if flavor is None:
        raise ValueError(f"{folder} holds no scikit-learn model (no sklearn flavor in MLmodel)")
    fmt = flavor.get("serialization_format")
    if fmt != SERIALIZATION_FORMAT:
        raise ValueError(
            f"{folder}: the model is serialized as {fmt!r}; only {SERIALIZATION_FORMAT!r} is "
            "loaded, because pickle formats run arbitrary code. Re-train with this project."
        )
    try:
        estimator = skops_io.load(folder / flavor["pickled_model"], trusted=list(trusted_types))
    except UntrustedTypesFoundException as e:
        raise UntrustedModel(str(e)) from e
    # Trusted types can still hold arrays that crash scikit-learn (contract/tree_check.py).
    check_trees(estimator)
    return estimator
