"""RFC 7386 JSON merge patch (`application/merge-patch+json`), written once.

The rollout previews its patches with it (`--dry-run`) and the local cluster
(contract/local_cluster.py) applies them with it, as the API server applies a merge
patch to a custom resource: a key set to null is removed, an object is merged key by
key, anything else (a list included) replaces the old value whole.
"""

from __future__ import annotations

import copy
from typing import Any


def merge_patch(target: Any, patch: Any) -> Any:
    """`target` with `patch` applied (RFC 7386, section 2); neither argument is changed."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result
