"""Every tree's node arrays checked before scikit-learn walks them.

skops rebuilds a tree from the arrays a file holds, and scikit-learn's prediction code
(Cython, without bounds checks) trusts them: a node reading feature 10,000,000, or a child
index past the end, reads memory outside the rows and crashes the process (SIGSEGV), and
a child pointing back to its parent loops forever. Allow-listing the types cannot catch
that, since a crafted tree is made only of allow-listed types. So a loaded model's trees
are checked, and the model refused, before it predicts anything:

- every split reads a feature index in `[0, n_features_in_)` of the estimator that feeds
  the tree its rows (scikit-learn checks the rows' width against that count, not the
  tree's own);
- every split's children come after it in the array (scikit-learn's builders and
  growers always append children after their parent), so every walk ends; a leaf has no
  children;
- every split's threshold is finite (this project trains on finite data only);
- a tree's values have the shape its outputs and classes need; a histogram tree's
  categorical splits name a bitset that exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np

TREE_LEAF = -1
"""scikit-learn's child index of a leaf (`sklearn.tree._tree.TREE_LEAF`)."""


class MalformedModel(ValueError):
    """The model's arrays would make scikit-learn read out of bounds or never finish."""


def check_trees(estimator: Any) -> None:
    """Check every tree inside `estimator` (a Pipeline's steps included); raise
    `MalformedModel` naming the first bad node. Models without trees pass."""
    from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.tree import DecisionTreeClassifier

    if isinstance(estimator, Pipeline):
        for name, step in estimator.steps:
            try:
                check_trees(step)
            except MalformedModel as e:
                raise MalformedModel(f"step {name!r}: {e}") from e
        return
    if isinstance(estimator, RandomForestClassifier):
        n_features = _feature_count(estimator)
        n_classes = len(estimator.classes_)
        for i, tree in enumerate(estimator.estimators_):
            if not isinstance(tree, DecisionTreeClassifier):
                raise MalformedModel(f"tree {i} of the forest is a {type(tree).__name__}")
            _check_tree(tree.tree_, n_features, n_classes, f"tree {i} of the forest")
    elif isinstance(estimator, DecisionTreeClassifier):
        _check_tree(estimator.tree_, _feature_count(estimator), len(estimator.classes_), "the tree")
    elif isinstance(estimator, HistGradientBoostingClassifier):
        _check_boosting(estimator)


def _feature_count(estimator: Any) -> int:
    # Without it scikit-learn would not check the rows' width at all.
    count = getattr(estimator, "n_features_in_", None)
    if not isinstance(count, int | np.integer) or count < 1:
        raise MalformedModel(f"{type(estimator).__name__} has no valid n_features_in_ ({count!r})")
    return int(count)


def _check_tree(tree: Any, n_features: int, n_classes: int, where: str) -> None:
    count = int(tree.node_count)
    left = np.asarray(tree.children_left)
    right = np.asarray(tree.children_right)
    feature = np.asarray(tree.feature)
    threshold = np.asarray(tree.threshold)
    value = np.asarray(tree.value)
    if count < 1 or not all(len(a) == count for a in (left, right, feature, threshold)):
        raise MalformedModel(f"{where}: node arrays do not hold its {count} nodes")
    if value.shape != (count, 1, n_classes):
        raise MalformedModel(
            f"{where}: values of shape {value.shape}, expected {(count, 1, n_classes)} "
            f"(one output, {n_classes} classes)"
        )
    _check_nodes(
        where,
        split=left != TREE_LEAF,
        leaf_ok=(left == TREE_LEAF) & (right == TREE_LEAF),
        left=left,
        right=right,
        feature=feature,
        threshold=threshold,
        n_features=n_features,
    )


def _check_boosting(estimator: Any) -> None:
    n_features = _feature_count(estimator)
    per_iteration = int(estimator.n_trees_per_iteration_)
    for i, predictors in enumerate(estimator._predictors):
        if len(predictors) != per_iteration:
            raise MalformedModel(
                f"iteration {i} has {len(predictors)} trees, expected {per_iteration}"
            )
        for k, predictor in enumerate(predictors):
            where = f"tree {k} of boosting iteration {i}"
            nodes = predictor.nodes
            names = nodes.dtype.names or ()
            needed = ("feature_idx", "left", "right", "num_threshold", "is_leaf")
            if nodes.ndim != 1 or len(nodes) < 1 or not set(needed) <= set(names):
                raise MalformedModel(f"{where}: not an array of predictor nodes")
            split = nodes["is_leaf"] == 0
            categorical = split & (nodes["is_categorical"] != 0)
            bitsets = len(predictor.raw_left_cat_bitsets)
            if np.any(nodes["bitset_idx"][categorical] >= bitsets):
                raise MalformedModel(f"{where}: a categorical split names a missing bitset")
            left = nodes["left"].astype(np.int64)
            right = nodes["right"].astype(np.int64)
            _check_nodes(
                where,
                split=split,
                leaf_ok=~split,
                left=left,
                right=right,
                feature=nodes["feature_idx"],
                threshold=np.where(categorical, 0.0, nodes["num_threshold"]),
                n_features=n_features,
            )


def _check_nodes(
    where: str,
    *,
    split: np.ndarray[Any, Any],
    leaf_ok: np.ndarray[Any, Any],
    left: np.ndarray[Any, Any],
    right: np.ndarray[Any, Any],
    feature: np.ndarray[Any, Any],
    threshold: np.ndarray[Any, Any],
    n_features: int,
) -> None:
    count = len(split)
    index = np.arange(count)
    outside = (feature < 0) | (feature >= n_features)
    checks = (
        (~split & ~leaf_ok, "is a leaf with a child"),
        (split & outside, f"reads a feature outside 0..{n_features - 1}"),
        (split & ((left <= index) | (left >= count)), "has a left child not after it"),
        (split & ((right <= index) | (right >= count)), "has a right child not after it"),
        (split & ~np.isfinite(threshold), "has a threshold that is not finite"),
    )
    for bad, what in checks:
        if np.any(bad):
            node = int(np.argmax(bad))
            raise MalformedModel(
                f"{where}: node {node} {what} (feature {int(feature[node])}, children "
                f"{int(left[node])} and {int(right[node])}); the model file is malformed"
            )
